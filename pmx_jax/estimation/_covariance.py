"""The covariance step: standard errors of the population estimates (NONMEM's
``$COVARIANCE``), from the curvature of the OFV and the per-subject scores.

With ``OFV = -2 log L`` (constant aside) and ``u`` the unconstrained free
parameters (:meth:`Model.to_unconstrained`, raveled as by the fit):

``R``
    the Hessian of ``-log L``, i.e. half the Hessian of the OFV;
``S``
    ``sum_i s_i s_i^T`` with the per-subject score ``s_i = 1/2 dOFV_i/du``;
``kind``
    ``"sandwich"`` (NONMEM's default ``R^-1 S R^-1``, nlmixr2's ``"r,s"``),
    ``"r"`` (``R^-1``, NONMEM's ``MATRIX=R``) or ``"s"`` (``S^-1``).

The result is transformed to NONMEM's parametrisation (THETA on its natural
scale, OMEGA as variances and covariances) by the delta method,
``Cov_nat = J Cov_u J^T`` with ``J = d natural / du`` (``jax.jacfwd`` of
:meth:`Model.from_unconstrained`).  SEs are invariant to the scale of ``u``
only to first order, exactly as NONMEM's SEs on its own scale.

How ``R`` is computed (and why not with ``jax.hessian``): the OFV gradient is
exact (the EBEs enter through :func:`._implicit.implicit_ebe`, whose custom JVP
is the implicit-function derivative), but differentiating that rule once more
misses the derivative of the inner Hessian, so forward-over-reverse second
derivatives are *not* exact for FOCE/FOCEI/Laplace.  ``R`` is therefore built
column by column from central differences of the exact per-subject gradient
(EBEs re-solved at every point, warm-started at the fit's EBEs, Newton
tolerance 1e-12; the per-subject gradients are those of the fit's compiled
evaluation, :mod:`._engine`), with step ``h_k = step * max(1, |u_k|)`` (default ``step =
1e-4``: truncation error ``O(h^2)`` ~ 1e-8 relative and gradient noise from the
inner solve ~ 1e-10 / h ~ 1e-6, both far below the 3-digit accuracy of an SE),
then symmetrised.  The same evaluations give ``S`` at no extra cost.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array

from .._results import RESULTS
from .._stored import stored
from ..data._dataset import Dataset
from ..likelihood import METHODS, Prepared, Problem, make_problem
from ..model import natural_names, natural_vector
from ..model._model import Model
from ._engine import Engine


@stored("natural-parameters")
def _natural(to_model, y: Array) -> tuple[Array, Array]:
    """The natural-scale parameters at ``y`` and their Jacobian."""

    def to_natural(y):
        return natural_vector(to_model(y))

    return to_natural(y), jax.jacfwd(to_natural)(y)


CovarianceKind = Literal["sandwich", "r", "s"]
KINDS: tuple[str, ...] = ("sandwich", "r", "s")
_Z95 = 1.959963984540054


class CovarianceError(RuntimeError):
    """The covariance step failed (R or S not positive definite)."""


class CovarianceResult:
    """Standard errors and correlations of the population estimates.

    Attributes:
        kind: ``"sandwich"``, ``"r"`` or ``"s"``.
        names: parameter names, in the order of :meth:`FitResult.estimates`
            (free THETAs, then free OMEGA elements such as ``iiv.cl`` or
            ``iiv.cl,v`` for a covariance).
        estimate: estimates on NONMEM's scale (THETA natural, OMEGA variances).
        covariance: their variance-covariance matrix (NaN when the step failed).
        se, rse: standard errors and relative SEs in percent (``100 se/|est|``).
        ci_lower, ci_upper: Wald 95% intervals ``estimate -+ 1.96 se``.
        correlation: correlation matrix of the estimates.
        eigenvalues: eigenvalues of ``correlation`` (ascending), as NONMEM prints.
        condition_number: largest / smallest eigenvalue of ``correlation``
            (NONMEM's convention; the condition number of ``R`` itself depends
            on the parameter scale).
        r_matrix, s_matrix: ``R`` (Hessian of ``-log L``) and ``S`` on the
            unconstrained scale; ``covariance_unconstrained``: the chosen
            inverse/sandwich on that scale; ``jacobian``: ``d natural / du``.
        ok: whether the step succeeded; ``status``: a :class:`pmx_jax.RESULTS`
            member (``successful``, ``r_not_positive_definite``,
            ``s_not_positive_definite`` or ``nonfinite_gradient``);
            ``message``: what went wrong otherwise (which parameters span the
            non-positive-definite direction).
        elapsed_seconds: wall time of the step.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def table(self) -> pd.DataFrame:
        """One row per parameter: estimate, se, rse (%), 95% CI."""
        return pd.DataFrame(
            dict(
                parameter=list(self.names),
                estimate=self.estimate,
                se=self.se,
                rse=self.rse,
                ci_lower=self.ci_lower,
                ci_upper=self.ci_upper,
            )
        )

    def correlation_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.correlation, index=list(self.names), columns=list(self.names))

    def __str__(self) -> str:
        head = f"Covariance step ({_LABELS[self.kind]}): " + (
            f"condition number {self.condition_number:.4g}" if self.ok else self.message
        )
        return head + "\n" + self.table().to_string(index=False)

    __repr__ = __str__


_LABELS = dict(sandwich="sandwich R^-1 S R^-1", r="R^-1", s="S^-1")


def _dominant(vector: np.ndarray, names: tuple[str, ...], k: int = 3) -> str:
    order = np.argsort(-np.abs(vector))[:k]
    return ", ".join(f"{names[i]} ({vector[i]:+.2f})" for i in order if abs(vector[i]) > 0.05)


def covariance_step(
    fit_or_model: Any,
    data: Dataset | Prepared | Problem | None = None,
    method: str | None = None,
    *,
    ebes: Array | None = None,
    kind: CovarianceKind = "sandwich",
    step: float = 1e-4,
    ebe_max_steps: int = 100,
    ebe_tolerance: float = 1e-12,
    throw: bool = False,
    chunk_size: int | None = None,
) -> CovarianceResult:
    """Standard errors of the population estimates (NONMEM's covariance step).

    Args:
        fit_or_model: a :class:`FitResult` of :func:`pmx_jax.fit` (data, method
            and EBEs are taken from it), or a model at its final estimates.
        data, method, ebes: with a model: the data (Dataset or prepared), the
            estimation method and a warm start for the EBEs (``(n_sub, n_b)``).
        kind: ``"sandwich"`` (default, NONMEM's and nlmixr2's default
            ``R^-1 S R^-1``), ``"r"`` (``R^-1``) or ``"s"`` (``S^-1``).
        step: relative central-difference step of the gradient for ``R``
            (see the module notes).
        ebe_max_steps, ebe_tolerance: the inner EBE search.
        throw: raise :class:`CovarianceError` instead of returning a result
            flagged ``ok=False`` when a matrix is not positive definite.
        chunk_size: subjects evaluated at once (as in :func:`pmx_jax.fit`).

    Returns:
        a :class:`CovarianceResult`.
    """
    started = time.perf_counter()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(fit_or_model, Model):
        model = fit_or_model
        if data is None or method is None:
            raise ValueError("covariance_step(model, data, method): data and method are needed")
    else:  # a FitResult
        model = fit_or_model.model
        method = method or fit_or_model.method
        if data is None:
            data = getattr(fit_or_model, "_problem", None)
            if data is None:
                raise ValueError("this FitResult keeps no data: pass data=")
        if ebes is None:
            ebes = fit_or_model._ebe_matrix
    if method == "saem":
        raise ValueError(
            "a SAEM fit's covariance matrix comes from Louis' principle (fit.covariance); "
            "for the linearised route, covariance_step(fit.model, data, 'focei' or 'laplace')"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    problem = make_problem(model, data, method, chunk_size=chunk_size)
    dtype = problem.dtype
    shape = (problem.n_subjects, problem.layout.size)
    ebe_init = jnp.zeros(shape, dtype) if ebes is None else jnp.asarray(ebes, dtype)
    if ebe_init.shape != shape:
        raise ValueError(f"ebes must have shape {shape}, got {ebe_init.shape}")
    ebe_init = problem.place(ebe_init)

    # The fit's own compiled evaluation (:mod:`._engine`): per-subject
    # gradients from one reverse pass, EBEs warm-started at the fit's.
    engine = Engine(model, problem, ebe_max_steps, ebe_tolerance)
    y0 = engine.y0
    n = y0.size
    names = natural_names(model)

    def scores(y):
        evaluation = engine.at(y, ebe_init)
        status = problem.take(evaluation.result.status)
        return np.asarray(problem.take(evaluation.scores)), np.asarray(status)

    grad_i, status = scores(y0)
    # Score of subject i is 1/2 dOFV_i/du (OFV = -2 log L).
    s_matrix = 0.25 * grad_i.T @ grad_i
    hess_ofv = np.zeros((n, n))
    for k in range(n):
        h = step * max(1.0, abs(y0[k]))
        up, down = y0.copy(), y0.copy()
        up[k] += h
        down[k] -= h
        g_up = scores(up)[0].sum(axis=0)
        g_down = scores(down)[0].sum(axis=0)
        hess_ofv[:, k] = (g_up - g_down) / (2.0 * h)
    hess_ofv = 0.5 * (hess_ofv + hess_ofv.T)
    r_matrix = 0.5 * hess_ofv

    estimate, jacobian = (np.asarray(a) for a in _natural(engine.to_model, jnp.asarray(y0)))

    ok, message, outcome = True, "ok", RESULTS.successful
    if np.any(~np.isfinite(grad_i)) or np.any(~np.isfinite(hess_ofv)):
        ok, message = False, "non-finite gradient (an EBE search failed near the estimates)"
        outcome = RESULTS.nonfinite_gradient
    needs = dict(sandwich=("R",), r=("R",), s=("S",))[kind]
    if ok:
        for label, matrix in (("R", r_matrix), ("S", s_matrix)):
            if label not in needs:
                continue
            values, vectors = np.linalg.eigh(matrix)
            if values[0] <= 1e-12 * max(1.0, abs(values[-1])):
                direction = jacobian @ vectors[:, 0]
                direction = direction / max(np.max(np.abs(direction)), 1e-300)
                ok = False
                outcome = RESULTS[f"{label.lower()}_not_positive_definite"]
                message = (
                    f"{label} matrix is not positive definite (smallest eigenvalue "
                    f"{values[0]:.3g}); parameters most involved: {_dominant(direction, names)}"
                )
                break
    if ok:
        if kind == "r":
            cov_u = np.linalg.inv(r_matrix)
        elif kind == "s":
            cov_u = np.linalg.inv(s_matrix)
        else:
            r_inv = np.linalg.inv(r_matrix)
            cov_u = r_inv @ s_matrix @ r_inv
        cov_u = 0.5 * (cov_u + cov_u.T)
    else:
        if throw:
            raise CovarianceError(message)
        cov_u = np.full((n, n), np.nan)
    n_bad = int(np.sum(status != 0))
    if ok and n_bad:
        message = f"ok ({n_bad} subject(s) with a non-converged EBE at the estimates)"
    return natural_scale_result(
        kind, names, estimate, jacobian, cov_u, r_matrix, s_matrix,
        ok=ok, status=outcome, message=message, elapsed_seconds=time.perf_counter() - started,
    )  # fmt: skip


def natural_scale_result(
    kind: str,
    names: tuple[str, ...],
    estimate: np.ndarray,
    jacobian: np.ndarray,
    cov_u: np.ndarray,
    r_matrix: np.ndarray,
    s_matrix: np.ndarray,
    *,
    ok: bool,
    status: RESULTS,
    message: str,
    elapsed_seconds: float,
) -> CovarianceResult:
    """A :class:`CovarianceResult` from the covariance on the unconstrained
    scale ``cov_u``: NONMEM's scale by the delta method (``J cov_u J^T``),
    SEs, RSEs, Wald intervals, correlations and their eigenvalues (NaN when
    the step failed)."""
    covariance = jacobian @ cov_u @ jacobian.T
    se = np.sqrt(np.diagonal(covariance))
    with np.errstate(divide="ignore", invalid="ignore"):
        rse = 100.0 * se / np.abs(estimate)
        correlation = covariance / np.outer(se, se)
    if ok:
        eigenvalues = np.linalg.eigvalsh(correlation)
        condition_number = float(eigenvalues[-1] / eigenvalues[0])
    else:
        eigenvalues = np.full(len(names), np.nan)
        condition_number = float("nan")
    return CovarianceResult(
        kind=kind,
        names=names,
        estimate=estimate,
        covariance=covariance,
        se=se,
        rse=rse,
        ci_lower=estimate - _Z95 * se,
        ci_upper=estimate + _Z95 * se,
        correlation=correlation,
        eigenvalues=eigenvalues,
        condition_number=condition_number,
        r_matrix=r_matrix,
        s_matrix=s_matrix,
        covariance_unconstrained=cov_u,
        jacobian=jacobian,
        ok=ok,
        status=status,
        message=message,
        elapsed_seconds=elapsed_seconds,
    )
