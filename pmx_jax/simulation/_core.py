"""From a model, parameters and one subject's records to predictions.

This is the single place where the $PK block (individual parameters per
record), the event engine and the $ERROR block meet; prediction, simulation and
the likelihood of every estimation method all call :func:`subject_predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..data._dataset import Dataset
from ..data._subjects import Subjects
from ..events._engine import record_amounts
from ..events._plan import EventPlan, plan_events
from ..model._model import Model
from ..model._views import CovariateView


class SubjectPrediction(eqx.Module):
    """Per-record results for one subject (leading axis: records)."""

    amounts: Float[Array, "n_rec n_cmt"]
    prediction: Float[Array, " n_rec"]  # IPRED (PRED when etas are zero)
    variance: Float[Array, " n_rec"]  # residual variance on the error model's scale
    params: dict[str, Float[Array, " n_rec"]]
    ok: Bool[Array, ""]


def record_parameters(
    model: Model,
    subject: Subjects,
    eta: Float[Array, " n_eta"],
    iov_eta: Float[Array, "n_occ n_iov"] | None,
) -> dict[str, Float[Array, " n_rec"]]:
    """The $PK block evaluated at every record of one subject."""
    names = subject.covariate_names

    def one(cov, occ):
        iov = None if iov_eta is None else iov_eta[occ]
        return model.individual_parameters(eta, cov, names, iov)

    return jax.vmap(one)(subject.cov, subject.occ)


def subject_predictions(
    model: Model,
    subject: Subjects,
    plan_record,
    plan_valid,
    eta: Float[Array, " n_eta"],
    iov_eta: Float[Array, "n_occ n_iov"] | None = None,
    *,
    has_ss: bool,
    max_ss_overlap: int,
) -> SubjectPrediction:
    """Amounts, IPRED and residual variance at every record of one subject."""
    params = record_parameters(model, subject, eta, iov_eta)
    engine = record_amounts(
        model.dynamics,
        subject,
        params,
        plan_record,
        plan_valid,
        has_ss=has_ss,
        max_ss_overlap=max_ss_overlap,
    )

    def observe(amounts, p, dvid):
        error_model = model.observation(amounts, p, dvid)
        return error_model.prediction, error_model.variance()

    prediction, variance = jax.vmap(observe)(engine.amounts, params, subject.dvid)
    return SubjectPrediction(engine.amounts, prediction, variance, params, engine.ok)


def used_covariates(model: Model, covariate_names: Sequence[str]) -> tuple[str, ...]:
    """The dataset covariates the model's $PK block reads (found by tracing it
    once, abstractly); raises the data layer's MissingCovariateError for a
    covariate the dataset lacks."""
    names = tuple(covariate_names)
    seen: set[str] = set()

    class Recording(CovariateView):
        __slots__ = ()

        def _lookup(self, name: str) -> int:
            index = super()._lookup(name)
            seen.add(names[index])
            return index

    def run(eta, cov):
        return model.individual(_eta_view(model, eta), Recording(cov, names))

    jax.eval_shape(run, jnp.zeros(model.n_eta + model.n_iov_eta), jnp.zeros(len(names)))
    return tuple(n for n in names if n in seen)


def _eta_view(model: Model, eta):
    from ..model._views import EtaView

    return EtaView(eta, model.eta_names + model.iov_eta_names)


class Prepared(eqx.Module):
    """A dataset made ready for one model: padded subjects and their event plan."""

    subjects: Subjects
    plan: EventPlan
    n_occasions: int = eqx.field(static=True)


def prepare(model: Model, data: Dataset, *, dtype=None, pad_to: int | None = None) -> Prepared:
    """Validate ``data`` against ``model`` (compartments, covariates) and batch it."""
    data.check_compartments(model.dynamics.n_compartments, model=type(model).__name__)
    covariates = used_covariates(model, data.covariate_names)
    subjects = data.subjects(covariates, dtype=dtype, pad_to=pad_to)
    plan = plan_events(subjects)
    n_occ = max(len(data.occ_levels), 1)
    return Prepared(subjects=subjects, plan=plan, n_occasions=n_occ)


def record_frame_index(subjects: Subjects) -> tuple[np.ndarray, np.ndarray]:
    """(subject index, record index) of every original table row, in table order:
    padding and ADDL-generated records are left out."""
    row = np.asarray(subjects.row)
    keep = (row >= 0) & ~np.asarray(subjects.is_addl) & np.asarray(subjects.valid)
    sub_idx, rec_idx = np.nonzero(keep)
    order = np.argsort(row[sub_idx, rec_idx], kind="stable")
    return sub_idx[order], rec_idx[order]
