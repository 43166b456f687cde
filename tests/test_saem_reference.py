"""SAEM on the reference cases and by simulation recovery (slow: run with
``-m slow``).  Reference data are read from ``../shared/refdata`` (skipped
when absent).

- pheno (NONMEM 7.4.2, R3), warfarin PK (NONMEM 7.4.3, R4), Bolus_2CPT
  (NONMEM 7.4.3, R5): SAEM within 2 NONMEM standard errors of NONMEM's FOCEI
  estimates.
- cbpp (binomial, glmmTMB): SAEM on a non-Gaussian endpoint.
- bauer2019_501 (infusion, WT/AGE/SEX covariates, BLOCK(2)): SAEM then
  importance sampling, compared with importance sampling at the FOCEI
  estimates.
- Simulation recovery: a 2-compartment model with 4 correlated etas, 200
  subjects.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _reference_models import (
    BOLUS_2CPT_EXT,
    WARFARIN_EXT,
    Bolus2Cpt,
    WarfarinPK,
    bolus_2cpt_data,
    final_estimates,
    standard_errors,
    warfarin_data,
)
from conftest import REFDATA
from test_endpoints_reference import Herds, _cbpp

import pmx_jax as pmx

pytestmark = pytest.mark.slow


def _needs(name):
    if not (REFDATA / name).exists() and not (REFDATA / "nonmem_outputs" / name).exists():
        pytest.skip(f"reference data {name} not available")


def _within(fit, reference: dict, ses: dict, k=2.0):
    for name, value in reference.items():
        estimate = float(getattr(fit.model, name))
        assert abs(estimate - value) < k * ses[name], (name, estimate, value, ses[name])


def test_pheno_within_two_standard_errors_of_nonmem():
    fit = pmx.fit(pmx.library.Phenobarbital(), pmx.datasets.load("phenobarbital"), "saem")
    assert fit.status in (pmx.RESULTS.successful,), (fit.message, fit.suspect)
    # NONMEM 7.4.2 FOCEI (REFERENCE_CASES R3); SIGMA 0.0132410 (SE 0.00228) is
    # the variance of the proportional error: prop_cv is its square root.
    _within(
        fit,
        dict(th_cl=0.00469555, th_v=0.984258, th_apgar=0.158920),
        dict(th_cl=2.10e-4, th_v=0.0269, th_apgar=0.0838),
    )
    cv = math.sqrt(0.0132410)
    assert abs(float(fit.model.prop_cv) - cv) < 2 * 0.00228 / (2 * cv)
    omega = np.diagonal(np.asarray(fit.model.iiv.matrix))
    assert abs(omega[0] - 0.0293508) < 2 * 0.0134
    assert abs(omega[1] - 0.0279060) < 2 * 0.00748
    assert fit.stochastic.mu_referenced == ("th_cl", "th_v")  # log THETA + eta


def test_warfarin_within_two_standard_errors_of_nonmem():
    _needs("warfarin.csv")
    final = final_estimates(REFDATA, WARFARIN_EXT)
    se = standard_errors(REFDATA, WARFARIN_EXT)
    fit = pmx.fit(WarfarinPK(), warfarin_data(REFDATA), "saem")
    assert fit.converged, (fit.message, fit.suspect)
    names = ("tka", "tcl", "tv", "prop", "add")
    _within(
        fit,
        {n: float(final[f"THETA{i}"]) for i, n in enumerate(names, 1)},
        {n: float(se[f"THETA{i}"]) for i, n in enumerate(names, 1)},
    )
    omega = np.diagonal(np.asarray(fit.model.iiv.matrix))
    for i in range(3):
        key = f"OMEGA{i + 1}_{i + 1}"
        assert abs(omega[i] - float(final[key])) < 2 * float(se[key])
    # The importance-sampling OFV at SAEM's estimates and at NONMEM's agree
    # within Monte-Carlo error (both estimate the same maximum).
    at_nonmem = pmx.importance_ofv(WarfarinPK.at(final), warfarin_data(REFDATA), seed=5)
    assert abs(fit.ofv - at_nonmem.ofv) < 3 * math.hypot(fit.stochastic.ofv_se, at_nonmem.se) + 1.0


def test_bolus_2cpt_within_two_standard_errors_of_nonmem():
    _needs("Bolus_2CPT.csv")
    final = final_estimates(REFDATA, BOLUS_2CPT_EXT)
    se = standard_errors(REFDATA, BOLUS_2CPT_EXT)
    data = bolus_2cpt_data(REFDATA)
    fit = pmx.fit(Bolus2Cpt(), data, "saem", iterations=(200, 100))
    names = ("tcl", "tv1", "tq", "tv2", "cv")
    _within(
        fit,
        {n: float(final[f"THETA{i}"]) for i, n in enumerate(names, 1)},
        {n: float(se[f"THETA{i}"]) for i, n in enumerate(names, 1)},
    )
    # Rich data (19 samples per subject): FOCEI is accurate here, and the
    # importance-sampling OFV at NONMEM's estimates is NONMEM's OFV.
    at_nonmem = pmx.importance_ofv(Bolus2Cpt.at(final), data, seed=2)
    assert abs(at_nonmem.ofv - 20167.641) < 3 * at_nonmem.se + 0.5


def test_cbpp_binomial_saem():
    data = _cbpp()  # skips without the reference data
    fit = pmx.fit(Herds(), data, "saem")
    assert fit.converged, (fit.message, fit.suspect)
    # glmmTMB's Laplace estimates (-1.39853, -0.99233, -1.12867, -1.58031),
    # SEs about 0.23-0.30 (glmer): SAEM's maximum of the exact likelihood is
    # within a fraction of them.
    table_se = fit.covariance.table().set_index("parameter")["se"]
    for name, value in zip(
        ("b0", "b2", "b3", "b4"), (-1.39853, -0.99233, -1.12867, -1.58031), strict=True
    ):
        assert abs(float(getattr(fit.model, name)) - value) < 0.5 * table_se[name], name
    # -2 log L by importance sampling: glmmTMB's Laplace value is 184.0526,
    # adaptive quadrature (glmer nAGQ=25) 184.04 -- within 0.3.
    assert abs(fit.ofv - 184.05) < 0.3


class Bauer501(pmx.Model):
    """1-compartment IV infusion, allometric WT, AGE and SEX on CL, BLOCK(2)."""

    tcl: pmx.Theta = pmx.theta(1.5)
    tv: pmx.Theta = pmx.theta(3.0)
    age_cl: pmx.Theta = pmx.theta(0.0)
    sex_cl: pmx.Theta = pmx.theta(0.0)
    prop: pmx.Theta = pmx.theta(0.2, lower=0.0)
    iiv: pmx.Omega = pmx.omega_block(("cl", "v"), [0.1, 0.01, 0.1])
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        size = cov.WT / 70.0
        cl = jnp.exp(
            self.tcl + 0.75 * jnp.log(size) + self.age_cl * jnp.log(cov.AGE / 50.0)
            + self.sex_cl * cov.SEX + eta.cl
        )  # fmt: skip
        return dict(cl=cl, v=jnp.exp(self.tv + eta.v) * size)

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


def test_bauer_501_saem_then_importance_sampling():
    _needs("bauer2019_501.csv")
    data = pmx.read_nonmem(REFDATA / "bauer2019_501.csv")
    saem = pmx.fit(Bauer501(), data, "saem")
    focei = pmx.fit(Bauer501(), data, "focei", covariance=None)
    assert saem.converged, (saem.message, saem.suspect)
    at_focei = pmx.importance_ofv(focei, seed=1)
    # SAEM maximises the exact likelihood, FOCEI an approximation of it: by
    # importance sampling (the exact -2 log L up to Monte-Carlo error) SAEM's
    # point is at least as good (measured: 1055.00 +- 0.22 vs 1057.00 +- 0.22).
    assert saem.ofv < at_focei.ofv + 3 * math.hypot(saem.stochastic.ofv_se, at_focei.se)
    assert saem.stochastic.mu_referenced == ("tcl", "tv")
    table = saem.covariance.table().set_index("parameter")
    for name in ("tcl", "tv", "age_cl", "sex_cl", "prop"):
        assert abs(float(getattr(saem.model, name)) - float(getattr(focei.model, name))) < (
            2 * table.loc[name, "se"]
        ), name


class TwoCompartmentCorrelated(pmx.Model):
    tcl: pmx.Theta = pmx.theta(1.0)
    tv1: pmx.Theta = pmx.theta(3.0)
    tq: pmx.Theta = pmx.theta(0.5)
    tv2: pmx.Theta = pmx.theta(3.5)
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega_block(
        ("cl", "v1", "q", "v2"),
        [[0.09, 0.03, 0.01, 0.0], [0.03, 0.06, 0.0, 0.01], [0.01, 0.0, 0.1, 0.02],
         [0.0, 0.01, 0.02, 0.08]],
    )  # fmt: skip
    dynamics = pmx.pk.TwoCompartment()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv1 + eta.v1),
            q=jnp.exp(self.tq + eta.q),
            vp=jnp.exp(self.tv2 + eta.v2),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


def test_recovery_two_compartments_four_correlated_etas():
    truth = TwoCompartmentCorrelated()
    times = [0.25, 0.5, 1, 2, 4, 6, 8, 12, 24, 36, 48]
    regimen = pmx.Regimen.bolus(100.0).sample(times)
    n = 200
    sim = pmx.simulate(truth, regimen, key=jax.random.PRNGKey(11), n_subjects=n)
    observed = sim.to_frame()
    table = pd.concat([regimen.to_table(id_value=i + 1) for i in range(n)], ignore_index=True)
    is_obs = table["EVID"] == 0
    np.testing.assert_array_equal(table.loc[is_obs, "ID"], observed["SIM_ID"])
    table.loc[is_obs, "DV"] = observed["DV"].to_numpy()
    data = pmx.read_nonmem(table)
    start = truth.with_values(tcl=1.3, tv1=2.7, tq=0.8, tv2=3.2, prop=0.2)
    fit = pmx.fit(start, data, "saem")
    assert fit.converged, (fit.message, fit.suspect)
    table = fit.covariance.table().set_index("parameter")
    for name in ("tcl", "tv1", "tq", "tv2", "prop"):
        assert abs(float(getattr(fit.model, name)) - float(getattr(truth, name))) < (
            3 * table.loc[name, "se"]
        ), name
    true_omega = np.asarray(truth.iiv.matrix)
    fitted = np.asarray(fit.model.iiv.matrix)
    names = ("cl", "v1", "q", "v2")
    for i in range(4):
        for j in range(i + 1):
            label = f"iiv.{names[i]}" if i == j else f"iiv.{names[j]},{names[i]}"
            assert abs(fitted[i, j] - true_omega[i, j]) < 3 * table.loc[label, "se"], label


class OneCompartmentIOV(pmx.Model):
    """IV bolus; IIV on CL and V, IOV on CL; proportional error."""

    tcl: pmx.Theta = pmx.theta(math.log(2.0))
    tv: pmx.Theta = pmx.theta(math.log(20.0))
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.09, v=0.04)
    iov: pmx.Omega = pmx.omega(cl_occ=0.04, occasion=True)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl + eta.cl_occ), v=jnp.exp(self.tv + eta.v))

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


def _two_occasions(n=120, seed=4):
    """Simulated in numpy from OneCompartmentIOV's values: a dose of 100 at 0
    (OCC 1) and a reset-and-dose at 48 h (EVID 4, OCC 2), 6 samples each."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        eta_cl, eta_v = rng.normal(0, math.sqrt(0.09)), rng.normal(0, math.sqrt(0.04))
        v = 20.0 * math.exp(eta_v)
        for occ, start, evid in ((1, 0.0, 1), (2, 48.0, 4)):
            cl = 2.0 * math.exp(eta_cl + rng.normal(0, math.sqrt(0.04)))
            rows.append(dict(ID=i, TIME=start, AMT=100.0, EVID=evid, MDV=1, DV=0.0, OCC=occ))
            for dt in (0.5, 1.0, 2.0, 4.0, 8.0, 12.0):
                conc = 100.0 / v * math.exp(-cl / v * dt) * (1.0 + 0.1 * rng.normal())
                rows.append(dict(ID=i, TIME=start + dt, AMT=0.0, EVID=0, MDV=0, DV=conc, OCC=occ))
    return pmx.read_nonmem(pd.DataFrame(rows))


def test_recovery_with_inter_occasion_variability():
    truth = OneCompartmentIOV()
    start = truth.with_values(tcl=math.log(3.0), tv=math.log(15.0), prop=0.2, iov=[0.1])
    fit = pmx.fit(start, _two_occasions(), "saem")
    assert fit.converged, (fit.message, fit.suspect)
    table = fit.covariance.table().set_index("parameter")
    for name in ("tcl", "tv", "prop"):
        assert abs(float(getattr(fit.model, name)) - float(getattr(truth, name))) < (
            3 * table.loc[name, "se"]
        ), name
    for label, true in (("iiv.cl", 0.09), ("iiv.v", 0.04), ("iov.cl_occ", 0.04)):
        assert abs(table.loc[label, "estimate"] - true) < 3 * table.loc[label, "se"], label


def test_censored_observations_agree_with_laplace():
    """Theophylline with the observations under 2 mg/L (27 of 132) censored by
    M3: SAEM and Laplace (both with M3) agree within 2 SE, and SAEM's exact
    -2 log L is at least as low as at Laplace's estimates."""
    table = pmx.datasets.load_table("theophylline")
    table["LLOQ"] = 2.0
    data = pmx.read_nonmem(table)
    laplace = pmx.fit(pmx.library.Theophylline(), data, "laplace")
    saem = pmx.fit(pmx.library.Theophylline(), data, "saem")
    assert saem.converged and laplace.converged
    assert saem.n_censored == 27
    se = saem.covariance.table().set_index("parameter")["se"]
    for name in ("tka", "tcl", "tv", "add_sd"):
        difference = float(getattr(saem.model, name)) - float(getattr(laplace.model, name))
        assert abs(difference) < 2 * se[name], name
    at_laplace = pmx.importance_ofv(laplace, seed=2)
    assert saem.ofv < at_laplace.ofv + 3 * math.hypot(saem.stochastic.ofv_se, at_laplace.se)
