"""LinearSystem: a linear ODE solved by the matrix exponential, against the
closed forms (eigenvalue solutions, written independently) and through the
event engine (bolus, infusion, additional doses)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.dynamics import (
    LinearSystem,
    OneCompartmentMM,
    ThreeCompartmentOralODE,
    TwoCompartment,
    TwoCompartmentODE,
)
from pmx_jax.dynamics._linear_system import is_linear_rhs

PARAMS = dict(cl=2.0, v=20.0, q=3.0, vp=40.0)


def test_transition_equals_the_closed_form():
    linear = LinearSystem.of(TwoCompartmentODE(), tuple(PARAMS))
    assert linear is not None and linear.compartments == ("central", "peripheral")
    params = {k: jnp.asarray(v) for k, v in PARAMS.items()}
    amounts, rates = jnp.asarray([100.0, 20.0]), jnp.asarray([5.0, 0.0])
    for dt in (0.0, 0.3, 4.0, 48.0):
        exact = TwoCompartment().propagate(params, amounts, jnp.asarray(dt), rates)
        ours = linear.propagate(params, amounts, jnp.asarray(dt), rates)
        np.testing.assert_allclose(ours, exact, rtol=1e-11, atol=1e-12)


def test_derivatives_equal_the_closed_form():
    linear = LinearSystem.of(TwoCompartmentODE(), tuple(PARAMS))

    def central(dynamics, values):
        params = dict(zip(PARAMS, values, strict=True))
        return dynamics.propagate(params, jnp.asarray([100.0, 0.0]), 3.0, jnp.zeros(2))[0]

    values = jnp.asarray(list(PARAMS.values()))
    np.testing.assert_allclose(
        jax.grad(lambda x: central(linear, x))(values),
        jax.grad(lambda x: central(TwoCompartment(), x))(values),
        rtol=1e-9,
    )


def test_nonlinear_and_inhomogeneous_systems_are_not_linear():
    assert not is_linear_rhs(OneCompartmentMM(), ("vm", "km", "v"))
    assert LinearSystem.of(OneCompartmentMM(), ("vm", "km", "v")) is None

    class ZeroOrderProduction(pmx.AbstractODE):
        compartments = ("central",)
        is_linear = True

        def rhs(self, t, amounts, p):
            return p["kin"] - p["k"] * amounts

    assert not is_linear_rhs(ZeroOrderProduction(), ("kin", "k"))
    assert is_linear_rhs(ThreeCompartmentOralODE(), ("ka", "cl", "v", "q", "vp", "q2", "vp2"))


class TwoCompartmentModel(pmx.Model):
    tcl: pmx.Theta = pmx.theta(np.log(2.0))
    tv: pmx.Theta = pmx.theta(np.log(20.0))
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.1, v=0.1)
    dynamics = TwoCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv + eta.v), q=3.0, vp=40.0)

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


@pytest.mark.slow  # 30 s of compilation; runODE032 (reference data) covers it too
def test_predictions_through_the_event_engine(rate=50.0):
    """A 2-h infusion twice, 12 h apart: the same predictions and OFV as the
    closed form."""
    rows = [dict(ID=1, TIME=0.0, AMT=100.0, RATE=rate, EVID=1, MDV=1, DV=0.0, ADDL=1, II=12.0)]
    rows += [
        dict(ID=1, TIME=t, AMT=0.0, RATE=0.0, EVID=0, MDV=0, DV=1.0, ADDL=0, II=0.0)
        for t in (0.5, 1.0, 2.0, 4.0, 8.0, 13.0, 18.0, 24.0)
    ]
    data = pmx.read_nonmem(pd.DataFrame(rows))
    closed = TwoCompartmentModel()
    linear = eqx_replace_dynamics(closed, LinearSystem.of(TwoCompartmentODE(), tuple(PARAMS)))
    np.testing.assert_allclose(
        pmx.predict(linear, data)["IPRED"], pmx.predict(closed, data)["IPRED"], rtol=1e-9
    )
    assert float(pmx.ofv(linear, data).ofv) == pytest.approx(
        float(pmx.ofv(closed, data).ofv), abs=1e-8
    )


def eqx_replace_dynamics(model, dynamics):
    class Linear(TwoCompartmentModel):
        pass

    Linear.dynamics = dynamics
    return Linear()
