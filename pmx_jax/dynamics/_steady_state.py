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
implicit function theorem at the solution, ``dx = (I - A)^{-1} d period_map``
with ``A`` the Jacobian of the map there, never from differentiating through
iterations: a derivative costs one Jacobian, one directional derivative of the
map and one linear solve, and is exact for the fixed point that was found.  The
rule calls itself for the solution, so second derivatives (FOCEI, Laplace)
are exact too.  Parameters must reach ``period_map`` through ``args`` or as
arrays it closes over (both are differentiated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
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
        tuple(jnp.asarray(x) for x, m in zip(leaves, moving, strict=True) if m),
        tuple(t for t in tangent_leaves if t is not None),
    )


class _Method(eqx.Module):
    """How to search for the fixed point (static configuration)."""

    linear: bool
    rtol: float
    atol: float
    max_steps: int
    max_fixed_point_steps: int


def _affine_solve(period_map, args, x0):
    """Fixed point of an affine map and ``I - A``, in one Jacobian evaluation."""
    zero = jnp.zeros_like(x0)

    def map_twice(x):
        out = period_map(x, args)
        return out, out

    # The Jacobian of an affine map is the same everywhere; at 0 the value is c.
    transition, offset = jax.jacfwd(map_twice, has_aux=True)(zero)
    system = jnp.eye(zero.shape[0], dtype=zero.dtype) - transition
    trough = jnp.linalg.solve(system, offset)
    return trough, jnp.all(jnp.isfinite(trough)), system


def _newton_then_fixed_point(period_map, args, x0, method):
    """Fixed point of a nonlinear map, by Newton, else by dosing forward."""
    rtol, atol = method.rtol, method.atol

    import optimistix as optx  # loaded where a steady state is solved

    def scaled_residual(x, a):
        # Newton stops when both its step and |period_map(x) - x| are below
        # atol + rtol |x|, the same relative test as the ODE solver's.  optimistix
        # tests the residual against atol alone, so we hand it the residual in
        # units of that scale; the scale is held constant (stop_gradient), so
        # the Newton step is that of the plain residual.
        scale = 1.0 + (rtol / atol) * jnp.abs(jax.lax.stop_gradient(x))
        return (period_map(x, a) - x) / scale

    newton = optx.root_find(
        scaled_residual,
        optx.Newton(rtol=rtol, atol=atol),
        x0,
        args,
        max_steps=method.max_steps,
        throw=False,
    )
    finite = jnp.all(jnp.isfinite(newton.value))
    newton_ok = (newton.result == optx.RESULTS.successful) & finite

    def converged():
        return newton.value, newton_ok

    def dose_forward():
        # Under vmap both branches run: subjects that Newton solved start at
        # their fixed point and stop after one interval.
        start = jnp.where(finite, newton.value, x0)
        fallback = optx.fixed_point(
            period_map,
            optx.FixedPointIteration(rtol=rtol, atol=atol),
            start,
            args,
            max_steps=method.max_fixed_point_steps,
            throw=False,
        )
        ok = (fallback.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(fallback.value))
        return fallback.value, ok

    return jax.lax.cond(newton_ok, converged, dose_forward)


@eqx.filter_custom_jvp
def _steady_state(period_map, args, x0, *, method):
    # Never differentiated itself: the rule below supplies the derivative.
    if method.linear:
        trough, ok, _ = _affine_solve(period_map, args, x0)
        return trough, ok
    return _newton_then_fixed_point(period_map, args, x0, method)


@_steady_state.def_jvp
def _steady_state_jvp(primals, tangents, *, method):
    period_map, args, x0 = primals
    t_map, t_args, _ = tangents  # the fixed point does not depend on the start
    if method.linear:
        trough, ok, system = _affine_solve(period_map, args, x0)
    else:
        # Through this same function, so that a second derivative sees the
        # first-order dependence of the solution on the parameters.
        trough, ok = _steady_state(period_map, args, x0, method=method)
        transition = jax.jacfwd(lambda x: period_map(x, args))(trough)
        system = jnp.eye(trough.shape[0], dtype=trough.dtype) - transition
    _, moved = _jvp_wrt_moving(lambda m, a: m(trough, a), (period_map, args), (t_map, t_args))
    if moved is None:  # only the starting guess moved
        return (trough, ok), (jnp.zeros_like(trough), None)
    return (trough, ok), (jnp.linalg.solve(system, moved), None)


def periodic_steady_state(
    period_map: PeriodMap,
    x0: Float[Array, " n_cmt"],
    args: PyTree = None,
    *,
    linear: bool,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 64,
    max_fixed_point_steps: int = 256,
) -> tuple[Float[Array, " n_cmt"], Bool[Array, ""]]:
    """Trough amounts at periodic steady state and whether they were found.

    Arguments:
        period_map: ``period_map(x, args)``, the amounts just before the next
            dose given the amounts ``x`` just before a dose (the dose and one
            dosing interval included).  Must be jit/grad compatible.
        x0: starting guess for nonlinear dynamics (zeros, the trough of a
            linearised model, or the previous steady state); gives only the
            shape and dtype when ``linear``.
        args: parameters of ``period_map``; they, and any arrays that
            ``period_map`` closes over, are differentiated implicitly.
        linear: the map is affine in ``x`` (``dynamics.is_linear``): solve
            ``(I - A) x = c`` directly.
        rtol, atol: Newton stops when both its last step and the residual
            ``|period_map(x) - x|`` are below ``atol + rtol |x|`` (amount
            units; the defaults match the ODE solver's).  Newton converges
            quadratically, so the error is then far below that.  The fallback
            stops when one interval changes x by less than that.
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
    # Closure-convert so arrays that period_map closes over (the event engine's
    # per-subject doses and parameters) become explicit inputs of the
    # derivative rule, differentiated like args.
    args = strongly_typed(args)
    period_map = strongly_typed(eqx.filter_closure_convert(period_map, x0, args))
    method = _Method(linear, rtol, atol, max_steps, max_fixed_point_steps)
    return _steady_state(period_map, args, x0, method=method)
