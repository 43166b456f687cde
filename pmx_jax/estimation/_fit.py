"""Population fit: minimise NONMEM's OFV over THETA, OMEGA and SIGMA (the
"estimation step" of ``$ESTIMATION METHOD=1 INTERACTION`` and friends).

The outer problem is a quasi-Newton (BFGS with a backtracking Armijo line
search, as :class:`optimistix.BFGS`) minimisation of :func:`pmx_jax.likelihood.ofv` over the
unconstrained free parameters (:meth:`Model.to_unconstrained`: bounded THETAs
on a logit/log scale, OMEGA blocks as log variances or log-Cholesky vectors;
fixed parameters are not in the vector, so they stay fixed).

Design notes (why it is built this way):

- **One objective.**  The OFV a fit reports at its end is the OFV
  :func:`pmx_jax.ofv` gives for the same model and data: each subject's EBE
  is the lowest mode found from a fixed set of starts (``b = 0`` and two
  prior SDs along each principal axis of OMEGA, see
  :func:`pmx_jax.likelihood.prior_starts`); the iterations also search from
  each subject's current EBE (see below).  It is evaluated afresh at the end,
  not remembered from the search.  At the initial estimates the fit searches
  once per subject, from ``b = 0`` (or ``ebe_init``), as NONMEM's iteration 0
  does: the OFV there is ``pmx.ofv(..., ebe_search="local")``.  A global
  search there would cost ``2 n_eta + 1`` searches from starts far from the
  EBEs (on ``benchmarks/fit.py``'s 10,000 subjects 3.0-4.4 s of a 10.3-12.3
  s fit), for modes of parameters the fit is about to leave.
- **Warm starts between iterations, a global check at the end.**  The
  iterations search each EBE from the one of the last accepted point (or
  ``b = 0`` where that starts lower): a subject whose individual objective has
  two modes can stay in the worse one, and then the OFV the line search sees
  depends on the path.  So when the search stops, the global search runs at
  the end point; if it lowers the OFV (by more than ``1e-6``), the fit
  continues from there with the new EBEs (a ``check`` row in ``trace``, a
  count in ``restarts``), until the end point is a minimum of the objective
  it reports.
- **Two compiled programs.**  The driver is a Python loop around one
  evaluation (:mod:`._engine`: the EBE search from a warm start, then OFV,
  gradient and per-subject gradients at the modes, compiled side by side);
  the BFGS update and line search run in numpy on the host (a few
  parameters), the global EBE search is one search per fixed start, and the
  covariance step uses the same programs.  Every argument
  that changes between evaluations is an array, and the program takes the
  problem without its host-side parts: they compile once per model, method and
  shape bucket (:mod:`pmx_jax._shapes`).  The warm start is an argument of the
  search, not differentiated: the OFV gradient is the implicit (envelope)
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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._results import RESULTS
from ..data._dataset import Dataset
from ..likelihood import (
    METHODS,
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
from ._engine import Engine, Evaluation
from ._minibatch import minibatch_options, minibatch_phase
from ._result import FitResult
from ._suspect import Suspicion, point_suspicions

# The methods of pmx.fit: those of the likelihood's OFV, and SAEM.
FitMethod = Literal["fo", "foce", "focei", "laplace", "saem"]

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


@dataclass
class _Log:
    """Everything the driver records and prints: the trace (one row per OFV
    evaluation), the estimates of every accepted iteration, the callback, and
    progress lines (from here only)."""

    method: str
    n_subjects: int
    n_parameters: int
    progress: bool | None
    print_every: int
    callback: Callable[[dict, Model], Any] | None
    started: float = field(default_factory=time.perf_counter)
    rows: list = field(default_factory=list)
    estimates: list = field(default_factory=list)
    verbose: bool = False
    initial_line: str = ""

    def __post_init__(self) -> None:
        self.verbose = bool(self.progress)

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def preparing(self) -> None:
        """Before the first evaluation: unless progress is off, say what is
        happening when it takes more than 2 s (on the first run of a model
        and data size, compiling the objective)."""
        if self.progress is False:
            return
        self._timer = threading.Timer(2.0, self._compiling)
        self._timer.daemon = True
        self._timer.start()

    def _compiling(self) -> None:
        print(
            f"pmx fit ({self.method}): evaluating the {self.method.upper()} objective at the "
            f"initial estimates (the first run for a model and data size compiles it; later "
            f"runs reuse the compiled program) ...",
            flush=True,
        )

    def done_preparing(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()

    def initial(self, ofv: float, compile_seconds: float) -> None:
        self.done_preparing()
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
            ebe_steps_mean=float(steps[1]) / self.n_subjects,
            seconds=seconds,
        )
        self.rows.append(row)
        return row

    def notify(self, row: dict, model: Callable[[], Model], **info: Any) -> None:
        """The callback, if any, with ``row`` and ``model()`` (made only then)."""
        if self.callback is not None:
            self.callback(dict(row, **info), model())

    def iteration(self, iteration: int, ofv: float, gnorm: float) -> None:
        if self.progress is None and not self.verbose:
            if time.perf_counter() - self.started > 10.0:
                self.verbose = True  # a long fit: from now on, say where it is
                self.say(self.initial_line)
        if iteration % self.print_every == 0 or iteration == 1:
            self.say(f"  iter {iteration:4d}  OFV {ofv:14.6f}  |grad| {gnorm:.3e}")

    def trace(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(TRACE_COLUMNS))

    def accepted(self, iteration: int, ofv: float, model: Model) -> None:
        """Records the point of an accepted iteration (0: the initial estimates)."""
        self.estimates.append(dict(iteration=iteration, ofv=ofv, **parameter_values(model)))

    def iteration_estimates(self) -> pd.DataFrame:
        return pd.DataFrame(self.estimates)


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


class _BFGS:
    """BFGS with a backtracking Armijo line search on the host, over the
    engine's evaluations (the update and the line search of
    :class:`optimistix.BFGS`: inverse-Hessian update, step halved until the OFV
    falls by at least 0.1 of the decrease the gradient predicts).  The vectors
    are the few free parameters: numpy on the host costs microseconds, and
    only the evaluation is a compiled program, shared with the rest of the fit.

    ``f``, ``g``: the scaled objective and its gradient at the accepted point
    ``y``; ``inverse``: the inverse-Hessian approximation."""

    slope = 0.1
    decrease = 0.5

    def __init__(self, y: np.ndarray, f: float, g: np.ndarray, inverse: np.ndarray | None = None):
        self.y, self.f, self.g = y, f, g
        self.inverse = np.eye(y.size) if inverse is None else inverse
        self.step = 1.0

    def trial(self) -> np.ndarray:
        return self.y - self.step * (self.inverse @ self.g)

    def tell(self, y_trial: np.ndarray, f: float, g: np.ndarray) -> bool:
        """Accept or reject the trial point; returns whether it was accepted."""
        s = y_trial - self.y
        predicted = float(self.g @ s)
        accept = (
            np.isfinite(f)
            and bool(np.all(np.isfinite(g)))
            and predicted <= 0.0
            and f - self.f <= self.slope * predicted
        )
        if not accept:
            self.step *= self.decrease
            return False
        change = g - self.g
        inner = float(change @ s)
        if inner > np.finfo(float).eps:
            h_change = self.inverse @ change
            self.inverse = (
                self.inverse
                + (inner + change @ h_change) * np.outer(s, s) / inner**2
                - (np.outer(h_change, s) + np.outer(s, h_change)) / inner
            )
        self.y, self.f, self.g, self.step = y_trial, f, g, 1.0
        return True


# A start whose BHHH-predicted OFV decrease is at most this many units per
# parameter (and one) is near the minimum: BFGS starts from BHHH's Hessian.
_NEAR_DECREASE = 5.0


def _outer_product_inverse(start: Evaluation, scale: float) -> np.ndarray | None:
    """BFGS's first inverse Hessian near a minimum, from the subjects' own
    gradients at the start (BHHH): with ``g_i`` the OFV gradient of subject
    ``i`` (``-2`` times its score), ``sum g_i g_i' / 2`` estimates the OFV
    Hessian (the information identity), on the objective's scale ``/
    scale``.  Used only where the step it proposes promises an OFV decrease
    of at most ``_NEAR_DECREASE`` units per parameter: near the minimum it
    saves BFGS the iterations that build its curvature from the identity
    (after a minibatch phase at 20,000 subjects: 4 iterations and 6
    evaluations instead of 12 and 58); far from it (estimates 20-100% off)
    the outer product describes the spread of the scores, not the curvature,
    and BFGS from it needed more evaluations than from the identity (29
    against 22 at 1,000 subjects).  None (the identity) there, and when the
    matrix is not safely invertible: fewer than two subjects per parameter,
    a parameter no subject's OFV depends on, or non-finite scores."""
    scores = np.asarray(start.scores, dtype=float)
    scores = scores.reshape(-1, scores.shape[-1])
    n_subjects = np.count_nonzero(np.any(scores != 0.0, axis=1))
    if not np.all(np.isfinite(scores)) or n_subjects < 2 * scores.shape[1]:
        return None
    hessian = scores.T @ scores / (2.0 * scale)
    values, vectors = np.linalg.eigh(hessian)
    if not values[0] > 1e-10 * values[-1]:
        return None
    inverse = (vectors / values) @ vectors.T
    g = start.grad / scale
    predicted = 0.5 * float(g @ inverse @ g) * scale
    return inverse if predicted <= _NEAR_DECREASE * (1 + g.size) else None


def _minimise(
    engine: Engine,
    y: np.ndarray,
    start: Evaluation,
    *,
    iterations: int,
    max_iterations: int,
    gradient_tolerance: float,
    ofv_tolerance: float,
    scale: float,
    log: _Log,
) -> _Run:
    """BFGS iterations from ``y`` (its evaluation ``start``, whose EBEs warm-start
    the next) until a stopping rule."""
    bfgs = _BFGS(y, start.ofv / scale, start.grad / scale, _outer_product_inverse(start, scale))
    ebes = start.result.ebes
    ofv, gnorm = start.ofv, float(np.max(np.abs(start.grad)))
    rejected = small_changes = 0
    last_ofv = ofv
    while True:
        trial = bfgs.trial()
        evaluation = engine.at(trial, ebes)
        value = evaluation.ofv if np.isfinite(evaluation.ofv) else np.inf
        accepted = bfgs.tell(trial, value / scale, evaluation.grad / scale)
        row = log.evaluation(
            "iteration", evaluation.ofv, accepted, evaluation.steps, evaluation.seconds
        )
        log.notify(
            row,
            lambda: engine.model(bfgs.y),
            iteration=iterations + (1 if accepted else 0),
            gradient_max=float(np.max(np.abs(bfgs.g))) * scale,
        )
        if not accepted:
            rejected += 1
            if rejected >= _MAX_REJECTED:
                return _Run(
                    bfgs.y, ebes, ofv, gnorm, iterations, RESULTS.line_search_failed,
                    "line search failed: no OFV decrease along the quasi-Newton direction "
                    f"after {rejected} trials (gradient max {gnorm:.3g})",
                )  # fmt: skip
            continue
        rejected = 0
        iterations += 1
        ebes = evaluation.result.ebes
        ofv = evaluation.ofv
        gnorm = float(np.max(np.abs(evaluation.grad)))
        log.accepted(iterations, ofv, engine.model(bfgs.y))
        log.iteration(iterations, ofv, gnorm)
        y = bfgs.y
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
    method: FitMethod = "focei",
    *,
    max_iterations: int = 500,
    gradient_tolerance: float = 1e-3,
    ofv_tolerance: float = 1e-10,
    progress: bool | None = None,
    print_every: int | None = None,
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
    minibatch: bool | int | dict[str, Any] | None = None,
    **options: Any,
) -> FitResult:
    """Estimate the population parameters of ``model`` on ``data`` by
    maximum likelihood (FO, FOCE, FOCEI or Laplace approximation, or SAEM).

    Args:
        model: the population model; its current values are the initial
            estimates, and its fixed THETAs/OMEGAs stay fixed.
        data: a Dataset (:func:`pmx_jax.read_nonmem`) or ``prepare(model, data)``.
        method: ``"fo"``, ``"foce"``, ``"focei"`` (default), ``"laplace"`` or
            ``"saem"``.  A model with non-Gaussian endpoints (counts,
            categories, binary, time to event) needs ``"laplace"`` or
            ``"saem"``: the others linearise a normal residual.  ``"saem"``
            runs :func:`pmx_jax.estimation.saem` with ``seed``, ``progress``,
            ``chunk_size`` and ``options`` (``iterations``,
            ``chains``, ``kernels``, ...); the other arguments are those of
            the quasi-Newton methods.
        max_iterations: limit on accepted quasi-Newton iterations (over all
            restarts).
        gradient_tolerance: converged when every component of the OFV gradient
            with respect to the unconstrained parameters is below this (OFV units).
        ofv_tolerance: also converged when two consecutive accepted iterations
            each change the OFV by less than this, relative to ``max(1, |OFV|)``.
        progress: print iteration, OFV and gradient norm every ``print_every``
            iterations (default 10; compile time is printed separately; SAEM
            shows a progress bar); ``None`` (default): only for long fits,
            from the first iteration that ends more than 10 s after the start.
        callback: called after every OFV evaluation of the search with the
            evaluation's entry of ``FitResult.trace`` (plus ``iteration``, the
            accepted iterations so far, and ``gradient_max`` at the last
            accepted point) and the model at the last accepted point: to log
            or checkpoint a long fit (e.g. save ``model.estimates()``).
        ebe_init: EBEs to start from, ``(n_subjects, n_b)`` (e.g. the
            ``ebe_matrix`` of an earlier fit): the start of each subject's EBE
            search at the initial estimates (``b = 0`` where that starts lower).
        ebe_search: the objective minimised and reported, as
            ``pmx.ofv(..., ebe_search=...)``: ``"global"`` (default), each
            subject's EBE the lowest mode from ``b = 0`` and two prior SDs
            along every principal axis of OMEGA; ``"local"``, one search from
            ``b = 0`` (NONMEM's definition: a subject with several modes gets
            the one next to ``b = 0``).  Either way the iterations warm-start
            the EBEs and the end point is checked afresh (the fit continues
            when that is lower).  The global search costs about ``2 n_eta + 1``
            local ones at each end point (``benchmarks/fit.py``: 1.7 s of a
            5.8 s 10,000-subject FOCEI fit); ``"local"`` is for large
            populations whose individual objectives are known to have one
            mode.
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
            (default: all up to 65,536, chunks of 65,536 above, of 1,024 on a
            CPU).  Subjects are
            split over all local devices (``jax.devices()``; several hosts after
            ``jax.distributed.initialize()``).
        laplace_floor: as in :func:`pmx_jax.estimation.ofv` (Laplace only).
        minibatch: a stochastic-gradient phase before the quasi-Newton
            minimisation, for large populations (``True``, a batch size, or a
            dict of ``batch_size`` (``"auto"``: ``n / 64`` within 256 and
            8,192), ``epochs`` (3), ``learning_rate`` (0.05, on the
            unconstrained scale, cosine-decayed) and ``seed``):
            Adam steps on ``n / m`` times the OFV gradient of ``m`` subjects
            at a time, one compiled evaluation of ``m`` subjects for all of
            them; the fit then starts from where it ended, with its EBEs
            (see ``estimation/_minibatch.py``).  Its steps are in
            ``FitResult.minibatch``; the OFV, convergence test and
            ``iteration_estimates`` are the full-data fit's.

    Returns:
        a :class:`FitResult`: the fitted model, OFV, AIC/BIC, EBEs, shrinkage,
        standard errors, the per-record table (``result.table()``) and whether
        (and why not) the minimisation converged.  For FO, the EBEs are
        computed after the fit at the final estimates (NONMEM's POSTHOC).

    Example:
        >>> # result = pmx.fit(pmx.library.Theophylline(), data, "focei")
        >>> # print(result)
    """
    if method == "saem":
        from ._saem import saem

        return saem(
            model, data, seed=seed, progress=progress, chunk_size=chunk_size, **options,
        )  # fmt: skip
    print_every = 10 if print_every is None else print_every
    if options:
        raise TypeError(
            f"pmx.fit: unknown option(s) {sorted(options)} for method {method!r} "
            "(they are SAEM's: method='saem')"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS + ('saem',)}, got {method!r}")
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
    batching = minibatch_options(minibatch)
    started = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else None
    problem = make_problem(model, data, method, chunk_size=chunk_size, laplace_floor=laplace_floor)
    steps = None
    if batching is not None:
        if starts > 1:
            raise ValueError("minibatch and starts > 1 cannot be combined")
        model, phase_ebes, steps = minibatch_phase(
            model, problem, method, ebe_max_steps=ebe_max_steps, ebe_tolerance=ebe_tolerance,
            say=print if progress else None, **batching,
        )  # fmt: skip
        if ebe_init is None:
            ebe_init = phase_ebes
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
    if steps is not None:
        result = result.replace(minibatch=steps)
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


def parameter_values(model: Model) -> dict[str, float]:
    """Every THETA and OMEGA element of ``model`` on the natural scale, fixed
    ones included, by the names of :meth:`FitResult.estimates` (THETAs in
    field order, then each OMEGA block's lower triangle row by row: variances
    ``iiv.cl``, covariances ``iiv.cl,v`` of full blocks)."""
    values = {name: float(theta) for name, theta in model.thetas().items()}
    for name, block in model.omega_blocks():
        matrix = np.asarray(block.matrix)
        for i, eta_i in enumerate(block.names):
            for j in range(i + 1):
                if i == j:
                    values[f"{name}.{eta_i}"] = float(matrix[i, i])
                elif not block.diagonal:
                    values[f"{name}.{block.names[j]},{eta_i}"] = float(matrix[i, j])
    return values


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
    engine = Engine(model, problem, ebe_max_steps, ebe_tolerance)
    dtype, shape = engine.dtype, engine.shape
    if ebe_init is not None and np.shape(ebe_init) != shape:
        raise ValueError(
            f"ebe_init must have shape {shape} (subjects, random effects), got {np.shape(ebe_init)}"
        )
    warm = None if ebe_init is None else problem.place(jnp.asarray(ebe_init, dtype))
    y0 = engine.y0
    log = _Log(
        method, subjects.n_subjects, int(y0.size), progress, print_every, callback, started,
    )  # fmt: skip

    def fresh_evaluation(
        y, event, iteration=0, gradient_max=float("nan"), warm=None, search=ebe_search
    ):
        # The objective pmx.ofv gives with ``ebe_search=search`` (its EBE
        # search from the same starts).
        done, made = engine.fresh(y, search, warm)
        log.evaluation(
            event, done.ofv, False,
            (max(e.steps[0] for e in made), sum(e.steps[1] for e in made)),
            sum(e.seconds for e in made),
        )  # fmt: skip
        log.notify(
            log.rows[-1], lambda: engine.model(y), iteration=iteration, gradient_max=gradient_max
        )
        return done

    # The initial estimates: the OFV from one EBE search per subject (from
    # ``ebe_init``, or ``b = 0``), its EBEs and gradient (see the module notes).
    log.preparing()
    initial_search = "local"
    initial = fresh_evaluation(y0, "initial", warm=warm, search=initial_search)
    ofv0 = initial.ofv
    log.accepted(0, ofv0, engine.model(y0))
    compile_seconds = time.perf_counter() - started
    missed: list = []
    y, final = y0, initial
    gnorm = float(np.max(np.abs(initial.grad), initial=0.0))
    iterations = restarts = 0
    ofv_value = ofv0
    if not np.isfinite(ofv0):
        outcome, message = RESULTS.nonfinite_ofv, "OFV is not finite at the initial estimates"
    elif y0.size == 0:
        outcome, message = RESULTS.successful, "no parameters to estimate"
    else:
        # The gradient at the initial estimates fixes the scale of the objective.
        scale = max(1.0, gnorm)
        log.initial(ofv0, compile_seconds)
        if gnorm <= gradient_tolerance:
            outcome = RESULTS.successful
            message = f"gradient below {gradient_tolerance:g} at the initial estimates"
        elif max_iterations == 0:
            outcome, message = RESULTS.max_iterations, "maximum number of iterations (0) reached"
        else:
            start = initial
            while True:
                run = _minimise(
                    engine, y, start,
                    iterations=iterations, max_iterations=max_iterations,
                    gradient_tolerance=gradient_tolerance, ofv_tolerance=ofv_tolerance,
                    scale=scale, log=log,
                )  # fmt: skip
                y, iterations, gnorm = run.y, run.iterations, run.gnorm
                outcome, message = run.outcome, run.message
                # The end point by pmx.ofv's own EBE search (fixed starts only).
                final = fresh_evaluation(y, "check", iterations, gnorm)
                ofv_value = final.ofv
                drop = run.ofv - ofv_value
                if outcome == RESULTS.successful and -drop > _RESTART_DROP:
                    missed = _missed_modes(run.ebes, final.result.ebes, problem, dataset, -drop)
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
                start = final
    if final is initial and (ebe_search != initial_search or ebe_init is not None):
        # The OFV reported is pmx.ofv's, from its own starts alone.
        final = fresh_evaluation(y, "check", iterations, gnorm)
        ofv_value = final.ofv
    log.done_preparing()

    fitted = engine.model(y)
    result = final.result
    if method == "fo" and problem.layout.size:
        # FO needs no EBEs; diagnostics (CWRES, shrinkage) do: the conditional
        # modes at the final estimates, as NONMEM's POSTHOC.
        result = population_ofv(
            fitted, problem, result.ebes, *engine.options, method="focei", search=ebe_search
        )
    fit_result = _result(
        model, fitted, method, problem, dataset, result, ofv_value,
        outcome=outcome, message=message, iterations=iterations, restarts=restarts,
        gnorm=gnorm, log=log, compile_seconds=compile_seconds, missed=missed,
        ebe_search=ebe_search,
    )  # fmt: skip
    word = {RESULTS.successful: "converged", RESULTS.suspect_point: "converged at a suspect point"}
    log.say(
        f"  {word.get(fit_result.status, 'NOT converged')}: {message}; OFV {ofv_value:.6f} "
        f"in {fit_result.elapsed_seconds:.1f} s"
    )
    return fit_result


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
    gaussian = problem.source.gaussian_records()
    n_normal = int(np.sum(is_obs & (cens == 0) & gaussian))
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
        n_censored=int(np.sum(is_obs & (cens != 0) & gaussian)),
        n_general=int(np.sum(is_obs & ~gaussian)),
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
        iteration_estimates=log.iteration_estimates(),
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
