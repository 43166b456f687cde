"""PD, disease and cell-kinetic library models (pmx_jax.dynamics._library_pd)
against independent answers.

References: hand values and limits of the Emax family; closed forms (one-
compartment PK with an effect compartment after an IV bolus; Gompertz and
logistic growth, also under a constant kill rate, which is again Gompertz or
logistic with shifted constants; the Erlang (gamma CDF) response of a transit
chain; linear CAR-T kinetics without tumour by matrix exponential; biomarker
decay to its plateau); analytic steady states of the four indirect response
models under a constant concentration; baselines that do not move without drug.
Tolerances: the solver runs at rtol 1e-8 / atol 1e-10, so closed forms agree to
1e-6 relative unless stated (cell counts of 1e6 carry atol-limited error well
below that); tests that need a limit (large ke0) state their bound.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.linalg import expm
from scipy.special import gammainc

import pmx_jax as pmx
from pmx_jax.dynamics._library_pd import (
    BiomarkerPlateau,
    CarT,
    EffectCompartment,
    Friberg,
    IndirectResponse,
    TumourGrowth,
    emax,
    operational_ec50,
    operational_effect,
    operational_emax,
    sigmoid_emax,
    transducer_ratio,
)

PK = dict(ka=1.2, cl=2.0, v=10.0)


@eqx.filter_jit
def _propagate(model, p, x0, dt, rates):
    return model.propagate_with_status(p, x0, dt, rates)


def propagate(model, p, x0, dt, rates=None):
    """Jitted propagate with array inputs (one compile per model and parameter
    names); asserts the solve succeeded."""
    n = model.n_compartments
    rates = np.zeros(n) if rates is None else rates
    arrays = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.float64), (p, x0, dt, rates))
    amounts, ok = _propagate(model, *arrays)
    assert bool(ok)
    return np.asarray(amounts)


def trajectory(model, p, x0, times, rates=None):
    """Amounts at each of ``times`` (increasing, from 0), stepping between them."""
    out, state, previous = [], np.asarray(x0, dtype=float), 0.0
    for t in times:
        state = propagate(model, p, state, t - previous, rates)
        out.append(state)
        previous = t
    return np.stack(out)


def baseline(model, p):
    return np.array(model.initial_amounts({k: jnp.asarray(v) for k, v in p.items()}))


# --------------------------------------------------------------------------------
# Direct effects
# --------------------------------------------------------------------------------


def test_emax_hand_values_and_limits():
    assert float(emax(2.0, 10.0, 50.0, 2.0)) == pytest.approx(35.0, rel=1e-15)  # C = EC50
    assert float(emax(6.0, 10.0, 50.0, 2.0)) == pytest.approx(10.0 + 50.0 * 6 / 8, rel=1e-15)
    assert float(emax(0.0, 10.0, 50.0, 2.0)) == 10.0
    assert float(emax(1e12, 10.0, -8.0, 2.0)) == pytest.approx(2.0, rel=1e-10)
    c = np.array([0.0, 0.5, 2.0, 40.0])
    np.testing.assert_allclose(
        sigmoid_emax(c, 10.0, 50.0, 2.0, 1.0), emax(c, 10.0, 50.0, 2.0), rtol=1e-14
    )


def test_sigmoid_emax_hand_values_limits_and_gradient():
    assert float(sigmoid_emax(2.0, 0.0, 100.0, 1.0, 2.0)) == pytest.approx(80.0, rel=1e-14)
    assert float(sigmoid_emax(3.0, 5.0, 100.0, 3.0, 4.0)) == pytest.approx(55.0, rel=1e-14)
    assert float(sigmoid_emax(0.0, 5.0, 100.0, 3.0, 4.0)) == 5.0
    assert float(sigmoid_emax(1e6, 5.0, 100.0, 3.0, 4.0)) == pytest.approx(105.0, rel=1e-12)
    # d/dC of Emax C^h/(EC50^h + C^h) at C = EC50 is Emax h / (4 EC50); finite at C = 0.
    slope = jax.grad(sigmoid_emax)(3.0, 5.0, 100.0, 3.0, 4.0)
    assert float(slope) == pytest.approx(100.0 * 4.0 / 12.0, rel=1e-12)
    assert float(jax.grad(sigmoid_emax)(0.0, 5.0, 100.0, 3.0, 4.0)) == 0.0


@pytest.mark.parametrize("n", [0.7, 1.0, 2.5])
def test_operational_model_derived_emax_and_ec50(n):
    e0, em, ka_affinity, tau = 4.0, 120.0, 30.0, 3.0
    top, ec50 = operational_emax(em, tau, n), operational_ec50(ka_affinity, tau, n)
    # Half effect at the derived EC50, full effect at saturating C.
    half = operational_effect(ec50, e0, em, ka_affinity, tau, n)
    assert float(half) == pytest.approx(e0 + float(top) / 2, rel=1e-12)
    assert float(operational_effect(1e12, e0, em, ka_affinity, tau, n)) == pytest.approx(
        e0 + float(top), rel=1e-9
    )
    if n == 1.0:
        # Hand values: Emax = Em tau/(1+tau) = 90, EC50 = KA/(1+tau) = 7.5, and
        # the whole curve is the hyperbolic Emax model.
        assert float(top) == pytest.approx(90.0, rel=1e-14)
        assert float(ec50) == pytest.approx(7.5, rel=1e-14)
        c = np.geomspace(0.01, 1e4, 25)
        np.testing.assert_allclose(
            operational_effect(c, e0, em, ka_affinity, tau, n),
            emax(c, e0, top, ec50),
            rtol=1e-13,
        )


def test_operational_model_receptor_loss_lowers_emax_and_potency():
    full = transducer_ratio(1000.0, 100.0)  # tau = 10
    halved = transducer_ratio(500.0, 100.0)
    assert float(full) == 10.0
    assert operational_emax(1.0, halved) < operational_emax(1.0, full)
    assert operational_ec50(5.0, halved) > operational_ec50(5.0, full)


# --------------------------------------------------------------------------------
# Effect compartment
# --------------------------------------------------------------------------------


def test_effect_compartment_after_iv_bolus_matches_closed_form():
    """C = C0 e^{-kt}, Ce = C0 ke0/(ke0 - k) (e^{-kt} - e^{-ke0 t})."""
    model, p = EffectCompartment(), dict(PK, ke0=0.7)
    dose, k = 100.0, PK["cl"] / PK["v"]
    times = np.array([0.25, 1.0, 3.0, 8.0, 24.0])
    amounts = trajectory(model, p, [0.0, dose, 0.0], times)
    c0 = dose / PK["v"]
    ce = c0 * p["ke0"] / (p["ke0"] - k) * (np.exp(-k * times) - np.exp(-p["ke0"] * times))
    np.testing.assert_allclose(amounts[:, 1], dose * np.exp(-k * times), rtol=1e-7)
    np.testing.assert_allclose(amounts[:, 2], ce, rtol=1e-6)


def test_effect_compartment_with_fast_equilibration_is_a_direct_effect():
    """ke0 = 1e4/h: Ce lags C by about C'/ke0, so Emax(Ce) equals Emax(C) to
    max|C'|/ke0 (< 1e-3 of C here); solved with the stiff solver."""
    model, p = EffectCompartment(stiff=True), dict(PK, ke0=1e4)
    dose = 100.0
    times = np.array([0.5, 1.0, 2.0, 6.0, 12.0])
    amounts = trajectory(model, p, [dose, 0.0, 0.0], times)
    k, ka = PK["cl"] / PK["v"], PK["ka"]
    conc = dose * ka / (PK["v"] * (ka - k)) * (np.exp(-k * times) - np.exp(-ka * times))
    np.testing.assert_allclose(amounts[:, 1] / PK["v"], conc, rtol=1e-6)
    np.testing.assert_allclose(amounts[:, 2], conc, rtol=1e-3)
    np.testing.assert_allclose(
        emax(amounts[:, 2], 5.0, 40.0, 3.0), emax(conc, 5.0, 40.0, 3.0), rtol=1e-4
    )


# --------------------------------------------------------------------------------
# Indirect response models
# --------------------------------------------------------------------------------

IDR = dict(PK, kin=12.0, kout=0.4, imax=0.8, ic50=2.5, emax=3.0, ec50=1.5)
R0 = IDR["kin"] / IDR["kout"]


def idr_steady_state(kind, conc, hill=1.0):
    inhibition = IDR["imax"] * conc**hill / (IDR["ic50"] ** hill + conc**hill)
    stimulation = IDR["emax"] * conc**hill / (IDR["ec50"] ** hill + conc**hill)
    return {
        1: R0 * (1 - inhibition),
        2: R0 / (1 - inhibition),
        3: R0 * (1 + stimulation),
        4: R0 / (1 + stimulation),
    }[kind]


@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_indirect_response_rests_at_baseline_and_reaches_analytic_steady_state(kind):
    model = IndirectResponse(kind=kind)
    start = baseline(model, IDR)
    np.testing.assert_array_equal(start, [0.0, 0.0, R0])
    np.testing.assert_allclose(propagate(model, IDR, start, 200.0), start, rtol=1e-12)
    # Constant concentration: central at Css, infusion cl*Css into central; kout
    # t = 80 leaves e^{-80} (x1/(1-Imax) for kind 2) of the initial deviation.
    css = 3.0
    x0 = [0.0, css * IDR["v"], R0]
    rates = [0.0, IDR["cl"] * css, 0.0]
    end = propagate(model, IDR, x0, 200.0, rates)
    np.testing.assert_allclose(end[1] / IDR["v"], css, rtol=1e-10)
    np.testing.assert_allclose(end[2], idr_steady_state(kind, css), rtol=1e-7)


def test_indirect_response_with_hill_coefficient():
    model, p, css = IndirectResponse(kind=1), dict(IDR, hill=2.5), 3.0
    end = propagate(model, p, [0.0, css * p["v"], R0], 200.0, [0.0, p["cl"] * css, 0.0])
    np.testing.assert_allclose(end[2], idr_steady_state(1, css, hill=2.5), rtol=1e-7)


def test_indirect_response_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be 1"):
        IndirectResponse(kind=5)


class WarfarinLikePD(pmx.Model):
    """Oral dose, response (e.g. PCA) by an indirect response model of kind 1."""

    tkin: pmx.Theta = pmx.theta(np.log(12.0))
    tkout: pmx.Theta = pmx.theta(np.log(0.4))
    timax: pmx.Theta = pmx.theta(0.8, lower=0.0, upper=1.0)
    tic50: pmx.Theta = pmx.theta(np.log(2.5))
    sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
    iiv: pmx.Omega = pmx.omega(kin=0.05)
    dynamics = IndirectResponse(kind=1)

    def individual(self, eta, cov):
        return dict(
            ka=jnp.asarray(PK["ka"]),
            cl=jnp.asarray(PK["cl"]),
            v=jnp.asarray(PK["v"]),
            kin=jnp.exp(self.tkin + eta.kin),
            kout=jnp.exp(self.tkout),
            imax=self.timax,
            ic50=jnp.exp(self.tic50),
        )

    def observe(self, amounts, p):
        return pmx.Additive(amounts.response, self.sd)


def test_indirect_response_in_a_model_starts_at_baseline_and_returns():
    """Through pmx.predict: the record starts at R0 = kin/kout (initial_amounts),
    the response falls after the dose and comes back to R0 once the drug is gone."""
    regimen = pmx.Regimen.oral(100.0, start=10.0).sample([0.0, 5.0, 10.0, 20.0, 400.0])
    table = predict_frame(WarfarinLikePD(), regimen)
    response = table.IPRED.to_numpy()
    np.testing.assert_allclose(response[:3], R0, rtol=1e-10)
    assert response[3] < 0.8 * R0
    np.testing.assert_allclose(response[4], R0, rtol=1e-6)


def predict_frame(model, regimen) -> pd.DataFrame:
    out = pmx.predict(model, regimen)
    return out[out.EVID == 0].reset_index(drop=True)


def test_indirect_response_gradient_matches_finite_differences():
    """d R(12 h) / d ic50 by forward sensitivities vs a central difference
    (step 1e-5 relative: truncation ~1e-10, solver noise ~1e-8/1e-5)."""
    model = IndirectResponse(kind=1)
    x0 = [100.0, 0.0, R0]

    def response(ic50):
        p = {k: jnp.asarray(v) for k, v in IDR.items()} | {"ic50": ic50}
        return model.propagate(p, jnp.asarray(x0), jnp.asarray(12.0))[2]

    grad = jax.jit(jax.grad(response))(jnp.asarray(IDR["ic50"]))
    h = 1e-5 * IDR["ic50"]
    fd = (response(IDR["ic50"] + h) - response(IDR["ic50"] - h)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


# --------------------------------------------------------------------------------
# Friberg myelosuppression
# --------------------------------------------------------------------------------

FRIBERG = dict(PK, circ0=5.0, mtt=120.0, gamma=0.17, slope=0.05)


def test_friberg_rests_at_circ0_without_drug():
    model = Friberg()
    start = baseline(model, FRIBERG)
    np.testing.assert_array_equal(start, [0, 0, 5, 5, 5, 5, 5])
    np.testing.assert_allclose(propagate(model, FRIBERG, start, 1000.0), start, rtol=1e-12)


def test_friberg_chain_mean_transit_time_is_mtt():
    """With proliferation fully stopped (slope C = 1) the maturation chain is
    linear, x' = A x; a cell entering prol spends -1' A^{-1} e_prol in the
    chain before reaching circ: 4 / ktr = MTT."""
    model, conc = Friberg(), 2.0
    p = {k: jnp.asarray(v) for k, v in (FRIBERG | dict(slope=1.0 / conc)).items()}
    state = jnp.asarray([0.0, conc * FRIBERG["v"], 1.0, 1.0, 1.0, 1.0, FRIBERG["circ0"]])
    jacobian = jax.jacfwd(lambda x: model.rhs(0.0, x, p))(state)
    chain = np.asarray(jacobian)[2:6, 2:6]
    residence = -np.linalg.solve(chain, np.eye(4)[:, 0])
    assert residence.sum() == pytest.approx(FRIBERG["mtt"], rel=1e-12)


def test_friberg_neutropenia_nadir_and_recovery():
    """After a dose, circulating cells fall with a delay of the order of MTT,
    reach a nadir below circ0 and recover, with rebound (feedback)."""
    model = Friberg()
    start = baseline(model, FRIBERG)
    start[0] = 500.0
    times = np.arange(12.0, 1201.0, 12.0)
    circ = trajectory(model, FRIBERG, start, times)[:, -1]
    nadir = int(np.argmin(circ))
    assert circ[nadir] < 0.8 * FRIBERG["circ0"]
    assert 0.5 * FRIBERG["mtt"] < times[nadir] < 3 * FRIBERG["mtt"]
    assert circ[nadir:].max() > FRIBERG["circ0"]  # rebound above baseline
    assert np.all(circ > 0)


# --------------------------------------------------------------------------------
# Tumour growth
# --------------------------------------------------------------------------------

TUMOUR = dict(PK, kg=0.05, tsmax=400.0, ts0=20.0, ktr=0.3, kkill=0.02)


def gompertz(t, ts0, tsmax, kg):
    return tsmax * np.exp(np.log(ts0 / tsmax) * np.exp(-kg * t))


def logistic(t, ts0, tsmax, kg):
    return tsmax / (1 + (tsmax / ts0 - 1) * np.exp(-kg * t))


@pytest.mark.parametrize("growth", ["gompertz", "logistic"])
def test_tumour_growth_without_drug_matches_closed_form(growth):
    model = TumourGrowth(growth=growth)
    times = np.array([1.0, 10.0, 50.0, 150.0])
    tumour = trajectory(model, TUMOUR, baseline(model, TUMOUR), times)[:, -1]
    closed = (gompertz if growth == "gompertz" else logistic)(times, 20.0, 400.0, 0.05)
    np.testing.assert_allclose(tumour, closed, rtol=1e-7)


@pytest.mark.parametrize("growth", ["gompertz", "logistic"])
def test_tumour_growth_under_constant_kill_matches_closed_form(growth):
    """Signal held at Css (steady infusion, chain at steady state): kill rate
    k = kkill Css is constant.  Gompertz stays Gompertz with capacity
    tsmax e^{-k/kg}; logistic becomes logistic with rate kg - k and capacity
    tsmax (kg - k)/kg."""
    model, css = TumourGrowth(growth=growth, n_transit=2), 1.0
    kg, k = TUMOUR["kg"], TUMOUR["kkill"] * css
    x0 = [0.0, css * TUMOUR["v"], css, css, TUMOUR["ts0"]]
    rates = [0.0, TUMOUR["cl"] * css, 0.0, 0.0, 0.0]
    times = np.array([5.0, 40.0, 120.0])
    tumour = trajectory(model, TUMOUR, x0, times, rates)[:, -1]
    if growth == "gompertz":
        closed = gompertz(times, TUMOUR["ts0"], TUMOUR["tsmax"] * np.exp(-k / kg), kg)
    else:
        closed = logistic(times, TUMOUR["ts0"], TUMOUR["tsmax"] * (kg - k) / kg, kg - k)
    np.testing.assert_allclose(tumour, closed, rtol=1e-7)


def test_tumour_signal_chain_is_an_erlang_delay():
    """A step of concentration Css reaches signal n as Css P(n, ktr t) (the
    regularised lower gamma function: Erlang delay, mean n/ktr)."""
    n, css = 4, 2.0
    model = TumourGrowth(n_transit=n)
    assert model.compartments == (
        "depot",
        "central",
        "signal1",
        "signal2",
        "signal3",
        "signal4",
        "tumour",
    )
    x0 = [0.0, css * TUMOUR["v"], 0.0, 0.0, 0.0, 0.0, TUMOUR["ts0"]]
    rates = [0.0, TUMOUR["cl"] * css, 0.0, 0.0, 0.0, 0.0, 0.0]
    times = np.array([2.0, 10.0, 13.3, 30.0])
    signals = trajectory(model, TUMOUR, x0, times, rates)[:, 2:-1]
    for i in range(n):
        np.testing.assert_allclose(
            signals[:, i], css * gammainc(i + 1, TUMOUR["ktr"] * times), rtol=1e-7, atol=1e-12
        )


def test_tumour_growth_rejects_unknown_law():
    with pytest.raises(ValueError, match="gompertz"):
        TumourGrowth(growth="exponential")


def test_tumour_growth_dose_shrinks_tumour_after_a_delay():
    model = TumourGrowth(growth="gompertz")
    start = baseline(model, TUMOUR)
    untreated = trajectory(model, TUMOUR, start, [1.0, 60.0])[:, -1]
    start[0] = 200.0
    treated = trajectory(model, TUMOUR, start, [1.0, 60.0])[:, -1]
    # one hour in, the kill signal has barely passed the chain (delay n/ktr = 10)
    np.testing.assert_allclose(treated[0], untreated[0], rtol=1e-3)
    assert treated[1] < 0.8 * untreated[1]


# --------------------------------------------------------------------------------
# CAR-T
# --------------------------------------------------------------------------------

CART = dict(
    rho=0.9,
    alpha=0.25,
    kem=0.02,
    kme=0.1,
    beta=0.005,
    t50=1e7,
    kg=0.03,
    tsmax=1e10,
    kkill=2e-8,
    ts0=1e8,
)


def test_cart_without_tumour_is_linear_contraction_and_memory():
    """No tumour: E' = -(alpha + kem) E, M' = kem E - beta M (matrix exponential)."""
    p = CART | dict(ts0=0.0)
    model = CarT()
    start = baseline(model, p)
    np.testing.assert_array_equal(start, [0.0, 0.0, 0.0])
    x0 = np.array([5e6, 1e5, 0.0])
    a = np.array([[-(p["alpha"] + p["kem"]), 0.0], [p["kem"], -p["beta"]]])
    for t in (3.0, 30.0, 200.0):
        got = propagate(model, p, x0, t)
        # atol: one cell in 1e6 (the solver's atol is 1e-10 cells)
        np.testing.assert_allclose(got[:2], expm(a * t) @ x0[:2], rtol=1e-6, atol=1e-6)
        assert got[2] == 0.0


def test_cart_conversion_conserves_cells():
    """alpha = beta = rho = 0: cells only move between effector and memory."""
    p = CART | dict(alpha=0.0, beta=0.0, rho=0.0)
    got = propagate(CarT(), p, [5e6, 0.0, 1e8], 50.0)
    np.testing.assert_allclose(got[0] + got[1], 5e6, rtol=1e-7)
    assert got[1] > 0


def test_cart_expansion_contraction_and_tumour_control():
    """A CAR-T dose expands on tumour (peak well above the dose), contracts,
    leaves memory cells, and drives the tumour far below its untreated course;
    every population stays non-negative."""
    model = CarT()
    start = baseline(model, CART)
    start[0] = 1e6
    times = np.arange(1.0, 121.0, 1.0)
    cells = trajectory(model, CART, start, times)
    assert np.all(cells >= 0)
    effector, memory, tumour = cells.T
    peak = int(np.argmax(effector))
    assert effector[peak] > 10 * 1e6 and 0 < peak < len(times) - 1
    assert effector[-1] < 0.5 * effector[peak]
    assert memory[-1] > 0
    untreated = logistic(times[-1], CART["ts0"], CART["tsmax"], CART["kg"])
    assert tumour[-1] < 1e-3 * untreated


# --------------------------------------------------------------------------------
# Biomarker plateau
# --------------------------------------------------------------------------------

MARKER = dict(PK, kdep=0.3, krec=0.0, kout=0.05, b0=100.0, bplat=25.0)


def test_biomarker_rests_at_baseline_and_decays_to_plateau():
    model = BiomarkerPlateau()
    start = baseline(model, MARKER)
    np.testing.assert_array_equal(start, [0.0, 0.0, 1.0, 100.0])
    np.testing.assert_allclose(propagate(model, MARKER, start, 500.0), start, rtol=1e-12)
    # producers fully depleted: B(t) = bplat + (b0 - bplat) e^{-kout t}
    times = np.array([1.0, 20.0, 100.0, 400.0])
    marker = trajectory(model, MARKER, [0.0, 0.0, 0.0, 100.0], times)[:, 3]
    np.testing.assert_allclose(marker, 25.0 + 75.0 * np.exp(-0.05 * times), rtol=1e-7)


def test_biomarker_depletion_follows_drug_exposure():
    """No recovery: P(t) = exp(-kdep AUC(t)), AUC of an IV bolus
    dose/cl (1 - e^{-kt}); B ends between plateau and baseline, at the
    turnover steady state of the surviving producers."""
    model, dose, k = BiomarkerPlateau(), 20.0, PK["cl"] / PK["v"]
    times = np.array([0.5, 3.0, 10.0, 600.0])
    amounts = trajectory(model, MARKER, [0.0, dose, 1.0, 100.0], times)
    auc = dose / PK["cl"] * (1 - np.exp(-k * times))
    np.testing.assert_allclose(amounts[:, 2], np.exp(-MARKER["kdep"] * auc), rtol=1e-7)
    surviving = np.exp(-MARKER["kdep"] * dose / PK["cl"])
    np.testing.assert_allclose(amounts[-1, 3], 25.0 + 75.0 * surviving, rtol=1e-6)
