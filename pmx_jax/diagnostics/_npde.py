"""Normalised prediction distribution errors (NPDE) and discrepancies (NPD).

Simulation-based residuals (Brendel et al. 2006, Pharm Res 23:2036; Comets et
al. 2008, Comput Methods Programs Biomed 90:154; the R package ``npde``),
computed at the model's parameter values:

1. simulate ``K`` replicates of every subject's design under the model
   (etas and residual errors), on the DV's scale (for a log-scale error model,
   the simulated DV, not its log);
2. per subject ``i``: ``E_i`` = mean and ``V_i`` = covariance (``K - 1``
   denominator) of the ``K`` simulated vectors of its observations;
3. **NPD** (no decorrelation): ``pd_ij`` = fraction of simulated ``y_ij``
   below the observed one; ``NPD = Phi^-1(pd)``;
4. **NPDE**: decorrelate the observed vector and each simulated vector,
   ``y* = V_i^-1/2 (y - E_i)``, then ``pde_ij`` = fraction of decorrelated
   simulations below the decorrelated observation; ``NPDE = Phi^-1(pde)``.
   ``V_i^-1/2`` is the inverse of the Cholesky factor (``decorrelation=
   "cholesky"``, npde's default: it depends on the order of the observations,
   which is time order) or the symmetric inverse square root
   (``"inverse"``, by eigendecomposition).

Ties count one half (``(#below + #equal / 2) / K``) and ``pd``/``pde`` are
clipped to ``[1 / (2K), 1 - 1 / (2K)]`` so that ``Phi^-1`` stays finite (npde
maps 0 and 1 to ``1/K`` and ``1 - 1/K``; half of that is the value that keeps
``pde`` uniform in distribution on the grid ``(k + 1/2) / K``).

Records without an NPDE (NaN, with the reason in ``frame.attrs["notes"]``):
dose and other non-observation records, MDV = 1 records, censored (BLQ)
observations (npde's ``cens.method = "omit"``: they are left out of the
decorrelated vector as well; imputation of censored values is not
implemented), and observations whose simulated values are all equal (zero
predictive variance, e.g. a pre-dose concentration without a baseline).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pandas as pd
from jax.scipy.special import ndtri

from ..data._dataset import Dataset
from ..data._read import read_nonmem
from ..likelihood import prepare, record_frame_index
from ..model._model import Model
from ..simulation import simulate

DECORRELATIONS = ("cholesky", "inverse")


def model_and_dataset(fit_or_model: Any, data: Any) -> tuple[Model, Dataset]:
    """The model and Dataset a diagnostic runs on: a FitResult's fitted model and
    its data (unless ``data`` is given), or a Model with ``data``."""
    from ..estimation import FitResult

    if isinstance(fit_or_model, FitResult):
        model = fit_or_model.model
        if data is None:
            data = fit_or_model._dataset
            if data is None:
                raise ValueError(
                    "this FitResult keeps no dataset (the fit was given prepared data): "
                    "pass the Dataset as the second argument"
                )
    elif isinstance(getattr(fit_or_model, "model", None), Model) and isinstance(
        getattr(fit_or_model, "dataset", None), Dataset
    ):
        # A finished run read back from disk (pmx report's FittedRun).
        model = fit_or_model.model
        data = fit_or_model.dataset if data is None else data
    elif isinstance(fit_or_model, Model):
        model = fit_or_model
        if data is None:
            raise ValueError(
                f"a {type(model).__name__} model needs the data to evaluate: "
                "pass a Dataset (pmx_jax.read_nonmem) or a NONMEM DataFrame as `data`"
            )
    else:
        raise TypeError(
            "expected a FitResult (pmx_jax.fit) or a pmx_jax.Model, got "
            f"{type(fit_or_model).__name__}"
        )
    if isinstance(data, pd.DataFrame):
        data = read_nonmem(data)
    if not isinstance(data, Dataset):
        raise TypeError(
            "data must be a Dataset (pmx_jax.read_nonmem) or a DataFrame, got "
            f"{type(data).__name__}"
        )
    return model, data


def simulate_replicates(
    model: Model, dataset: Dataset, n_replicates: int, seed: int, chunk_size: int | None
) -> np.ndarray:
    """Simulated DV of ``n_replicates`` copies of the dataset's design, in one
    batched :func:`pmx_jax.simulate` call: shape ``(n_replicates, n_subjects,
    n_records)`` on the padded, ADDL-expanded records of ``prepare``."""
    n_sub = dataset.n_subjects
    total = n_replicates * n_sub
    if chunk_size is None and jax.default_backend() == "cpu":
        # pmx.simulate's CPU default (128) suits long designs (hundreds of
        # records); typical diagnostic datasets have ~10 records per subject,
        # where larger chunks amortise the per-chunk overhead (1,000-subject
        # x 10-sample VPC: 1,024 ran 1.7x faster than 128).
        n_records = int(dataset.records.groupby("subject").size().max())
        chunk_size = int(np.clip(2**14 // max(n_records, 1), 128, 2048))
    dv: np.ndarray | None = None
    failed: list[int] = []

    def keep(first: int, chunk: tuple[np.ndarray, ...]) -> None:
        # Only DV is kept: IPRED and etas of 10^6 virtual subjects are not needed.
        nonlocal dv
        _, chunk_dv, _, ok = chunk[:4]
        if dv is None:
            dv = np.empty((total, chunk_dv.shape[1]), dtype=chunk_dv.dtype)
        dv[first : first + len(chunk_dv)] = chunk_dv
        failed.extend(first + np.flatnonzero(~np.asarray(ok)))

    simulate(
        model,
        dataset,
        key=jax.random.PRNGKey(seed),
        n_subjects=total,
        chunk_size=chunk_size,
        on_chunk=keep,
    )
    assert dv is not None
    if failed:
        ids = sorted({dataset.ids[i % n_sub] for i in failed}, key=str)[:10]
        raise FloatingPointError(
            f"{len(failed)} simulated subjects have non-finite predictions (designs of "
            f"ID {', '.join(map(str, ids))}): check the individual parameters the model "
            "gives under its OMEGA (e.g. a non-positive volume or clearance)"
        )
    return dv.reshape(n_replicates, n_sub, -1)


def _fraction_below(simulated: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``(#sim < obs + #sim == obs / 2) / K`` along axis 1 of ``simulated``
    ``(n, K, m)`` against ``observed`` ``(n, m)``, clipped to ``[1/2K, 1 - 1/2K]``."""
    k = simulated.shape[1]
    below = (simulated < observed[:, None, :]).sum(axis=1)
    equal = (simulated == observed[:, None, :]).sum(axis=1)
    fraction = (below + 0.5 * equal) / k
    return np.clip(fraction, 0.5 / k, 1.0 - 0.5 / k)


def _decorrelator(cov: np.ndarray, method: str) -> np.ndarray:
    """Per subject the matrix ``W`` with ``W V W^T = I``: inverse Cholesky factor
    (npde's default) or symmetric inverse square root."""
    if method == "cholesky":
        lower = np.linalg.cholesky(cov)
        eye = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape)
        return np.linalg.solve(lower, eye)
    values, vectors = np.linalg.eigh(cov)
    return (vectors / np.sqrt(values)[:, None, :]) @ np.swapaxes(vectors, -1, -2)


def npde(
    fit_or_model: Any,
    data: Dataset | pd.DataFrame | None = None,
    *,
    n_sim: int = 1000,
    seed: int = 0,
    decorrelation: str = "cholesky",
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """NPDE and NPD of every observation, by simulation under the model.

    Args:
        fit_or_model: a :class:`~pmx_jax.FitResult` (its fitted model and data)
            or a :class:`~pmx_jax.Model` at the parameter values to evaluate.
        data: the dataset (required with a Model; with a FitResult it replaces
            the fit's data).
        n_sim: replicates ``K`` of the dataset simulated (Monte-Carlo SE of a
            ``pde`` near ``p`` is ``sqrt(p (1 - p) / K)``).  It must exceed the
            largest number of observations of a subject, so that ``V_i`` is
            invertible.
        seed: seed of the simulation (same seed, same NPDE).
        decorrelation: ``"cholesky"`` (default, as npde) or ``"inverse"``
            (symmetric ``V^-1/2``).
        chunk_size: passed to :func:`pmx_jax.simulate`.

    Returns:
        One row per row of the dataset: ID, TIME, EVID, DV, EPRED (mean of the
        simulated DV), PD, NPD, PDE, NPDE and ``row`` (0-based table row).
        Non-observation, censored and zero-variance records have NaN residuals;
        ``frame.attrs["notes"]`` says how many and why.
    """
    if decorrelation not in DECORRELATIONS:
        raise ValueError(f"decorrelation must be one of {DECORRELATIONS}, got {decorrelation!r}")
    model, dataset = model_and_dataset(fit_or_model, data)
    subjects = prepare(model, dataset).subjects
    is_obs = np.asarray(subjects.is_obs)
    censored = is_obs & (np.asarray(subjects.cens) != 0)
    used = is_obs & ~censored
    longest = int(used.sum(axis=1).max(initial=0))
    if n_sim <= longest:
        raise ValueError(
            f"n_sim = {n_sim} replicates cannot decorrelate a subject with {longest} "
            f"observations: use n_sim > {longest} (1000 or more for stable NPDE)"
        )
    sims = simulate_replicates(model, dataset, int(n_sim), seed, chunk_size)  # (K, n, R)
    sims = np.swapaxes(sims, 0, 1)  # (n, K, R)
    notes: list[str] = []
    epred_all = sims.mean(axis=1)

    # Observations of each subject, packed to the left of an (n, m) layout.
    n_sub, n_rec = used.shape
    order = np.argsort(~used, axis=1, kind="stable")[:, : max(longest, 1)]
    mask = np.take_along_axis(used, order, axis=1)
    observed = np.take_along_axis(np.asarray(subjects.dv), order, axis=1)
    simulated = np.take_along_axis(sims, order[:, None, :], axis=2)
    constant = mask & (simulated.std(axis=1) == 0)
    if constant.any():
        notes.append(
            f"{int(constant.sum())} observations have no predictive variance (every simulated "
            "value is equal): NPD and NPDE are NaN there"
        )
        mask &= ~constant
    expected = simulated.mean(axis=1)
    deviation = np.where(mask[:, None, :], simulated - expected[:, None, :], 0.0)
    observed_dev = np.where(mask, observed - expected, 0.0)

    pd_values = _fraction_below(simulated, observed)
    # Padded dimensions get an identity block: V stays block diagonal, so the
    # decorrelation of the real observations is that of their own block.
    cov = np.einsum("nki,nkj->nij", deviation, deviation) / (n_sim - 1)
    cov += np.eye(cov.shape[-1]) * (~mask)[:, :, None]
    _check_invertible(cov, dataset, n_sim)
    weights = _decorrelator(cov, decorrelation)
    decorrelated_obs = np.einsum("nij,nj->ni", weights, observed_dev)
    decorrelated_sim = np.einsum("nij,nkj->nki", weights, deviation)
    pde_values = _fraction_below(decorrelated_sim, decorrelated_obs)

    def scatter(values: np.ndarray) -> np.ndarray:
        out = np.full((n_sub, n_rec), np.nan)
        np.put_along_axis(out, order, np.where(mask, values, np.nan), axis=1)
        return np.where(used, out, np.nan)

    sub, rec = record_frame_index(subjects)
    pd_full, pde_full = scatter(pd_values), scatter(pde_values)
    records = dataset.records
    rows = np.asarray(subjects.row)[sub, rec]
    # ``row`` numbers the table as first read (a subset keeps it): positions
    # in ``records`` differ from it after Dataset.subset.
    positions = dataset.record_positions(rows)
    frame = pd.DataFrame(
        {
            "ID": records["id"].to_numpy()[positions],
            "TIME": records["time"].to_numpy()[positions],
            "EVID": records["evid"].to_numpy()[positions],
            "DV": records["dv"].to_numpy()[positions],
            "EPRED": np.where(is_obs, epred_all, np.nan)[sub, rec],
            "PD": pd_full[sub, rec],
            "NPD": _probit(pd_full[sub, rec]),
            "PDE": pde_full[sub, rec],
            "NPDE": _probit(pde_full[sub, rec]),
            "row": rows,
        }
    )
    if censored.any():
        notes.append(
            f"{int(censored.sum())} censored (BLQ) observations: NPD/NPDE are NaN there and "
            "they are left out of the decorrelation (npde's 'omit' method)"
        )
    notes.append(
        f"{n_sim} simulated replicates (seed {seed}), {decorrelation} decorrelation; "
        "NaN on non-observation records"
    )
    frame.attrs["notes"] = notes
    return frame


def _probit(p: np.ndarray) -> np.ndarray:
    return np.asarray(ndtri(np.asarray(p, dtype=np.float64)))


def _check_invertible(cov: np.ndarray, dataset: Dataset, n_sim: int) -> None:
    values = np.linalg.eigvalsh(cov)
    singular = np.flatnonzero(values[:, 0] <= 1e-12 * values[:, -1])
    if singular.size:
        ids = ", ".join(str(dataset.ids[i]) for i in singular[:10])
        raise np.linalg.LinAlgError(
            f"the simulated covariance of the observations of subject(s) ID {ids} is singular "
            f"with n_sim = {n_sim}: two observations are (almost) the same random variable "
            "(e.g. duplicate records); remove duplicates or increase n_sim"
        )
