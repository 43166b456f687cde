"""ODE dynamics (pmx_jax.dynamics._ode, _ode_models) against exact solutions.

Reference: for a linear compartment model with constant infusion rates r,
``x(dt) = expm([[A, r], [0, 0]] dt) @ [x0, 1]`` (scipy, independent of JAX).
Tolerances: the solver runs at rtol 1e-8 / atol 1e-10, so values agree to
1e-7 relative; derivatives (forward sensitivities, error-controlled like the
amounts) to 1e-6 relative against central differences of the exact solution.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm

from pmx_jax.dynamics._ode import AbstractODE
from pmx_jax.dynamics._ode_models import (
    OneCompartmentODE,
    OneCompartmentOralMM,
    OneCompartmentOralODE,
    ThreeCompartmentODE,
    ThreeCompartmentOralODE,
    TwoCompartmentODE,
    TwoCompartmentOralODE,
)

jax.config.update("jax_enable_x64", True)

PARAMS = dict(ka=1.3, cl=2.5, v=18.0, q=4.0, vp=35.0, q2=1.5, vp2=60.0)
MM_PARAMS = dict(ka=1.1, vm=15.0, km=2.0, v=20.0)
LINEAR_MODELS = [
    OneCompartmentODE,
    OneCompartmentOralODE,
    TwoCompartmentODE,
    TwoCompartmentOralODE,
    ThreeCompartmentODE,
    ThreeCompartmentOralODE,
]


def rate_matrix(compartments, p) -> np.ndarray:
    """Compartment matrix A (x' = A x) built from flows, independently of rhs."""
    index = {name: i for i, name in enumerate(compartments)}
    a = np.zeros((len(compartments),) * 2)

    def flow(source, target, rate_constant):
        a[index[source], index[source]] -= rate_constant
        if target is not None:
            a[index[target], index[source]] += rate_constant

    flow("central", None, p["cl"] / p["v"])
    if "depot" in index:
        flow("depot", "central", p["ka"])
    for peripheral, q, vp in [
        ("peripheral", "q", "vp"),
        ("peripheral1", "q", "vp"),
        ("peripheral2", "q2", "vp2"),
    ]:
        if peripheral in index:
            flow("central", peripheral, p[q] / p["v"])
            flow(peripheral, "central", p[q] / p[vp])
    return a


def exact(compartments, p, x0, dt, rates) -> np.ndarray:
    n = len(compartments)
    augmented = np.zeros((n + 1, n + 1))
    augmented[:n, :n] = rate_matrix(compartments, p)
    augmented[:n, n] = rates
    return (expm(augmented * dt) @ np.append(x0, 1.0))[:n]


def start_state(n):
    return jnp.asarray([100.0, 7.0, 3.0, 1.0][:n])


def infusion(n):
    return jnp.asarray([5.0, 2.0, 0.0, 0.0][:n])


@eqx.filter_jit
def _propagate(model, p, x0, dt, rates):
    return model.propagate_with_status(p, x0, dt, rates)


def propagate(model, p, x0, dt, rates):
    """Jitted propagate; numbers become arrays so one compile serves all values
    (filter_jit would treat Python floats as static)."""
    arrays = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.float64), (p, x0, dt, rates))
    return _propagate(model, *arrays)


@pytest.mark.parametrize("model_class", LINEAR_MODELS, ids=lambda c: c.__name__)
def test_linear_models_match_matrix_exponential(model_class):
    model = model_class()
    n = model.n_compartments
    x0, rates = start_state(n), infusion(n)
    assert model.is_linear
    for dt in (0.3, 7.5):
        amounts, ok = propagate(model, PARAMS, x0, dt, rates)
        assert ok
        reference = exact(model.compartments, PARAMS, x0, dt, rates)
        np.testing.assert_allclose(amounts, reference, rtol=1e-7, atol=1e-12)


def test_dt_zero_is_identity_with_finite_derivatives():
    model = TwoCompartmentOralODE()
    x0, rates = start_state(3), infusion(3)
    amounts, ok = propagate(model, PARAMS, x0, 0.0, rates)
    assert ok
    np.testing.assert_array_equal(amounts, x0)

    # d amounts / d dt at 0 is the right-hand side at the start, infusion included.
    slope = rate_matrix(model.compartments, PARAMS) @ np.asarray(x0) + np.asarray(rates)
    for derivative in (peripheral_grad, peripheral_jacfwd):
        d_params, d_x0, d_dt, d_rates = derivative(ORAL2_PARAMS, x0, jnp.asarray(0.0), rates)
        assert all(float(g) == 0.0 for g in d_params.values())
        np.testing.assert_array_equal(d_x0, [0.0, 0.0, 1.0])
        np.testing.assert_array_equal(d_rates, [0.0, 0.0, 0.0])
        np.testing.assert_allclose(d_dt, slope[2], rtol=1e-12)


def test_dt_zero_is_reached_whatever_max_steps():
    """An explicit solve runs in scaled time from 0 to 1 whatever ``dt``; for
    ``dt == 0`` its field is zero and the start comes back, reached, even
    where the solver may not take a single step."""
    x0, rates = start_state(2), infusion(2)
    amounts, ok = propagate(OneCompartmentOralODE(max_steps=1), PARAMS, x0, 0.0, rates)
    assert ok
    np.testing.assert_array_equal(amounts, x0)


def _nextafter_count(model, dt):
    """Operations from ``nextafter`` left in the compiled program of one
    solve over a traced ``dt`` (after XLA's constant folding)."""
    x0, rates = start_state(2), infusion(2)
    program = jax.jit(lambda h: model.propagate(MM_PARAMS, x0, h, rates)).lower(dt).compile()
    return program.as_text().count("/nextafter")


def test_explicit_solves_compute_no_end_point_threshold():
    """diffrax rounds a step to the end point once it is within 100 ULPs of
    it, a threshold computed by 100 chained ``nextafter`` on the end point:
    about 1,500 lines of HLO in every solve of a program where the end point
    is traced.  An explicit solve's end point is the constant 1 (scaled
    time): XLA folds the chain away.  An implicit solve (integrated in
    ``t``) keeps it, which shows that the count sees it."""
    dt = jnp.asarray(2.0)
    assert _nextafter_count(OneCompartmentOralMM(), dt) == 0
    assert _nextafter_count(OneCompartmentOralMM(stiff=True), dt) >= 100


def test_negative_dt_integrates_backwards():
    model = TwoCompartmentODE()
    x0, rates = start_state(2), infusion(2)
    forward, _ = propagate(model, PARAMS, x0, 4.0, rates)
    back, ok = propagate(model, PARAMS, forward, -4.0, rates)
    assert ok
    np.testing.assert_allclose(back, x0, rtol=1e-7)


def test_vmap_over_subjects_matches_loop():
    model = OneCompartmentOralODE()
    dts = jnp.asarray([0.0, 0.5, 3.0, 12.0, 48.0])
    cls = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0])
    params = {name: jnp.full(5, value) for name, value in PARAMS.items()} | {"cl": cls}
    x0 = jnp.tile(start_state(2), (5, 1))
    rates = jnp.tile(infusion(2), (5, 1))
    batched, ok = jax.jit(jax.vmap(model.propagate_with_status))(params, x0, dts, rates)
    assert ok.shape == (5,) and bool(ok.all())
    for i in range(5):
        one = {name: value[i] for name, value in params.items()}
        single, _ = propagate(model, one, x0[i], dts[i], rates[i])
        # Batched adaptive solves take their own steps: equal to solver accuracy.
        np.testing.assert_allclose(batched[i], single, rtol=1e-9)
        reference = exact(model.compartments, one, x0[i], float(dts[i]), rates[i])
        np.testing.assert_allclose(batched[i], reference, rtol=1e-7, atol=1e-12)


def _central_difference(fn, x, h):
    return (fn(x + h) - fn(x - h)) / (2 * h)


ORAL2_PARAMS = {name: jnp.asarray(PARAMS[name]) for name in ("ka", "cl", "v", "q", "vp")}


def _peripheral(p, x, dt, r):
    return TwoCompartmentOralODE().propagate(p, x, dt, r)[2]


# Shared by several tests so that each derivative is compiled once.
peripheral_grad = jax.jit(jax.grad(_peripheral, argnums=(0, 1, 2, 3)))
peripheral_jacfwd = jax.jit(jax.jacfwd(_peripheral, argnums=(0, 1, 2, 3)))


def test_grad_and_jacfwd_match_finite_differences_of_exact_solution():
    model = TwoCompartmentOralODE()
    names = tuple(ORAL2_PARAMS)
    p0 = {name: PARAMS[name] for name in names}
    x0, rates, dt = start_state(3), infusion(3), 5.0
    reverse = peripheral_grad(ORAL2_PARAMS, x0, jnp.asarray(dt), rates)
    forward = peripheral_jacfwd(ORAL2_PARAMS, x0, jnp.asarray(dt), rates)
    for a, b in zip(jax.tree.leaves(reverse), jax.tree.leaves(forward), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)

    # Central differences of the matrix exponential: step 1e-5 relative gives
    # truncation ~1e-10 and rounding ~1e-11, far below the 1e-6 tolerance.
    def exact_peripheral(p, x, dt, r):
        return exact(model.compartments, p, np.asarray(x), dt, np.asarray(r))[2]

    d_params, d_x0, d_dt, d_rates = reverse
    for name in names:
        h = 1e-5 * p0[name]
        fd = _central_difference(
            lambda v, name=name: exact_peripheral({**p0, name: v}, x0, dt, rates), p0[name], h
        )
        np.testing.assert_allclose(d_params[name], fd, rtol=1e-6)
    for i in range(3):
        unit = np.eye(3)[i]
        fd = _central_difference(
            lambda s, unit=unit: exact_peripheral(p0, x0 + s * unit, dt, rates), 0.0, 1e-3
        )
        np.testing.assert_allclose(d_x0[i], fd, rtol=1e-6, atol=1e-10)
        fd = _central_difference(
            lambda s, unit=unit: exact_peripheral(p0, x0, dt, rates + s * unit), 0.0, 1e-3
        )
        np.testing.assert_allclose(d_rates[i], fd, rtol=1e-6, atol=1e-10)
    fd = _central_difference(lambda s: exact_peripheral(p0, x0, s, rates), dt, 1e-5)
    np.testing.assert_allclose(d_dt, fd, rtol=1e-6)


def test_nonlinear_model_gradient_matches_finite_differences():
    model = OneCompartmentOralMM()
    x0, rates = jnp.asarray([200.0, 10.0]), jnp.zeros(2)

    def central(vm, km):
        return model.propagate({**MM_PARAMS, "vm": vm, "km": km}, x0, 6.0, rates)[1]

    grads = jax.jit(jax.grad(central, argnums=(0, 1)))(MM_PARAMS["vm"], MM_PARAMS["km"])

    def central_value(**change):
        return propagate(model, {**MM_PARAMS, **change}, x0, 6.0, rates)[0][1]

    # The ODE itself is differenced here: step 1e-4 relative keeps the solver's
    # own error (~1e-9 absolute) from dominating the quotient; tolerance 1e-5.
    vm, km = MM_PARAMS["vm"], MM_PARAMS["km"]
    fd_vm = _central_difference(lambda v: central_value(vm=v), vm, 1e-4 * vm)
    fd_km = _central_difference(lambda k: central_value(km=k), km, 1e-4 * km)
    np.testing.assert_allclose(grads[0], fd_vm, rtol=1e-5)
    np.testing.assert_allclose(grads[1], fd_km, rtol=1e-5)


@pytest.mark.parametrize("control", ["amounts", "all"])
def test_derivatives_on_the_amounts_steps_are_good_to_the_tolerance(control):
    # error_control="amounts" (default) integrates the sensitivities on the
    # steps the amounts' error control takes; "all" controls them too.  Either
    # way the first and second derivatives of a nonlinear model at rtol 1e-6
    # agree with a tight solve (rtol 1e-12) to about the tolerance.
    x0, rates = jnp.asarray([200.0, 10.0]), jnp.zeros(2)

    def central(model):
        def f(theta):
            p = {**MM_PARAMS, "vm": theta[0], "km": theta[1], "v": theta[2]}
            return model.propagate(p, x0, 6.0, rates)

        return f

    theta = jnp.asarray([MM_PARAMS["vm"], MM_PARAMS["km"], MM_PARAMS["v"]])
    loose = central(OneCompartmentOralMM(rtol=1e-6, atol=1e-8, error_control=control))
    tight = central(OneCompartmentOralMM(rtol=1e-12, atol=1e-14, error_control="all"))
    for transform in (jax.jacfwd, lambda f: jax.jacfwd(jax.jacfwd(f))):
        got, want = jax.jit(transform(loose))(theta), jax.jit(transform(tight))(theta)
        assert np.max(np.abs(got - want)) < 1e-5 * np.max(np.abs(want))


def test_a_linear_ode_with_its_own_init_predicts_exactly():
    # Linear ODEs move through transition matrices (Jacobians taken at zero
    # amounts, with the sensitivities under error control): a subclass with
    # its own __init__ gets there too.
    import pandas as pd

    import pmx_jax as pmx

    class Elimination(AbstractODE):
        compartments = ("central",)
        is_linear = True
        k: float

        def __init__(self, half_life):
            self.k = np.log(2.0) / half_life

        def rhs(self, t, amounts, p):
            return -self.k * amounts

    class Decay(pmx.Model):
        sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
        dynamics = Elimination(2.0)

        def individual(self, eta, cov):
            return {}

        def observe(self, amounts, p):
            return pmx.Additive(amounts.central, self.sd)

    times = np.array([0.0, 1.0, 2.0, 5.0])
    table = pd.DataFrame(
        dict(ID=1, TIME=times, AMT=[100.0, 0, 0, 0], EVID=[1, 0, 0, 0], CMT=1, DV=[0, 1.0, 1, 1])
    )
    ipred = pmx.predict(Decay(), pmx.read_nonmem(table))["IPRED"].to_numpy()[1:]
    np.testing.assert_allclose(ipred, 100.0 * 0.5 ** (times[1:] / 2.0), rtol=1e-7)


def _one_compartment_central(theta):
    p = dict(cl=theta[0], v=theta[1])
    return OneCompartmentODE().propagate(p, start_state(1), 3.0, infusion(1))[0]


THETA = jnp.asarray([PARAMS["cl"], PARAMS["v"]])


def test_hessian_matches_finite_differences_of_exact_gradient():
    # Second derivatives are what FOCEI/Laplace need; jax.hessian is
    # forward-over-reverse, which nests the sensitivity rule in itself.
    hessian = jax.jit(jax.hessian(_one_compartment_central))(THETA)
    compartments = OneCompartmentODE.compartments

    def exact_gradient(th):
        def value(t):
            return exact(compartments, dict(cl=t[0], v=t[1]), start_state(1), 3.0, infusion(1))[0]

        return np.array(
            [
                _central_difference(lambda s, e=e: value(th + s * e), 0.0, 1e-4 * th[i])
                for i, e in enumerate(np.eye(2))
            ]
        )

    # Differences of differences: steps 1e-4 and 1e-3 relative keep both
    # truncation and rounding below ~1e-7 relative; tolerance 1e-5.
    th = np.asarray(THETA)
    for i, e in enumerate(np.eye(2)):
        h = 1e-3 * th[i]
        column = (exact_gradient(th + h * e) - exact_gradient(th - h * e)) / (2 * h)
        np.testing.assert_allclose(hessian[:, i], column, rtol=1e-5)


@pytest.mark.slow
def test_reverse_over_reverse_hessian_agrees():
    forward_over_reverse = jax.jit(jax.hessian(_one_compartment_central))(THETA)
    reverse_over_reverse = jax.jit(jax.jacrev(jax.jacrev(_one_compartment_central)))(THETA)
    np.testing.assert_allclose(forward_over_reverse, reverse_over_reverse, rtol=1e-10)


def test_inside_scan_matches_sequential_calls_and_differentiates():
    model = TwoCompartmentODE()
    # A 2-h infusion into the central compartment, then washout, as an event
    # engine would see it: one propagate per interval.
    dts = jnp.asarray([0.5, 1.5, 4.0, 0.0, 10.0])
    rates = jnp.asarray([[50.0, 0.0]] * 2 + [[0.0, 0.0]] * 3)
    x0 = jnp.zeros(2)

    def run(cl):
        p = {**PARAMS, "cl": cl}

        def step(amounts, interval):
            dt, rate = interval
            amounts = model.propagate(p, amounts, dt, rate)
            return amounts, amounts

        trajectory = jax.lax.scan(step, x0, (dts, rates))[1]
        return trajectory[-1, 0], trajectory

    gradient, trajectory = jax.jit(jax.grad(run, has_aux=True))(PARAMS["cl"])

    def exact_trajectory(cl):
        a, out = np.zeros(2), []
        for dt, rate in zip(np.asarray(dts), np.asarray(rates), strict=True):
            a = exact(model.compartments, {**PARAMS, "cl": cl}, a, dt, rate)
            out.append(a)
        return np.array(out)

    np.testing.assert_allclose(trajectory, exact_trajectory(PARAMS["cl"]), rtol=1e-7)
    h = 1e-5 * PARAMS["cl"]
    fd = _central_difference(lambda cl: exact_trajectory(cl)[-1, 0], PARAMS["cl"], h)
    np.testing.assert_allclose(gradient, fd, rtol=1e-6)


@pytest.mark.slow  # differentiating through diffrax's loop compiles slowly (~10 s)
@pytest.mark.parametrize(
    "adjoint, transform",
    [(diffrax.RecursiveCheckpointAdjoint(), jax.grad), (diffrax.ForwardMode(), jax.jacfwd)],
    ids=["RecursiveCheckpointAdjoint-grad", "ForwardMode-jacfwd"],
)
def test_diffrax_adjoints_agree_with_sensitivity_rule(adjoint, transform):
    x0, rates = start_state(2), infusion(2)

    def central(model, cl, dt):
        return model.propagate({**PARAMS, "cl": cl}, x0, dt, rates)[1]

    diffrax_path = OneCompartmentOralODE(adjoint=adjoint)
    default = OneCompartmentOralODE()
    got = jax.jit(transform(lambda c, d: central(diffrax_path, c, d), argnums=(0, 1)))(
        PARAMS["cl"], 5.0
    )
    want = jax.jit(jax.grad(lambda c, d: central(default, c, d), argnums=(0, 1)))(PARAMS["cl"], 5.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.slow
def test_stiff_solver_matches_exact_solution():
    model = OneCompartmentOralODE(stiff=True)
    x0, rates = start_state(2), infusion(2)
    amounts, ok = propagate(model, PARAMS, x0, 7.5, rates)
    assert ok
    np.testing.assert_allclose(
        amounts, exact(model.compartments, PARAMS, x0, 7.5, rates), rtol=1e-7
    )


def test_failed_solve_is_reported_not_nan():
    model = OneCompartmentOralODE(max_steps=3)
    # In a batch only the subject whose interval needs many steps fails, and
    # its amounts are where the solver stopped, not NaN.
    amounts, ok = jax.jit(
        jax.vmap(lambda dt: model.propagate_with_status(PARAMS, start_state(2), dt, infusion(2)))
    )(jnp.asarray([0.0, 24.0]))
    np.testing.assert_array_equal(ok, [True, False])
    assert np.all(np.isfinite(amounts))


class OneCptOralMMByName(AbstractODE):
    """A user-written model, as in the docs: names instead of indices."""

    compartments = ("depot", "central")
    dose_scale: float = 1.0  # a user field without kw_only; config stays keyword-only

    def rhs(self, t, amounts, p):
        a = self.by_compartment(amounts)
        conc = a["central"] / p["v"]
        return self.derivatives(
            depot=-p["ka"] * a["depot"],
            central=p["ka"] * a["depot"] - p["vm"] * conc / (p["km"] + conc),
        )


def test_user_model_with_named_compartments_matches_library_model():
    user = OneCptOralMMByName()
    x0, rates = jnp.asarray([200.0, 10.0]), jnp.zeros(2)
    mine, ok = propagate(user, MM_PARAMS, x0, 6.0, rates)
    theirs, _ = propagate(OneCompartmentOralMM(), MM_PARAMS, x0, 6.0, rates)
    assert ok and not user.is_linear
    np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    assert user.compartment_index("central") == 1


def test_user_errors_are_explained():
    class WrongShape(AbstractODE):
        compartments = ("depot", "central")

        def rhs(self, t, amounts, p):
            return -amounts[:1]

    with pytest.raises(ValueError, match="WrongShape.rhs returned shape"):
        WrongShape().propagate({}, jnp.ones(2), 1.0, jnp.zeros(2))
    with pytest.raises(ValueError, match="not compartments"):
        OneCptOralMMByName().derivatives(periph=1.0)
    with pytest.raises(ValueError, match="amounts have shape"):
        OneCompartmentODE().propagate(PARAMS, jnp.ones(2), 1.0, jnp.zeros(1))
    with pytest.raises(ValueError, match="rtol and atol"):
        OneCompartmentODE(rtol=0.0)
    with pytest.raises(ValueError, match="error_control must be 'amounts' or 'all', got 'sens'"):
        OneCompartmentODE(error_control="sens")
    with pytest.raises(ValueError, match="error_control must be 'amounts' or 'all', got 'x'"):
        OneCompartmentODE().with_error_control("x")
    assert OneCompartmentODE().with_error_control("all").error_control == "all"
