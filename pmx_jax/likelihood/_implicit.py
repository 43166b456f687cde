"""Derivatives of the EBE with respect to the population parameters, without
differentiating the Newton iterations.

The EBE ``b*(theta)`` solves ``g(b*, theta) = 0`` with ``g`` the gradient of the
individual objective.  The implicit function theorem gives
``db*/dtheta = -H^-1 dg/dtheta`` with ``H`` the Hessian at ``b*``.
:func:`implicit_ebe` returns the solver's ``b*`` unchanged and carries that
derivative as a custom JVP, so:

- evaluating the OFV never traces this rule (no extra compile);
- ``jax.grad`` of the OFV sees the total derivative: for Laplace, whose
  ``l(b*)`` is stationary in ``b``, it reduces to the envelope theorem; the
  FOCEI and Laplace determinants and the FOCEI residual terms need it in full;
- the JVP is linear in the parameter tangents, so reverse mode transposes it.

``H`` is the solver's Hessian at ``b*`` (the exact one, not its
positive-definite modification).  Second derivatives through this rule are not
exact (the derivative of ``H^-1`` is not modelled): the covariance step should
differentiate the gradient by finite differences or with its own rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float


def _is_none(x: Any) -> bool:
    return x is None


@eqx.filter_custom_jvp
def implicit_ebe(
    ebe: Float[Array, " n_b"],
    hessian: Float[Array, "n_b n_b"],
    args: Any,
    *,
    objective: Callable[[Array, Any], Array],
    materialize: bool | Callable[[Any], Any] = False,
) -> Float[Array, " n_b"]:
    """The EBE ``ebe`` (a converged mode of ``objective(., args)``), seen by
    autodiff as the function of ``args`` it is.

    ``materialize``: build ``dg/dargs`` as a matrix from the primal values
    (one forward pass per differentiated scalar) and contract it with the
    tangents, instead of differentiating ``g`` along the tangents.  Needed when
    the objective contains loops that reverse mode cannot transpose (the
    adaptive ODE solves of nonlinear ODE models, whose derivative rule itself
    integrates a variational system): the tangent is then a plain contraction.
    ``True`` materialises every differentiated leaf of ``args``; a function
    ``args -> bool pytree`` (one bool per leaf of ``args``) selects the leaves
    that reach the loops, and the others (e.g. OMEGA^-1, which enters ``g`` linearly) keep
    the cheaper tangent, whose derivative then never enters the loops.  The
    cost of the matrix is one forward pass per selected scalar.
    """
    del hessian, args, objective, materialize
    return ebe


@implicit_ebe.def_jvp
def _implicit_ebe_jvp(primals, tangents, *, objective, materialize=False):
    ebe, hessian, args = primals
    _, _, t_args = tangents
    ebe = jax.lax.stop_gradient(ebe)
    hessian = jax.lax.stop_gradient(hessian)
    if t_args is None or not jtu.tree_leaves(t_args):
        return ebe, jnp.zeros_like(ebe)
    g_dot = _tangent(lambda a: jax.grad(objective)(ebe, a), args, t_args, materialize)
    # Non-converged subjects may carry a useless Hessian: give them a zero
    # derivative.  The test is on the primal only (a select on a tangent could not
    # be transposed), and the identity stands in so no NaN reaches the cotangents.
    usable = jnp.all(jnp.isfinite(hessian))
    eye = jnp.eye(hessian.shape[0], dtype=hessian.dtype)
    sym = jnp.where(usable, 0.5 * (hessian + hessian.T), eye)
    t_ebe = -jnp.linalg.solve(sym, g_dot)
    return ebe, jnp.where(usable, t_ebe, 0.0)


def _tangent(fn: Callable[[Any], Array], args: Any, t_args: Any, materialize: Any) -> Array:
    """The JVP of ``fn`` at ``args`` along ``t_args`` (``None`` where a leaf is
    not differentiated), with the Jacobian materialised as ``materialize``
    says (see :func:`implicit_ebe`): the result is then linear in the tangents
    through plain contractions, which reverse mode transposes."""
    # Differentiate only the leaves that carry a tangent (the parameters), not
    # the subject's data.
    active = jtu.tree_map(lambda t: t is not None, t_args, is_leaf=_is_none)
    moving, fixed = eqx.partition(args, active)
    t_moving, _ = eqx.partition(t_args, active, is_leaf=_is_none)

    def f(moving_args):
        return fn(eqx.combine(moving_args, fixed))

    if not materialize:
        return jax.jvp(f, (moving,), (t_moving,))[1]
    select = active
    if callable(materialize):
        select = jtu.tree_map(lambda a, s: a and s, active, materialize(args))
    through, along = eqx.partition(moving, select)
    t_through, t_along = eqx.partition(t_moving, select, is_leaf=_is_none)
    parts = []
    if jtu.tree_leaves(through):
        jacobian = jax.jacfwd(lambda x: f(eqx.combine(x, along)))(through)
        pairs = zip(jtu.tree_leaves(jacobian), jtu.tree_leaves(t_through), strict=True)
        parts += [jnp.tensordot(j, t, axes=jnp.ndim(t)) for j, t in pairs]
    if jtu.tree_leaves(along):
        parts.append(jax.jvp(lambda y: f(eqx.combine(through, y)), (along,), (t_along,))[1])
    return sum(parts)


@eqx.filter_custom_jvp
def forward_only(args: Any, *, fn: Callable[[Any], Array], materialize: Any = True) -> Array:
    """``fn(args)``, whose derivative autodiff takes from a Jacobian built in
    forward mode (``materialize`` as in :func:`implicit_ebe`) and contracted
    with the tangents.  For terms that reverse mode cannot differentiate, e.g.
    the log-determinant of the Hessian of a nonlinear ODE model's individual
    objective (Laplace): its derivative runs variational solves inside
    variational solves.  Second derivatives through it are not exact."""
    del materialize
    return fn(args)


@forward_only.def_jvp
def _forward_only_jvp(primals, tangents, *, fn, materialize=True):
    (args,) = primals
    (t_args,) = tangents
    value = fn(args)
    if t_args is None or not jtu.tree_leaves(t_args):
        return value, jnp.zeros_like(value)
    return value, _tangent(fn, args, t_args, materialize)
