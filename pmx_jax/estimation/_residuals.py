"""Per-record predictions and residuals of a fit (NONMEM's ``$TABLE`` items).

For subject ``i`` with random effects ``b`` (IIV then IOV etas), OMEGA of ``b``
``Omega``, transformed observations ``y`` (log DV for log-scale error models),
transformed predictions ``f(b)``, residual variances ``v(b)`` and
``G(b) = df/db``; ``b*`` the EBEs:

``PRED``, ``IPRED``
    the prediction at ``b = 0`` and at ``b*`` (on the DV's scale).
``RES``, ``IRES``
    ``DV - PRED`` and ``DV - IPRED``.
``WRES``
    first-order (FO) weighted residuals: ``C0^-1/2 (y - f(0))`` with
    ``C0 = G(0) Omega G(0)^T + diag v(0)``.  With interaction (methods
    ``focei`` and ``laplace``) ``C0`` also has the variance of the
    eta-epsilon cross term, ``diag(s' Omega s'^T)`` with ``s' = d sqrt(v)/db`` at
    0: this is NONMEM's WRES column under ``INTERACTION`` (its ``NWRES`` is
    the one without).
``CWRES``
    conditional weighted residuals (Hooker et al. 2007, NONMEM's ``CWRES``):
    the FOCE linearisation around the EBEs, ``C*^-1/2 (y - CPRED)`` with
    ``CPRED = f(b*) - G(b*) b*`` and ``C* = G(b*) Omega G(b*)^T + diag v*``,
    ``v* = v(b*)`` (``v(0)`` for ``foce``, whose residual variance does not
    depend on the etas).
``IWRES``
    ``(y - f(b*)) / sqrt(v(b*))``.

``C^-1/2`` is the symmetric inverse square root (by eigendecomposition, as
Xpose and PsN compute CWRES).  Weighted residuals are on the error model's
scale (log scale for :class:`~pmx_jax.Exponential`); they are defined on
normally distributed observations only and are NaN on dose records and on
censored (M3) observations, which enter the likelihood as probabilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array

from .._shapes import subjects_bucket
from .._sharding import pad_subjects
from .._stored import stored
from ..data._dataset import Dataset
from ..likelihood import (
    Layout,
    Prepared,
    SubjectLikelihood,
    moments_and_jacobian,
    record_frame_index,
)
from ..model._model import Model

COLUMNS = ("PRED", "IPRED", "CPRED", "RES", "IRES", "WRES", "CWRES", "IWRES")


def _inverse_sqrt_times(cov: Array, r: Array, mask: Array) -> Array:
    """``C^-1/2 r`` on the masked records (symmetric square root), NaN elsewhere."""
    both = mask[:, None] & mask[None, :]
    cov = jnp.where(both, cov, jnp.eye(cov.shape[0], dtype=cov.dtype))
    r = jnp.where(mask, r, 0.0)
    values, vectors = jnp.linalg.eigh(0.5 * (cov + cov.T))
    weighted = vectors @ ((vectors.T @ r) / jnp.sqrt(values))
    return jnp.where(mask, weighted, jnp.nan)


@stored("residuals")
def _residuals(model: Model, prepared: Prepared, ebes: Array, method: str, layout: Layout):
    dtype = prepared.subjects.time.dtype
    omega = layout.omega(model).astype(dtype)
    interaction = method in ("focei", "laplace")

    def one(data, b):
        subj = SubjectLikelihood(model, data, layout)
        zero = jnp.zeros_like(b)
        at0, g0, dv0 = moments_and_jacobian(subj, zero)
        at_b, g_b, _ = moments_and_jacobian(subj, b)
        mask = at0.normal
        y = at0.observed

        cov0 = g0 @ omega @ g0.T + jnp.diag(at0.variance)
        if interaction:
            sd0 = jnp.sqrt(jnp.where(mask, at0.variance, 1.0))
            d_sd = dv0 / (2.0 * sd0)[:, None]
            cov0 = cov0 + jnp.diag(jnp.sum((d_sd @ omega) * d_sd, axis=1))
        wres = _inverse_sqrt_times(cov0, y - at0.mean, mask)

        v_star = at0.variance if method == "foce" else at_b.variance
        cpred = at_b.mean - g_b @ b
        cov_b = g_b @ omega @ g_b.T + jnp.diag(v_star)
        cwres = _inverse_sqrt_times(cov_b, y - cpred, mask)
        iwres = jnp.where(
            mask, (y - at_b.mean) / jnp.sqrt(jnp.where(mask, at_b.variance, 1.0)), jnp.nan
        )
        # CPRED on the DV's scale (it is a linearised mean of the transformed DV).
        cpred_dv = jnp.where(at_b.log_scale, jnp.exp(cpred), cpred)
        return at0.prediction, at_b.prediction, cpred_dv, wres, cwres, iwres, at_b.ok

    return jax.vmap(one)(prepared.subject_data(), ebes)


def residual_table(
    model: Model,
    dataset: Dataset,
    prepared: Prepared,
    ebes: np.ndarray,
    method: str,
) -> pd.DataFrame:
    """One row per row of the dataset's table (dose and other records too):
    ID, TIME, EVID, DV, PRED, IPRED, CPRED, RES, IRES, WRES, CWRES, IWRES and
    ``row`` (0-based row of the original table); see the module notes."""
    layout = Layout.of(model, prepared.n_occasions)
    dtype = prepared.subjects.time.dtype
    to = subjects_bucket(prepared.subjects.n_subjects)  # one program per bucket
    padded, ebes = pad_subjects((prepared, np.asarray(ebes, dtype)), to)
    out = _residuals(model, padded, jnp.asarray(ebes), method, layout)
    pred, ipred, cpred, wres, cwres, iwres, ok = (np.asarray(a) for a in jax.device_get(out))
    bad = np.flatnonzero(~ok[: dataset.n_subjects])
    if bad.size:
        ids = ", ".join(str(dataset.ids[i]) for i in bad[:10])
        raise FloatingPointError(f"predictions are not finite at the EBEs of subject(s) ID {ids}")
    sub, rec = record_frame_index(prepared.subjects)
    rows = np.asarray(prepared.subjects.row)[sub, rec]
    positions = dataset.record_positions(rows)
    records = dataset.records
    dv = records["dv"].to_numpy()[positions].astype(float)
    frame = pd.DataFrame(
        {
            "ID": records["id"].to_numpy()[positions],
            "TIME": records["time"].to_numpy()[positions],
            "EVID": records["evid"].to_numpy()[positions],
            "DV": dv,
            "PRED": pred[sub, rec],
            "IPRED": ipred[sub, rec],
            "CPRED": cpred[sub, rec],
        }
    )
    observed = np.isfinite(cwres[sub, rec])
    frame["RES"] = np.where(observed, dv - frame["PRED"], np.nan)
    frame["IRES"] = np.where(observed, dv - frame["IPRED"], np.nan)
    frame["WRES"] = wres[sub, rec]
    frame["CWRES"] = cwres[sub, rec]
    frame["IWRES"] = iwres[sub, rec]
    frame["row"] = rows
    return frame.reset_index(drop=True)
