"""Library PK dynamics (pmx_jax.dynamics._library_pk) against independent answers.

References: exact solutions computed here with numpy/scipy (Lambert W for
Michaelis-Menten, Bateman functions, the infusion formula, the well-stirred
liver), mass balance with the elimination rate written out in the test, and
limits between the TMDD approximations.  The ODEs run at rtol 1e-10 / atol
1e-12 unless stated, so exact comparisons hold to 1e-7 relative; the tolerances
of approximate limits are stated at each test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.linalg import expm
from scipy.special import gammainc, lambertw

import pmx_jax as pmx
from pmx_jax import pk
from pmx_jax.dynamics._library_pk import (
    TMDDMM,
    TMDDQSS,
    MinimalPBPK,
    OneCompartmentMixedElimination,
    OneCompartmentMM,
    OneCompartmentOralMixedElimination,
    ParentMetabolite,
    ParentMetaboliteOral,
    SavicTransit,
    TMDDFull,
    TransitAbsorption,
)
from pmx_jax.dynamics._ode import AbstractODE

TIGHT = dict(rtol=1e-10, atol=1e-12)
TIMES = np.array([0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 24.0])


@eqx.filter_jit
def _trajectory(model, params, x0, times, rates):
    def step(amounts, dt):
        amounts, ok = model.propagate_with_status(params, amounts, dt, rates)
        return amounts, (amounts, ok)

    intervals = jnp.diff(jnp.concatenate([jnp.zeros(1), times]))
    _, (amounts, ok) = jax.lax.scan(step, x0, intervals)
    return amounts, ok


def trajectory(model, params, x0, times=TIMES, rates=None):
    """Amounts at ``times`` (rows) from ``x0`` at time 0; numbers become float64
    arrays so one compile serves all parameter values."""
    rates = np.zeros(len(x0)) if rates is None else rates
    arrays = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.float64), (params, x0, times, rates))
    amounts, ok = _trajectory(model, *arrays)
    assert np.all(np.asarray(ok)), "ODE solve failed"
    return np.asarray(amounts)


class Accounted(AbstractODE):
    """``base`` plus an ``eliminated`` compartment integrating ``outflow``, the
    elimination rate written independently in the test (mass balance)."""

    base: AbstractODE
    outflow: Callable[[Any, Any], Any] = eqx.field(static=True)

    @property
    def compartments(self) -> tuple[str, ...]:
        return (*self.base.compartments, "eliminated")

    def rhs(self, t, amounts, p):
        inner = amounts[:-1]
        return jnp.concatenate([self.base.rhs(t, inner, p), self.outflow(inner, p)[None]])


# -- Michaelis-Menten ------------------------------------------------------------------


def mm_exact(c0, vm_per_v, km, t):
    """IV Michaelis-Menten concentration: ``C = KM W(C0/KM exp((C0 - VM/V t)/KM))``."""
    arg = c0 / km * np.exp((c0 - vm_per_v * t) / km)
    return km * np.real(lambertw(arg))


def test_mm_matches_lambert_w_solution():
    p = dict(vm=40.0, km=3.0, v=20.0)
    amounts = trajectory(OneCompartmentMM(**TIGHT), p, np.array([500.0]))
    expected = mm_exact(500.0 / 20.0, 40.0 / 20.0, 3.0, TIMES)
    np.testing.assert_allclose(amounts[:, 0] / 20.0, expected, rtol=1e-7)


def test_mm_with_large_km_is_linear_with_cl_vm_over_km():
    # C / KM <= 1e-5, so the saturable term is linear to 1e-5 relative.
    cl, v, km = 2.0, 10.0, 1e6
    p = dict(vm=cl * km, km=km, v=v)
    amounts = trajectory(OneCompartmentMM(**TIGHT), p, np.array([100.0]))
    np.testing.assert_allclose(amounts[:, 0], 100.0 * np.exp(-cl / v * TIMES), rtol=5e-5)


def test_mixed_elimination_mass_balance_and_linear_limit():
    p = dict(cl=1.5, vm=30.0, km=2.0, v=12.0)

    def outflow(a, q):
        c = a[0] / q["v"]
        return q["cl"] * c + q["vm"] * c / (q["km"] + c)

    model = Accounted(OneCompartmentMixedElimination(**TIGHT), outflow, **TIGHT)
    amounts = trajectory(model, p, np.array([300.0, 0.0]))
    np.testing.assert_allclose(amounts.sum(axis=1), 300.0, rtol=1e-9)
    # vm = 0: linear one-compartment model.
    linear = trajectory(model, dict(p, vm=0.0), np.array([300.0, 0.0]))
    np.testing.assert_allclose(linear[:, 0], 300.0 * np.exp(-1.5 / 12.0 * TIMES), rtol=1e-7)


def test_oral_mixed_elimination_without_saturation_is_bateman():
    ka, cl, v, dose = 1.3, 2.0, 15.0, 100.0
    amounts = trajectory(
        OneCompartmentOralMixedElimination(**TIGHT),
        dict(ka=ka, cl=cl, v=v, vm=0.0, km=1.0),
        np.array([dose, 0.0]),
    )
    k = cl / v
    bateman = dose * ka / (ka - k) * (np.exp(-k * TIMES) - np.exp(-ka * TIMES))
    np.testing.assert_allclose(amounts[:, 1], bateman, rtol=1e-7)


def test_mm_gradient_matches_finite_differences_of_exact_solution():
    c0, v, t = 25.0, 20.0, 4.0

    def exact_conc(vm, km):
        return mm_exact(c0, vm / v, km, t)

    def ode_conc(vm, km):
        p = dict(vm=vm, km=km, v=jnp.asarray(v))
        return OneCompartmentMM(**TIGHT).propagate(p, jnp.array([c0 * v]), jnp.asarray(t))[0] / v

    grad = jax.jit(jax.grad(ode_conc, argnums=(0, 1)))(jnp.asarray(40.0), jnp.asarray(3.0))
    h = 1e-5  # central differences of a smooth function: error O(h^2) ~ 1e-10
    fd_vm = (exact_conc(40.0 + h, 3.0) - exact_conc(40.0 - h, 3.0)) / (2 * h)
    fd_km = (exact_conc(40.0, 3.0 + h) - exact_conc(40.0, 3.0 - h)) / (2 * h)
    np.testing.assert_allclose(np.asarray(grad), [fd_vm, fd_km], rtol=1e-6)


# -- transit absorption ----------------------------------------------------------------


def test_transit_chain_with_no_transit_is_one_compartment_oral():
    p = dict(ktr=5.0, ka=0.9, cl=2.0, v=15.0)
    model = TransitAbsorption(n_transit=0, **TIGHT)
    assert model.compartments == pk.OneCompartmentOral().compartments
    ode = trajectory(model, p, np.array([100.0, 0.0]))
    closed = jax.vmap(
        lambda dt: pk.OneCompartmentOral().propagate(
            jax.tree.map(jnp.asarray, p), jnp.array([100.0, 0.0]), dt, jnp.zeros(2)
        )
    )(jnp.asarray(TIMES))
    np.testing.assert_allclose(ode, np.asarray(closed), rtol=1e-7, atol=1e-10)


def test_transit_chain_amounts_are_erlang_and_mean_absorption_time():
    n, ktr, ka, dose = 4, 2.5, 0.8, 100.0
    p = dict(ktr=ktr, ka=ka, cl=2.0, v=15.0)
    base = TransitAbsorption(n_transit=n, **TIGHT)

    # "eliminated" integrates the amount still being absorbed: its limit / dose is
    # the mean absorption time, n / ktr + 1 / ka.
    model = Accounted(base, lambda a, q: jnp.sum(a[:-1]), **TIGHT)
    x0 = np.zeros(n + 3)
    x0[0] = dose
    amounts = trajectory(model, p, x0, times=np.array([2.0, 200.0]))
    # Leaving the chain is an Erlang(n, ktr) waiting time.
    left_chain = dose - amounts[0, :n].sum()
    np.testing.assert_allclose(left_chain, dose * gammainc(n, ktr * 2.0), rtol=1e-8)
    np.testing.assert_allclose(amounts[1, -1] / dose, n / ktr + 1 / ka, rtol=1e-7)


def test_savic_transit_equals_fixed_chain_for_integer_n_and_conserves_mass():
    n, ktr, dose, f = 3, 2.0, 100.0, 0.7
    p = dict(ktr=ktr, ka=1.1, cl=2.0, v=15.0)
    savic = trajectory(
        SavicTransit(**TIGHT), dict(p, n=float(n), dose=dose, tdose=0.0, f=f), np.zeros(3)
    )
    x0 = np.zeros(n + 3)
    x0[0] = f * dose
    chain = trajectory(TransitAbsorption(n_transit=n + 1, **TIGHT), p, x0)
    np.testing.assert_allclose(savic[:, 2], TIMES, rtol=1e-12)  # the clock
    np.testing.assert_allclose(savic[:, :2], chain[:, -2:], rtol=1e-6, atol=1e-9)


def test_savic_transit_non_integer_n_delivers_the_whole_dose():
    p = dict(ktr=3.0, ka=1.0, cl=0.0, v=10.0, n=2.4, dose=50.0, tdose=1.0)
    amounts = trajectory(SavicTransit(**TIGHT), p, np.zeros(3), times=np.array([0.5, 60.0]))
    np.testing.assert_allclose(amounts[0, :2], 0.0, atol=1e-12)  # before the dose
    np.testing.assert_allclose(amounts[1, 1], 50.0, rtol=1e-7)  # cl = 0: all in central


class TransitModel(pmx.Model):
    """Two transit compartments, ka, one-compartment disposition."""

    sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
    dynamics = TransitAbsorption(n_transit=2, **TIGHT)

    def individual(self, eta, cov):
        return {k: jnp.asarray(v) for k, v in TRANSIT.items()}

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


TRANSIT = dict(ktr=3.0, ka=0.8, cl=2.0, v=15.0)


def test_transit_model_predicts_two_doses_like_the_matrix_exponential():
    """Through the event engine (doses by CMT into ``transit1``): superposition
    of the exact linear solution ``expm(A t)`` of the chain."""
    times = [0.5, 2.0, 6.0, 12.5, 14.0, 20.0]
    rows = [(1, 0.0, 100.0, 1, 1, np.nan), (1, 12.0, 50.0, 1, 1, np.nan)]
    rows += [(1, t, 0.0, 0, 4, 1.0) for t in times]
    table = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "EVID", "CMT", "DV"])
    table = table.sort_values("TIME", kind="stable").reset_index(drop=True)
    pred = pmx.predict(TransitModel(), pmx.read_nonmem(table))
    ipred = pred.loc[pred["EVID"] == 0, "IPRED"].to_numpy()

    ktr, ka, k = TRANSIT["ktr"], TRANSIT["ka"], TRANSIT["cl"] / TRANSIT["v"]
    a = np.array(
        [[-ktr, 0, 0, 0], [ktr, -ktr, 0, 0], [0, ktr, -ka, 0], [0, 0, ka, -k]], dtype=float
    )
    unit = np.array([1.0, 0, 0, 0])
    expected = [
        sum(
            amt * (expm(a * (t - t0)) @ unit)[3]
            for t0, amt in ((0.0, 100.0), (12.0, 50.0))
            if t >= t0
        )
        / TRANSIT["v"]
        for t in times
    ]
    np.testing.assert_allclose(ipred, expected, rtol=1e-7)


# -- zero-order absorption (modelled duration, RATE=-2) ---------------------------------


class ZeroOrderAbsorption(pmx.Model):
    """One compartment with zero-order absorption of modelled duration ``D1``."""

    sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
    dynamics = pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.asarray(2.0), v=jnp.asarray(20.0), D1=jnp.asarray(3.0))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def test_zero_order_absorption_with_modelled_duration():
    times = [0.5, 1.0, 2.0, 3.0, 4.0, 8.0, 12.0]
    rows = [(1, 0.0, 120.0, 1, 1, -2.0, np.nan)]
    rows += [(1, t, 0.0, 0, 1, 0.0, 1.0) for t in times]
    table = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "EVID", "CMT", "RATE", "DV"])
    pred = pmx.predict(ZeroOrderAbsorption(), pmx.read_nonmem(table))
    ipred = pred.loc[pred["EVID"] == 0, "IPRED"].to_numpy()

    t, k, rate, cl, d = np.array(times), 0.1, 120.0 / 3.0, 2.0, 3.0
    during = rate / cl * (1 - np.exp(-k * np.minimum(t, d)))
    expected = during * np.exp(-k * np.maximum(t - d, 0.0))
    np.testing.assert_allclose(ipred, expected, rtol=1e-10)


# -- TMDD ------------------------------------------------------------------------------

TMDD = dict(cl=0.3, v=3.0, kint=0.5, kdeg=0.2, ksyn=2.0)  # R0 = 10 nM, days
DOSE_NMOL = 300.0  # 100 nM initial concentration


@pytest.mark.slow
def test_tmdd_full_approaches_qss_for_fast_binding():
    """Full model with kon = 1e4 /nM/day, KD = 1 nM against QSS with
    KSS = KD + kint/kon: binding equilibrates in ~1e-5 day, so the free drug
    agrees to 1e-3 relative (observed ~1e-4)."""
    kd, kon = 1.0, 1e4
    full_p = dict(TMDD, kon=kon, koff=kon * kd)
    qss_p = dict(TMDD, kss=kd + TMDD["kint"] / kon)
    full = TMDDFull(stiff=True, rtol=1e-8, atol=1e-10, max_steps=65536)
    qss = TMDDQSS(rtol=1e-10, atol=1e-12)
    x0_full = np.asarray(full.initial_amounts(full_p)) + np.array([DOSE_NMOL, 0.0, 0.0])
    x0_qss = np.asarray(qss.initial_amounts(qss_p)) + np.array([DOSE_NMOL, 0.0])
    a_full = trajectory(full, full_p, x0_full)
    a_qss = trajectory(qss, qss_p, x0_qss)
    free_full = a_full[:, 0] / TMDD["v"]
    free_qss = np.asarray(jax.vmap(lambda a: qss.free_concentration(a, qss_p))(a_qss))
    np.testing.assert_allclose(free_full, free_qss, rtol=1e-3)
    # Total target in QSS is free + bound target of the full model.
    np.testing.assert_allclose(a_full[:, 1] + a_full[:, 2], a_qss[:, 1], rtol=1e-3)


def test_tmdd_full_conserves_drug():
    p = dict(TMDD, kon=2.0, koff=2.0)
    v = p["v"]

    def outflow(a, q):  # linear elimination of free drug + internalised complex
        return q["cl"] * a[0] / q["v"] + q["kint"] * a[2] * q["v"]

    model = Accounted(TMDDFull(**TIGHT), outflow, **TIGHT)
    x0 = np.array([DOSE_NMOL, 10.0, 0.0, 0.0])
    amounts = trajectory(model, p, x0)
    drug = amounts[:, 0] + amounts[:, 2] * v + amounts[:, 3]
    np.testing.assert_allclose(drug, DOSE_NMOL, rtol=1e-9)
    # Target: free + bound obeys dRtot/dt = ksyn - kdeg R - kint RL, its own balance.
    assert np.all(amounts[:, 1] > 0) and np.all(amounts[:, 2] > 0)


def test_tmdd_qss_with_constant_target_approaches_mm():
    """kint = kdeg keeps Rtot = R0 = 1 nM exactly; MM then differs from QSS only
    by counting the bound drug (at most Rtot = 1 nM) as free, next to free
    concentrations >= 40 nM until day 8: 3% relative (observed 1%)."""
    r0, kss = 1.0, 2.0
    qss_p = dict(cl=0.3, v=3.0, kss=kss, kint=0.5, kdeg=0.5, ksyn=0.5 * r0)
    mm_p = dict(cl=0.3, v=3.0, kss=kss, kint=0.5, rmax=r0)
    qss = TMDDQSS(**TIGHT)
    times = TIMES[TIMES <= 8.0]
    a_qss = trajectory(qss, qss_p, np.array([DOSE_NMOL, r0]), times)
    a_mm = trajectory(TMDDMM(**TIGHT), mm_p, np.array([DOSE_NMOL]), times)
    np.testing.assert_allclose(a_qss[:, 1], r0, rtol=1e-9)
    free_qss = np.asarray(jax.vmap(lambda a: qss.free_concentration(a, qss_p))(a_qss))
    conc_mm = a_mm[:, 0] / 3.0
    assert conc_mm.min() > 40.0
    np.testing.assert_allclose(conc_mm, free_qss, rtol=0.03)
    # TMDDMM is mixed elimination with VM = kint Rmax V, KM = KSS.
    mixed = trajectory(
        OneCompartmentMixedElimination(**TIGHT),
        dict(cl=0.3, v=3.0, vm=0.5 * r0 * 3.0, km=kss),
        np.array([DOSE_NMOL]),
        times,
    )
    np.testing.assert_allclose(a_mm, mixed, rtol=1e-7)


def test_two_compartment_mixed_elimination_mass_balance_and_linear_limit():
    p = dict(cl=0.4, v=3.0, q=0.8, vp=6.0, vm=20.0, km=5.0)

    def outflow(a, q):
        c = a[0] / q["v"]
        return q["cl"] * c + q["vm"] * c / (q["km"] + c)

    model = Accounted(pk.TwoCompartmentMixedElimination(**TIGHT), outflow, **TIGHT)
    amounts = trajectory(model, p, np.array([300.0, 0.0, 0.0]))
    np.testing.assert_allclose(amounts.sum(axis=1), 300.0, rtol=1e-9)
    # vm = 0: the linear two-compartment system, exp(A t) x0.
    linear = trajectory(model, dict(p, vm=0.0), np.array([300.0, 0.0, 0.0]))
    k10, k12, k21 = p["cl"] / p["v"], p["q"] / p["v"], p["q"] / p["vp"]
    a = np.array([[-k10 - k12, k21], [k12, -k21]])
    exact = np.array([expm(a * t) @ np.array([300.0, 0.0]) for t in TIMES])
    np.testing.assert_allclose(linear[:, :2], exact, rtol=1e-7)


def test_two_compartment_qss_tends_to_synthesis_limited_mm():
    """QSS TMDD with KSS = s nM and kint = 0.05 s /day (ratio fixed) and the
    target turning over at kdeg = 0.2 s /day (R0 = 1 nM): as s grows the bound
    drug vanishes and Rtot follows ksyn / (kdeg + (kint/KSS) L) instantly, so
    the target route becomes ``VM L / (KM + L)`` with VM = ksyn V and KM =
    kdeg KSS / kint (here 5 times the linear CL at low concentrations).  The
    largest relative difference of the free concentration over 24 days shrinks
    like 1/s: observed 1.2e-2 (s = 10), 6.5e-3 (100), 9.1e-4 (1000)."""
    base = dict(cl=0.03, v=3.0, q=0.5, vp=5.0)
    qss = pk.TwoCompartmentTMDDQSS(**TIGHT)
    mixed = pk.TwoCompartmentMixedElimination(**TIGHT)
    times = np.array([0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 24.0])

    def difference(s):
        kdeg, ratio = 0.2 * s, 0.05
        p = dict(base, kss=s, kint=ratio * s, kdeg=kdeg, ksyn=kdeg * 1.0)
        a = trajectory(qss, p, np.array([300.0, 0.0, 1.0]), times)
        free = np.asarray(jax.vmap(lambda x: qss.free_concentration(x, p))(a))
        limit = dict(base, vm=p["ksyn"] * base["v"], km=kdeg / ratio)
        conc = trajectory(mixed, limit, np.array([300.0, 0.0]), times)[:, 0] / base["v"]
        return np.max(np.abs(conc / free - 1.0))

    near, far = difference(1e3), difference(10.0)
    assert near < 2e-3
    assert far > 5.0 * near


# -- parent and metabolite -------------------------------------------------------------


def test_parent_metabolite_bateman():
    cl, v, fm, clm, vm, dose = 3.0, 20.0, 0.6, 5.0, 10.0, 100.0
    p = dict(cl=cl, v=v, fm=fm, clm=clm, vm=vm)
    amounts = trajectory(ParentMetabolite(**TIGHT), p, np.array([dose, 0.0]))
    k, km = cl / v, clm / vm
    np.testing.assert_allclose(amounts[:, 0], dose * np.exp(-k * TIMES), rtol=1e-7)
    metabolite = fm * k * dose / (km - k) * (np.exp(-k * TIMES) - np.exp(-km * TIMES))
    np.testing.assert_allclose(amounts[:, 1], metabolite, rtol=1e-7)


def test_parent_metabolite_oral_matches_matrix_exponential_and_fm_recovery():
    ka, cl, v, fm, clm, vm, dose = 1.1, 3.0, 20.0, 0.6, 5.0, 10.0, 100.0
    p = dict(ka=ka, cl=cl, v=v, fm=fm, clm=clm, vm=vm)
    amounts = trajectory(ParentMetaboliteOral(**TIGHT), p, np.array([dose, 0.0, 0.0]))
    k, km = cl / v, clm / vm
    a = np.array([[-ka, 0, 0], [ka, -k, 0], [0, fm * k, -km]])
    expected = np.stack([expm(a * t) @ np.array([dose, 0, 0]) for t in TIMES])
    np.testing.assert_allclose(amounts, expected, rtol=1e-7, atol=1e-10)
    # Metabolite AUC = fm Dose / CLm (all of the dose is absorbed).
    auc = Accounted(ParentMetaboliteOral(**TIGHT), lambda x, q: x[2] / q["vm"], **TIGHT)
    total = trajectory(auc, p, np.array([dose, 0.0, 0.0, 0.0]), times=np.array([200.0]))
    np.testing.assert_allclose(total[-1, -1], fm * dose / clm, rtol=1e-7)


# -- minimal PBPK ----------------------------------------------------------------------

PBPK = dict(
    q_liver=90.0,
    q_kidney=70.0,
    q_rest=200.0,
    v_venous=3.5,
    v_arterial=1.5,
    v_liver=1.8,
    v_kidney=0.3,
    v_rest=30.0,
    kp_liver=2.0,
    kp_kidney=1.5,
    kp_rest=1.0,
    fu=0.3,
    clint=100.0,
    clr=10.0,
)


def test_pbpk_steady_state_clearance_is_well_stirred():
    """Constant infusion into venous blood for 100 h (~15 half-lives): the
    apparent blood clearance rate / Css is the well-stirred hepatic clearance
    plus the flow-limited renal clearance."""
    model = MinimalPBPK(stiff=True, rtol=1e-10, atol=1e-12)
    rate = 50.0
    rates = np.zeros(6)
    rates[model.compartments.index("venous")] = rate
    amounts = trajectory(model, PBPK, np.zeros(6), times=np.array([100.0]), rates=rates)[-1]
    c_venous = amounts[1] / PBPK["v_venous"]
    c_arterial = amounts[2] / PBPK["v_arterial"]
    q_h, q_k, fu_clint, clr = PBPK["q_liver"], PBPK["q_kidney"], 0.3 * 100.0, 10.0
    extraction = fu_clint / (q_h + fu_clint)
    cl_expected = q_h * extraction + q_k * clr / (q_k + clr)
    np.testing.assert_allclose(c_venous, c_arterial, rtol=1e-9)
    np.testing.assert_allclose(rate / c_arterial, cl_expected, rtol=1e-7)
    # Tissue concentrations at steady state: rest of body at Kp times blood.
    np.testing.assert_allclose(amounts[5] / PBPK["v_rest"], PBPK["kp_rest"] * c_arterial, rtol=1e-7)


def test_pbpk_oral_availability_is_one_minus_hepatic_extraction():
    """AUC of arterial blood after an oral dose (absorbed into the liver) over
    that after the same IV dose is the fraction escaping first-pass hepatic
    extraction, ``F_H = 1 - E_H`` (renal elimination acts on both alike)."""
    base = MinimalPBPK(stiff=True, **TIGHT)
    model = Accounted(base, lambda a, q: a[2] / q["v_arterial"], stiff=True, **TIGHT)
    p = dict(PBPK, ka=1.5)
    oral, iv = np.zeros(7), np.zeros(7)
    oral[0], iv[1] = 100.0, 100.0
    auc_oral = trajectory(model, p, oral, times=np.array([150.0]))[-1, -1]
    auc_iv = trajectory(model, p, iv, times=np.array([150.0]))[-1, -1]
    fu_clint = PBPK["fu"] * PBPK["clint"]
    np.testing.assert_allclose(
        auc_oral / auc_iv, 1 - fu_clint / (PBPK["q_liver"] + fu_clint), rtol=1e-7
    )
