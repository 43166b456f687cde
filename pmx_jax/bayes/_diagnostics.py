"""Convergence diagnostics of MCMC draws: rank-normalised split R-hat, bulk
and tail effective sample sizes (Vehtari, Gelman, Simpson, Carpenter and
Buerkner 2021, "Rank-normalization, folding, and localization"), the
definitions of Stan, ArviZ and posterior.

Draws are arrays ``(n_chains, n_draws)``.  The autocorrelation-based ESS of a
set of chains is NumPyro's (Geyer's initial monotone sequence estimator).
"""

from __future__ import annotations

import numpy as np
from jax.scipy.special import ndtri
from numpyro.diagnostics import effective_sample_size


def _split(x: np.ndarray) -> np.ndarray:
    """Each chain cut in two halves (the first draw dropped for odd lengths)."""
    n = x.shape[1] // 2
    return np.concatenate([x[:, -2 * n : -n], x[:, -n:]], axis=0)


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks (average ranks for ties)."""
    flat = x.ravel()
    order = np.argsort(flat, kind="mergesort")
    ranks = np.empty(flat.size)
    ranks[order] = np.arange(1, flat.size + 1)
    # average ranks of ties
    sorted_values = flat[order]
    _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    if np.any(counts > 1):
        for start, count in zip(first[counts > 1], counts[counts > 1], strict=True):
            idx = order[start : start + count]
            ranks[idx] = ranks[idx].mean()
    z = np.asarray(ndtri((ranks - 0.375) / (flat.size + 0.25)))
    return z.reshape(x.shape)


def _rhat(x: np.ndarray) -> float:
    """Classic potential scale reduction of chains ``x`` (no splitting)."""
    m, n = x.shape
    means = x.mean(axis=1)
    within = x.var(axis=1, ddof=1).mean()
    between = n * means.var(ddof=1)
    if not within > 0:
        return float("nan")
    var_plus = (n - 1) / n * within + between / n
    return float(np.sqrt(var_plus / within))


def rhat(x: np.ndarray) -> float:
    """Rank-normalised split R-hat: the larger of the bulk and folded values."""
    x = np.asarray(x, dtype=float)
    if x.shape[1] < 4:
        return float("nan")
    split = _split(x)
    bulk = _rhat(_rank_normalise(split))
    folded = _rhat(_rank_normalise(np.abs(split - np.median(split))))
    return max(bulk, folded)


def _ess(x: np.ndarray) -> float:
    if np.ptp(x) == 0:
        return float("nan")
    return float(effective_sample_size(x))


def ess_bulk(x: np.ndarray) -> float:
    """Bulk ESS: ESS of the rank-normalised split chains."""
    x = np.asarray(x, dtype=float)
    return _ess(_rank_normalise(_split(x)))


def ess_tail(x: np.ndarray) -> float:
    """Tail ESS: the smaller ESS of the 5% and 95% quantile indicators."""
    x = np.asarray(x, dtype=float)
    split = _split(x)
    out = []
    for q in (0.05, 0.95):
        indicator = (split <= np.quantile(split, q)).astype(float)
        out.append(_ess(indicator))
    return float(min(out))
