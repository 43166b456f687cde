"""Implicit solves of ODEs carried with their forward sensitivities.

An implicit Runge-Kutta method (``Kvaerno5`` for ``stiff=True``) solves, at
every stage, ``z - h gamma f(z) = r`` by a chord iteration with the matrix
``I - h gamma J`` of the whole state.  When the state carries sensitivities
(the derivative rule of ``_ode.py``: the amounts ``y`` with columns ``s_i``
solving ``s_i' = J(y) s_i + F_i(y)``, and, for second derivatives, the same
again one level up) that matrix is block lower triangular and **every
diagonal block is the same** ``n x n`` matrix ``I - h gamma J(y)``.  diffrax's
default materialises the full ``N x N`` matrix (``N = n (1 + k)`` or
``n (1 + k)(1 + k2)``): ``N`` Jacobian-vector products and an ``N^3`` LU per
step, which made stiff models with derivatives impractically slow (a minimal
PBPK model: 71 s for one Hessian of an amount over 24 h).

:func:`block_triangular_solve` solves with that matrix exactly, using its
structure: the diagonal block from ``n`` products, an ``n x n`` LU, then
forward substitution over the state's leaves (one product with the matrix per
further leaf).  The chord iteration is therefore the one diffrax would run
with the full matrix, at a fraction of the cost.  (Using the diagonal blocks
alone, CVODES' approximation, was tried first: the chord iteration then
converges too slowly for diffrax's divergence test, and most steps were
rejected.)

Layout contract (what ``_ode.py`` produces): every leaf of the state has
trailing dimension ``n`` and the first leaf is the amounts ``(n,)``.
"""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jax import lax
from jaxtyping import Array


def _layout(structure) -> tuple[list, jtu.PyTreeDef, int]:
    leaves, treedef = jtu.tree_flatten(structure)
    n = leaves[0].shape[-1] if leaves and leaves[0].ndim else 0
    if not n or leaves[0].shape != (n,) or any(leaf.shape[-1:] != (n,) for leaf in leaves):
        raise ValueError(
            "block-triangular stage solve: every state leaf must end in the number of "
            f"compartments, amounts first; got shapes {[x.shape for x in leaves]}"
        )
    return leaves, treedef, n


class _AmountsBlock(lx.AbstractLinearSolver):
    """Factors the diagonal block ``A`` (``n`` products with the stage matrix,
    directions in the amounts only).  The solve itself is done by
    :class:`_BlockChord`, which also needs the operator for the off-diagonal
    blocks; ``compute`` here solves with ``A`` alone (block diagonal)."""

    def init(self, operator: lx.AbstractLinearOperator, options: dict[str, Any]):
        del options
        leaves, treedef, n = _layout(operator.in_structure())

        def column(unit):
            direction = treedef.unflatten(
                [unit] + [jnp.zeros(leaf.shape, leaf.dtype) for leaf in leaves[1:]]
            )
            return jtu.tree_leaves(operator.mv(direction))[0]

        block = jax.vmap(column, out_axes=1)(jnp.eye(n, dtype=leaves[0].dtype))
        return jax.scipy.linalg.lu_factor(block)

    def compute(self, state, vector, options: dict[str, Any]):
        del options
        return jtu.tree_map(lambda b: _solve_block(state, b), vector), lx.RESULTS.successful, {}

    def transpose(self, state, options: dict[str, Any]):
        # Never needed: the stage solves of pmx_jax's sensitivity rule are not
        # differentiated (the rule supplies the derivatives).
        raise NotImplementedError("the amounts-block stage solver cannot be transposed")

    def conj(self, state, options: dict[str, Any]):
        return state, options

    def assume_full_rank(self) -> bool:
        return True


def _solve_block(factors, rhs: Array) -> Array:
    """``A^-1`` applied to every ``n``-vector (trailing axis) of ``rhs``."""
    n = factors[0].shape[0]
    rows = rhs.reshape(-1, n).T
    return jax.scipy.linalg.lu_solve(factors, rows).T.reshape(rhs.shape)


def block_triangular_solve(operator: lx.AbstractLinearOperator, factors, vector):
    """``M^-1 b`` for the block lower triangular stage matrix ``M`` (diagonal
    blocks ``A``, factored in ``factors``): forward substitution over the
    leaves, one product with ``M`` per leaf after the first.  Rows within a
    leaf are independent given the earlier leaves (sensitivity columns do not
    feed each other), so each leaf is one multi-right-hand-side solve."""
    b, treedef = jtu.tree_flatten(vector)
    x = [_solve_block(factors, b[0])]
    for j in range(1, len(b)):
        known = treedef.unflatten(x + [jnp.zeros_like(leaf) for leaf in b[j:]])
        coupling = jtu.tree_leaves(operator.mv(known))[j]
        x.append(_solve_block(factors, b[j] - coupling))
    return treedef.unflatten(x)


class _BlockChord(diffrax.VeryChord):
    """diffrax's chord iteration (Jacobian once per step) with the stage
    matrix applied by :func:`block_triangular_solve`."""

    def step(self, fn, y, args, options, state, tags):
        del options, tags
        fx, aux = fn(y, args)
        operator, factors = state.linear_state
        diff = block_triangular_solve(operator, lax.stop_gradient(factors), fx)
        new_y = jtu.tree_map(lambda a, d: a - d, y, diff)
        with jax.numpy_dtype_promotion("standard"):
            scaled = jtu.tree_map(
                lambda d, a: d / (self.atol + self.rtol * jnp.abs(a)), diff, new_y
            )
            diffsize = self.norm(scaled)
        new_state = eqx.tree_at(
            lambda st: (st.diff, st.diffsize, st.diffsize_prev, st.step),
            state,
            (diff, jnp.asarray(diffsize, state.diffsize.dtype), state.diffsize, state.step + 1),
        )
        return new_y, new_state, aux


def block_chord_kvaerno5() -> diffrax.Kvaerno5:
    """``Kvaerno5`` whose stage solves use :func:`block_triangular_solve`, with the
    root finder's tolerances taken from the step-size controller (diffrax's
    default for implicit solvers)."""
    root_finder = diffrax.with_stepsize_controller_tols(_BlockChord)(linear_solver=_AmountsBlock())
    return diffrax.Kvaerno5(root_finder=root_finder)
