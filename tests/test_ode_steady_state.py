"""Periodic steady state (pmx_jax.dynamics._steady_state) with ODE dynamics.

References: the geometric series of superposition for linear models (bolus
every tau), and simply dosing 200 times for Michaelis-Menten elimination.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmx_jax.dynamics._ode_models import (
    OneCompartmentODE,
    OneCompartmentOralMM,
    OneCompartmentOralODE,
)
from pmx_jax.dynamics._steady_state import periodic_steady_state

jax.config.update("jax_enable_x64", True)

DOSE, TAU = 100.0, 12.0


def bolus_map(model, cmt):
    """Trough -> next trough for a bolus of DOSE into ``cmt`` every TAU."""
    n = model.n_compartments
    dose = DOSE * jnp.eye(n)[cmt]

    def period_map(trough, params):
        return model.propagate(params, trough + dose, TAU, jnp.zeros(n))

    return period_map


def one_compartment_trough(cl, v):
    """Amount just before a dose at steady state: D e^{-k tau} / (1 - e^{-k tau})."""
    decay = np.exp(-cl / v * TAU)
    return DOSE * decay / (1.0 - decay)


def iv_steady_state(cl, v, *, linear):
    params = dict(cl=cl, v=v)
    period_map = bolus_map(OneCompartmentODE(), 0)
    return periodic_steady_state(period_map, jnp.zeros(1), params, linear=linear)


iv_linear = jax.jit(lambda cl, v: iv_steady_state(cl, v, linear=True))
iv_newton = jax.jit(lambda cl, v: iv_steady_state(cl, v, linear=False))
iv_linear_grad = jax.jit(jax.grad(lambda cl: iv_steady_state(cl, 20.0, linear=True)[0][0]))


def test_one_compartment_bolus_trough_is_the_geometric_series():
    trough = one_compartment_trough(2.0, 20.0)
    for solve in (iv_linear, iv_newton):
        amounts, ok = solve(2.0, 20.0)
        assert ok
        np.testing.assert_allclose(amounts[0], trough, rtol=1e-7)
        # As a concentration: the textbook D/V e^{-k tau} / (1 - e^{-k tau}).
        np.testing.assert_allclose(amounts[0] / 20.0, trough / 20.0, rtol=1e-7)


def test_linear_steady_state_gradient_is_implicit_and_exact():
    # The analytic derivative of the geometric series, by central differences
    # of the formula (step 1e-6 relative, error ~1e-9 relative).
    h = 1e-6 * 2.0
    want = (one_compartment_trough(2.0 + h, 20.0) - one_compartment_trough(2.0 - h, 20.0)) / (2 * h)
    forward = jax.jit(jax.jacfwd(lambda cl: iv_steady_state(cl, 20.0, linear=True)[0][0]))
    np.testing.assert_allclose(iv_linear_grad(2.0), want, rtol=1e-6)
    np.testing.assert_allclose(forward(2.0), want, rtol=1e-6)


def test_oral_trough_is_the_geometric_series():
    ka, cl, v = 1.3, 2.5, 18.0
    params = dict(ka=ka, cl=cl, v=v)
    model = OneCompartmentOralODE()
    trough, ok = jax.jit(
        lambda p: periodic_steady_state(bolus_map(model, 0), jnp.zeros(2), p, linear=True)
    )(params)
    assert ok
    k = cl / v

    def accumulation(rate):
        return np.exp(-rate * TAU) / (1.0 - np.exp(-rate * TAU))

    depot = DOSE * accumulation(ka)
    central = DOSE * ka / (ka - k) * (accumulation(k) - accumulation(ka))
    # The depot trough is ~2e-5: there the ODE's absolute tolerance (1e-10) rules.
    np.testing.assert_allclose(trough, [depot, central], rtol=1e-7, atol=1e-9)


MM = dict(ka=1.1, vm=15.0, km=2.0, v=20.0)


def mm_steady_state(vm):
    params = {**MM, "vm": vm}
    return periodic_steady_state(
        bolus_map(OneCompartmentOralMM(), 0), jnp.zeros(2), params, linear=False
    )


mm_solve = jax.jit(mm_steady_state)


def test_michaelis_menten_steady_state_matches_dosing_forward():
    trough, ok = mm_solve(MM["vm"])
    assert ok
    period_map = bolus_map(OneCompartmentOralMM(), 0)

    @jax.jit
    def dose_200_times(params):
        def one_interval(x, _):
            return period_map(x, params), None

        return jax.lax.scan(one_interval, jnp.zeros(2), None, length=200)[0]

    # Effective half-life ~9 h at steady state (C ~ km), so 200 intervals of
    # 12 h are ~260 half-lives: converged to rounding.  The depot trough is
    # ~2e-4, where the ODE's absolute tolerance (1e-10) rules.
    np.testing.assert_allclose(trough, dose_200_times(MM), rtol=1e-8, atol=1e-9)


def test_michaelis_menten_gradient_matches_finite_differences():
    vm = MM["vm"]

    def by_closure(vm):
        # As the event engine calls it: parameters closed over, args=None.
        params = {**MM, "vm": vm}
        period_map = bolus_map(OneCompartmentOralMM(), 0)
        return periodic_steady_state(
            lambda x, _: period_map(x, params), jnp.zeros(2), None, linear=False
        )[0][1]

    reverse = jax.jit(jax.grad(by_closure))(vm)
    # Step 1e-4 relative: truncation ~1e-8; the Newton/ODE error (~1e-10
    # relative, smooth in vm) over the step ~1e-6; tolerance 1e-5.
    h = 1e-4 * vm
    fd = (mm_solve(vm + h)[0][1] - mm_solve(vm - h)[0][1]) / (2 * h)
    np.testing.assert_allclose(reverse, fd, rtol=1e-5)


def test_linear_parameters_closed_over_are_differentiated():
    def trough(cl):
        params = dict(cl=cl, v=jnp.asarray(20.0))
        period_map = bolus_map(OneCompartmentODE(), 0)
        return periodic_steady_state(
            lambda x, _: period_map(x, params), jnp.zeros(1), None, linear=True
        )[0][0]

    np.testing.assert_allclose(jax.jit(jax.grad(trough))(2.0), iv_linear_grad(2.0), rtol=1e-10)


def test_vmap_over_subjects_and_failure_is_reported():
    # No elimination (cl = 0) has no steady state: reported, not NaN-poisoning
    # the other subjects.
    cls = jnp.asarray([2.0, 0.0, 4.0])
    for solve in (iv_linear, iv_newton):
        troughs, ok = jax.jit(jax.vmap(solve, in_axes=(0, None)))(cls, 20.0)
        np.testing.assert_array_equal(ok, [True, False, True])
        for i in (0, 2):
            want = one_compartment_trough(float(cls[i]), 20.0)
            np.testing.assert_allclose(troughs[i, 0], want, rtol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("linear", [True, False])
def test_second_derivative_of_steady_state(linear):
    # FOCEI/Laplace differentiate twice: the rule must see the first-order
    # dependence of the fixed point on the parameters.
    def trough(cl):
        return iv_steady_state(cl, 20.0, linear=linear)[0][0]

    hessian = jax.jit(jax.hessian(trough))(2.0)
    h = 1e-3 * 2.0
    want = (
        one_compartment_trough(2.0 + h, 20.0)
        - 2 * one_compartment_trough(2.0, 20.0)
        + one_compartment_trough(2.0 - h, 20.0)
    ) / h**2
    # Second difference of the formula: truncation ~1e-7 relative; tolerance 1e-5.
    np.testing.assert_allclose(hessian, want, rtol=1e-5)


def test_bad_start_is_rejected():
    with pytest.raises(ValueError, match="x0 must be a vector"):
        periodic_steady_state(lambda x, a: x, jnp.zeros((2, 2)), None, linear=True)
