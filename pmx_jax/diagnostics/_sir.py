"""Parameter uncertainty by sampling importance resampling (SIR; Dosne,
Bergstrand, Harling and Karlsson, J Pharmacokinet Pharmacodyn 2016).

Parameter vectors are drawn from a multivariate normal (or t) proposal
centred at the estimates with the covariance step's matrix on the estimation
(unconstrained) scale, weighted by ``exp(-OFV/2)`` over the proposal density,
and a subset is drawn without replacement with probabilities proportional to
the weights.  As in Dosne et al., the target is the likelihood with a flat
prior on NONMEM's scale (THETA, OMEGA variances): the weight carries the
Jacobian of the map from the estimation scale, whose bounded THETAs and
positive-definite OMEGAs keep every draw inside the parameter space.  The OFVs
are evaluated in fixed-size batches (``vmap`` over parameter vectors, one
compilation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from scipy import stats

from .._progress import _Progress
from ..likelihood import population_ofv
from ..model import natural_names, natural_vector
from ._percentiles import _percentile_table
from ._sir_kernel import importance_resample


def chi2_quantile(probability: np.ndarray, df: float) -> np.ndarray:
    """Quantiles of chi-square(``df``) at ``probability`` (a 1-D array): the
    reference distribution of dOFV for ``df`` estimated parameters."""
    return np.atleast_1d(stats.chi2.ppf(np.asarray(probability, dtype=float), df))


class _BatchOFV(eqx.Module):
    """The OFV at a batch of unconstrained parameter vectors (``vmap``)."""

    unravel: Any = eqx.field(static=True)

    def __call__(self, ys, model, problem, ebe_init, max_steps, tolerance):
        def one(y):
            result = population_ofv(
                model.from_unconstrained(self.unravel(y)), problem, ebe_init, max_steps, tolerance
            )
            return result.ofv, jnp.sum(problem.take(result.status) != 0)

        return jax.vmap(one)(ys)


class _Natural(eqx.Module):
    """NONMEM-scale parameter vectors at a batch of unconstrained vectors."""

    unravel: Any = eqx.field(static=True)

    def __call__(self, ys, model):
        return jax.vmap(lambda y: natural_vector(model.from_unconstrained(self.unravel(y))))(ys)


class _LogJacobian(eqx.Module):
    """``log |det d natural / du|`` at a batch of unconstrained vectors."""

    unravel: Any = eqx.field(static=True)

    def __call__(self, ys, model):
        def natural(y):
            return natural_vector(model.from_unconstrained(self.unravel(y)))

        def one(y):
            return jnp.linalg.slogdet(jax.jacfwd(natural)(y))[1]

        return jax.vmap(one)(ys)


@eqx.filter_jit
def _call(fn, *args):
    return fn(*args)


class SIRResult:
    """Sampling importance resampling of the parameter uncertainty.

    Attributes:
        samples: the resampled parameter vectors on NONMEM's scale (one row per
            resample, in the order drawn) with their ``dofv``.
        proposal: every proposal draw: parameters, ``dofv`` (OFV - OFV at the
            estimates), ``log_weight``, ``weight`` (normalised) and ``resampled``.
        names, estimate: parameters and estimates (NONMEM's scale).
        covariance_ci: the covariance step's Wald table (for comparison).
        n_parameters: estimated parameters (the chi-square df of the dOFV check).
        effective_sample_size: ``1 / sum w^2`` of the proposal weights.
        n_nonfinite: proposal draws with a non-finite OFV (weight 0).
        n_ebe_failures: EBE searches that did not converge, over all draws.
        ofv: the OFV at the estimates, as evaluated here.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def summary(self, level: float | None = None) -> pd.DataFrame:
        """Per parameter: estimate, SIR mean/median/SE/percentile CI, and the
        covariance step's SE and Wald CI (``cov_se``, ``cov_ci_lower/upper``)."""
        level = level or self.level
        values = self.samples[list(self.names)].to_numpy(dtype=float)
        table = _percentile_table(values, self.names, self.estimate, level)
        z = float(stats.norm.ppf(0.5 + 0.5 * level))  # two-sided Wald z-value
        cov_se = self.covariance_se
        table["cov_se"] = cov_se
        table["cov_ci_lower"] = self.estimate - z * cov_se
        table["cov_ci_upper"] = self.estimate + z * cov_se
        return table

    def ci(self, level: float | None = None) -> pd.DataFrame:
        return self.summary(level)[["parameter", "ci_lower", "ci_upper"]]

    def dofv_table(self, probabilities: Sequence[float] | None = None) -> pd.DataFrame:
        """Dosne's diagnostic: quantiles of dOFV of the proposal draws and of the
        resamples next to those of chi-square(n_parameters).  When the resampled
        dOFVs follow the chi-square, the uncertainty is consistent with the
        likelihood; proposal quantiles far above it mean a proposal too wide."""
        prob = np.asarray(
            probabilities if probabilities is not None else np.arange(0.05, 1.0, 0.05)
        )
        finite = self.proposal["dofv"].to_numpy()
        finite = finite[np.isfinite(finite)]
        return pd.DataFrame(
            dict(
                probability=prob,
                chi_square=chi2_quantile(prob, self.n_parameters),
                proposal=np.quantile(finite, prob),
                resampled=np.quantile(self.samples["dofv"].to_numpy(), prob),
            )
        )

    def __str__(self) -> str:
        head = (
            f"SIR: {len(self.proposal)} proposal draws, {len(self.samples)} resampled; "
            f"effective sample size {self.effective_sample_size:.0f}, "
            f"{self.n_nonfinite} non-finite OFV(s) ({self.elapsed_seconds:.1f} s)"
        )
        return head + "\n" + self.summary().to_string(index=False)

    __repr__ = __str__


def sir(
    fit: Any,
    n_samples: int = 1000,
    n_resamples: int | None = None,
    *,
    seed: int = 0,
    proposal_inflation: float = 1.0,
    proposal_df: float | None = None,
    prior_scale: str = "natural",
    batch_size: int = 50,
    level: float = 0.95,
    progress: bool = True,
    ebe_max_steps: int = 100,
    ebe_tolerance: float = 1e-12,
) -> SIRResult:
    """Sampling importance resampling of the parameter uncertainty (Dosne et al. 2016).

    Args:
        fit: a :class:`~pmx_jax.estimation.FitResult` with a successful
            covariance step (``fit(..., covariance="sandwich")`` or
            ``fit.compute_covariance()``).
        n_samples: proposal draws (OFV evaluations).
        n_resamples: parameter vectors kept, drawn without replacement with
            probability proportional to the importance weights (default
            ``n_samples // 5``, the ratio Dosne et al. use).
        seed: seed of the proposal draws and of the resampling.
        proposal_inflation: factor on the proposal covariance (> 1 widens it).
        proposal_df: Student-t proposal with these degrees of freedom (heavier
            tails); ``None`` (default): multivariate normal.
        prior_scale: ``"natural"`` (default): the target is the likelihood with
            a flat prior on NONMEM's scale (THETA, OMEGA variances), as in Dosne
            et al.; ``"unconstrained"``: flat on the estimation scale.
        batch_size: parameter vectors per OFV evaluation (``vmap``; the last
            batch is padded, so one compilation serves all).
        level: default confidence level of :meth:`SIRResult.summary`.
        progress: print a progress line on stderr.
        ebe_max_steps, ebe_tolerance: the EBE search (warm-started at the fit's EBEs).

    Returns:
        a :class:`SIRResult`.

    Example:
        >>> # result = pmx.fit(model, data, covariance="sandwich")
        >>> # s = pmx.diagnostics.sir(result, n_samples=2000, n_resamples=500)
        >>> # s.summary(); s.dofv_table()
    """
    started = time.perf_counter()
    cov = getattr(fit, "covariance", None)
    if cov is None or not getattr(cov, "ok", False):
        reason = getattr(fit, "covariance_note", "not computed") if cov is None else cov.message
        raise ValueError(
            f"SIR needs a successful covariance step for its proposal (here: {reason}); run "
            "pmx.fit(..., covariance='sandwich') or fit.compute_covariance() first"
        )
    if prior_scale not in ("natural", "unconstrained"):
        raise ValueError(f"prior_scale must be 'natural' or 'unconstrained', got {prior_scale!r}")
    if proposal_inflation <= 0:
        raise ValueError(f"proposal_inflation must be > 0, got {proposal_inflation}")
    n_resamples = max(1, n_samples // 5) if n_resamples is None else int(n_resamples)
    if not 1 <= n_resamples <= n_samples:
        raise ValueError(f"n_resamples must be in 1..n_samples ({n_samples}), got {n_resamples}")
    problem = fit._problem
    model = fit.model
    y_hat, unravel = ravel_pytree(model.to_unconstrained())
    dtype = problem.dtype
    mean = np.asarray(y_hat, dtype=float)
    cov_u = np.asarray(cov.covariance_unconstrained, dtype=float)
    if cov_u.shape != (mean.size, mean.size):
        raise ValueError(
            f"the covariance step has {cov_u.shape[0]} parameters, the model {mean.size}"
        )
    names = natural_names(model)
    ebe_init = problem.place(jnp.asarray(fit._ebe_matrix, dtype))
    options = (jnp.asarray(ebe_max_steps, jnp.int32), jnp.asarray(ebe_tolerance, dtype))
    batch_ofv, log_jacobian = _BatchOFV(unravel), _LogJacobian(unravel)
    batch_size = max(1, min(int(batch_size), n_samples + 1))
    evaluated: dict[str, Any] = {}

    def log_target(samples: np.ndarray) -> np.ndarray:
        # The estimates first (the reference OFV, evaluated exactly as the
        # draws), then the draws, padded with the estimates to whole batches.
        points = np.concatenate([mean[None], samples])
        n_batches = -(-points.shape[0] // batch_size)
        padding = np.repeat(mean[None], n_batches * batch_size - points.shape[0], axis=0)
        padded = np.concatenate([points, padding])
        ofvs, log_jac, failures = [], [], 0
        bar = _Progress("SIR", n_samples, progress)
        for b in range(n_batches):
            ys = jnp.asarray(padded[b * batch_size : (b + 1) * batch_size], dtype)
            values, n_bad = _call(batch_ofv, ys, model, problem, ebe_init, *options)
            ofvs.append(np.asarray(values))
            failures += int(np.sum(np.asarray(n_bad)))
            if prior_scale == "natural":
                log_jac.append(np.asarray(_call(log_jacobian, ys, model)))
            bar.update(min((b + 1) * batch_size - 1, n_samples), "OFV evaluations")
        bar.close()
        ofv_all = np.concatenate(ofvs)[: points.shape[0]]
        dofv = ofv_all[1:] - ofv_all[0]
        jacobian_term = (
            np.concatenate(log_jac)[1 : points.shape[0]]
            if prior_scale == "natural"
            else np.zeros(samples.shape[0])
        )
        evaluated.update(ofv=float(ofv_all[0]), dofv=dofv, failures=failures)
        return -0.5 * dofv + jacobian_term

    draw = importance_resample(
        log_target,
        mean,
        proposal_inflation * cov_u,
        n_samples,
        n_resamples,
        np.random.default_rng(seed),
        df=proposal_df,
    )
    samples, weights, chosen = draw.samples, draw.weights, draw.chosen
    dofv, log_weight = evaluated["dofv"], draw.log_weight
    natural = np.asarray(_call(_Natural(unravel), jnp.asarray(samples, dtype), model))
    proposal = pd.DataFrame(natural, columns=list(names))
    proposal["dofv"] = dofv
    proposal["log_weight"] = np.where(np.isfinite(log_weight), log_weight, -np.inf)
    proposal["weight"] = weights
    proposal["resampled"] = False
    proposal.loc[chosen, "resampled"] = True
    resampled = proposal.loc[chosen, [*names, "dofv"]].reset_index(names="sample")
    estimate = np.asarray(natural_vector(model), dtype=float)
    cov_se = dict(zip(cov.names, cov.se, strict=True))
    return SIRResult(
        samples=resampled,
        proposal=proposal,
        names=names,
        estimate=estimate,
        covariance_se=np.asarray([cov_se.get(n, np.nan) for n in names]),
        n_parameters=mean.size,
        effective_sample_size=float(1.0 / np.sum(weights**2)),
        n_nonfinite=int(np.sum(~np.isfinite(dofv))),
        n_ebe_failures=evaluated["failures"],
        ofv=evaluated["ofv"],
        level=level,
        prior_scale=prior_scale,
        proposal_inflation=proposal_inflation,
        proposal_df=proposal_df,
        seed=seed,
        elapsed_seconds=time.perf_counter() - started,
    )
