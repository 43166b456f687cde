"""The covariance step's R matrix is exact: it is built from central
differences of the exact (implicit-function) OFV gradient, because
forward-over-reverse through the implicit EBE rule is not exact for FOCEI.

Small model on Wang2007's data (3 free parameters): ``R`` against the
second differences of OFV values (an independent route, no gradient), against
``jax.hessian`` where the latter is exact (FO: no EBEs), and the flag raised
for a parameter the likelihood does not depend on.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import pmx_jax as pmx
from pmx_jax.estimation import CovarianceError, covariance_step, ofv
from pmx_jax.likelihood import prepare

sys.path.insert(0, str(Path(__file__).parent))
from test_estimation_wang import wang_table  # noqa: E402


class Small(pmx.Model):
    tke: pmx.Theta = pmx.theta(0.5, lower=0.0)
    prop: pmx.Theta = pmx.theta(0.3, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ke=0.04)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=self.tke * jnp.exp(eta.ke), v=jnp.asarray(1.0))

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


class SmallUnidentified(Small):
    unused: pmx.Theta = pmx.theta(1.0)


@pytest.fixture
def small(refdata):
    model = Small()
    return model, prepare(model, pmx.read_nonmem(wang_table(refdata)))


def _ofv_hessian_from_values(model, data, method, h=1e-3):
    y0, unravel = ravel_pytree(model.to_unconstrained())
    y0 = np.asarray(y0)

    def f(y):
        return float(ofv(model.from_unconstrained(unravel(jnp.asarray(y))), data, method).ofv)

    n = y0.size
    e = np.eye(n) * h
    hess = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            hess[i, j] = (
                f(y0 + e[i] + e[j])
                - f(y0 + e[i] - e[j])
                - f(y0 - e[i] + e[j])
                + f(y0 - e[i] - e[j])
            ) / (4 * h * h)
    return hess


def test_focei_r_matches_second_differences_of_the_ofv(small):
    model, data = small
    cov = covariance_step(model, data, "focei")
    reference = 0.5 * _ofv_hessian_from_values(model, data, "focei")
    np.testing.assert_allclose(cov.r_matrix, reference, rtol=2e-5, atol=2e-5)
    # The step size does not matter at this accuracy.
    coarse = covariance_step(model, data, "focei", step=1e-3)
    np.testing.assert_allclose(cov.r_matrix, coarse.r_matrix, rtol=1e-5, atol=1e-5)
    # S is the cross-product of the per-subject scores: positive semi-definite.
    assert np.all(np.linalg.eigvalsh(cov.s_matrix) >= -1e-12)


@pytest.mark.slow
def test_fo_r_matches_jax_hessian(small):
    """FO has no EBEs, so ``jax.hessian`` of its OFV is exact."""
    model, data = small
    y0, unravel = ravel_pytree(model.to_unconstrained())
    exact = jax.hessian(lambda y: ofv(model.from_unconstrained(unravel(y)), data, "fo").ofv)(y0)
    cov = covariance_step(model, data, "fo")
    np.testing.assert_allclose(cov.r_matrix, 0.5 * np.asarray(exact), rtol=1e-6, atol=1e-7)


def test_kinds_and_delta_method(small):
    model, data = small
    sandwich = covariance_step(model, data, "focei")
    r_only = covariance_step(model, data, "focei", kind="r")
    s_only = covariance_step(model, data, "focei", kind="s")
    r_inv = np.linalg.inv(sandwich.r_matrix)
    np.testing.assert_allclose(
        sandwich.covariance_unconstrained, r_inv @ sandwich.s_matrix @ r_inv, rtol=1e-10
    )
    np.testing.assert_allclose(r_only.covariance_unconstrained, r_inv, rtol=1e-10)
    np.testing.assert_allclose(
        s_only.covariance_unconstrained, np.linalg.inv(sandwich.s_matrix), rtol=1e-10
    )
    assert sandwich.names == ("tke", "prop", "iiv.ke")
    # Delta method: d theta / d log theta = theta, d omega / d log omega = omega
    # (the unconstrained vector is raveled in sorted field order: iiv, prop, tke).
    se_log = np.sqrt(np.diagonal(sandwich.covariance_unconstrained))[[2, 1, 0]]
    np.testing.assert_allclose(sandwich.se, sandwich.estimate * se_log)
    np.testing.assert_allclose(sandwich.ci_upper - sandwich.ci_lower, 2 * 1.959964 * sandwich.se)
    np.testing.assert_allclose(np.diagonal(sandwich.correlation), 1.0)
    eig = np.linalg.eigvalsh(sandwich.correlation)
    assert sandwich.condition_number == pytest.approx(eig[-1] / eig[0])
    assert sandwich.ok


def test_singular_r_names_the_parameter(refdata):
    model = SmallUnidentified()
    data = prepare(model, pmx.read_nonmem(wang_table(refdata)))
    cov = covariance_step(model, data, "focei")
    assert not cov.ok
    assert "not positive definite" in cov.message and "unused" in cov.message
    assert np.all(np.isnan(cov.se))
    with pytest.raises(CovarianceError, match="unused"):
        covariance_step(model, data, "focei", throw=True)
