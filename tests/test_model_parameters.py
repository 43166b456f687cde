"""THETA and OMEGA: arithmetic, bounds, unconstrained transforms."""

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pmx_jax.model as pmx  # noqa: E402
from pmx_jax.model._parameters import check_theta  # noqa: E402


def test_theta_behaves_as_its_value():
    t = pmx.theta(0.5)
    assert float(jnp.exp(t)) == pytest.approx(np.exp(0.5))
    assert float(t + 1) == 1.5 and float(1 + t) == 1.5
    assert float(t - 1) == -0.5 and float(1 - t) == 0.5
    assert float(2 * t) == 1.0 and float(t * 2) == 1.0
    assert float(t / 2) == 0.25 and float(2 / t) == 4.0
    assert float(t**2) == 0.25 and float(2**t) == pytest.approx(2**0.5)
    assert float(-t) == -0.5 and float(abs(-t)) == 0.5
    assert float(t + t) == 1.0
    assert bool(t > 0) and bool(t <= 0.5)
    assert float(np.float64(2.0) * t) == 1.0
    assert float(np.asarray([1.0, 2.0])[1] * t) == 1.0
    assert t.shape == () and float(t) == 0.5 and f"{t:.2f}" == "0.50"
    assert jnp.stack([t, t]).shape == (2,)


def test_theta_under_jit_and_grad():
    t = pmx.theta(0.3, lower=0.0)

    @eqx.filter_jit
    def f(t):
        return jnp.exp(t + 1.0) * t

    assert float(f(t)) == pytest.approx(np.exp(1.3) * 0.3)
    g = eqx.filter_grad(f)(t)
    assert isinstance(g, pmx.Theta)
    assert float(g.value) == pytest.approx(np.exp(1.3) * 1.3)
    # jax.grad on the value leaf directly agrees
    g2 = jax.grad(lambda v: f(eqx.tree_at(lambda t: t.value, t, v)))(jnp.asarray(0.3))
    assert float(g2) == pytest.approx(float(g.value))


def test_theta_leaves_and_static_fields():
    t = pmx.theta(1.0, lower=0.0, upper=5.0, fixed=True, prior="a prior")
    leaves = jax.tree_util.tree_leaves(t)
    assert len(leaves) == 1 and float(leaves[0]) == 1.0
    assert (t.lower, t.upper, t.fixed, t.prior.distribution) == (0.0, 5.0, True, "a prior")
    assert "lower=0" in repr(t) and "fixed=True" in repr(t)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(lower=-1.0), dict(upper=2.0), dict(lower=-1.0, upper=2.0)],
)
def test_theta_transform_round_trip_and_gradient(kwargs):
    t = pmx.theta(0.5, **kwargs)
    kind = {0: "identity", 1: "log", 2: "logit"}[len(kwargs)]
    assert t.transform_kind == kind
    for x in [0.5, 1.9, -0.9]:
        u = t.to_unconstrained(x)
        assert float(t.from_unconstrained(u)) == pytest.approx(x, rel=1e-12)
    # Central differences with h = 1e-6: truncation error O(h^2) ~ 1e-12 and
    # rounding error ~ eps / h ~ 1e-10, so rtol 1e-7 is comfortable.
    h = 1e-6
    for u in [-2.0, 0.0, 1.3]:
        ad = jax.grad(t.from_unconstrained)(jnp.asarray(u))
        fd = (t.from_unconstrained(u + h) - t.from_unconstrained(u - h)) / (2 * h)
        assert float(ad) == pytest.approx(float(fd), rel=1e-7)
    ad = jax.grad(t.to_unconstrained)(jnp.asarray(0.5))
    fd = (t.to_unconstrained(0.5 + h) - t.to_unconstrained(0.5 - h)) / (2 * h)
    assert float(ad) == pytest.approx(float(fd), rel=1e-7)


def test_theta_from_unconstrained_respects_bounds():
    t = pmx.theta(1.0, lower=0.0, upper=3.0)
    x = t.from_unconstrained(jnp.linspace(-30.0, 30.0, 11))
    assert bool(jnp.all((x >= 0.0) & (x <= 3.0)))
    t = pmx.theta(-1.0, upper=0.0)
    assert float(t.from_unconstrained(5.0)) < 0


def test_theta_bound_checks_name_the_parameter():
    with pytest.raises(pmx.ThetaBoundsError, match="M.tv.*strictly inside"):
        check_theta(pmx.theta(20.0, lower=-5.0, upper=10.0), "M.tv")
    with pytest.raises(pmx.ThetaBoundsError, match="below upper"):
        check_theta(pmx.theta(0.0, lower=1.0, upper=0.5), "M.t")
    with pytest.raises(pmx.ThetaBoundsError):
        check_theta(pmx.theta(0.0, lower=0.0), "M.t")
    check_theta(pmx.theta(0.0, lower=0.0, fixed=True), "M.t")  # FIX at a bound is allowed
    with pytest.raises(TypeError):
        pmx.theta("1.0")
    with pytest.raises(TypeError):
        pmx.theta([1.0, 2.0])


def test_omega_diagonal():
    om = pmx.omega(ka=0.6, cl=0.3, v=0.1)
    assert om.names == ("ka", "cl", "v") and om.diagonal and not om.occasion
    np.testing.assert_allclose(om.matrix, np.diag([0.6, 0.3, 0.1]))
    u = om.to_unconstrained()
    np.testing.assert_allclose(u, np.log([0.6, 0.3, 0.1]))
    np.testing.assert_allclose(om.from_unconstrained(u), om.matrix, rtol=1e-14)
    assert pmx.omega(cl_iov=0.05, occasion=True).occasion


def test_omega_block_and_log_cholesky_round_trip():
    m = [[0.1, 0.01, 0.0], [0.01, 0.2, -0.05], [0.0, -0.05, 0.3]]
    om = pmx.omega_block(("cl", "v", "q"), m)
    assert not om.diagonal and om.n_unconstrained == 6
    u = eqx.filter_jit(pmx.Omega.to_unconstrained)(om)
    assert u.shape == (6,)
    chol = np.linalg.cholesky(np.asarray(m))
    np.testing.assert_allclose(u[0], np.log(chol[0, 0]))
    np.testing.assert_allclose(u[1], chol[1, 0])
    from_u = eqx.filter_jit(pmx.Omega.from_unconstrained)
    np.testing.assert_allclose(from_u(om, u), m, rtol=1e-12, atol=1e-15)
    # any real vector maps to a positive-definite matrix
    rebuilt = from_u(om, jnp.array([-1.0, 3.0, 0.5, -2.0, 0.1, 2.0]))
    assert np.linalg.eigvalsh(np.asarray(rebuilt))[0] > 0
    np.testing.assert_allclose(rebuilt, rebuilt.T)
    # NONMEM lower-triangle input
    tri = pmx.omega_block(("cl", "v"), [0.1, 0.01, 0.1])
    np.testing.assert_allclose(tri.matrix, [[0.1, 0.01], [0.01, 0.1]])


def test_omega_unconstrained_gradient_matches_finite_differences():
    om = pmx.omega_block(("cl", "v"), [[0.1, 0.02], [0.02, 0.3]])

    weights = jnp.array([[1.0, -2.0], [0.5, 3.0]])

    @jax.jit
    def weighted(u):
        return jnp.sum(weights * om.from_unconstrained(u))

    u = om.to_unconstrained()
    ad = jax.jit(jax.grad(weighted))(u)
    h = 1e-6
    fd = [(weighted(u + h * e) - weighted(u - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(ad, fd, rtol=1e-6)


def test_omega_checks():
    with pytest.raises(pmx.OmegaNotPositiveDefiniteError, match=r"\('cl', 'v'\).*smallest eigen"):
        pmx.omega_block(("cl", "v"), [[0.1, 0.2], [0.2, 0.1]])
    with pytest.raises(pmx.OmegaNotPositiveDefiniteError, match="cl"):
        pmx.omega(cl=0.0)
    with pytest.raises(ValueError, match="not symmetric"):
        pmx.omega_block(("cl", "v"), [[0.1, 0.01], [0.02, 0.1]])
    with pytest.raises(ValueError, match="2x2"):
        pmx.omega_block(("cl", "v"), [[0.1]])
    with pytest.raises(ValueError, match="identifier"):
        pmx.omega_block(("cl", "1v"), [[0.1, 0.0], [0.0, 0.1]])
    with pytest.raises(ValueError, match="at least one"):
        pmx.omega()
    assert issubclass(pmx.OmegaNotPositiveDefiniteError, ValueError)
