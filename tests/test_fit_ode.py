"""Population objective and fit of a nonlinear ODE model (Michaelis-Menten
elimination): the OFV gradient through the EBEs (implicit derivative) and the
ODE's forward-sensitivity rule is exact, checked against central differences,
and a FOCEI fit runs to convergence.

Reverse mode cannot transpose the variational ODE solve nested inside the
implicit derivative; for nonlinear ODEs that derivative is built from a
materialised Jacobian (``materialize`` in ``_implicit.py``), which these tests
exercise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _checks import check_reports_its_own_ofv
from jax.flatten_util import ravel_pytree

import pmx_jax as pmx
from pmx_jax.estimation import ofv
from pmx_jax.likelihood import prepare


class TheophyllineMM(pmx.Model):
    tka: pmx.Theta = pmx.theta(0.45)
    tvm: pmx.Theta = pmx.theta(3.0)
    tkm: pmx.Theta = pmx.theta(2.0)
    tv: pmx.Theta = pmx.theta(3.45)
    add_sd: pmx.Theta = pmx.theta(0.7, lower=0.0)
    iiv: pmx.Omega = pmx.omega(vm=0.1, v=0.05)
    dynamics = pmx.pk.OneCompartmentOralMM()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka),
            vm=jnp.exp(self.tvm + eta.vm),
            km=jnp.exp(self.tkm),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.add_sd)


@pytest.fixture(scope="module")
def data():
    frame = pmx.datasets.load("theophylline").table
    return pmx.read_nonmem(frame[frame["ID"].isin([1, 2, 3])])


@pytest.mark.parametrize(
    "method",
    [
        "focei",
        pytest.param("foce", marks=pytest.mark.slow),
        pytest.param("laplace", marks=pytest.mark.slow),
    ],
)
def test_gradient_of_a_nonlinear_ode_model_matches_finite_differences(data, method):
    # The implicit EBE derivative materialises its Jacobian for the THETAs
    # (they reach the ODE) and keeps tangents for OMEGA and FOCE's variances.
    model = TheophyllineMM()
    prepared = prepare(model, data)
    flat, unravel = ravel_pytree(model.to_unconstrained())

    def objective(x):
        return ofv(model.from_unconstrained(unravel(x)), prepared, method, tolerance=1e-16).ofv

    # One compilation (of value and gradient) serves the differences too: the
    # ODE objective's own compilation costs as much as the gradient's.
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    gradient = np.asarray(value_and_grad(flat)[1])
    # ODE solved to rtol 1e-8 (the model default): central differences with
    # h = 1e-4 carry ~1e-7 relative noise from the adaptive solver.
    h = 1e-4
    fd = np.array(
        [
            (value_and_grad(flat + e)[0] - value_and_grad(flat - e)[0]) / (2 * h)
            for e in np.eye(flat.size) * h
        ]
    )
    np.testing.assert_allclose(gradient, fd, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["focei", "laplace"])
def test_fit_of_a_nonlinear_ode_model_converges(data, method):
    # KM is not identifiable from three subjects' data: fixed.  Laplace: its
    # log-determinant term is differentiated in forward mode (forward_only).
    model = TheophyllineMM().with_values(tkm=pmx.theta(2.0, fixed=True))
    result = pmx.fit(model, data, method, covariance="sandwich")
    # The minimum is reached; three subjects carry no information on the
    # variability of V, whose OMEGA collapses, and the fit says so.
    assert result.message.startswith("gradient below"), result.message
    assert result.status in (pmx.RESULTS.successful, pmx.RESULTS.suspect_point)
    assert all("OMEGA iiv.v has collapsed" in str(reason) for reason in result.suspect)
    check_reports_its_own_ofv(result)
    assert np.all(np.isfinite(result.estimates()["se"].dropna()))
