"""Python-time preparation of the dosing events of a batch of subjects.

Which records are doses, and whether steady-state or infusion machinery is
needed at all, are properties of the data, known before tracing.  Fixing them
here keeps the traced event engine free of data-dependent shapes and lets a
dataset without steady state skip that work entirely.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Bool, Int

from ..data._subjects import Subjects

DOSE_EVIDS = (1, 4)


class EventPlan(eqx.Module):
    """Dose slots of each subject: ``dose_record[i, d]`` is the record index of
    subject ``i``'s ``d``-th dose (``dose_valid`` False for padding slots).

    Static flags say which machinery the data needs: steady state (``has_ss``),
    the number of earlier steady-state infusions that may still run when a
    steady-state infusion dose is given (``max_ss_overlap``; 0 when the data has
    no steady-state infusions), zero-order inputs (``has_infusions``: some dose
    has a non-zero RATE), resets (``has_resets``: some record has EVID 3 or
    4), whether every subject's individual parameters are
    the same at all its records (``constant_parameters``) and whether the
    amounts may be computed by superposition (``superpose``); the last two
    are set by the likelihood layer, which knows the model
    (:mod:`pmx_jax.likelihood._prepare`)."""

    dose_record: Int[Array, "n_sub n_dose"]
    dose_valid: Bool[Array, "n_sub n_dose"]
    has_ss: bool = eqx.field(static=True)
    max_ss_overlap: int = eqx.field(static=True)
    has_infusions: bool = eqx.field(static=True, default=True)
    has_resets: bool = eqx.field(static=True, default=True)
    constant_parameters: bool = eqx.field(static=True, default=False)
    superpose: bool = eqx.field(static=True, default=False)


def flagged_records(flags: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per subject (row of ``flags``), the indices of its flagged records in
    order, ``width`` of them: ``(index, valid)``, padded with record 0 where
    ``valid`` is False (numpy; ``width`` at least the most flags of a row)."""
    # A stable sort of "not flagged" puts each subject's flagged records first, in order.
    order = np.argsort(~flags, axis=1, kind="stable")[:, :width]
    valid = np.take_along_axis(flags, order, axis=1)
    return np.where(valid, order, 0).astype(np.int32), valid


def plan_events(
    subjects: Subjects, *, max_ss_overlap: int = 8, pad_doses: Callable[[int], int] | None = None
) -> EventPlan:
    """Build the :class:`EventPlan` of concrete (not traced) ``subjects``;
    ``pad_doses``: a rule from the most doses of a subject to the number of
    dose slots (default: that number)."""
    evid = np.asarray(subjects.evid)
    valid = np.asarray(subjects.valid)
    rate = np.asarray(subjects.rate)
    ss = np.asarray(subjects.ss)
    is_dose = np.isin(evid, DOSE_EVIDS) & valid
    n_dose = max(int(is_dose.sum(axis=1).max(initial=0)), 1)
    if pad_doses is not None:
        n_dose = max(min(int(pad_doses(n_dose)), evid.shape[1]), n_dose)
    dose_record, dose_valid = flagged_records(is_dose, n_dose)
    ss_dose = is_dose & (ss > 0)
    has_ss = bool(ss_dose.any())
    has_ss_infusion = bool((ss_dose & (rate != 0)).any())
    has_infusions = bool((is_dose & (rate != 0)).any())
    return EventPlan(
        # device_put, not jnp.asarray: no program to compile per array shape.
        dose_record=jax.device_put(dose_record),
        dose_valid=jax.device_put(dose_valid),
        has_ss=has_ss,
        max_ss_overlap=max_ss_overlap if has_ss_infusion else 0,
        has_infusions=has_infusions,
        has_resets=bool((valid & np.isin(evid, (3, 4))).any()),
    )
