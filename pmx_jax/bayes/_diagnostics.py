"""Convergence diagnostics of MCMC draws: rank-normalised split R-hat, bulk
and tail effective sample sizes (Vehtari, Gelman, Simpson, Carpenter and
Buerkner 2021, "Rank-normalization, folding, and localization"), the
definitions of Stan, ArviZ and posterior.

Draws are arrays ``(n_chains, n_draws)``.  The ESS of a set of chains is
computed as ArviZ computes it: the autocorrelations are averaged over chains,
Geyer's initial positive and initial monotone sequences truncate their sum,
and the autocorrelation time is floored at ``1 / log10(n)``, so that
anti-correlated (antithetic) draws give a positive ESS of at most
``n log10(n)`` for ``n`` draws in all.
"""

from __future__ import annotations

import numpy as np
from jax.scipy.special import ndtri
from numpyro.diagnostics import autocovariance


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


def _autocorrelation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time ``tau = 1 + 2 sum_t rho_t`` of chains ``x``.

    ``rho_t`` is the lag-``t`` autocorrelation of the pooled chains (Stan's
    combination of the within-chain autocovariances with the between-chain
    variance).  Summed in pairs ``P_k = rho_2k + rho_2k+1``, which are positive
    and decreasing for a reversible Markov chain (Geyer 1992): the sum stops at
    the first non-positive pair (initial positive sequence) and every pair is
    capped by the one before (initial monotone sequence).
    """
    m, n = x.shape
    # Biased (divided by n) autocovariances, averaged over chains.
    gamma = autocovariance(x, axis=1).mean(axis=0)
    within = gamma[0] * n / (n - 1)
    var_plus = gamma[0] + (x.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    rho = 1.0 - (within - gamma) / var_plus
    rho[0] = 1.0
    if np.any(np.isnan(rho)):
        return float("nan")
    n_pairs = (n - 1) // 2
    pairs = rho[: 2 * n_pairs].reshape(n_pairs, 2).sum(axis=1)
    nonpositive = np.flatnonzero(pairs <= 0.0)
    # The pairs before the first non-positive one (before the last pair when
    # all are positive) enter in full; the even lag of the pair that ends the
    # sequence enters once when positive (Geyer's truncation, as in Stan and
    # ArviZ, which lowers the variance of tau for antithetic chains).
    end = int(nonpositive[0]) if nonpositive.size else max(n_pairs - 1, 0)
    monotone = np.minimum.accumulate(pairs[:end])
    return float(-1.0 + 2.0 * monotone.sum() + max(rho[2 * end], 0.0))


def _ess(x: np.ndarray) -> float:
    """Effective sample size of chains ``x``: ``m n / tau``, ``tau`` at least
    ``1 / log10(m n)``.  NaN when every draw is the same (nothing to estimate)."""
    if np.ptp(x) == 0:
        return float("nan")
    n_total = x.size
    tau = max(_autocorrelation_time(x), 1.0 / np.log10(n_total))
    return float(n_total / tau)


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
