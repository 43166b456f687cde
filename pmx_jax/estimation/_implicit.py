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
    materialize: bool = False,
) -> Float[Array, " n_b"]:
    """The EBE ``ebe`` (a converged mode of ``objective(., args)``), seen by
    autodiff as the function of ``args`` it is.

    ``materialize``: build ``dg/dargs`` as a matrix from the primal values
    (one forward pass per differentiated scalar) and contract it with the
    tangents, instead of differentiating ``g`` along the tangents.  Needed when
    the objective contains loops that reverse mode cannot transpose (the
    adaptive ODE solves of nonlinear ODE models, whose derivative rule itself
    integrates a variational system): the tangent is then a plain contraction.
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
    # Differentiate only the leaves that carry a tangent (the parameters), not
    # the subject's data.
    active = jtu.tree_map(lambda t: t is not None, t_args, is_leaf=_is_none)
    moving, fixed = eqx.partition(args, active)
    t_moving, _ = eqx.partition(t_args, active, is_leaf=_is_none)

    def gradient(moving_args):
        return jax.grad(objective)(ebe, eqx.combine(moving_args, fixed))

    if materialize:
        jacobian = jax.jacfwd(gradient)(moving)
        pairs = zip(jtu.tree_leaves(jacobian), jtu.tree_leaves(t_moving), strict=True)
        g_dot = sum(jnp.tensordot(j, t, axes=jnp.ndim(t)) for j, t in pairs)
    else:
        _, g_dot = jax.jvp(gradient, (moving,), (t_moving,))
    # Non-converged subjects may carry a useless Hessian: give them a zero
    # derivative.  The test is on the primal only (a select on a tangent could not
    # be transposed), and the identity stands in so no NaN reaches the cotangents.
    usable = jnp.all(jnp.isfinite(hessian))
    eye = jnp.eye(hessian.shape[0], dtype=hessian.dtype)
    sym = jnp.where(usable, 0.5 * (hessian + hessian.T), eye)
    t_ebe = -jnp.linalg.solve(sym, g_dot)
    return ebe, jnp.where(usable, t_ebe, 0.0)
