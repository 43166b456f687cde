"""The inner problem: empirical Bayes estimates (EBEs, NONMEM's conditional
etas) as the mode of ``log p(y_i | eta) + log p(eta)`` for each subject.

A damped Newton method on the individual objective ``l(eta) = -2 log p(y, eta)``
with its exact (autodiff) gradient and Hessian:

- the Hessian is made positive definite by taking the absolute value of its
  eigenvalues and flooring them (a saddle or a concave region still gives a
  descent direction, scaled by the local curvature);
- a backtracking (Armijo) line search halves the step until the objective
  decreases, and treats a non-finite objective as "too far";
- the search stops when the Newton decrement ``g^T H^-1 g`` (about twice the
  distance to the minimum, on the -2LL scale) is below ``tolerance *
  max(1, |l|)``, after ``max_steps`` evaluations, or when no finite point can be
  found;
- the search starts from the better of the warm start and ``eta = 0`` (the
  typical individual), compared by objective value only: a wild warm start (a
  previous, very different THETA) can sit where Newton crawls, e.g. where an
  elimination rate ``exp(eta)`` makes the objective doubly exponential; a
  non-finite warm start is simply skipped.

Optionally (``scoring``; the population objective uses it for ODE models) a
first stage iterates with the expected information in place of the Hessian
(Fisher scoring: first derivatives of the predictions only) down to the square
root of the tolerance, and the exact search then starts where it stopped (one
Newton step squares the decrement; scoring converges only linearly).  For an
ODE model the exact Hessian integrates a second-order variational system,
several times the cost of the first-order one.  On the nimotuzumab TMDD model
(12 subjects, population OFV): from eta = 0, 15.6 s against 92.2 s exact (21.8 s
with scoring down to the full tolerance); warm-started after a small parameter
step, 9.2 s against 12.8 s (14.4 s).

Every loop iteration evaluates the objective, its gradient and its Hessian
once, at the trial point, whether the line search accepts it or not.  A
backtracking step thus costs a Hessian it may not need, but the individual
model is traced (and compiled) once rather than three times: for the event
engine, compilation dominates the cost of a population objective.

One subject per call; estimators ``vmap`` it.  Failures are data: every
subject gets an :class:`EBEStatus` code and finite etas (the last finite
iterate), never a silent NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from .._results import RESULTS

# Armijo sufficient-decrease constant.
_ARMIJO = 1e-4
# A line search that fails with a Newton decrement below this multiple of the
# tolerance has met rounding noise at the minimum: count it as converged.
_NEAR = 1e4
# An eigenvalue of the Hessian below -_NEGATIVE times its largest one is
# negative curvature, not rounding noise.
_NEGATIVE = 1e-8


# A search that reaches the basin of a mode already known for the subject
# (an earlier start of a global search) stops there (see ``_step``): its
# Newton decrement, the distance of its Newton target from the known mode in
# the Hessian's metric and the difference of the objectives are all below
# this, on the -2LL scale.
_MERGE = 0.1

# At most this many Fisher-scoring iterations before the exact ones.  Scoring
# converges linearly, and slowly where the expected information is far from the
# Hessian (large residuals, at a trial point far from the minimum): on the
# warfarin PK/PD fit one subject took 53 scoring evaluations at a rejected
# trial point (3.2 s for the 32-subject batch, against 0.6 s with this limit).
# Summed over a fit, the slowest subject's Newton evaluations (what a batch
# waits for): warfarin PK/PD 307 against 576 without the limit,
# benchmarks/fit_ode.py 269 against 304; same iterations, OFVs within 1e-11.
SCORING_STEPS = 10


class EBEStatus:
    """Per-subject outcomes of the EBE search: the members of
    :class:`pmx_jax.RESULTS` that it uses, under their older names (``int``
    values in arrays; ``RESULTS(code).message`` says what to change)."""

    CONVERGED = RESULTS.successful
    MAX_STEPS = RESULTS.ebe_max_steps  # the evaluation limit was reached before the tolerance
    NONFINITE = RESULTS.ebe_nonfinite  # the objective is not finite at any start
    LINE_SEARCH_FAILED = RESULTS.ebe_line_search_failed  # no step decreases the objective

    names = {int(code): RESULTS(code).label for code in (0, 1, 2, 3)}


class EBEResult(eqx.Module):
    """One subject's EBE search (batched: leading subject axis).

    ``objective``, ``gradient`` and ``hessian`` are those of the individual
    objective at the last evaluated point (the Hessian as computed, not made
    positive definite); on convergence ``eta`` is one (tiny) Newton step
    further, from that point.
    """

    eta: Float[Array, " n_b"]
    objective: Float[Array, ""]
    gradient: Float[Array, " n_b"]
    hessian: Float[Array, "n_b n_b"]
    status: Int[Array, ""]
    n_steps: Int[Array, ""]


# Symmetric matrices up to this size are diagonalised by Jacobi rotations
# (:func:`_jacobi_eigh`), with this many sweeps ({size: sweeps}).
_JACOBI_SWEEPS = {1: 0, 2: 6, 3: 6, 4: 6, 5: 8, 6: 8}


def _jacobi_eigh(matrix: Array) -> tuple[Array, Array]:
    """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of a
    small symmetric matrix, by a fixed number of cyclic Jacobi sweeps
    (Golub & Van Loan, Algorithms 8.5.1-8.5.3; the upper triangle only).

    Each entry is a separate array and every rotation is arithmetic on them,
    so a batch of matrices (``vmap``: one per subject) is a few fused loops.
    LAPACK's ``syevd`` (``jnp.linalg.eigh``), called once per matrix, was a
    fifth of a Newton evaluation of the FOCEI benchmark's EBE search.  In a
    loop over a batch of 3x3 matrices this takes 10-13 us an iteration
    against 29-48 us for 32 matrices, 69-96 us against 303-364 us for 313 (the
    queue of a 1,000- and a 10,000-subject search), and that loop compiles in
    0.3-0.4 s against 0.1-0.2 s.  Cyclic Jacobi converges quadratically; the sweeps of
    ``_JACOBI_SWEEPS`` are two more than random matrices of each size needed
    for eigenvalues and reconstruction within 3e-15 of the largest eigenvalue
    (eigenvalues from 1e-12 to 1e8 in size, either sign, with exact and
    near-exact pairs; ``tests/test_estimation_inner.py``).
    """
    n = matrix.shape[-1]

    def upper(i, j):
        return (i, j) if i <= j else (j, i)

    one, zero = jnp.ones_like(matrix[0, 0]), jnp.zeros_like(matrix[0, 0])
    a = {(i, j): matrix[i, j] for i in range(n) for j in range(i, n)}
    v = {(i, j): one if i == j else zero for i in range(n) for j in range(n)}

    def sweep(_, carry):
        a, v = dict(carry[0]), dict(carry[1])
        for p in range(n):
            for q in range(p + 1, n):
                # The rotation that zeroes a[p, q]: t = tan(theta), the smaller root.
                off = a[p, q]
                diagonal = off == 0
                tau = (a[q, q] - a[p, p]) / (2.0 * jnp.where(diagonal, 1.0, off))
                t = jnp.where(tau >= 0, 1.0, -1.0) / (jnp.abs(tau) + jnp.sqrt(1.0 + tau * tau))
                t = jnp.where(diagonal, 0.0, t)
                c = 1.0 / jnp.sqrt(1.0 + t * t)
                s = t * c
                a[p, p], a[q, q], a[p, q] = a[p, p] - t * off, a[q, q] + t * off, zero
                for r in range(n):
                    if r not in (p, q):
                        rp, rq = a[upper(r, p)], a[upper(r, q)]
                        a[upper(r, p)], a[upper(r, q)] = c * rp - s * rq, s * rp + c * rq
                for k in range(n):
                    kp, kq = v[k, p], v[k, q]
                    v[k, p], v[k, q] = c * kp - s * kq, s * kp + c * kq
        return a, v

    a, v = lax.fori_loop(0, _JACOBI_SWEEPS[n], sweep, (a, v))
    values = [a[i, i] for i in range(n)]
    columns = [[v[k, i] for k in range(n)] for i in range(n)]
    for end in range(n - 1, 0, -1):  # ascending: a bubble sort, as selects
        for j in range(end):
            swap = values[j] > values[j + 1]
            low, high = values[j], values[j + 1]
            values[j], values[j + 1] = jnp.where(swap, high, low), jnp.where(swap, low, high)
            left, right = columns[j], columns[j + 1]
            columns[j] = [jnp.where(swap, y, x) for x, y in zip(left, right, strict=True)]
            columns[j + 1] = [jnp.where(swap, x, y) for x, y in zip(left, right, strict=True)]
    vectors = jnp.stack([jnp.stack(column) for column in columns], axis=-1)
    return jnp.stack(values), vectors


def symmetric_eigh(matrix: Array) -> tuple[Array, Array]:
    """``jnp.linalg.eigh`` of a symmetric matrix (ascending eigenvalues),
    by :func:`_jacobi_eigh` for the small sizes of ``_JACOBI_SWEEPS``."""
    if matrix.shape[-1] in _JACOBI_SWEEPS:
        return _jacobi_eigh(matrix)
    return jnp.linalg.eigh(matrix)


def _spectrum(hessian: Array, floor: float = 1e-8) -> tuple[Array, Array, Array, Array]:
    """Eigenvalues (ascending) and eigenvectors of the symmetrised Hessian,
    the eigenvalues made positive (``max(|lambda|, floor * scale)``) and the
    scale (the largest ``|lambda|``, at least 1)."""
    values, vectors = symmetric_eigh(0.5 * (hessian + hessian.T))
    scale = jnp.maximum(jnp.max(jnp.abs(values)), 1.0)
    return values, vectors, jnp.maximum(jnp.abs(values), floor * scale), scale


def positive_definite(hessian: Float[Array, "n n"], floor: float = 1e-8) -> Array:
    """The Hessian with eigenvalues replaced by ``max(|lambda|, floor * scale)``."""
    _, vectors, clipped, _ = _spectrum(hessian, floor)
    return (vectors * clipped) @ vectors.T


def value_gradient_hessian(
    objective: Callable[[Array, Any], Array],
) -> Callable[[Array, Any], tuple[Array, Array, Array]]:
    """``(l, dl/deta, d2l/deta2)`` from one forward-over-reverse trace of ``l``."""

    def grad_with_aux(eta, args):
        value, grad = jax.value_and_grad(objective)(eta, args)
        return grad, (value, grad)

    def evaluate(eta, args):
        hess, (value, grad) = jax.jacfwd(grad_with_aux, has_aux=True)(eta, args)
        return value, grad, hess

    return evaluate


class _State(eqx.Module):
    eta: Array  # last accepted point
    value: Array
    grad: Array
    hess: Array
    step: Array  # Newton direction from ``eta``
    slope: Array  # grad . step (< 0)
    decrement: Array
    alpha: Array  # step length of the next trial
    halvings: Array
    phase: Array  # 0: try the warm start, 1: try eta = 0, 2: Newton iterations
    k: Array
    status: Array  # -1 while running


def _backtrack(s: _State, value: Array) -> Array:
    """Next trial step length after a rejected one: the minimiser of the
    quadratic through ``l(0)``, ``l'(0)`` and ``l(alpha)``, kept within
    ``[alpha / 4, alpha / 2]`` (a quarter when ``l(alpha)`` is not finite).
    A smaller floor backfires: where ``l`` is steep (a subject far from its
    mode) the quadratic asks for tiny steps, and every accepted tiny step is
    followed by another rejected full one."""
    alpha = s.alpha
    curvature = value - s.value - s.slope * alpha
    quadratic = -s.slope * alpha**2 / (2.0 * jnp.where(curvature > 0, curvature, 1.0))
    quadratic = jnp.where(jnp.isfinite(value) & (curvature > 0), quadratic, 0.25 * alpha)
    return jnp.clip(quadratic, 0.25 * alpha, 0.5 * alpha)


class _Inputs(eqx.Module):
    """What one subject's search reads besides its state: the start, whether
    it is ``eta = 0``, the objective's arguments and the search options."""

    eta0: Array
    start_is_zero: Array
    args: Any
    max_steps: Array
    tolerance: Array
    metric: Array | None
    known_eta: Array | None = None
    known_value: Array | None = None


def _initial_state(eta0: Array) -> _State:
    n, dtype = eta0.shape[0], eta0.dtype
    zero = jnp.zeros_like(eta0)
    nan = jnp.asarray(jnp.nan, dtype)
    return _State(
        eta=eta0,
        value=nan,
        grad=zero,
        hess=jnp.zeros((n, n), dtype),
        step=zero,
        slope=nan,
        decrement=nan,
        alpha=jnp.ones((), dtype),
        halvings=jnp.zeros((), jnp.int32),
        phase=jnp.zeros((), jnp.int32),
        k=jnp.zeros((), jnp.int32),
        status=jnp.full((), -1, jnp.int32),
    )


def _step(
    evaluate: Callable[[Array, Any], tuple[Array, Array, Array]],
    s: _State,
    inputs: _Inputs,
    *,
    max_halvings: int,
    radius: float,
) -> _State:
    """One evaluation of the damped Newton search (see :func:`_search`)."""
    eta0, start_is_zero, args = inputs.eta0, inputs.start_is_zero, inputs.args
    max_steps, tolerance, metric = inputs.max_steps, inputs.tolerance, inputs.metric
    dtype = eta0.dtype
    zero = jnp.zeros_like(eta0)

    trial = jnp.where(s.phase == 2, s.eta + s.alpha * s.step, jnp.where(s.phase == 0, eta0, zero))
    value, grad, hess = evaluate(trial, args)
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(hess))
    sufficient = value <= s.value + _ARMIJO * s.alpha * s.slope
    # Phases 0 (the start) and 1 (eta = 0, when the start was not finite)
    # take any finite point; phase 2 takes a sufficient decrease.
    accept = finite & ((s.phase < 2) | sufficient)

    tol = tolerance * jnp.maximum(1.0, jnp.abs(jnp.where(accept, value, s.value)))
    if eta0.shape[0]:
        g = jnp.where(finite, grad, 0.0)
        values, vectors, clipped, scale = _spectrum(jnp.where(finite, hess, 0.0))
        step = -(vectors @ ((vectors.T @ g) / clipped))
        # A stationary point with a direction of negative curvature is a
        # saddle (or the flat shoulder of a second mode), not an EBE: leave
        # it along that direction, far enough for the quadratic model to
        # promise a decrease of one unit of -2LL (backtracking shortens it).
        saddle = (values[0] < -_NEGATIVE * scale) & (-jnp.dot(g, step) <= tol)
        down = vectors[:, 0] * jnp.where(jnp.dot(g, vectors[:, 0]) > 0, -1.0, 1.0)
        escape = down * jnp.sqrt(2.0 / jnp.maximum(-values[0], 1e-300))
        step = jnp.where(saddle, escape, step)
    else:
        step = grad
        saddle = jnp.zeros((), bool)
    decrement = jnp.where(saddle, jnp.inf, -jnp.dot(grad, step))
    newton_step = step
    if metric is not None:
        # The trust region: at most ``radius`` prior SDs per step.
        length = jnp.sqrt(jnp.maximum(step @ metric @ step, 0.0))
        step = step * jnp.minimum(1.0, radius / jnp.maximum(length, 1e-300))
    slope = jnp.dot(grad, step)

    def pick(new, old):
        return jnp.where(accept, new, old)

    # Newton iterations (2) from the start if it is finite, else from
    # eta = 0 (1; unless the start was 0), or give up (3).
    phase = jnp.select(
        [s.phase == 0, s.phase == 1],
        [
            jnp.where(accept, 2, jnp.where(start_is_zero, 3, 1)),
            jnp.where(accept, 2, 3),
        ],
        2,
    )
    halvings = jnp.where(accept, 0, s.halvings + jnp.where(s.phase == 2, 1, 0))
    value_now = pick(value, s.value)
    decrement_now = pick(decrement, s.decrement)
    converged = accept & (decrement <= tol)
    # An accepted step that did not lower the objective at all, from a point
    # whose decrement is at rounding level: the minimum to machine precision
    # (a tolerance below rounding would otherwise cycle to max_steps).
    rounding = accept & (s.phase == 2) & (value >= s.value) & (decrement <= _NEAR * tol)
    stalled = (phase == 2) & (halvings >= max_halvings)
    merged = jnp.zeros((), bool)
    if inputs.known_value is not None and eta0.shape[0]:
        # The basin of the mode already known: the Hessian is positive
        # definite here, the Newton step is short (decrement) and lands next
        # to the known mode (distance in the Hessian's metric), whose
        # objective is as low as this point's.  The search would end at that
        # mode: it ends now, with the known mode and its objective (and no
        # polishing step from a point that is not the one returned).
        offset = vectors.T @ (trial + newton_step - inputs.known_eta)
        merged = (
            accept
            & ~(converged | rounding)
            & jnp.isfinite(inputs.known_value)
            & (values[0] > _NEGATIVE * scale)
            & (decrement <= _MERGE)
            & (jnp.sum(offset**2 * clipped) <= _MERGE)
            & (jnp.abs(value - inputs.known_value) <= _MERGE)
        )
        trial = jnp.where(merged, inputs.known_eta, trial)
        value_now = jnp.where(merged, inputs.known_value, value_now)
        step = jnp.where(merged, 0.0, step)
    status = jnp.select(
        [
            converged | rounding | merged,
            phase == 3,
            stalled & (decrement_now <= _NEAR * tol),
            stalled,
            s.k + 1 >= max_steps,
        ],
        [
            EBEStatus.CONVERGED,
            EBEStatus.NONFINITE,
            EBEStatus.CONVERGED,
            EBEStatus.LINE_SEARCH_FAILED,
            EBEStatus.MAX_STEPS,
        ],
        -1,
    )
    return _State(
        eta=pick(trial, s.eta),
        value=value_now,
        grad=pick(grad, s.grad),
        hess=pick(hess, s.hess),
        step=pick(step, s.step),
        slope=pick(slope, s.slope),
        decrement=decrement_now,
        alpha=jnp.where(accept, 1.0, _backtrack(s, value)).astype(dtype),
        halvings=halvings.astype(jnp.int32),
        phase=phase.astype(jnp.int32),
        k=s.k + 1,
        status=status.astype(jnp.int32),
    )


# Batched searches (``vmap``) keep a queue on a CPU when there are more than
# this many subjects (see :func:`_queued_search`) ...
QUEUE_MIN = 512
# ... with one slot for every ``QUEUE_FRACTION`` subjects, but at least
# ``QUEUE_MIN // QUEUE_FRACTION`` slots.  A global search at 10,240 subjects
# (the FOCEI benchmark's 7 lanes, 2-core CPU, three runs of each setting
# interleaved in one process): every subject in a slot 6.3-7.1 s, an eighth
# of them 4.1-5.3 s, a 32nd 3.3-3.8 s; in a second such run a 32nd 4.1-4.8 s,
# a 64th 4.2-4.5 s, a 128th 4.9-5.1 s.  Without the queue (before it was
# built, same data) 5.1 s.  At 1,024 subjects (with the known-mode stop of
# ``newton_ebe``): 0.39-0.57 s without the queue, 0.31-0.33 s with a 32nd,
# 0.30-0.44 s with a 16th, 0.37-0.43 s with an 8th.
QUEUE_FRACTION = 32


def _queue_slots(n: int) -> int | None:
    """The slots of a queued search of ``n`` subjects, or None for a plain
    batch.  Not on an accelerator, where a batch takes about as long
    whatever its size until the device is full, and the queue's extra
    iterations may cost more than the evaluations it saves (unmeasured:
    no accelerator has run it)."""
    if n <= QUEUE_MIN or jax.default_backend() != "cpu":
        return None
    return max(QUEUE_MIN // QUEUE_FRACTION, -(-n // QUEUE_FRACTION))


def _where(mask: Array, new, old):
    """``new`` where ``mask`` (leading axis), else ``old``, leaf by leaf."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old
    )


def _queued_search(step: Callable, inputs: _Inputs, n: int, slots: int) -> _State:
    """The searches of ``n`` subjects (``inputs`` batched on a leading axis),
    ``slots`` of them evaluated at a time.

    A ``vmap`` of a while loop evaluates every subject until the slowest
    one has converged: at 10,000 subjects the slowest took 16-31 Newton
    evaluations where the mean took 7-24.  Here each of ``slots`` slots holds
    one subject's search; a slot whose search ends hands its state back and
    takes the next subject waiting, in the same iteration.  The work is then
    the sum of the subjects' evaluations plus the drain of the last
    ``slots`` searches, not ``n`` times the largest.  Each subject's
    iterates are those of its own search, whatever the order.
    """
    batched_step = jax.vmap(step)
    index = jnp.arange(slots)
    first = jax.tree_util.tree_map(lambda x: x[:slots], inputs)
    done = jax.vmap(_initial_state)(inputs.eta0)

    def running(carry):
        return jnp.any(carry[0] < n)

    def advance(carry):
        held, state, slot_inputs, done, queued = carry
        active = held < n
        state = _where(active, batched_step(state, slot_inputs), state)
        ended = active & (state.status >= 0)
        done = jax.tree_util.tree_map(
            lambda all_, one: all_.at[jnp.where(ended, held, n)].set(one, mode="drop"),
            done,
            state,
        )
        # The ended slots take the next subjects in the queue, in slot order.
        incoming = queued + jnp.cumsum(ended) - 1
        take = ended & (incoming < n)
        fresh = jax.tree_util.tree_map(lambda x: x[jnp.minimum(incoming, n - 1)], inputs)
        slot_inputs = _where(take, fresh, slot_inputs)
        state = _where(take, jax.vmap(_initial_state)(fresh.eta0), state)
        held = jnp.where(take, incoming, jnp.where(ended, n, held))
        queued = jnp.minimum(queued + jnp.sum(ended), n)
        return held, state, slot_inputs, done, queued

    carry = (index, jax.vmap(_initial_state)(first.eta0), first, done, jnp.asarray(slots))
    return lax.while_loop(running, advance, carry)[3]


def _search(
    evaluate: Callable[[Array, Any], tuple[Array, Array, Array]],
    eta0: Array,
    start_is_zero: Array,
    args: Any,
    *,
    max_steps: int | Array,
    tolerance: float | Array,
    max_halvings: int,
    metric: Array | None = None,
    radius: float = 3.0,
    known: tuple[Array, Array] | None = None,
) -> _State:
    """The damped Newton iterations from ``eta0`` with the curvature that
    ``evaluate`` returns (exact, or an approximation); ``metric`` (OMEGA^-1)
    and ``radius``: the trust region (see :func:`newton_ebe`).

    One subject; under ``vmap`` over more than ``QUEUE_MIN`` subjects on a
    CPU the searches run through a queue (:func:`_queued_search`), with the
    same iterates as one by one."""
    inputs = _Inputs(
        eta0,
        jnp.asarray(start_is_zero),
        args,
        jnp.asarray(max_steps),
        jnp.asarray(tolerance, eta0.dtype),
        metric,
        *((None, None) if known is None else known),
    )
    dynamic, static = eqx.partition(inputs, eqx.is_array)

    def step(state: _State, dynamic) -> _State:
        inputs = eqx.combine(dynamic, static)
        return _step(evaluate, state, inputs, max_halvings=max_halvings, radius=radius)

    def search(dynamic) -> _State:
        return lax.while_loop(
            lambda s: s.status < 0,
            lambda s: step(s, dynamic),
            _initial_state(dynamic.eta0),
        )

    search = jax.custom_batching.custom_vmap(search)

    @search.def_vmap
    def _(axis_size, in_batched, dynamic):
        axes = jax.tree_util.tree_map(lambda batched: 0 if batched else None, in_batched[0])
        slots = _queue_slots(axis_size)
        if slots is None:
            out = jax.vmap(search.fun, in_axes=(axes,))(dynamic)
        else:
            # Every input with the subject axis: a slot gathers its subject's.
            dynamic = jax.tree_util.tree_map(
                lambda x, batched: x if batched else jnp.broadcast_to(x, (axis_size,) + x.shape),
                dynamic,
                in_batched[0],
            )
            out = _queued_search(step, dynamic, axis_size, slots)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return search(dynamic)


def newton_ebe(
    objective: Callable[[Array, Any], Array],
    eta0: Float[Array, " n_b"],
    args: Any,
    *,
    max_steps: int | Array = 100,
    tolerance: float | Array = 1e-12,
    max_halvings: int = 30,
    scoring: Callable[[Array, Any], tuple[Array, Array, Array]] | None = None,
    try_zero: bool | Array = True,
    metric: Float[Array, "n_b n_b"] | None = None,
    radius: float = 3.0,
    known: tuple[Float[Array, " n_b"], Float[Array, ""]] | None = None,
) -> EBEResult:
    """Minimise ``objective(eta, args)`` (one subject) from the warm start ``eta0``.

    ``objective`` is the individual objective on the -2LL scale; ``args`` are
    passed through (data and parameters, not differentiated here).

    ``scoring``: an optional ``(eta, args) -> (objective, gradient, H~)`` with
    the exact objective and gradient and a positive semi-definite stand-in
    ``H~`` for the Hessian that is cheaper to compute (the expected
    information: first derivatives of the predictions only).  The search then
    runs in two stages: Newton iterations with ``H~`` (Fisher scoring) down to
    ``sqrt(tolerance)`` (at most ``SCORING_STEPS`` of them), then the exact
    Newton search from where they stopped (typically one step and one more
    evaluation; the last evaluation's exact Hessian is the one returned, as the
    implicit derivative needs).
    ``n_steps`` counts the evaluations of both stages.

    ``metric``: the inverse of the random effects' prior covariance (OMEGA^-1,
    laid out as ``eta``); each step is then at most ``radius`` prior SDs long
    (``sqrt(step' metric step) <= radius``; the Newton decrement that decides
    convergence is that of the full step).  Without it, the first step from a
    start where the objective is enormous (a start two prior SDs out on the
    Michaelis-Menten benchmark put ``-2LL`` at 7e5) may land wherever the
    objective is merely lower, e.g. 100 SDs out in a valley of vanishing
    predictions, and the search crawls back for a hundred evaluations, each
    an ODE solve at absurd parameters.  Near the mode the steps are short and
    the region inactive, so Newton's quadratic convergence is kept.

    ``known``: a mode of the same objective found earlier (by another start
    of a global search) and its objective, or an infinite objective for none.
    The search stops as soon as it is in that mode's basin: a positive
    definite Hessian, a Newton decrement below ``_MERGE`` (0.1 on the -2LL
    scale), a Newton target within ``_MERGE`` of the known mode in the
    Hessian's metric and an objective within ``_MERGE`` of its.  It then
    returns the known mode and its objective, converged: the last two or
    three evaluations of a search that would end there are not made.  The
    gradient and Hessian returned are those of the last point evaluated.
    """
    eta0 = jnp.where(jnp.isfinite(eta0), eta0, 0.0)
    zero = jnp.zeros_like(eta0)
    # Start from the better of the warm start and eta = 0, compared by value
    # alone (no derivatives: much cheaper than a Newton evaluation).
    # One call at both points (vmapped): one copy of the model's program.
    warm_value, zero_value = jax.vmap(objective, in_axes=(0, None))(jnp.stack([eta0, zero]), args)
    # ``try_zero`` false (a Python or a traced bool): from the warm start
    # whenever it is finite.
    from_zero = jnp.all(eta0 == 0) | jnp.where(
        try_zero,
        ~(warm_value <= zero_value),
        ~jnp.isfinite(warm_value),  # NaN: from zero
    )
    eta0 = jnp.where(from_zero, zero, eta0)
    options = dict(
        max_steps=max_steps,
        tolerance=tolerance,
        max_halvings=max_halvings,
        metric=metric,
        radius=radius,
        known=known,
    )
    n_scoring = jnp.zeros((), jnp.int32)
    if scoring is not None:
        # A failed scoring stage (no finite point, a stalled line search) leaves
        # the exact stage to start from the same point and decide.
        steps = jnp.minimum(max_steps, SCORING_STEPS)
        limits = dict(tolerance=jnp.sqrt(tolerance), max_steps=steps)
        first = _search(scoring, eta0, jnp.all(eta0 == 0), args, **dict(options, **limits))
        n_scoring = first.k
        eta0 = jnp.where(jnp.all(jnp.isfinite(first.eta)), first.eta, eta0)
    out = _search(value_gradient_hessian(objective), eta0, jnp.all(eta0 == 0), args, **options)
    # ``eta`` only moves to finite points: a subject with none keeps its warm start.
    # At convergence the Newton step from the last point is known and tiny: take
    # it (no evaluation needed).  The error in eta becomes quadratic in the old
    # one; summed over thousands of subjects, the first-order error would show in
    # the OFV gradient (envelope theorem) at the level of the outer tolerance.
    # The Hessian returned (for the implicit derivative) is still that of the
    # last evaluated point, off by O(|step|): errors that add up over subjects
    # rather than cancel, so the tolerance must stay tight (1e-12 by default:
    # a 10^4-subject FOCEI gradient is then good to ~1e-3; at 1e-8 it was
    # off by ~1, which stalls the outer search).
    polish = (out.status == EBEStatus.CONVERGED) & (
        out.decrement <= _NEAR * tolerance * jnp.maximum(1.0, jnp.abs(out.value))
    )
    eta = jnp.where(polish & jnp.all(jnp.isfinite(out.step)), out.eta + out.step, out.eta)
    return EBEResult(
        eta, out.value, out.grad, out.hess, out.status.astype(jnp.int32), out.k + n_scoring
    )


def prior_starts(
    omega: Float[Array, "n_eta n_eta"],
    iov_omega: Float[Array, "n_iov n_iov"],
    n_occasions: int,
    *,
    spread: float = 2.0,
) -> Float[Array, "n_starts n_b"]:
    """The fixed EBE starts of a global search: ``b = 0`` and, for every
    eigenvector ``v`` of OMEGA with variance ``lambda``, the two points
    ``+-spread * sqrt(lambda) v`` (``spread`` prior SDs along the principal
    axes of the random effects).  IOV etas move together in every occasion
    along the eigenvectors of the IOV OMEGA, so the number of starts,
    ``1 + 2 (n_eta + n_iov_eta)``, does not grow with the occasions.

    The starts depend on OMEGA only (not on the data nor on earlier
    searches): the population objective that searches from them is a function
    of the parameters and the data alone.  Two prior SDs reach the other
    basin of the usual two-mode individual objectives (flip-flop absorption,
    where ``ka`` and the elimination rate swap, or a lag time on either side
    of a sample), whose boundary lies one to two SDs from the typical value.
    """

    def axes(matrix):
        if matrix.shape[0] == 0:
            return jnp.zeros((0, 0), matrix.dtype)
        values, vectors = jnp.linalg.eigh(0.5 * (matrix + matrix.T))
        return (vectors * (spread * jnp.sqrt(jnp.maximum(values, 0.0)))).T  # rows: axes

    iiv, iov = axes(omega), axes(iov_omega)
    n_eta, n_iov = iiv.shape[0], iov.shape[0]
    n_b = n_eta + n_occasions * n_iov
    rows = [jnp.zeros((1, n_b), omega.dtype)]
    if n_eta:
        rows.append(jnp.pad(iiv, ((0, 0), (0, n_b - n_eta))))
    if n_iov:
        rows.append(jnp.pad(jnp.tile(iov, (1, n_occasions)), ((0, 0), (n_eta, 0))))
    positive = jnp.concatenate(rows[1:], axis=0) if len(rows) > 1 else rows[0][:0]
    return jnp.concatenate([rows[0], positive, -positive], axis=0)


def global_ebe(
    objective: Callable[[Array, Any], Array],
    starts: Float[Array, "n_starts n_b"],
    args: Any,
    **options: Any,
) -> tuple[EBEResult, Int[Array, ""]]:
    """The lowest mode of ``objective`` over Newton searches from every row
    of ``starts`` (one batched pass; ``options`` as in :func:`newton_ebe`).

    Each search runs from its own start (no switch to ``b = 0``), and the
    mode with the lowest individual objective wins; ties go to the earlier
    start, so the result is a function of the starts alone.  Returns that
    search's result and the index of its start.  A subject whose objective
    has several modes thus gets its global mode whenever one of the starts
    lies in its basin, and the implicit derivative is taken at that mode."""
    results = jax.vmap(lambda start: newton_ebe(objective, start, args, try_zero=False, **options))(
        starts
    )
    finite = jnp.isfinite(results.objective) & jnp.all(jnp.isfinite(results.eta), axis=1)
    # A converged search beats an unfinished one; among those, the lowest mode.
    converged = finite & (results.status == EBEStatus.CONVERGED)
    eligible = jnp.where(jnp.any(converged), converged, finite)
    best = jnp.argmin(jnp.where(eligible, results.objective, jnp.inf))
    return jax.tree_util.tree_map(lambda x: x[best], results), best.astype(jnp.int32)
