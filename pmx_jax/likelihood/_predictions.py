"""From a model, random effects and one subject's data to predictions.

The single place where the $PK block (individual parameters per record), the
event engine and the $ERROR block meet: prediction, simulation and the
likelihood of every method call :func:`subject_predictions`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._results import RESULTS
from ..data._subjects import Subjects
from ..events._engine import record_amounts, superposed_amounts
from ..model._model import Model
from ._prepare import SubjectData, with_time


class SubjectPrediction(eqx.Module):
    """Per-record results for one subject (leading axis: records)."""

    amounts: Float[Array, "n_rec n_cmt"]
    prediction: Float[Array, " n_rec"]  # IPRED (PRED when etas are zero)
    variance: Float[Array, " n_rec"]  # residual variance on the error model's scale
    params: dict[str, Float[Array, " n_rec"]]
    status: Int[Array, ""]  # the event engine's RESULTS code

    @property
    def ok(self) -> Bool[Array, ""]:
        return self.status == RESULTS.successful


def record_parameters(
    model: Model,
    records: Subjects,
    eta: Float[Array, " n_eta"],
    iov_eta: Float[Array, "n_occ n_iov"] | None,
) -> dict[str, Float[Array, " n_rec"]]:
    """The $PK block evaluated at every record of one subject."""
    names = with_time(records.covariate_names)
    cov = records.cov
    if len(names) > cov.shape[-1]:
        cov = jnp.concatenate([cov, records.time[:, None].astype(cov.dtype)], axis=-1)

    def one(cov, occ):
        iov = None if iov_eta is None else iov_eta[occ]
        return model.individual_parameters(eta, cov, names, iov)

    return jax.vmap(one)(cov, records.occ)


def subject_predictions(
    model: Model,
    data: SubjectData,
    eta: Float[Array, " n_eta"],
    iov_eta: Float[Array, "n_occ n_iov"] | None = None,
) -> SubjectPrediction:
    """Amounts, IPRED and residual variance at every record of one subject."""
    records = data.records
    params = record_parameters(model, records, eta, iov_eta)
    if data.superpose:
        engine = superposed_amounts(
            model.dynamics,
            records,
            params,
            data.dose_record,
            data.dose_valid,
            has_infusions=data.has_infusions,
        )
    else:
        engine = record_amounts(
            model.dynamics,
            records,
            params,
            data.dose_record,
            data.dose_valid,
            has_ss=data.has_ss,
            max_ss_overlap=data.max_ss_overlap,
            has_infusions=data.has_infusions,
            constant_parameters=data.constant_parameters,
            derivatives=data.derivatives,
            has_resets=data.has_resets,
        )

    def observe(amounts, p, dvid):
        error_model = model.observation(amounts, p, dvid)
        return error_model.prediction, error_model.variance()

    prediction, variance = jax.vmap(observe)(engine.amounts, params, records.dvid)
    return SubjectPrediction(engine.amounts, prediction, variance, params, engine.status)
