"""Covariate models of examples/covariate_models.py: a categorical (CYP2C19
genotype) effect on CL and a time-varying covariate.

References: closed forms of a one-compartment IV bolus computed here with
numpy (CL piecewise constant in time); the simulation truth for parameter
recovery (within 3 covariance-step SEs); the chi-square law of the
likelihood-ratio statistic (the genotype effect rejected at p < 0.01 when
simulated, not rejected at alpha = 0.01 when absent).

The engine's convention for time-varying covariates is NONMEM's: a record's
covariate values move the system over the interval that ends at that record
(from the previous record on); a value missing on a record is carried forward.
The closed forms below encode that convention independently of the engine.

Runtime: the time-varying and coding tests take a few seconds; the two FOCEI
fits (with and without genotype) take ~90 s on 2 CPU cores, mostly compilation,
so the recovery and LRT tests are slow (the second simulated dataset has the
same shapes and reuses the compiled fit: ~1 s more).
"""

import importlib.util
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "covariate_models.py"


def _load():
    spec = importlib.util.spec_from_file_location("covariate_models", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ex = _load()

DOSE, V = 100.0, 20.0


def bolus_table(times, cl_on_records, extra=None) -> pd.DataFrame:
    """One IV bolus at 0 and samples at ``times``; ``cl_on_records`` has one
    value per record (dose first); NaN means "not recorded"."""
    table = pd.DataFrame(
        dict(
            ID=1,
            TIME=np.r_[0.0, times],
            AMT=np.r_[DOSE, np.zeros(len(times))],
            EVID=np.r_[1, np.zeros(len(times), dtype=int)],
            CMT=1,
            DV=0.0,
            CLCOV=cl_on_records,
        )
    )
    return table


class CovariateCL(pmx.Model):
    """CL read directly from the record's covariate (no helper)."""

    tv: pmx.Theta = pmx.theta(math.log(V))
    sd: pmx.Theta = pmx.theta(0.1, lower=0.0)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=cov.CLCOV, v=jnp.exp(self.tv))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def closed_form(times, switch, cl1, cl2):
    """C(t) = D/V exp(-CL1/V t) up to ``switch``, then decaying with CL2."""
    times = np.asarray(times, dtype=float)
    k1, k2 = cl1 / V, cl2 / V
    before = np.exp(-k1 * times)
    after = np.exp(-k1 * switch - k2 * (times - switch))
    return DOSE / V * np.where(times <= switch, before, after)


TIMES = np.array([0.5, 1.0, 2.0, 4.0, 6.0, 7.0, 9.0, 12.0, 24.0])
CL1, CL2 = 2.0, 5.0


def test_covariate_switch_applies_to_the_interval_ending_at_the_record():
    # The record at 6 h carries CL1: the switch is exactly at 6 h.
    cl = np.r_[CL1, np.where(TIMES <= 6.0, CL1, CL2)]
    ipred = pmx.predict(CovariateCL(), bolus_table(TIMES, cl)).IPRED.to_numpy()[1:]
    np.testing.assert_allclose(ipred, closed_form(TIMES, 6.0, CL1, CL2), rtol=1e-8)
    # The record at 6 h carries CL2 already: it applies backwards to the
    # interval (4, 6] that ends there (NONMEM's convention), so CL switches at 4 h.
    cl = np.r_[CL1, np.where(TIMES < 6.0, CL1, CL2)]
    ipred = pmx.predict(CovariateCL(), bolus_table(TIMES, cl)).IPRED.to_numpy()[1:]
    np.testing.assert_allclose(ipred, closed_form(TIMES, 4.0, CL1, CL2), rtol=1e-8)


def test_missing_covariate_is_carried_forward():
    # CL2 written once (at 7 h, applying from 6 h) and left empty afterwards:
    # the later records keep CL2; the 6 h record (CL1) closes the CL1 interval.
    cl = np.r_[CL1, np.where(TIMES <= 6.0, CL1, np.nan)]
    cl[np.flatnonzero(TIMES == 7.0)[0] + 1] = CL2
    table = bolus_table(TIMES, cl)
    data = pmx.read_nonmem(table)
    assert any("carried forward" in note for note in data.notes)
    ipred = pmx.predict(CovariateCL(), data).IPRED.to_numpy()[1:]
    np.testing.assert_allclose(ipred, closed_form(TIMES, 6.0, CL1, CL2), rtol=1e-8)


def test_time_varying_covariate_through_a_helper():
    # The example's model: CL = 6 L/h * (CRCL / 100) via pmx.power; the switch
    # from CRCL 40 to 80 after 6 h, checked both ways of writing it.
    model = ex.RenalClearanceModel()
    bolus = ex.bolus_switch_check(model, dose=DOSE)
    v = ex.TOBRAMYCIN["v"]
    cl40, cl80 = 6.0 * 0.4, 6.0 * 0.8
    t = bolus.time.to_numpy()
    for column, switch in (("engine", 6.0), ("engine_new_at_6h", 4.0)):
        expected = (
            DOSE
            / v
            * np.where(
                t <= switch,
                np.exp(-cl40 / v * t),
                np.exp(-cl40 / v * switch - cl80 / v * (t - switch)),
            )
        )
        np.testing.assert_allclose(bolus[column], expected, rtol=1e-8)


def test_recovering_kidney_lowers_troughs():
    result = ex.time_varying_demo(verbose=False)
    troughs = result["troughs"]
    assert list(troughs.day) == list(range(1, 8))
    # Day 1 is identical (same CRCL); afterwards higher CRCL clears faster.
    assert troughs.trough_varying.iloc[0] == pytest.approx(troughs.trough_baseline_crcl.iloc[0])
    assert np.all(np.diff(troughs.trough_varying.iloc[:5]) < 0)
    # Once CRCL is constant at 90 the regimen is at steady state in ~1 day
    # (half-life 0.693 V / CL = 2.6 h): trough of a 30-min infusion q24h, closed form.
    cl, v, dose = 6.0 * 0.9, 20.0, 400.0
    k = cl / v
    tinf, tau, t = 0.5, 24.0, 23.99
    end_of_infusion = dose / tinf / cl * (1 - np.exp(-k * tinf)) / (1 - np.exp(-k * tau))
    trough = end_of_infusion * np.exp(-k * (t - tinf))
    assert troughs.trough_varying.iloc[-1] == pytest.approx(trough, rel=1e-8)


def test_genotype_text_codes_and_class_effects():
    # read_nonmem codes "IM" < "NM" < "PM" as 0, 1, 2: the example's constants.
    table = ex.population_design(6, seed=0)
    table["CYP2C19"] = np.repeat(["NM", "IM", "PM"], len(table) // 3)
    table["SEX"], table["WT"] = 0, 70.0
    data = pmx.read_nonmem(table)
    assert data.categories["CYP2C19"] == ex.GENOTYPE_LEVELS
    assert (ex.IM, ex.NM, ex.PM) == (0, 1, 2)
    pred = pmx.predict(ex.Cyp2c19Model(), data)
    is_obs = pred.EVID == 0
    genotype = table.CYP2C19[is_obs].to_numpy()
    # Typical (eta 0) one-compartment oral profile, CL scaled by the class factor.
    ka, cl, v = 1.0, 15.0, 60.0
    factor = np.select([genotype == "IM", genotype == "PM"], [0.6, 0.25], 1.0)
    k = cl * factor / v
    t = pred.TIME[is_obs].to_numpy()
    bateman = ex.DOSE * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
    np.testing.assert_allclose(pred.PRED[is_obs], bateman, rtol=1e-8)


def test_reduced_model_fixes_the_genotype_factors():
    reduced = ex.without_genotype(ex.Cyp2c19Model())
    assert reduced.cl_im.fixed and reduced.cl_pm.fixed
    assert float(reduced.cl_im) == float(reduced.cl_pm) == 1.0


N_SUBJECTS = 60  # 480 observations


@pytest.fixture(scope="module")
def with_effect():
    return ex.genotype_study(N_SUBJECTS, seed=1, verbose=False)


@pytest.mark.slow
def test_genotype_model_recovers_the_truth(with_effect):
    full = with_effect["full"]
    assert full.converged, full.message
    table = full.estimates().set_index("parameter")
    z = {
        name: (table.loc[name, "estimate"] - truth) / table.loc[name, "se"]
        for name, truth in with_effect["truth"].items()
    }
    # seed 1: |z| <= 2.4 (prop_cv); the genotype factors within 0.6 SE
    assert all(abs(v) < 3.0 for v in z.values()), z
    assert all(np.isfinite(table.loc[name, "se"]) for name in z)


@pytest.mark.slow
def test_likelihood_ratio_test_detects_the_genotype_effect(with_effect):
    lrt = with_effect["lrt"]
    assert lrt.df == 2
    assert lrt.dofv > 0 and lrt.p_value < 0.01  # seed 1: dOFV 61.5


@pytest.mark.slow
def test_likelihood_ratio_test_without_genotype_effect(with_effect):
    # Simulated with factors 1: dOFV ~ chi2(2); not significant at alpha 0.01
    # (dOFV < 9.21).  Same shapes as the fixture's data: the fits reuse its
    # compilation.  Seed 2: dOFV 0.31, p 0.86.
    null = ex.genotype_study(N_SUBJECTS, seed=2, genotype_effect=False, verbose=False)
    assert null["full"].converged and null["reduced"].converged
    lrt = null["lrt"]
    assert lrt.dofv > -0.01 and lrt.p_value > 0.01
    # the estimated factors include 1 within 3 SE
    table = null["full"].estimates().set_index("parameter")
    for name in ("cl_im", "cl_pm"):
        assert abs(table.loc[name, "estimate"] - 1.0) < 3 * table.loc[name, "se"]
