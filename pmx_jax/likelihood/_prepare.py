"""A dataset made ready for one model: padded subjects and their dosing plan.

:func:`prepare` checks a :class:`~pmx_jax.Dataset` against a model (its
compartments, the covariates its $PK block reads) and batches it into a
:class:`Prepared`; :class:`SubjectData` is one subject of it, the unit every
per-subject function of the likelihood takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from .._shapes import censored_bucket, doses_bucket, records_bucket
from ..data._checks import check_endpoint_values, check_modelled_inputs
from ..data._dataset import Dataset
from ..data._subjects import Subjects
from ..events._plan import EventPlan, flagged_records, plan_events
from ..model._errors import ObservationError
from ..model._model import Model
from ..model._views import CovariateView, EtaView


class SubjectData(eqx.Module):
    """One subject's records and the plan of its dosing events: everything the
    kernel needs about a subject besides the model and its random effects.

    ``records``: the subject's padded records (a :class:`~pmx_jax.Subjects`
    without the subject axis); ``dose_record``/``dose_valid``: its dose
    slots (:class:`~pmx_jax.events.EventPlan`); the static flags say which
    event machinery the dataset needs, and ``derivatives`` whether autodiff
    must be able to go through it.  Batched (a leading subject axis on
    every array) it is what :meth:`Prepared.subject_data` returns for
    ``jax.vmap``.
    """

    records: Subjects
    dose_record: Int[Array, " n_dose"]
    dose_valid: Bool[Array, " n_dose"]
    has_ss: bool = eqx.field(static=True)
    max_ss_overlap: int = eqx.field(static=True)
    has_infusions: bool = eqx.field(static=True, default=True)
    constant_parameters: bool = eqx.field(static=True, default=False)
    superpose: bool = eqx.field(static=True, default=False)
    derivatives: bool = eqx.field(static=True, default=True)
    has_resets: bool = eqx.field(static=True, default=True)
    # The censored observations' record indices (:func:`censored_records`),
    # or None: the kernel then evaluates the M3 likelihood at every record.
    censored_record: Int[Array, " n_cens"] | None = None
    censored_valid: Bool[Array, " n_cens"] | None = None


class Prepared(eqx.Module):
    """A dataset made ready for one model: padded subjects and their event plan."""

    subjects: Subjects
    plan: EventPlan
    n_occasions: int = eqx.field(static=True)
    # Per DVID level of the data (``level_endpoints``): whether its
    # observation model is Gaussian (an error model), and whether it is a
    # time-to-event endpoint.
    gaussian_levels: tuple[bool, ...] = eqx.field(static=True, default=(True,))
    event_levels: tuple[bool, ...] = eqx.field(static=True, default=(False,))
    # Where each subject's censored observations are (:func:`censored_records`).
    censored_record: Int[Array, "n_sub n_cens"] | None = None
    censored_valid: Bool[Array, "n_sub n_cens"] | None = None

    def gaussian_records(self) -> np.ndarray:
        """Per record (``(n_subjects, n_records)``, numpy): its endpoint is Gaussian."""
        return np.asarray(self.gaussian_levels)[np.asarray(self.subjects.dvid)]

    @property
    def has_general(self) -> bool:
        """Some endpoint is not Gaussian (counts, categories, time to event...)."""
        return not all(self.gaussian_levels)

    def subject_data(self, *, derivatives: bool = True) -> SubjectData:
        """Every subject as one batched :class:`SubjectData` (leading axis:
        subjects), to ``jax.vmap`` a per-subject function over.
        ``derivatives=False`` (prediction and simulation) lets the event
        engine use a loop that autodiff cannot go through
        (:func:`pmx_jax.events.record_amounts`)."""
        plan = self.plan
        return SubjectData(
            self.subjects,
            plan.dose_record,
            plan.dose_valid,
            plan.has_ss,
            plan.max_ss_overlap,
            plan.has_infusions,
            plan.constant_parameters,
            plan.superpose,
            derivatives,
            plan.has_resets,
            self.censored_record,
            self.censored_valid,
        )

    def subject(self, index, *, derivatives: bool = True) -> SubjectData:
        """Subject ``index`` (0-based, dataset order) as a :class:`SubjectData`."""
        data = self.subject_data(derivatives=derivatives)
        return jax.tree_util.tree_map(lambda x: x[index], data)


def used_covariates(model: Model, covariate_names: Sequence[str]) -> tuple[str, ...]:
    """The dataset covariates the model's $PK block reads (found by tracing it
    once, abstractly); raises the data layer's MissingCovariateError for a
    covariate the dataset lacks."""
    return _trace_pk(model, covariate_names)[0]


def _trace_pk(
    model: Model, covariate_names: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """The covariates the $PK block reads, the names of the individual
    parameters it returns and whether it reads the record's TIME, from one
    abstract trace.  A block that reads the covariates in bulk
    (``cov.values``, ``cov.as_dict()``) reads all of them, TIME included; one
    that indexes by position reads the covariate at that position."""
    names = with_time(covariate_names)
    seen: set[str] = set()

    class Recording(CovariateView):
        __slots__ = ()

        def _lookup(self, name: str) -> int:
            index = super()._lookup(name)
            seen.add(names[index])
            return index

        def __getitem__(self, key):
            if not isinstance(key, str):
                try:
                    seen.update(np.asarray(names, dtype=object)[key].ravel().tolist())
                except (IndexError, TypeError):  # a traced index: it may read any
                    seen.update(names)
            return super().__getitem__(key)

        @property
        def values(self):
            seen.update(names)
            return super().values

        def as_dict(self):
            seen.update(names)
            return super().as_dict()

    def run(eta, cov):
        view = EtaView(eta, model.eta_names + model.iov_eta_names)
        return model.individual(view, Recording(cov, names))

    params = jax.eval_shape(run, _abstract(model.n_eta + model.n_iov_eta), _abstract(len(names)))
    used = tuple(n for n in covariate_names if n in seen)
    reads_time = any(n not in covariate_names for n in seen)
    return used, tuple(str(k) for k in params), reads_time


#: The most dose slots for which :func:`can_superpose` chooses superposition:
#: its work grows as records x doses, the event loop's as records + doses
#: (with constant parameters the loop's sequential part runs over the dose
#: points alone).  Measured on 2 CPU cores, ``benchmarks/fit.py``'s model and
#: design given 1, 2 or 3 times a day apart, 1,000 subjects, the
#: log-likelihood and its gradient in the etas (best of 100 calls, two runs):
#: 1 dose, 12 records: superposition 0.50 ms, loop 0.84 ms; 2 doses, 24
#: records: 1.12 against 1.61 ms; 3 doses, 40 records: 2.65 / 4.12 against
#: 1.91 / 2.64 ms.
SUPERPOSE_MAX_DOSES = 2


#: :func:`censored_records` lists the censored observations when they are at
#: most this fraction of the record slots (bucketed); above it the kernel
#: evaluates the M3 likelihood at every record, as gathering them would cost
#: more than it saves.
CENSORED_MAX_FRACTION = 0.25


def censored_records(
    subjects: Subjects, *, buckets: bool
) -> tuple[Array, Array] | tuple[None, None]:
    """Per subject, the record indices of its censored observations (CENS
    not 0), padded with record 0 where ``valid`` is False, to the most any
    subject has (bucketed: :func:`pmx_jax._shapes.censored_bucket`).  The
    kernel then evaluates the M3 probabilities, a ``log Phi`` each and the
    bulk of a censored likelihood's work, at these records only instead of
    at every record slot.  ``(None, None)`` when nothing is censored, or when
    the censored observations fill more than :data:`CENSORED_MAX_FRACTION`
    of the record slots.  Decided from the concrete data."""
    censored = np.asarray(subjects.is_obs) & (np.asarray(subjects.cens) != 0)
    n_rec = censored.shape[1]
    most = int(censored.sum(axis=1).max(initial=0))
    if most == 0:
        return None, None
    width = min(censored_bucket(most) if buckets else most, n_rec)
    if width > CENSORED_MAX_FRACTION * n_rec:
        return None, None
    index, valid = flagged_records(censored, width)
    # device_put, not jnp.asarray: no program to compile per array shape.
    return jax.device_put(index), jax.device_put(valid)


def constant_parameters(model: Model, subjects: Subjects, *, reads_time: bool) -> bool:
    """Whether every subject's individual parameters are the same at all its
    records: the $PK block reads neither TIME nor a covariate that changes
    between a subject's records, and no subject has records on more than one
    occasion when the model has IOV.  Decided from the concrete data."""
    if reads_time:
        return False
    valid = np.asarray(subjects.valid)

    def constant(values: np.ndarray) -> bool:
        # Compared with each subject's first record (never padding).
        first = values[:, :1]
        mask = valid if values.ndim == 2 else valid[..., None]
        return bool(np.all((values == first) | ~mask))

    if not constant(np.asarray(subjects.cov)):
        return False
    return model.n_iov_eta == 0 or constant(np.asarray(subjects.occ))


def can_superpose(model: Model, plan: EventPlan) -> bool:
    """Whether the event engine may compute every subject's amounts by
    superposition (:func:`pmx_jax.events.superposed_amounts`) instead of its
    event loop: closed-form linear dynamics with zero initial amounts,
    parameters constant within each subject (``plan.constant_parameters``),
    no steady-state dose, no reset (EVID 3/4: ``plan.has_resets``) and at most
    :data:`SUPERPOSE_MAX_DOSES` dose slots.  Decided from the concrete data,
    before tracing."""
    from ..dynamics._base import AbstractDynamics
    from ..dynamics._closed_form import AbstractLinearCompartments

    dynamics = model.dynamics
    if not (plan.constant_parameters and isinstance(dynamics, AbstractLinearCompartments)):
        return False
    if type(dynamics).initial_amounts is not AbstractDynamics.initial_amounts:
        return False
    return not (plan.has_ss or plan.has_resets or plan.dose_record.shape[-1] > SUPERPOSE_MAX_DOSES)


def _abstract(*shape: int) -> jax.ShapeDtypeStruct:
    """A float array of ``shape`` for abstract tracing (``jax.eval_shape``):
    no array is made, so no program is compiled or read from the cache."""
    return jax.ShapeDtypeStruct(shape, jnp.result_type(float))


def with_time(covariate_names: Sequence[str]) -> tuple[str, ...]:
    """The names the $PK block's ``cov`` offers: the dataset's covariates and
    ``TIME``, the record's time (as in NONMEM's $PK), unless a covariate is
    already called so."""
    names = tuple(covariate_names)
    if any(n.casefold() == "time" for n in names):
        return names
    return (*names, "TIME")


def observation_models(model: Model, parameter_names: Sequence[str]) -> tuple:
    """The observation model of every endpoint (DVID level order), from one
    abstract trace of the $ERROR block: only their classes and static
    settings (categories, links) are meaningful."""
    found: list = []

    def run(amounts, params):
        _, models = model._observe(amounts, params)
        found.extend(models)
        return jnp.zeros(())

    params = {name: _abstract() for name in parameter_names}
    jax.eval_shape(run, _abstract(model.dynamics.n_compartments), params)
    return tuple(found)


def level_endpoints(
    model: Model, data: Dataset, parameter_names: Sequence[str] | None = None
) -> tuple:
    """The observation model of each DVID level of ``data`` (level order): a
    model's single endpoint serves every level (``observe`` ignores DVID
    then), endpoint ``k`` level ``k`` otherwise.  ``parameter_names``: the
    $PK block's outputs, when the caller has traced it already."""
    if parameter_names is None:
        parameter_names = _trace_pk(model, data.covariate_names)[1]
    endpoints = observation_models(model, parameter_names)
    n_levels = max(len(data.dvid_levels), 1)
    if len(endpoints) == 1:
        return endpoints * n_levels
    if len(endpoints) < n_levels:
        raise ObservationError(
            f"the data have {n_levels} DVID levels {data.dvid_levels} but "
            f"{type(model).__name__}.observe returns {len(endpoints)} endpoints; return one "
            "error model per DVID level (in the order of the sorted DVID values)"
        )
    return endpoints[:n_levels]


def prepare(
    model: Model,
    data: Dataset,
    *,
    dtype=None,
    pad_to: int | None = None,
    buckets: bool = False,
    check_values: bool = True,
) -> Prepared:
    """Validate ``data`` against ``model`` (compartments, covariates, modelled
    rates and durations, and, unless ``check_values`` is false (a simulation
    design), the observed values against each endpoint) and batch it.
    ``buckets``: pad records per subject and dose slots up to the sizes of
    :mod:`pmx_jax._shapes` (what estimation does, so that datasets of similar
    size share compiled programs)."""
    name = type(model).__name__
    data.check_compartments(model.dynamics.n_compartments, model=name)
    covariates, parameters, reads_time = _trace_pk(model, data.covariate_names)
    check_modelled_inputs(data, parameters, model=name)
    endpoints = level_endpoints(model, data, parameters)
    if check_values:
        check_endpoint_values(data, endpoints, model=name)
    if buckets and pad_to is None:
        pad_to = records_bucket
    subjects = data.subjects(covariates, dtype=dtype, pad_to=pad_to)
    plan = plan_events(subjects, pad_doses=doses_bucket if buckets else None)
    constant = constant_parameters(model, subjects, reads_time=reads_time)
    plan = dataclasses.replace(plan, constant_parameters=constant)
    plan = dataclasses.replace(plan, superpose=can_superpose(model, plan))
    n_occ = max(len(data.occ_levels), 1)
    censored_record, censored_valid = censored_records(subjects, buckets=buckets)
    return Prepared(
        subjects=subjects,
        plan=plan,
        n_occasions=n_occ,
        gaussian_levels=tuple(bool(e.gaussian) for e in endpoints),
        event_levels=tuple(bool(e.time_to_event) for e in endpoints),
        censored_record=censored_record,
        censored_valid=censored_valid,
    )


def record_frame_index(subjects: Subjects) -> tuple[np.ndarray, np.ndarray]:
    """(subject index, record index) of every original table row, in table order:
    padding and ADDL-generated records are left out."""
    row = np.asarray(subjects.row)
    keep = (row >= 0) & ~np.asarray(subjects.is_addl) & np.asarray(subjects.valid)
    sub_idx, rec_idx = np.nonzero(keep)
    order = np.argsort(row[sub_idx, rec_idx], kind="stable")
    return sub_idx[order], rec_idx[order]
