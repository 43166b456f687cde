"""Population fit: minimise NONMEM's OFV over THETA, OMEGA and SIGMA (the
"estimation step" of ``$ESTIMATION METHOD=1 INTERACTION`` and friends).

The outer problem is a quasi-Newton (BFGS, :class:`optimistix.BFGS` with a
backtracking Armijo line search) minimisation of :func:`pmx_jax.likelihood.ofv` over the
unconstrained free parameters (:meth:`Model.to_unconstrained`: bounded THETAs
on a logit/log scale, OMEGA blocks as log variances or log-Cholesky vectors;
fixed parameters are not in the vector, so they stay fixed).

Design notes (why it is built this way):

- **One objective.**  The OFV a fit reports, at its initial estimates and at
  its end, is the OFV :func:`pmx_jax.ofv` gives for the same model and data:
  each subject's EBE is the lowest mode found from a fixed set of starts
  (``b = 0`` and two prior SDs along each principal axis of OMEGA, see
  :func:`pmx_jax.likelihood.prior_starts`); the iterations also search from
  each subject's current EBE (see below).  It is
  evaluated afresh at the end, not remembered from the search.
- **Warm starts between iterations, a global check at the end.**  The
  iterations search each EBE from the one of the last accepted point (or
  ``b = 0`` where that starts lower): a subject whose individual objective has
  two modes can stay in the worse one, and then the OFV the line search sees
  depends on the path.  So when the search stops, the global search runs at
  the end point; if it lowers the OFV (by more than ``1e-6``), the fit
  continues from there with the new EBEs (a ``check`` row in ``trace``, a
  count in ``restarts``), until the end point is a minimum of the objective
  it reports.
- The driver is a Python loop over one jitted BFGS step (a pure function of the
  solver state), so progress can be printed and the EBEs passed on between steps.
  Every argument that changes between steps is an array: the step compiles once
  (and the global evaluation once).  The warm start is an argument of the
  objective, not differentiated: the OFV gradient is the implicit (envelope)
  derivative of the OFV at the mode found, whatever the starting point.
- The objective is divided by a constant fixed at the initial estimates (the
  largest absolute gradient component there, at least 1).  BFGS starts from the
  identity Hessian: unscaled, its first step would be as long as the OFV gradient
  (hundreds of units of log-variance), which the line search then has to halve a
  dozen times through absurd parameter values.  Scaling changes neither the
  minimiser nor the BFGS iterates after the first.
- **Honest convergence.**  Meeting the gradient test is not enough: a point
  where predictions have underflowed, every eta has shrunk to nothing, a
  parameter sits on a bound, R is singular or a parameter no longer moves the
  OFV is reported as ``RESULTS.suspect_point`` with its reasons
  (:mod:`._suspect`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._results import RESULTS
from ..data._dataset import Dataset
from ..likelihood import (
    METHODS,
    Method,
    OFVResult,
    Prepared,
    Problem,
    check_ebe_search,
    floor_acts,
    make_problem,
    population_ofv,
)
from ..model import natural_names, natural_vector
from ..model._model import Model
from ._covariance import KINDS as COVARIANCE_KINDS
from ._result import FitResult
from ._suspect import Suspicion, point_suspicions

# Consecutive rejected line-search trials after which the search has failed: the
# step has been halved to 2**-40 of the quasi-Newton step without any decrease.
_MAX_REJECTED = 40
# A global EBE search at an end point that lowers the OFV by more than this
# finds other modes: the minimisation continues from there.
_RESTART_DROP = 1e-6

TRACE_COLUMNS = (
    "evaluation",
    "event",
    "ofv",
    "accepted",
    "ebe_steps_max",
    "ebe_steps_mean",
    "seconds",
)


class _Objective(eqx.Module):
    """The scaled OFV as a function of the unconstrained parameter vector.

    ``args = (model, problem, ebe_init, scale, max_steps, tolerance)``: the
    model supplies fixed parameters and the structure, ``ebe_init`` the warm
    start of the EBE search (in the problem's layout).  Returns
    ``(OFV / scale, (OFV, EBEs, EBE status, EBE steps))``.
    """

    unravel: Any = eqx.field(static=True)

    def model(self, y: Array, args: tuple) -> Model:
        return args[0].from_unconstrained(self.unravel(y))

    def __call__(self, y: Array, args: tuple) -> tuple[Array, tuple]:
        _, problem, ebe_init, scale, max_steps, tolerance = args
        result = population_ofv(
            self.model(y, args), problem, jax.lax.stop_gradient(ebe_init), max_steps, tolerance
        )
        # An infinite OFV (a failed subject) must read as "worse" to the line
        # search, never as NaN arithmetic inside the Armijo test.
        value = jnp.where(jnp.isfinite(result.ofv), result.ofv, jnp.inf)
        steps = jnp.stack([jnp.max(result.n_steps), jnp.sum(result.n_steps)])
        return value / scale, (value, result.ebes, result.status, steps)


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


@dataclass
class _Log:
    """Everything the driver records and prints: the trace (one row per OFV
    evaluation), the callback, and progress lines (from here only)."""

    method: str
    n_subjects: int
    n_parameters: int
    n_padded: int
    progress: bool | None
    print_every: int
    callback: Callable[[dict, Model], Any] | None
    started: float = field(default_factory=time.perf_counter)
    rows: list = field(default_factory=list)
    verbose: bool = False
    initial_line: str = ""

    def __post_init__(self) -> None:
        self.verbose = bool(self.progress)

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def initial(self, ofv: float, compile_seconds: float) -> None:
        self.initial_line = (
            f"pmx fit ({self.method}): {self.n_subjects} subjects, {self.n_parameters} "
            f"parameters; initial OFV {ofv:.6f} ({compile_seconds:.1f} s incl. compilation)"
        )
        self.say(self.initial_line)

    def evaluation(
        self, event: str, ofv: float, accepted: bool, steps: Any, seconds: float, **info: Any
    ) -> dict:
        steps = np.asarray(steps)
        row = dict(
            evaluation=len(self.rows) + 1,
            event=event,
            ofv=ofv,
            accepted=accepted,
            ebe_steps_max=int(steps[0]),
            ebe_steps_mean=float(steps[1]) / self.n_padded,
            seconds=seconds,
        )
        self.rows.append(row)
        return row

    def notify(self, row: dict, model: Model, **info: Any) -> None:
        if self.callback is not None:
            self.callback(dict(row, **info), model)

    def iteration(self, iteration: int, ofv: float, gnorm: float) -> None:
        if self.progress is None and not self.verbose:
            if time.perf_counter() - self.started > 10.0:
                self.verbose = True  # a long fit: from now on, say where it is
                self.say(self.initial_line)
        if iteration % self.print_every == 0 or iteration == 1:
            self.say(f"  iter {iteration:4d}  OFV {ofv:14.6f}  |grad| {gnorm:.3e}")

    def trace(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(TRACE_COLUMNS))


@dataclass
class _Run:
    """Where one quasi-Newton run stopped."""

    y: Array
    ebes: Array
    ofv: float
    gnorm: float
    iterations: int
    outcome: RESULTS
    message: str


def _minimise(
    solver,
    objective: _Objective,
    y: Array,
    ebes: Array,
    arguments: Callable[[Array], tuple],
    *,
    ofv: float,
    gnorm: float,
    iterations: int,
    max_iterations: int,
    gradient_tolerance: float,
    ofv_tolerance: float,
    scale: float,
    log: _Log,
) -> _Run:
    """BFGS iterations from ``y`` (warm EBEs ``ebes``) until a stopping rule."""
    state = _bfgs_init(solver, objective, y, arguments(ebes))
    rejected = small_changes = n_accepted = 0
    last_ofv = ofv
    first = True
    while True:
        tic = time.perf_counter()
        y, state, value, new_ebes, _, grad, steps = _bfgs_step(
            solver, objective, y, arguments(ebes), state
        )
        accepted = int(state.num_accepted_steps) > n_accepted
        row = log.evaluation("iteration", float(value), accepted, steps, time.perf_counter() - tic)
        counted = accepted and not first
        log.notify(
            row,
            objective.model(y, arguments(ebes)),
            iteration=iterations + (1 if counted else 0),
            gradient_max=float(jnp.max(jnp.abs(grad))) * scale,
        )
        if first:
            # optimistix's first step only evaluates the starting point.
            first = False
            n_accepted = int(state.num_accepted_steps)
            ebes = new_ebes
            continue
        if not accepted:
            rejected += 1
            if rejected >= _MAX_REJECTED:
                return _Run(
                    y, ebes, ofv, gnorm, iterations, RESULTS.line_search_failed,
                    "line search failed: no OFV decrease along the quasi-Newton direction "
                    f"after {rejected} trials (gradient max {gnorm:.3g})",
                )  # fmt: skip
            continue
        rejected = 0
        n_accepted = int(state.num_accepted_steps)
        iterations += 1
        ebes = new_ebes
        ofv = float(value)
        gnorm = float(jnp.max(jnp.abs(grad))) * scale
        log.iteration(iterations, ofv, gnorm)
        if not np.isfinite(ofv):
            return _Run(
                y, ebes, ofv, gnorm, iterations, RESULTS.nonfinite_ofv,
                f"OFV became non-finite at iteration {iterations}",
            )  # fmt: skip
        if gnorm <= gradient_tolerance:
            return _Run(
                y, ebes, ofv, gnorm, iterations, RESULTS.successful,
                f"gradient below {gradient_tolerance:g} (max |grad| {gnorm:.2e})",
            )  # fmt: skip
        change = abs(last_ofv - ofv) / max(1.0, abs(ofv))
        small_changes = small_changes + 1 if change <= ofv_tolerance else 0
        last_ofv = ofv
        if small_changes >= 2:
            return _Run(
                y, ebes, ofv, gnorm, iterations, RESULTS.successful,
                f"relative OFV change below {ofv_tolerance:g} on two iterations "
                f"(max |grad| {gnorm:.2e})",
            )  # fmt: skip
        if iterations >= max_iterations:
            return _Run(
                y, ebes, ofv, gnorm, iterations, RESULTS.max_iterations,
                f"maximum number of iterations ({max_iterations}) reached "
                f"(max |grad| {gnorm:.2e})",
            )  # fmt: skip


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
    ebe_init: Array | None = None,
    ebe_search: str = "global",
    ebe_max_steps: int = 100,
    ebe_tolerance: float = 1e-12,
    max_restarts: int = 10,
    starts: int = 1,
    jitter: float = 0.5,
    seed: int = 0,
    covariance: str | None = "sandwich",
    chunk_size: int | None = None,
    laplace_floor: float | None = None,
) -> FitResult:
    """Estimate the population parameters of ``model`` on ``data`` by
    maximum likelihood (FO, FOCE, FOCEI or Laplace approximation).

    Args:
        model: the population model; its current values are the initial
            estimates, and its fixed THETAs/OMEGAs stay fixed.
        data: a Dataset (:func:`pmx_jax.read_nonmem`) or ``prepare(model, data)``.
        method: ``"fo"``, ``"foce"``, ``"focei"`` (default) or ``"laplace"``.
        max_iterations: limit on accepted quasi-Newton iterations (over all
            restarts).
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
        ebe_init: EBEs to start from, ``(n_subjects, n_b)`` (e.g. the
            ``ebe_matrix`` of an earlier fit): an extra start of the global EBE
            search at the initial estimates.
        ebe_search: the objective minimised and reported, as
            ``pmx.ofv(..., ebe_search=...)``: ``"global"`` (default), each
            subject's EBE the lowest mode from ``b = 0`` and two prior SDs
            along every principal axis of OMEGA; ``"local"``, one search from
            ``b = 0`` (NONMEM's definition: a subject with several modes gets
            the one next to ``b = 0``).  Either way the iterations warm-start
            the EBEs and the end point is checked afresh (the fit continues
            when that is lower).  The global search costs about ``2 n_eta + 1``
            local ones at the initial estimates and at each end point
            (``benchmarks/fit.py``: 65 of 103 s of a 10,000-subject FOCEI fit);
            ``"local"`` is for large populations whose individual objectives
            are known to have one mode.
        ebe_max_steps, ebe_tolerance: the inner (EBE) Newton search, as in
            :func:`pmx_jax.estimation.ofv`.
        max_restarts: how often the minimisation may continue after the global
            EBE search at its end point found lower modes.
        starts, jitter, seed: with ``starts > 1``, a multi-start for models
            whose OFV may have several local minima (flip-flop absorption,
            poorly identified mechanistic models): the fit runs from the
            initial estimates and from ``starts - 1`` jittered copies of them
            (every free parameter moved by ``jitter`` times a standard normal
            draw on the unconstrained scale, i.e. multiplied by about
            ``exp(+-jitter)`` where it is positive; drawn from ``seed``), one
            after another with the same compiled programs, and returns the
            lowest converged OFV; ``result.starts`` lists every run.
        covariance: the covariance step run after the fit
            (:func:`pmx_jax.estimation.covariance_step`; standard errors in
            ``estimates()``): ``"sandwich"`` (default, NONMEM's ``R^-1 S R^-1``),
            ``"r"`` or ``"s"``; ``None`` skips it (``FitResult.compute_covariance()``
            runs it later).  It is skipped, with a message, when the
            minimisation did not meet its convergence test.
        chunk_size: subjects evaluated at once; memory is proportional to it
            (default: all up to 65,536, chunks of 65,536 above).  Subjects are
            split over all local devices (``jax.devices()``; several hosts after
            ``jax.distributed.initialize()``).
        laplace_floor: as in :func:`pmx_jax.estimation.ofv` (Laplace only).

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
    if covariance is not None and covariance not in COVARIANCE_KINDS:
        # Checked now: the covariance step runs only after the whole minimisation.
        raise ValueError(
            f"covariance must be one of {COVARIANCE_KINDS} or None, got {covariance!r}"
        )
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    check_ebe_search(ebe_search)
    started = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else None
    problem = make_problem(model, data, method, chunk_size=chunk_size, laplace_floor=laplace_floor)
    settings = dict(
        max_iterations=max_iterations,
        gradient_tolerance=gradient_tolerance,
        ofv_tolerance=ofv_tolerance,
        progress=progress,
        print_every=print_every,
        callback=callback,
        ebe_init=ebe_init,
        ebe_search=ebe_search,
        ebe_max_steps=ebe_max_steps,
        ebe_tolerance=ebe_tolerance,
        max_restarts=max_restarts,
    )
    if starts == 1:
        result = _fit_once(model, problem, dataset, method, **settings)
    else:
        result = _multistart(model, problem, dataset, method, starts, jitter, seed, settings)
    say = print if (progress or (progress is None and result.elapsed_seconds > 10.0)) else None
    if covariance is not None:
        if result.status in (RESULTS.successful, RESULTS.suspect_point):
            result = result.compute_covariance(
                covariance, ebe_max_steps=ebe_max_steps, ebe_tolerance=ebe_tolerance
            )
            message = result.covariance.message
        else:
            result = result.replace(covariance_note="skipped: the minimisation did not converge")
            message = result.covariance_note
        if say:
            say(f"  covariance step: {message}")
    if say:
        for reason in result.suspect:
            say(f"  SUSPECT: {reason}")
    return result.replace(elapsed_seconds=time.perf_counter() - started)


def _multistart(model, problem, dataset, method, starts, jitter, seed, settings) -> FitResult:
    """Fits from the initial estimates and ``starts - 1`` jittered copies;
    the lowest converged OFV wins (the lowest OFV when none converged)."""
    y0, unravel = ravel_pytree(model.to_unconstrained())
    rng = np.random.default_rng(seed)
    rows, results = [], []
    for k in range(starts):
        y = np.asarray(y0) + (jitter * rng.standard_normal(y0.shape) if k else 0.0)
        start = model.from_unconstrained(unravel(jnp.asarray(y, y0.dtype)))
        result = _fit_once(start, problem, dataset, method, **settings)
        results.append(result)
        rows.append(
            dict(
                start=k,
                initial_ofv=float(result.trace["ofv"].iloc[0]),
                ofv=result.ofv,
                status=result.status.label,
                iterations=result.iterations,
                seconds=result.elapsed_seconds,
                **{f"initial {name}": float(value) for name, value in _natural(start).items()},
            )
        )
    converged = [r for r in results if r.converged] or results
    best = min(converged, key=lambda r: r.ofv)
    return best.replace(starts=pd.DataFrame(rows))


def _natural(model: Model) -> dict[str, float]:
    return dict(zip(natural_names(model), np.asarray(natural_vector(model)), strict=True))


def _fit_once(
    model: Model,
    problem: Problem,
    dataset: Dataset | None,
    method: str,
    *,
    max_iterations: int,
    gradient_tolerance: float,
    ofv_tolerance: float,
    progress: bool | None,
    print_every: int,
    callback: Callable[[dict, Model], Any] | None,
    ebe_init: Array | None,
    ebe_search: str,
    ebe_max_steps: int,
    ebe_tolerance: float,
    max_restarts: int,
) -> FitResult:
    """One minimisation from the initial estimates of ``model`` (see :func:`fit`)."""
    started = time.perf_counter()
    subjects = problem.source.subjects
    dtype = problem.dtype
    shape = (problem.n_subjects, problem.layout.size)
    start_ebes = jnp.zeros(shape, dtype) if ebe_init is None else jnp.asarray(ebe_init, dtype)
    if start_ebes.shape != shape:
        raise ValueError(
            f"ebe_init must have shape {shape} (subjects, random effects), got {start_ebes.shape}"
        )

    y0, unravel = ravel_pytree(model.to_unconstrained())
    y0 = jnp.asarray(y0, dtype)
    objective = _Objective(unravel)
    options = (jnp.asarray(ebe_max_steps, jnp.int32), jnp.asarray(ebe_tolerance, dtype))
    scale = 1.0

    def arguments(ebes):
        return (model, problem, ebes, jnp.asarray(scale, dtype), *options)

    log = _Log(
        method, subjects.n_subjects, int(y0.size), problem.n_padded, progress, print_every,
        callback, started,
    )  # fmt: skip

    def fresh_evaluation(y, ebes, event, iteration=0, gradient_max=float("nan"), warm=False):
        tic = time.perf_counter()
        # The call pmx.ofv makes (the same compiled program).
        model_at = objective.model(y, arguments(ebes))
        result = population_ofv(
            model_at, problem, ebes, *options, search=ebe_search, warm_start=warm
        )
        steps = (jnp.max(result.n_steps), jnp.sum(result.n_steps))
        value = float(result.ofv)
        row = log.evaluation(event, value, False, steps, time.perf_counter() - tic)
        log.notify(row, model_at, iteration=iteration, gradient_max=gradient_max)
        return result, value

    # The initial estimates: the OFV that pmx.ofv gives there, and its EBEs.
    fresh = problem.place(jnp.zeros(shape, dtype))  # pmx.ofv's starts alone
    initial, ofv0 = fresh_evaluation(
        y0, problem.place(start_ebes), "initial", warm=ebe_init is not None
    )
    missed: list = []
    y, ebes, ofv_value = y0, initial.ebes, ofv0
    gnorm, iterations, restarts = 0.0, 0, 0
    compile_seconds = time.perf_counter() - started
    if not np.isfinite(ofv0):
        outcome, message = RESULTS.nonfinite_ofv, "OFV is not finite at the initial estimates"
        final = initial
    elif y0.size == 0:
        outcome, message = RESULTS.successful, "no parameters to estimate"
        final = initial
    else:
        solver = optx.BFGS(rtol=0.0, atol=0.0)
        # The gradient at the initial estimates fixes the scale of the objective.
        state = _bfgs_init(solver, objective, y0, arguments(ebes))
        *_, grad, _ = _bfgs_step(solver, objective, y0, arguments(ebes), state)
        gnorm = float(np.max(np.abs(np.asarray(grad))))
        scale = max(1.0, gnorm)
        compile_seconds = time.perf_counter() - started
        log.initial(ofv0, compile_seconds)
        final = None
        if gnorm <= gradient_tolerance:
            outcome = RESULTS.successful
            message = f"gradient below {gradient_tolerance:g} at the initial estimates"
        elif max_iterations == 0:
            outcome, message = RESULTS.max_iterations, "maximum number of iterations (0) reached"
        else:
            while True:
                run = _minimise(
                    solver, objective, y, ebes, arguments,
                    ofv=ofv_value, gnorm=gnorm, iterations=iterations,
                    max_iterations=max_iterations, gradient_tolerance=gradient_tolerance,
                    ofv_tolerance=ofv_tolerance, scale=scale, log=log,
                )  # fmt: skip
                y, ebes, iterations, gnorm = run.y, run.ebes, run.iterations, run.gnorm
                outcome, message = run.outcome, run.message
                # The end point by pmx.ofv's own EBE search (fixed starts only).
                final, ofv_value = fresh_evaluation(y, fresh, "check", iterations, gnorm)
                drop = run.ofv - ofv_value
                if outcome == RESULTS.successful and -drop > _RESTART_DROP:
                    missed = _missed_modes(ebes, final.ebes, problem, dataset, -drop)
                if not (
                    outcome == RESULTS.successful
                    and drop > _RESTART_DROP
                    and restarts < max_restarts
                    and iterations < max_iterations
                ):
                    if outcome == RESULTS.successful and drop > _RESTART_DROP:
                        outcome = RESULTS.max_iterations
                        message += (
                            f"; the global EBE search at the end point lowers the OFV by "
                            f"{drop:.4g} (other modes), but the restart limit was reached"
                        )
                    break
                restarts += 1
                log.say(
                    f"  restart {restarts}: the global EBE search at the end point lowers the "
                    f"OFV from {run.ofv:.6f} to {ofv_value:.6f}; continuing from its EBEs"
                )
                ebes = final.ebes
        if final is None:
            final, ofv_value = initial, ofv0
            if ebe_init is not None:
                final, ofv_value = fresh_evaluation(y, fresh, "check", iterations, gnorm)

    fitted = objective.model(y, arguments(ebes))
    if method == "fo" and problem.layout.size:
        # FO needs no EBEs; diagnostics (CWRES, shrinkage) do: the conditional
        # modes at the final estimates, as NONMEM's POSTHOC.
        final = population_ofv(
            fitted, problem, final.ebes, *options, method="focei", search=ebe_search
        )
    result = _result(
        model, fitted, method, problem, dataset, final, ofv_value,
        outcome=outcome, message=message, iterations=iterations, restarts=restarts,
        gnorm=gnorm, log=log, compile_seconds=compile_seconds, missed=missed,
        ebe_search=ebe_search,
    )  # fmt: skip
    word = {RESULTS.successful: "converged", RESULTS.suspect_point: "converged at a suspect point"}
    log.say(
        f"  {word.get(result.status, 'NOT converged')}: {message}; OFV {ofv_value:.6f} "
        f"in {result.elapsed_seconds:.1f} s"
    )
    return result


def _floored_subjects(problem: Problem, final: OFVResult, ids: tuple) -> list[str]:
    """Laplace: the subjects whose curvature floor changes their OFV."""
    curvature = np.asarray(problem.take(final.relative_curvature))
    floor = problem.laplace_floor
    low = np.flatnonzero(np.asarray(floor_acts(curvature, floor)))
    if low.size == 0:
        return []
    named = ", ".join(str(ids[i]) for i in low[:10]) + (" ..." if low.size > 10 else "")
    return [
        f"Laplace: for {low.size} subject(s) (ID {named}) the exact curvature of the "
        f"individual objective at the EBE falls to {curvature[low].min():.3g} of its expected "
        f"information in some direction (their posteriors are far from normal); it enters "
        f"the OFV floored at {floor:g} of it (laplace_floor)"
    ]


def _missed_modes(warm, fresh, problem, dataset, rise: float) -> list:
    """The suspicion that the fixed EBE starts of the objective miss modes the
    iterations found (the OFV by them is ``rise`` above the iterations')."""
    moved = np.flatnonzero(
        np.max(np.abs(np.asarray(problem.take(warm)) - np.asarray(problem.take(fresh))), axis=1)
        > 1e-3
    )
    ids = dataset.ids if dataset is not None else tuple(range(1, problem.n_subjects + 1))
    named = ", ".join(str(ids[i]) for i in moved[:10]) + (" ..." if moved.size > 10 else "")
    return [
        Suspicion(
            f"the iterations found EBEs {rise:.4g} OFV units lower than the fixed starts of "
            f"the global EBE search reach at the end point (subjects whose EBEs differ: "
            f"{named}); the OFV reported is that of the fixed starts (pmx.ofv), so the end "
            "point is not shown to be its minimum: refit from other initial estimates"
        )
    ]


def _result(
    initial_model: Model,
    fitted: Model,
    method: str,
    problem: Problem,
    dataset: Dataset | None,
    final: OFVResult,
    ofv_value: float,
    *,
    outcome: RESULTS,
    message: str,
    iterations: int,
    restarts: int,
    gnorm: float,
    log: _Log,
    compile_seconds: float,
    missed: list,
    ebe_search: str,
) -> FitResult:
    """The :class:`FitResult` of a finished search, with the suspect-point
    checks that need no covariance step."""
    subjects = problem.source.subjects
    is_obs = np.asarray(subjects.is_obs)
    cens = np.asarray(subjects.cens)
    n_normal = int(np.sum(is_obs & (cens == 0)))
    ids = dataset.ids if dataset is not None else tuple(range(1, subjects.n_subjects + 1))
    notes = []
    if method == "laplace":
        notes += _floored_subjects(problem, final, ids)
    result = FitResult(
        model=fitted,
        method=method,
        ofv=ofv_value,
        n_subjects=subjects.n_subjects,
        n_observations=n_normal,
        n_censored=int(np.sum(is_obs & (cens != 0))),
        iterations=iterations,
        n_evaluations=len(log.rows),
        status=outcome,
        message=message,
        restarts=restarts,
        ebe_matrix=np.asarray(problem.take(final.ebes)),
        ebe_status=np.asarray(problem.take(final.status)),
        ids=ids,
        gradient_max=gnorm,
        elapsed_seconds=time.perf_counter() - log.started,
        compile_seconds=compile_seconds,
        trace=log.trace(),
        dataset=dataset,
        problem=problem,
        notes=tuple(notes),
        ebe_search=ebe_search,
    )
    if outcome != RESULTS.successful:
        return result
    suspect = point_suspicions(
        initial_model,
        fitted,
        eta_shrinkage=result.eta_shrinkage,
        n_subjects=result.n_subjects,
        n_vanishing=int(np.sum(np.asarray(problem.take(final.n_vanishing)))),
        n_normal=n_normal,
    )
    suspect = missed + suspect
    if suspect:
        result = result.replace(suspect=tuple(suspect), status=RESULTS.suspect_point)
    return result
