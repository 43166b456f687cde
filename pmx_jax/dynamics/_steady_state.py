"""Periodic steady state: the trough amounts reached after infinitely many doses.

NONMEM's SS=1 dose record means "the subject has been dosed like this forever".
The event engine builds ``period_map``: amounts just before a dose -> amounts
just before the next dose (dose given, one interval II elapsed).  The steady
state is its fixed point ``x = period_map(x)``.

- Linear dynamics (every closed-form model, linear ODEs): the map is affine,
  ``period_map(x) = A x + c`` with ``A`` the transition matrix over one interval
  and ``c`` the amounts one interval after a single dose into an empty body, so
  the steady state is ``(I - A)^{-1} c``, the sum of the geometric series
  ``c + A c + A^2 c + ...`` of superposition.  One Jacobian and one linear solve.
- Nonlinear dynamics (saturable elimination, TMDD): Newton's method on
  ``period_map(x) - x``, with fixed-point iteration (dosing forward) as a
  fallback when Newton does not converge.

Either way the derivative with respect to the parameters comes from the
implicit function theorem at the solution, ``dx = (I - A)^{-1} d period_map``,
never from differentiating through iterations: gradients cost one extra linear
solve and are exact for the fixed point that was found.  Parameters must reach
``period_map`` through ``args`` or as arrays it closes over (both are
differentiated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jaxtyping import Array, Bool, Float, PyTree

from ._ode import strongly_typed

PeriodMap = Callable[[Float[Array, " n_cmt"], Any], Float[Array, " n_cmt"]]


def _jvp_wrt_moving(fn: Callable, primals: tuple, tangents: tuple):
    """``jax.jvp`` of ``fn(*primals)`` where ``tangents`` may hold ``None``
    (symbolic zero, or not differentiable) at any leaf; those leaves are held
    fixed.  Returns ``None`` as the tangent when nothing moves."""
    leaves, treedef = jtu.tree_flatten(primals)
    tangent_leaves = treedef.flatten_up_to(tangents)
    moving = [t is not None for t in tangent_leaves]
    if not any(moving):
        return fn(*primals), None

    def partial_fn(*moving_leaves):
        supply = iter(moving_leaves)
        merged = [next(supply) if m else x for x, m in zip(leaves, moving, strict=True)]
        return fn(*treedef.unflatten(merged))

    return jax.jvp(
        partial_fn,
        tuple(x for x, m in zip(leaves, moving, strict=True) if m),
        tuple(t for t in tangent_leaves if t is not None),
    )


def _affine_solve(period_map, args, template):
    zero = jnp.zeros_like(template)

    def map_twice(x):
        out = period_map(x, args)
        return out, out

    # The Jacobian of an affine map is the same everywhere; at 0 the value is c.
    transition, offset = jax.jacfwd(map_twice, has_aux=True)(zero)
    system = jnp.eye(zero.shape[0], dtype=zero.dtype) - transition
    return jnp.linalg.solve(system, offset), system


@eqx.filter_custom_jvp
def _affine_fixed_point(period_map, args, template):
    trough, _ = _affine_solve(period_map, args, template)
    return trough


@_affine_fixed_point.def_jvp
def _affine_fixed_point_jvp(primals, tangents):
    period_map, args, template = primals
    t_map, t_args, _ = tangents  # the fixed point does not depend on the start
    trough, system = _affine_solve(period_map, args, template)
    _, moved = _jvp_wrt_moving(lambda m, a: m(trough, a), (period_map, args), (t_map, t_args))
    if moved is None:
        return trough, None
    return trough, jnp.linalg.solve(system, moved)


def _newton_then_fixed_point(period_map, x0, args, rtol, atol, max_steps, max_fixed_point_steps):
    def scaled_residual(x, a):
        # Newton stops when both its step and |period_map(x) - x| are below
        # atol + rtol |x|, the same relative test as the ODE solver's.  optimistix
        # tests the residual against atol alone, so we hand it the residual in
        # units of that scale; the scale is held constant (stop_gradient), so
        # the Newton step and the implicit derivative are those of the plain
        # residual.
        scale = 1.0 + (rtol / atol) * jnp.abs(jax.lax.stop_gradient(x))
        return (period_map(x, a) - x) / scale

    newton = optx.Newton(rtol=rtol, atol=atol)
    solution = optx.root_find(
        scaled_residual, newton, x0, args, max_steps=max_steps, throw=False
    )
    finite = jnp.all(jnp.isfinite(solution.value))
    newton_ok = (solution.result == optx.RESULTS.successful) & finite

    def converged():
        return solution.value, newton_ok

    def dose_forward():
        # Under vmap both branches run: subjects that Newton solved start at
        # their fixed point and stop after one interval.
        start = jnp.where(finite, solution.value, x0)
        iteration = optx.FixedPointIteration(rtol=rtol, atol=atol)
        fallback = optx.fixed_point(
            period_map, iteration, start, args, max_steps=max_fixed_point_steps, throw=False
        )
        ok = (fallback.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(fallback.value))
        return fallback.value, ok

    return jax.lax.cond(newton_ok, converged, dose_forward)


def periodic_steady_state(
    period_map: PeriodMap,
    x0: Float[Array, " n_cmt"],
    args: PyTree = None,
    *,
    linear: bool,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_steps: int = 64,
    max_fixed_point_steps: int = 2048,
) -> tuple[Float[Array, " n_cmt"], Bool[Array, ""]]:
    """Trough amounts at periodic steady state and whether they were found.

    Arguments:
        period_map: ``period_map(x, args)``, the amounts just before the next
            dose given the amounts ``x`` just before a dose (the dose and one
            dosing interval included).  Must be jit/grad compatible.
        x0: starting guess for nonlinear dynamics (zeros, the trough of a
            linearised model, or the previous steady state); gives only the
            shape and dtype when ``linear``.
        args: parameters of ``period_map``, differentiated implicitly.
        linear: the map is affine in ``x`` (``dynamics.is_linear``): solve
            ``(I - A) x = c`` directly.
        rtol, atol: Newton stops once its estimated remaining error is below
            ``1e-2 (atol + rtol |x|)`` (so ~1e-8 relative by default), which is
            well above the noise of an adaptive ODE solve at its default
            tolerances; the fallback fixed-point iteration stops when a step is
            below ``atol + rtol |x|``.
        max_steps: Newton iterations (each costs one Jacobian of the map).
        max_fixed_point_steps: dosing intervals simulated by the fallback.

    Returns:
        ``(x_ss, ok)``; ``ok`` is False when no finite fixed point was found
        (e.g. no elimination, so I - A is singular, or neither Newton nor the
        fallback converged); ``x_ss`` is then the last iterate, not a NaN.
    """
    x0 = jnp.asarray(x0)
    if x0.ndim != 1:
        raise ValueError(f"periodic_steady_state: x0 must be a vector of amounts, got {x0.shape}")
    args = strongly_typed(args)
    if linear:
        # Closure-convert so arrays that period_map closes over (the event
        # engine's per-subject doses and parameters) are explicit inputs of the
        # implicit-derivative rule, hence differentiated like args.
        period_map = strongly_typed(eqx.filter_closure_convert(period_map, x0, args))
        trough = _affine_fixed_point(period_map, args, x0)
        return trough, jnp.all(jnp.isfinite(trough))
    return _newton_then_fixed_point(
        period_map, x0, args, rtol, atol, max_steps, max_fixed_point_steps
    )
