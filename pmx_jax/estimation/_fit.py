"""Population fit: minimise NONMEM's OFV over THETA, OMEGA and SIGMA (the
"estimation step" of ``$ESTIMATION METHOD=1 INTERACTION`` and friends).

The outer problem is a quasi-Newton (BFGS, :class:`optimistix.BFGS` with a
backtracking Armijo line search) minimisation of :func:`._objective.ofv` over the
unconstrained free parameters (:meth:`Model.to_unconstrained`: bounded THETAs
on a logit/log scale, OMEGA blocks as log variances or log-Cholesky vectors;
fixed parameters are not in the vector, so they stay fixed).

Design notes (why it is built this way):

- The driver is a Python loop over one jitted BFGS step (a pure function of the
  solver state), so progress can be printed and the EBEs passed on between steps.
  Every argument that changes between steps is an array: the step compiles once.
- Every OFV evaluation warm-starts the EBE search (the inner Newton problem) from
  the EBEs of the last accepted point.  The warm start is an argument of the
  objective, not differentiated: the OFV gradient is the implicit (envelope)
  derivative of :func:`._objective.ofv`, whatever the starting point of the inner
  search.
- The objective is divided by a constant fixed at the initial estimates (the
  largest absolute gradient component there, at least 1).  BFGS starts from the
  identity Hessian: unscaled, its first step would be as long as the OFV gradient
  (hundreds of units of log-variance), which the line search then has to halve a
  dozen times through absurd parameter values.  Scaling changes neither the
  minimiser nor the BFGS iterates after the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from ..data._dataset import Dataset
from ..model._model import Model
from ..simulation._core import Prepared
from ._objective import METHODS, Method, _population_ofv
from ._problem import Problem, make_problem
from ._result import FitResult

# Consecutive rejected line-search trials after which the search has failed: the
# step has been halved to 2**-40 of the quasi-Newton step without any decrease.
_MAX_REJECTED = 40


class _Objective(eqx.Module):
    """The scaled OFV as a function of the unconstrained parameter vector.

    ``args = (model, problem, ebe_init, scale, max_steps, tolerance)``: the
    model supplies fixed parameters and the structure, ``ebe_init`` the warm
    start of the EBE search (in the problem's layout).  Returns
    ``(OFV / scale, (OFV, EBEs, EBE status))``.
    """

    unravel: Any = eqx.field(static=True)

    def __call__(self, y: Array, args: tuple) -> tuple[Array, tuple]:
        model, problem, ebe_init, scale, max_steps, tolerance = args
        fitted = model.from_unconstrained(self.unravel(y))
        result = _population_ofv(
            fitted, problem, jax.lax.stop_gradient(ebe_init), max_steps, tolerance
        )
        # An infinite OFV (a failed subject) must read as "worse" to the line
        # search, never as NaN arithmetic inside the Armijo test.
        value = jnp.where(jnp.isfinite(result.ofv), result.ofv, jnp.inf)
        steps = jnp.stack([jnp.max(result.n_steps), jnp.sum(result.n_steps)])
        return value / scale, (value, result.ebes, result.status, steps)


@eqx.filter_jit
def _evaluate(objective: _Objective, y: Array, args: tuple):
    """OFV, EBEs and status without a gradient (a model with nothing to estimate)."""
    return objective(y, args)[1]


@eqx.filter_jit
def _bfgs_init(solver, objective, y, args):
    f_struct, aux_struct = jax.eval_shape(objective, y, args)
    return solver.init(objective, y, args, {}, f_struct, aux_struct, frozenset())


@eqx.filter_jit
def _bfgs_step(solver, objective, y, args, state):
    """One BFGS evaluation: a line-search trial, accepted or not.  Returns the
    last accepted point, the new state, and the accepted OFV, EBEs, EBE status
    and gradient (of the scaled objective)."""
    y, state, _ = solver.step(objective, y, args, {}, state, frozenset())
    value, ebes, status, steps = state.aux
    return y, state, value, ebes, status, state.f_info.grad, steps


def fit(
    model: Model,
    data: Dataset | Prepared | Problem,
    method: Method = "focei",
    *,
    max_iterations: int = 500,
    gradient_tolerance: float = 1e-3,
    ofv_tolerance: float = 1e-10,
    progress: bool | None = None,
    print_every: int = 10,
    callback: Callable[[dict, Model], Any] | None = None,
    ebe_max_steps: int = 100,
    ebe_tolerance: float = 1e-12,
    covariance: str | None = "sandwich",
    chunk_size: int | None = None,
) -> FitResult:
    """Estimate the population parameters of ``model`` on ``data`` by
    maximum likelihood (FO, FOCE, FOCEI or Laplace approximation).

    Args:
        model: the population model; its current values are the initial
            estimates, and its fixed THETAs/OMEGAs stay fixed.
        data: a Dataset (:func:`pmx_jax.read_nonmem`) or ``prepare(model, data)``.
        method: ``"fo"``, ``"foce"``, ``"focei"`` (default) or ``"laplace"``.
        max_iterations: limit on accepted quasi-Newton iterations.
        gradient_tolerance: converged when every component of the OFV gradient
            with respect to the unconstrained parameters is below this (OFV units).
        ofv_tolerance: also converged when two consecutive accepted iterations
            each change the OFV by less than this, relative to ``max(1, |OFV|)``.
        progress: print iteration, OFV and gradient norm every ``print_every``
            iterations (compile time is printed separately); ``None`` (default):
            only for long fits, from the first iteration that ends more than
            10 s after the start.
        callback: called after every OFV evaluation of the search with the
            evaluation's entry of ``FitResult.trace`` (plus ``iteration``, the
            accepted iterations so far, and ``gradient_max`` at the last
            accepted point) and the model at the last accepted point: to log
            or checkpoint a long fit (e.g. save ``model.estimates()``).
        ebe_max_steps, ebe_tolerance: the inner (EBE) Newton search, as in
            :func:`pmx_jax.estimation.ofv`.
        covariance: the covariance step run after the fit
            (:func:`pmx_jax.estimation.covariance_step`; standard errors in
            ``estimates()``): ``"sandwich"`` (default, NONMEM's ``R^-1 S R^-1``),
            ``"r"`` or ``"s"``; ``None`` skips it (``FitResult.compute_covariance()``
            runs it later).  It is skipped, with a message, when the fit did not
            converge.
        chunk_size: subjects evaluated at once; memory is proportional to it
            (default: all up to 65,536, chunks of 65,536 above).  Subjects are
            split over all local devices (``jax.devices()``; several hosts after
            ``jax.distributed.initialize()``).

    Returns:
        a :class:`FitResult`: the fitted model, OFV, AIC/BIC, EBEs, shrinkage,
        standard errors, the per-record table (``result.table()``) and whether
        (and why not) the minimisation converged.  For FO, the EBEs are
        computed after the fit at the final estimates (NONMEM's POSTHOC).

    Example:
        >>> # result = pmx.fit(pmx.library.Theophylline(), data, "focei")
        >>> # print(result)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    started = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else None
    problem = make_problem(model, data, method, chunk_size=chunk_size)
    subjects = problem.source.subjects
    dtype = problem.dtype
    layout = problem.layout
    is_obs = np.asarray(subjects.is_obs)
    cens = np.asarray(subjects.cens)

    y0, unravel = ravel_pytree(model.to_unconstrained())
    y0 = jnp.asarray(y0, dtype)
    objective = _Objective(unravel)
    ebes = problem.place(jnp.zeros((subjects.n_subjects, layout.size), dtype))
    options = (jnp.asarray(ebe_max_steps, jnp.int32), jnp.asarray(ebe_tolerance, dtype))

    def arguments(ebes, scale):
        return (model, problem, ebes, jnp.asarray(scale, dtype), *options)

    solver = optx.BFGS(rtol=0.0, atol=0.0)
    if y0.size:
        # Initial estimates: OFV, EBEs and the gradient that fixes the scale.  The
        # first BFGS step only evaluates them: reusing it (rather than a separate
        # value-and-gradient function) saves a compilation of the objective.
        state = _bfgs_init(solver, objective, y0, arguments(ebes, 1.0))
        *_, ofv0, ebes, status, grad, _ = _bfgs_step(
            solver, objective, y0, arguments(ebes, 1.0), state
        )
    else:
        ofv0, ebes, status, _ = _evaluate(objective, y0, arguments(ebes, 1.0))
        grad = np.zeros(0)
    grad = np.asarray(grad)
    ofv_value = ofv0_value = float(ofv0)
    scale = max(1.0, float(np.max(np.abs(grad)))) if grad.size else 1.0
    compile_seconds = time.perf_counter() - started
    verbose = bool(progress)
    if verbose:
        print(
            f"pmx fit ({method}): {subjects.n_subjects} subjects, {y0.size} parameters; "
            f"initial OFV {ofv_value:.6f} ({compile_seconds:.1f} s incl. compilation)"
        )

    y = y0
    gnorm = float(np.max(np.abs(grad))) if grad.size else 0.0
    iterations = n_evaluations = 0
    converged, message = False, ""
    trace: list[dict] = []  # one entry per OFV evaluation after the initial one
    if not np.isfinite(ofv_value):
        message = "OFV is not finite at the initial estimates"
    elif y0.size == 0 or gnorm <= gradient_tolerance:
        converged, message = True, "gradient below tolerance at the initial estimates"
    elif max_iterations == 0:
        message = "maximum number of iterations (0) reached"
    else:
        state = _bfgs_init(solver, objective, y0, arguments(ebes, scale))
        rejected = small_changes = 0
        last_ofv = ofv_value
        n_accepted = 0
        while True:
            tic = time.perf_counter()
            y, state, value, new_ebes, new_status, grad, steps = _bfgs_step(
                solver, objective, y, arguments(ebes, scale), state
            )
            n_evaluations += 1
            steps = np.asarray(steps)
            trace.append(
                dict(
                    evaluation=n_evaluations,
                    ofv=float(value),
                    accepted=int(state.num_accepted_steps) > n_accepted,
                    ebe_steps_max=int(steps[0]),
                    ebe_steps_mean=float(steps[1]) / problem.n_padded,
                    seconds=time.perf_counter() - tic,
                )
            )
            if callback is not None:
                accepted_iterations = max(int(state.num_accepted_steps) - 1, 0)
                info = dict(
                    trace[-1],
                    iteration=accepted_iterations,
                    gradient_max=float(jnp.max(jnp.abs(grad))) * scale,
                )
                callback(info, model.from_unconstrained(unravel(y)))
            if int(state.num_accepted_steps) <= n_accepted:
                rejected += 1
                if rejected >= _MAX_REJECTED:
                    message = (
                        "line search failed: no OFV decrease along the quasi-Newton "
                        f"direction after {rejected} trials (gradient max {gnorm:.3g})"
                    )
                    break
                continue
            rejected = 0
            n_accepted = int(state.num_accepted_steps)
            iterations = n_accepted - 1
            if iterations == 0:
                # optimistix's first step only evaluates the initial estimates.
                continue
            ebes, status = new_ebes, new_status
            ofv_value = float(value)
            gnorm = float(jnp.max(jnp.abs(grad))) * scale
            if progress is None and not verbose and time.perf_counter() - started > 10.0:
                verbose = True
                print(
                    f"pmx fit ({method}): {subjects.n_subjects} subjects, {y0.size} "
                    f"parameters; initial OFV {ofv0_value:.6f} "
                    f"({compile_seconds:.1f} s incl. compilation)"
                )
            if verbose and (iterations % print_every == 0 or iterations == 1):
                print(f"  iter {iterations:4d}  OFV {ofv_value:14.6f}  |grad| {gnorm:.3e}")
            if not np.isfinite(ofv_value):
                message = f"OFV became non-finite at iteration {iterations}"
                break
            if gnorm <= gradient_tolerance:
                converged = True
                message = f"gradient below {gradient_tolerance:g} (max |grad| {gnorm:.2e})"
                break
            change = abs(last_ofv - ofv_value) / max(1.0, abs(ofv_value))
            small_changes = small_changes + 1 if change <= ofv_tolerance else 0
            last_ofv = ofv_value
            if small_changes >= 2:
                converged = True
                message = (
                    f"relative OFV change below {ofv_tolerance:g} on two iterations "
                    f"(max |grad| {gnorm:.2e})"
                )
                break
            if iterations >= max_iterations:
                message = (
                    f"maximum number of iterations ({max_iterations}) reached "
                    f"(max |grad| {gnorm:.2e})"
                )
                break

    fitted = model.from_unconstrained(unravel(y))
    if method == "fo" and layout.size:
        # FO needs no EBEs; diagnostics (CWRES, shrinkage) do: the conditional
        # modes at the final estimates, as NONMEM's POSTHOC.
        posthoc = _population_ofv(fitted, problem, ebes, *options, method="focei")
        ebes, status = posthoc.ebes, posthoc.status
    elapsed = time.perf_counter() - started
    if verbose:
        state_word = "converged" if converged else "NOT converged"
        print(f"  {state_word}: {message}; OFV {ofv_value:.6f} in {elapsed:.1f} s")
    n_normal = int(np.sum(is_obs & (cens == 0)))
    ids = dataset.ids if dataset is not None else tuple(range(1, subjects.n_subjects + 1))
    result = FitResult(
        model=fitted,
        method=method,
        ofv=ofv_value,
        n_subjects=subjects.n_subjects,
        n_observations=n_normal,
        n_censored=int(np.sum(is_obs & (cens != 0))),
        iterations=iterations,
        n_evaluations=n_evaluations,
        converged=converged,
        message=message,
        ebe_matrix=np.asarray(problem.take(ebes)),
        ebe_status=np.asarray(problem.take(status)),
        ids=ids,
        gradient_max=gnorm,
        elapsed_seconds=elapsed,
        compile_seconds=compile_seconds,
    )
    result.trace = pd.DataFrame(
        trace,
        columns=["evaluation", "ofv", "accepted", "ebe_steps_max", "ebe_steps_mean", "seconds"],
    )
    result._problem = problem
    result._dataset = dataset
    if covariance is not None:
        if converged:
            result.compute_covariance(
                covariance, ebe_max_steps=ebe_max_steps, ebe_tolerance=ebe_tolerance
            )
            if verbose:
                print(f"  covariance step: {result.covariance.message}")
        else:
            result.covariance_note = "skipped: the minimisation did not converge"
            if verbose:
                print(f"  covariance step {result.covariance_note}")
    return result
