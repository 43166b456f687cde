"""The sampling importance resampling kernel on one parameter scale, pure
numpy: draws from a multivariate normal or t proposal with their densities,
importance weights ``exp(-dOFV/2)`` over the proposal density, and the
resample without replacement in proportion to the weights."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import numpy as np


def proposal_samples(
    mean: np.ndarray,
    covariance: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    df: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` draws from a multivariate normal (``df=None``) or Student t
    (``df`` degrees of freedom, scale matrix ``covariance``) and their log
    densities.  Returns ``(samples (n, p), log_density (n,))``."""
    mean = np.asarray(mean, dtype=float)
    p = mean.size
    chol = np.linalg.cholesky(np.asarray(covariance, dtype=float))
    z = rng.standard_normal((n, p))
    half_logdet = float(np.sum(np.log(np.diagonal(chol))))
    if df is None:
        samples = mean + z @ chol.T
        log_density = -0.5 * np.sum(z**2, axis=1) - half_logdet - 0.5 * p * math.log(2 * math.pi)
    else:
        if df <= 0:
            raise ValueError(f"df must be > 0, got {df}")
        u = z / np.sqrt(rng.chisquare(df, size=n) / df)[:, None]
        samples = mean + u @ chol.T
        log_density = (
            math.lgamma(0.5 * (df + p))
            - math.lgamma(0.5 * df)
            - 0.5 * p * math.log(df * math.pi)
            - half_logdet
            - 0.5 * (df + p) * np.log1p(np.sum(u**2, axis=1) / df)
        )
    return samples, log_density


def importance_weights(
    dofv: np.ndarray, log_proposal: np.ndarray, log_jacobian: np.ndarray | float = 0.0
) -> np.ndarray:
    """SIR importance weights, normalised to sum to 1: the target
    ``exp(-dOFV/2)`` (times the Jacobian of the map to the scale of the flat
    prior) over the proposal density.  Non-finite OFVs get weight 0."""
    log_w = -0.5 * np.asarray(dofv, dtype=float) + log_jacobian - np.asarray(log_proposal)
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if not np.any(np.isfinite(log_w)):
        raise ValueError("no proposal sample has a finite OFV: every importance weight is 0")
    w = np.exp(log_w - np.max(log_w))
    return w / w.sum()


class ImportanceResample(eqx.Module):
    """The draws of :func:`importance_resample`: ``samples`` (n, p),
    ``log_proposal`` and ``log_weight`` (n,), normalised ``weights`` and the
    indices ``chosen`` (without replacement, in the order drawn)."""

    samples: np.ndarray
    log_proposal: np.ndarray
    log_weight: np.ndarray
    weights: np.ndarray
    chosen: np.ndarray


def importance_resample(
    log_target: Any,
    mean: np.ndarray,
    covariance: np.ndarray,
    n_samples: int,
    n_resamples: int,
    rng: np.random.Generator,
    *,
    df: float | None = None,
) -> ImportanceResample:
    """The SIR kernel on one parameter scale: draw ``n_samples`` from the
    normal (or t) proposal, weight them by ``exp(log_target) / proposal`` and
    draw ``n_resamples`` of them without replacement with probabilities
    proportional to the weights.

    ``log_target(samples) -> (n,)``: the log target density up to a constant
    (``-dOFV/2`` plus any log Jacobian); non-finite values get weight 0.
    """
    samples, log_proposal = proposal_samples(mean, covariance, n_samples, rng, df=df)
    log_target_values = np.asarray(log_target(samples), dtype=float)
    log_weight = log_target_values - log_proposal
    log_weight = np.where(np.isfinite(log_weight), log_weight, -np.inf)
    weights = importance_weights(-2.0 * log_target_values, log_proposal)
    n_positive = int(np.sum(weights > 0))
    if n_positive < n_resamples:
        raise ValueError(
            f"only {n_positive} proposal draws have a finite OFV, fewer than n_resamples "
            f"({n_resamples}): lower n_resamples or proposal_inflation"
        )
    chosen = rng.choice(n_samples, size=n_resamples, replace=False, p=weights)
    return ImportanceResample(samples, log_proposal, log_weight, weights, chosen)
