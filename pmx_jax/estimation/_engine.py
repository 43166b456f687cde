"""The compiled programs of a fit: every subject's EBE search at a parameter
vector, from a warm start; and the OFV, its gradient and every subject's own
gradient at the modes found.

Everything the estimation step needs is built from these two
(:class:`Engine`): the quasi-Newton iterations (value and gradient: the
search, then the objective), the global EBE search at each end point (the
search alone from each fixed start, then the evaluation from each subject's
lowest mode; see :meth:`Engine.global_search`), and the covariance step
(central differences of the gradient for ``R``, the per-subject gradients
for ``S``).  Compiling them dominates the time to a first result on a CPU
(tens of seconds for an event-engine model), so the first evaluation
compiles one in a thread while Python traces the other
(:meth:`Engine._compile`): as one program, the fit waited for tracing and
compilation in turn.  FO searches nothing: one program.

The per-subject gradients come from the same reverse pass as the total: every
subject evaluates its own copy of the model, made from its own copy of the
parameter vector (``population_ofv_at(..., copies=...)``), and the gradient
with respect to those copies is the matrix of subject gradients, whose sum is
the gradient.  The search is not differentiated: the modes enter the OFV
through their implicit derivative (:func:`pmx_jax.likelihood.implicit_ebe`).

The programs take :meth:`Problem.program`: the same programs serve every
dataset of the model's shape bucket (:mod:`pmx_jax._shapes`), in this process
and, through the persistent compilation cache, in the next.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import threading
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._stored import signature, stored
from ..likelihood import EBEResult, OFVResult, Problem, prior_starts
from ..likelihood._ebe import EBEStatus
from ..likelihood._objective import no_modes, population_modes, population_ofv_at
from ..model._model import Model


@dataclasses.dataclass(frozen=True)
class _Unravel:
    """``ravel_pytree``'s inverse for one parameter structure, printed the same
    in every process (a static value of the stored program: :mod:`pmx_jax._stored`)."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, tree) -> _Unravel:
        leaves, treedef = jax.tree.flatten(tree)
        shapes = tuple(tuple(np.shape(leaf)) for leaf in leaves)
        return cls(treedef, shapes, tuple(str(jnp.result_type(leaf)) for leaf in leaves))

    def __call__(self, y: Array):
        parts, end = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            size = math.prod(shape)
            parts.append(y[end : end + size].reshape(shape).astype(dtype))
            end += size
        return jax.tree.unflatten(self.treedef, parts)


class _FromVector(eqx.Module):
    """The model at an unconstrained parameter vector (``model`` supplies the
    fixed parameters and the structure)."""

    model: Model
    unravel: _Unravel = eqx.field(static=True)

    def __call__(self, y: Array) -> Model:
        return self.model.from_unconstrained(self.unravel(y))


@stored("modes")
def _search(to_model, y, problem, ebe_init, try_zero, max_steps, tolerance, known):
    """Every subject's EBE search at ``y`` (:func:`population_modes`)."""
    return population_modes(
        to_model(y), problem, ebe_init, max_steps, tolerance, try_zero=try_zero, known=known
    )


@stored("objective")
def _evaluate(to_model, y, problem, modes):
    """At the searches' ``modes``: ``(OFV, gradient, subject gradients
    (n_chunks, chunk, n_par), OFVResult)``."""
    copies = jnp.broadcast_to(y, problem.real.shape + y.shape)

    def total(copies):
        result = population_ofv_at(to_model(y), problem, modes, copies=(to_model, copies))
        return result.ofv, result

    (value, result), scores = jax.value_and_grad(total, has_aux=True)(copies)
    scores = jnp.where(problem.real[..., None], scores, 0.0)
    return value, jnp.sum(scores, axis=(0, 1)), scores, result


# The signatures of the searches whose programs :meth:`Engine._compile` has
# compiled in this process (with their objective's): a later engine on the
# same model and shape bucket (the covariance step's, a bootstrap's) runs
# them from the caches.
_SIDE_BY_SIDE: set = set()


# The small computations around the objective are single programs rather
# than one operation at a time: each operation run eagerly is a program of its
# own, which a new process lowers and reads from the compilation cache again
# (about 10 ms each; some 30 of them were a tenth of a warm theophylline fit).


@eqx.filter_jit
def _starts(model: Model, n_occasions: int) -> Array:
    """:func:`prior_starts` at the model's OMEGA."""
    dtype = jnp.result_type(float)
    omega = jnp.asarray(model.omega_matrix(), dtype)
    return prior_starts(omega, jnp.asarray(model.iov_omega_matrix(), dtype), n_occasions)


@eqx.filter_jit
def _unconstrained(model: Model) -> tuple[dict, Array]:
    """The model's estimated parameters on the real line, and as one vector."""
    unconstrained = model.to_unconstrained()
    return unconstrained, ravel_pytree(unconstrained)[0]


def _on_device(value, dtype) -> Array:
    """``value`` as a device array of ``dtype``, without an eager conversion
    program when it already is one."""
    if isinstance(value, jax.Array) and value.dtype == dtype:
        return value
    return jax.device_put(np.array(value, dtype=dtype))  # a contiguous copy


@stored("model-at")
def _model_at(to_model: _FromVector, y: Array) -> Model:
    """The model at ``y``: one program instead of an operation at a time."""
    return to_model(y)


def _modes(modes: EBEResult) -> tuple[np.ndarray, ...]:
    """A search's EBE objectives and EBEs (laid out), and where they are
    finite and where converged (and finite)."""
    value, eta = np.asarray(modes.objective), np.asarray(modes.eta)
    finite = np.isfinite(value) & np.all(np.isfinite(eta), axis=-1)
    return value, eta, finite, finite & (np.asarray(modes.status) == EBEStatus.CONVERGED)


def _steps(n_steps, real) -> tuple[int, int]:
    """The largest and total EBE Newton evaluations over the real subjects."""
    n_steps = np.where(real, np.asarray(n_steps), 0)
    return int(n_steps.max(initial=0)), int(n_steps.sum())


class Search:
    """One EBE search on the host: ``modes`` (the :class:`EBEResult`, in the
    problem's layout), ``steps`` (as :class:`Evaluation`'s) and ``seconds``."""

    def __init__(self, modes: EBEResult, real, seconds):
        self.modes = modes
        self.steps = _steps(modes.n_steps, real)
        self.seconds = seconds


class Evaluation:
    """One evaluation on the host: ``ofv`` (float), ``grad`` (numpy,
    unconstrained scale), ``result`` (the :class:`OFVResult`, in the problem's
    layout), ``scores`` (per-subject gradients, layout kept), ``steps``
    (largest and total EBE Newton evaluations over the real subjects) and
    ``seconds``."""

    def __init__(self, value, grad, scores, result, real, seconds):
        self.ofv = float(value)
        self.grad = np.asarray(grad)
        self.scores = scores
        self.result: OFVResult = result
        self.steps = _steps(result.n_steps, real)
        self.seconds = seconds


class Engine:
    """The fit's evaluations of ``model``'s structure on ``problem`` (a host-side
    :class:`Problem`): :meth:`at` for one evaluation, :meth:`global_search`
    and :meth:`fresh` for the objective a fit reports."""

    def __init__(self, model: Model, problem: Problem, max_steps: int, tolerance: float):
        self._bind(problem)
        unconstrained, y0 = _unconstrained(model)
        self.dtype = problem.dtype
        self.y0 = np.asarray(y0, self.dtype)
        self.to_model = _FromVector(model, _Unravel.of(unconstrained))
        self.options = (_on_device(max_steps, np.int32), _on_device(tolerance, self.dtype))

    def _bind(self, problem: Problem) -> None:
        self.problem = problem
        self.program = problem.program()
        self._real = np.asarray(problem.real)
        self.shape = (problem.n_subjects, problem.layout.size)
        # Zero EBEs, and no known modes (``at``): put on the device once, not
        # for every evaluation, and from numpy (``jnp.zeros`` would compile a
        # program for every number of subjects, so a dataset of the same
        # shape bucket would not run on the compiled programs alone).
        self._zeros = _on_device(np.zeros(self._real.shape + (self.shape[1],)), problem.dtype)
        self._no_modes = (self._zeros, _on_device(np.full(self._real.shape, np.inf), problem.dtype))
        # FO searches nothing.
        self._searches = problem.method != "fo"
        self._no_search = jax.tree.map(jax.device_put, no_modes(problem))
        self._compiled = False

    def on(self, problem: Problem) -> Engine:
        """This engine on other data of the same model and method (a
        minibatch of subjects): the same compiled evaluation when ``problem``
        falls in the same shape bucket."""
        other = copy.copy(self)
        other._bind(problem)
        return other

    def model(self, y) -> Model:
        return _model_at(self.to_model, jnp.asarray(y, self.dtype))

    def zeros(self) -> Array:
        """EBEs of zero in the problem's layout (made once, see ``_bind``)."""
        return self._zeros

    def at(self, y, ebes: Array, try_zero: bool = True, known=None) -> Evaluation:
        """Evaluate at ``y`` with each subject's EBE search from ``ebes`` (laid
        out), switching to ``b = 0`` where that starts lower if ``try_zero``.
        ``known = (etas, objectives)`` (laid out; numpy): modes found by
        earlier searches at ``y``, where a search stops once in their basin
        (:func:`pmx_jax.likelihood.newton_ebe`); none by default."""
        tic = time.perf_counter()
        y = jnp.asarray(y, self.dtype)
        modes = self._no_search
        if self._searches:
            modes = self._search(y, ebes, try_zero, known, compile_objective=True)
        value, grad, scores, result = _evaluate(self.to_model, y, self.program, modes)
        value = jax.block_until_ready(value)
        return Evaluation(value, grad, scores, result, self._real, time.perf_counter() - tic)

    def search(self, y, ebes: Array, try_zero: bool = True, known=None) -> Search:
        """The EBE searches of :meth:`at` alone (no OFV, no gradient)."""
        tic = time.perf_counter()
        y = jnp.asarray(y, self.dtype)
        if not self._searches:
            return Search(self._no_search, self._real, time.perf_counter() - tic)
        modes = jax.block_until_ready(self._search(y, ebes, try_zero, known))
        return Search(modes, self._real, time.perf_counter() - tic)

    def _search(self, y, ebes, try_zero, known, compile_objective=False) -> EBEResult:
        known = self._no_modes if known is None else tuple(_on_device(k, self.dtype) for k in known)
        args = (self.to_model, y, self.program, ebes, jnp.asarray(try_zero), *self.options, known)
        if compile_objective and not self._compiled:
            self._compiled = True
            # Placeholder modes are placed as the search's outputs on one
            # device only: with several, the programs compile in turn.
            key = signature(args) if jax.device_count() == 1 else None
            if key is not None and key not in _SIDE_BY_SIDE:
                self._compile(args)
                _SIDE_BY_SIDE.add(key)
        return _search(*args)

    def _compile(self, search_args) -> None:
        """Compile the search and the objective side by side: XLA compiles
        one in a thread while Python traces the other (tracing holds the
        GIL, compiling does not).  The program traced first is the one whose
        compilation the other's tracing hides best: the search for FOCE(I)
        (an ODE model's search compiles in about as long as its objective
        traces), the objective for Laplace (its third derivatives make it
        the longer compilation by far).  Measured in ``benchmarks/README.md``.
        A failure in the thread is left to the call that follows, which
        compiles again and raises."""
        y = search_args[1]
        programs = [
            functools.partial(_search.lowered, *search_args),
            functools.partial(_evaluate.lowered, self.to_model, y, self.program, self._no_search),
        ]
        if self.problem.method == "laplace":
            programs.reverse()
        compile_first = programs[0]()

        def work():
            try:
                compile_first()
            except Exception:  # noqa: BLE001 - see the docstring
                pass

        worker = threading.Thread(target=work, name="pmx_jax-compile", daemon=True)
        worker.start()
        try:
            programs[1]()()
        finally:
            worker.join()

    def global_search(self, y, warm: Array | None = None) -> tuple[Evaluation, list]:
        """The OFV by :func:`pmx_jax.ofv`'s global EBE search at ``y``: one
        search from every fixed start of :func:`prior_starts` (and from
        ``warm`` first, when given), each subject keeping its lowest mode (a
        converged search before an unfinished one, ties to the earlier start,
        as :func:`pmx_jax.likelihood.global_ebe`), then the evaluation from
        those modes.  Returns it and the evaluations made."""
        if self.problem.method == "fo" or self.problem.layout.size == 0:
            done = self.at(y, self.zeros())
            return done, [done]
        model = self.model(y)
        layout = self.problem.layout
        starts = np.asarray(_starts(model, layout.n_occasions if layout.n_iov_eta else 0))
        lanes = [] if warm is None else [warm]
        lanes += [np.broadcast_to(row, self._real.shape + row.shape) for row in starts]
        # One lane after another, each knowing the lowest converged mode of
        # the lanes before it: a search that reaches that mode's basin stops
        # there and returns it (with its objective, so the choice below is
        # the one all lanes run to the end would make, up to which copy of
        # the same mode wins a tie: the earlier).
        known_eta = np.zeros(self._real.shape + (layout.size,))
        known_value = np.full(self._real.shape, np.inf)
        searches, found = [], []
        for lane in lanes:
            search = self.search(
                y, _on_device(lane, self.dtype), try_zero=False, known=(known_eta, known_value)
            )
            searches.append(search)
            found.append(_modes(search.modes))
            value, eta, _, converged = found[-1]
            lower = converged & (value < known_value)
            known_eta = np.where(lower[..., None], eta, known_eta)
            known_value = np.where(lower, value, known_value)
        objective, etas, finite, converged = (np.stack(part) for part in zip(*found, strict=True))
        eligible = np.where(np.any(converged, axis=0), converged, finite)
        best = np.argmin(np.where(eligible, objective, np.inf), axis=0)
        chosen = np.take_along_axis(etas, best[None, ..., None], axis=0)[0]
        done = self.at(y, _on_device(chosen, self.dtype), try_zero=False)
        return done, searches + [done]

    def fresh(self, y, search: str, warm: Array | None = None) -> tuple[Evaluation, list]:
        """The OFV :func:`pmx_jax.ofv` gives at ``y`` with ``ebe_search=search``
        (``warm``: its ``ebe_init``, laid out)."""
        if search == "global":
            return self.global_search(y, warm)
        done = self.at(y, self.zeros() if warm is None else warm, try_zero=True)
        return done, [done]
