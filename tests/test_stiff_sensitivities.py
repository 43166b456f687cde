"""The stiff solver's structured stage solve (``pmx_jax/dynamics/_stiff.py``).

With ``stiff=True`` the sensitivity columns of the derivative rule are solved
by ``Kvaerno5`` with a block-triangular stage solve instead of diffrax's dense
one.  Checked here: the linear algebra against a dense solve, the chord
iteration against diffrax's own (same steps, same answer), and derivatives
against closed forms and finite differences.
"""

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree
from test_library_pk import PBPK as LIBRARY_PBPK

from pmx_jax.dynamics import AbstractODE
from pmx_jax.dynamics._library_pk import MinimalPBPK
from pmx_jax.dynamics._stiff import block_chord_kvaerno5, block_triangular_solve

jax.config.update("jax_enable_x64", True)


def test_block_triangular_solve_equals_dense_solve():
    # A stage matrix with the layout of a second-derivative state: amounts y
    # (n,), first-level columns s (k, n), second-level columns S_y (k2, n) and
    # S_s (k2, k, n); every diagonal block is A, the coupling strictly lower
    # (random), as the variational equations make it.
    rng = np.random.default_rng(0)
    n, k, k2 = 3, 2, 2
    a = jnp.asarray(np.eye(n) + 0.3 * rng.normal(size=(n, n)))
    c_sy = jnp.asarray(rng.normal(size=(k, n, n)))
    c_yy2 = jnp.asarray(rng.normal(size=(k2, n, n)))
    c_s2 = jnp.asarray(rng.normal(size=(k2, k, n, n)))
    c_y2 = jnp.asarray(rng.normal(size=(k2, k, n, n)))

    def apply(z):
        y, s, sy, ss = z
        return (
            a @ y,
            s @ a.T + jnp.einsum("inm,m->in", c_sy, y),
            sy @ a.T + jnp.einsum("jnm,m->jn", c_yy2, y),
            ss @ a.T + jnp.einsum("jinm,im->jin", c_s2, s) + jnp.einsum("jinm,jm->jin", c_y2, sy),
        )

    z = (jnp.zeros(n), jnp.zeros((k, n)), jnp.zeros((k2, n)), jnp.zeros((k2, k, n)))
    operator = lx.linearise(lx.JacobianLinearOperator(lambda x, _: apply(x), z, None))
    factors = jax.scipy.linalg.lu_factor(a)
    b = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape)), z)
    got = block_triangular_solve(operator, factors, b)

    flat, unravel = ravel_pytree(z)
    dense = jax.jacfwd(lambda v: ravel_pytree(apply(unravel(v)))[0])(flat)
    want = jnp.linalg.solve(dense, ravel_pytree(b)[0])
    np.testing.assert_allclose(ravel_pytree(got)[0], want, rtol=1e-10, atol=1e-12)


def _chain_with_sensitivity(t, z, args):
    # a -> b -> out with its sensitivity to k1 (y0 fixed): s' = J s + df/dk1.
    y, s = z
    k1, k2 = args
    jac = jnp.array([[-k1, 0.0], [k1, -k2]])
    return jac @ y, s @ jac.T + jnp.array([-y[0], y[0]])[None, :]


def test_chord_iteration_is_diffrax_s_own():
    # Exact stage solves make the iteration the one diffrax runs with the dense
    # matrix: the same accepted and rejected steps, the same answer.
    z0 = (jnp.array([1.0, 0.0]), jnp.zeros((1, 2)))
    runs = []
    for solver in (block_chord_kvaerno5(), diffrax.Kvaerno5()):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_chain_with_sensitivity),
            solver,
            0.0,
            2.0,
            None,
            z0,
            args=(1.0, 0.5),
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
        )
        runs.append(sol)
    block, dense = runs
    assert int(block.stats["num_steps"]) == int(dense.stats["num_steps"])
    assert int(block.stats["num_rejected_steps"]) == int(dense.stats["num_rejected_steps"])
    np.testing.assert_allclose(block.ys[1][-1], dense.ys[1][-1], rtol=1e-9)
    # d a(2)/d k1 = -2 exp(-2)
    np.testing.assert_allclose(block.ys[1][-1, 0, 0], -2.0 * np.exp(-2.0), rtol=1e-7)


class Chain(AbstractODE):
    compartments = ("a", "b")

    def rhs(self, t, y, p):
        return jnp.stack([-p["k1"] * y[0], p["k1"] * y[0] - p["k2"] * y[1]])


def _chain_b(k1, k2, t):
    return k1 / (k2 - k1) * (jnp.exp(-k1 * t) - jnp.exp(-k2 * t))


def test_stiff_first_and_second_derivatives_match_the_closed_form():
    model = Chain(stiff=True)
    x0 = jnp.array([1.0, 0.0])

    def b(k):
        return model.propagate(dict(k1=k[0], k2=k[1]), x0, 3.0)[1]

    def exact(k):
        return _chain_b(k[0], k[1], 3.0)

    k = jnp.array([1.3, 0.4])
    np.testing.assert_allclose(jax.jacfwd(b)(k), jax.jacfwd(exact)(k), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(b)(k), jax.grad(exact)(k), rtol=1e-6)
    np.testing.assert_allclose(jax.hessian(b)(k), jax.hessian(exact)(k), rtol=1e-5, atol=1e-8)


# The PBPK values of test_library_pk, with an oral dose.
PBPK = dict(LIBRARY_PBPK, ka=1.5)


def test_stiff_pbpk_sensitivities_match_finite_differences():
    # Blood pools turn over in seconds, the dose is absorbed over hours: stiff.
    # The derivative of the arterial amount at 4 h with respect to CLint and
    # the hepatic flow, against central differences of a tightly solved model.
    model = MinimalPBPK(stiff=True)
    tight = MinimalPBPK(stiff=True, rtol=1e-11, atol=1e-14, max_steps=100_000)
    x0 = jnp.zeros(6).at[0].set(100.0)
    arterial = model.compartments.index("arterial")

    def amount(m, p):
        return m.propagate(p, x0, 4.0)[arterial]

    grad = jax.jit(jax.grad(lambda p: amount(model, p)))(PBPK)
    f = jax.jit(lambda p: amount(tight, p))
    for name in ("clint", "q_liver"):
        h = 1e-4 * PBPK[name]
        up, down = dict(PBPK), dict(PBPK)
        up[name] += h
        down[name] -= h
        central = (f(up) - f(down)) / (2 * h)
        np.testing.assert_allclose(grad[name], central, rtol=1e-5)
