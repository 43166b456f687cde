"""Laplace's log-determinant with a floored curvature (estimation/_curvature.py)
against numpy's determinant, finite differences and its limits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmx_jax.likelihood._curvature import (
    WIDTH,
    floored_logdet,
    smallest_relative_curvature,
)

RNG = np.random.default_rng(7)


def random_information(n):
    a = RNG.standard_normal((n, n))
    return a @ a.T + n * np.eye(n)


def curvature_with(information, mu):
    """``H/2 = L diag(mu) L^T`` in a random basis: relative eigenvalues ``mu``."""
    chol = np.linalg.cholesky(information)
    q, _ = np.linalg.qr(RNG.standard_normal((len(mu), len(mu))))
    return chol @ q @ np.diag(mu) @ q.T @ chol.T


def test_exact_where_the_curvature_is_not_small():
    info = random_information(4)
    hess = curvature_with(info, [0.5, 0.9, 1.3, 4.0])
    sign, expected = np.linalg.slogdet(hess)
    assert sign == 1
    # 0.5 is 12.5 widths above the floor 0.25: the correction is below 1e-6.
    assert float(floored_logdet(jnp.asarray(hess), jnp.asarray(info), 0.25)) == pytest.approx(
        expected, abs=1e-6
    )
    assert float(floored_logdet(jnp.asarray(hess), jnp.asarray(info), 0.0)) == pytest.approx(
        expected, abs=1e-12
    )
    assert float(smallest_relative_curvature(jnp.asarray(hess), jnp.asarray(info))) == (
        pytest.approx(0.5, abs=1e-12)
    )


def test_bounded_below_where_the_curvature_vanishes_or_turns_negative():
    info = random_information(3)
    _, logdet_info = np.linalg.slogdet(info)
    for smallest in (1e-3, 0.0, -0.5):
        hess = curvature_with(info, [smallest, 1.0, 2.0])
        value = float(floored_logdet(jnp.asarray(hess), jnp.asarray(info), 0.25))
        # The floored eigenvalue is 0.25 + 0.02 softplus((mu - 0.25) / 0.02) ~ 0.25.
        assert value == pytest.approx(logdet_info + np.log(0.25) + np.log(2.0), abs=1e-4)


def test_gradient_matches_finite_differences():
    info = jnp.asarray(random_information(3))
    hess = jnp.asarray(curvature_with(np.asarray(info), [0.26, 0.8, 1.5]))  # near the floor
    direction = jnp.asarray(RNG.standard_normal((3, 3)))
    direction = direction + direction.T

    def along(t):
        return floored_logdet(hess + t * direction, info + 0.3 * t * jnp.eye(3), 0.25)

    # Central differences, h = 1e-5: truncation ~h^2 f''' ~ 1e-9 (curvature
    # 1/WIDTH^2 ~ 2500 near the floor), rounding ~1e-16 / h ~ 1e-11.
    h = 1e-5
    fd = (float(along(h)) - float(along(-h))) / (2 * h)
    assert float(jax.grad(along)(0.0)) == pytest.approx(fd, rel=1e-6)
    assert float(jax.jvp(along, (0.0,), (1.0,))[1]) == pytest.approx(fd, rel=1e-6)


def test_repeated_eigenvalues_have_a_finite_gradient():
    # H/2 = I exactly: every relative eigenvalue is 1 (a linear Gaussian model).
    info = jnp.asarray(random_information(3))
    grad = jax.grad(lambda h: floored_logdet(0.5 * (h + h.T), info, 0.25))(info)
    np.testing.assert_allclose(grad, np.linalg.inv(np.asarray(info)), atol=1e-12)
    assert WIDTH > 0
