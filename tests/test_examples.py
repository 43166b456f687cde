"""Every script in examples/ runs, with tiny settings, and says something true."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pmx_jax import RESULTS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_virtual_trial_runs_and_higher_doses_raise_exposure():
    results = _load("virtual_trial").main(n=60, seed=1)
    assert set(results) == {400, 600, 800}
    assert all(0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 for a, b, _ in results.values())
    peaks = [results[d][2] for d in (400, 600, 800)]
    # linear kinetics: median peak proportional to dose (same virtual patients)
    assert abs(peaks[1] / peaks[0] - 1.5) < 0.02 and abs(peaks[2] / peaks[0] - 2.0) < 0.02


def test_custom_ode_model_reduces_to_linear_elimination():
    # C << KM: MM elimination VM*C/(KM+C) ~ (VM/KM)*C, relative gap ~ C/KM < 1%.
    assert _load("custom_ode_model").main() < 0.01


def _check_standard_errors(result, reference):
    se = result.estimates().set_index("parameter")["se"]
    for name, ref in reference.items():
        assert se[name] == pytest.approx(ref, rel=0.10), name


def test_theophylline_fit_matches_nlmixr2():
    # REFERENCE_CASES R2: nlmixr2's FOCEI OFV 116.8038 (to 0.01, as in
    # test_fit_theophylline.py) and its sandwich SEs (to 10%: printed to 3
    # digits, at estimates that differ in the 3rd-4th digit).  About 40 s alone;
    # under 1 s after test_covariance_reference.py, whose identical fit and
    # covariance step have compiled what this one needs.
    example = _load("theophylline_fit")
    result = example.main()
    assert result.converged, result.message
    assert abs(result.ofv - 116.8038) < 0.01
    _check_standard_errors(result, dict(tka=0.198, tcl=0.0756, tv=0.0429, add_sd=0.0925))
    individual = example.individual_parameters(result)
    assert list(individual.ID) == list(range(1, 13))
    assert np.all(individual[["ka", "cl", "v"]] > 0)
    # NONMEM's ETABAR test: the mean EBE is within 2 standard errors of zero
    etas = result.ebes[["ka", "cl", "v"]]
    assert np.all(np.abs(etas.mean()) < 2 * etas.std() / np.sqrt(12))


@pytest.mark.slow
def test_phenobarbital_fit_matches_nonmem():
    # REFERENCE_CASES R3: NONMEM 7.4.2's FOCEI OFV 586.27606 (to 0.01) and its
    # default (sandwich) SEs to 10%.  About a minute (fit and covariance step).
    example = _load("phenobarbital_fit")
    result = example.main()
    assert result.converged, result.message
    assert result.n_subjects == 59 and result.n_observations == 155
    assert abs(result.ofv - 586.27606) < 0.01
    _check_standard_errors(
        result,
        {"th_cl": 2.10e-4, "th_v": 0.0269, "th_apgar": 0.0838, "iiv.cl": 0.0134, "iiv.v": 0.00748},
    )
    individual = example.individual_parameters(result, example.pmx.datasets.load("phenobarbital"))
    assert len(individual) == 59
    assert np.all(individual.cl > 0) and np.all(individual.v > 0)


def test_theophylline_diagnostics_writes_every_plot(tmp_path):
    # The same fit as test_theophylline_fit_matches_nlmixr2 (compiled once per run).
    files = _load("theophylline_diagnostics").main(out_dir=tmp_path)
    names = {p.name for p in files}
    assert {
        "gof_panel.png",
        "qq_cwres.png",
        "individual_fits.png",
        "individual_fits_log.png",
        "eta_distributions.png",
        "eta_vs_covariates.png",
        "vpc.png",
        "qq_npde.png",
    } <= names
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in files)


@pytest.mark.slow  # 16 s; the same analysis is tested in test_identifiability.py
def test_gompertz_identifiability_early_design_is_nearly_singular():
    # Early growth only (kg t <= 0.5) fixes kg log(tmax/t0), not kg and tmax:
    # its information is far worse conditioned than with the plateau observed.
    early, full = _load("gompertz_identifiability").main(n_subjects=4)
    assert early > 100 * full


@pytest.mark.slow
def test_warfarin_pkpd_fit_runs(refdata):
    # PK stage = REFERENCE_CASES R4 (NONMEM FOCEI OFV 423.32729, to 0.01); the PD
    # estimates are checked against the physiology in test_fit_warfarin_pkpd.py.
    # Several minutes on a CPU (ODE model), hence slow.
    pk, result = _load("warfarin_pkpd").main(refdata=refdata)
    assert abs(pk.ofv - 423.32729) < 0.01
    assert result.converged, result.message
    assert result.n_observations == 483


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    tested = {
        "virtual_trial",
        "custom_ode_model",
        "theophylline_fit",
        "phenobarbital_fit",
        "theophylline_diagnostics",
        "gompertz_identifiability",
        "warfarin_pkpd",
        "nested_site_variability",
        "covariate_models",
        "model_library_tour",
        "bayesian_tdm",
        "tmdd_fit",
        "nimotuzumab_fit",  # in test_fit_library_tmdd.py (reference data)
        "joint_pk_tte",
        # in test_examples_endpoints.py:
        "binary_exposure_response",
        "ordinal_sedation_score",
        "count_models",
        "repeated_time_to_event",
        "custom_likelihood",
        "saem_fit",
    }
    assert scripts == tested, f"examples without a test: {scripts - tested}"


@pytest.mark.slow
def test_nested_site_variability_runs_and_maps_back():
    example = _load("nested_site_variability")
    result = example.main(n_sites=4, per_site=3, covariance=None)
    assert result.converged, result.message
    data = result.dataset
    # Sites are the individuals of the fit, subjects their occasions.
    assert data.ids == (100, 101, 102, 103) and data.occ_levels == (1, 2, 3)
    assert len(result.ebes) == 4
    subjects = example.subject_ebes(result)
    assert subjects["ID"].tolist() == list(range(1, 13))
    assert subjects["SITE"].tolist() == [100 + i // 3 for i in range(12)]
    # With 4 sites the site variance may collapse to ~0; the total CL variability
    # (site + subject) is of the simulated order (0.1 + 0.09).
    est = result.estimates().set_index("parameter")["estimate"]
    assert est["site.site_cl"] >= 0 and est["subject.v"] > 0
    assert 0.05 < est["site.site_cl"] + est["subject.cl"] < 0.5


def test_covariate_models_time_varying_covariate_follows_nonmem_convention():
    # Part (b) only (seconds): a CRCL value on a record applies to the interval
    # ending there; the IV bolus matches the piecewise closed form both ways.
    result = _load("covariate_models").time_varying_demo(verbose=False)
    bolus = result["bolus"]
    np.testing.assert_allclose(bolus.engine, bolus.closed_form, rtol=1e-8)
    np.testing.assert_allclose(bolus.engine_new_at_6h, bolus.closed_form_from_4h, rtol=1e-8)
    troughs = result["troughs"].trough_varying.to_numpy()
    assert np.all(np.diff(troughs[:5]) < 0)  # CRCL recovering: lower trough every day


@pytest.mark.slow
def test_covariate_models_detects_the_genotype_effect():
    # 60 subjects, seed 1 (as tests/test_covariate_models.py): two FOCEI fits.
    result = _load("covariate_models").main(n_subjects=60, seed=1, verbose=False)
    genotype = result["genotype"]
    assert genotype["full"].converged and genotype["reduced"].converged
    assert genotype["lrt"].p_value < 0.01
    estimates = genotype["full"].estimates().set_index("parameter").estimate
    assert estimates["cl_pm"] < estimates["cl_im"] < 1.0  # PM < IM < NM


def test_model_library_tour_direct_effects():
    # Two cheap entries: the sigmoid-Emax effect stays above Emax/2 while
    # C > EC50, i.e. ln(C0/EC50)/k = ln(10/2)/0.1 h after the bolus.
    summaries = _load("model_library_tour").main(["emax", "sigmoid_emax"], verbose=False)
    assert set(summaries) == {"emax", "sigmoid_emax"}
    assert abs(summaries["sigmoid_emax"].value - 10 * np.log(5.0)) < 1e-3
    assert 0.0 < summaries["emax"].value < 1.0


@pytest.mark.slow
def test_bayesian_tdm_example():
    out = _load("bayesian_tdm").main(quick=True)
    summary = out["posterior"].summary()
    assert (summary.rhat < 1.05).all() and out["posterior"].n_divergent == 0
    # THETA posterior means within one FOCEI standard error of the estimates
    estimates = out["fit"].estimates().set_index("parameter")
    for name in ("tka", "tcl", "tv"):
        assert (
            abs(summary.loc[name, "mean"] - estimates.loc[name, "estimate"])
            < estimates.loc[name, "se"]
        )
    rec = out["recommendation"]
    assert rec.converged and rec.amount % 25 == 0
    assert abs(rec.achieved - 3.0) < 0.1  # rounding to 25 mg moves the trough by < 0.1 mg/L


@pytest.mark.slow
def test_tmdd_fit_recovers_the_simulation_truth():
    # 12 simulated subjects (3 per dose level, seed 0), FOCEI from starting values
    # 30-50% off.  With 25-30% IIV the SE of a log typical value is about
    # 0.3 / sqrt(12) = 9%, so 0.25 on the log scale is about 3 SEs.  KSS and kint
    # separately are weakly determined (observed 0.53 and 0.52, truth 1), but
    # kint R0 / KSS, the target-mediated elimination rate at low concentrations,
    # is (observed 1.086).  Observed: CL 0.184, V 2.65, SD 0.0919.  About 4 min
    # on a loaded 2-core CPU (ODE compilation), hence slow.
    example = _load("tmdd_fit")
    result, truth, _ = example.main(per_dose=3, seed=0)
    # Twelve subjects do not determine KSS's IIV: its variance goes to the
    # boundary, which the fit reports as a suspect point; nothing else may.
    assert result.status in (RESULTS.successful, RESULTS.suspect_point), result.message
    assert all("kss" in str(reason) for reason in result.suspect), result.suspect
    fitted = example.estimates(result.model)
    for name in ("cl", "v"):
        assert abs(np.log(fitted[name] / truth[name])) < 0.25, name
    slope = fitted["kint"] * fitted["r0"] / fitted["kss"]
    assert abs(np.log(slope / (truth["kint"] * truth["r0"] / truth["kss"]))) < 0.3
    assert abs(fitted["sd"] / truth["sd"] - 1.0) < 0.3


@pytest.mark.slow
def test_joint_pk_tte_recovers_the_exposure_hazard(tmp_path):
    # About 50 s (35 s of it compiling the joint Laplace objective).
    path = tmp_path / "km_vpc.png"
    fit, truth, n_events = _load("joint_pk_tte").main(40, seed=2026, path=str(path), n_sim=20)
    assert fit.converged, fit.message
    assert n_events > 5
    estimates = fit.estimates().set_index("parameter")
    for name, value in truth.items():
        # 3.5 standard errors: 6 parameters, a fixed seed (|z| <= 0.9 seen).
        assert abs(estimates.loc[name, "estimate"] - value) < 3.5 * estimates.loc[name, "se"], name
    assert path.stat().st_size > 10_000


@pytest.mark.slow
def test_saem_example_beats_focei_on_the_exact_likelihood():
    saem, focei, at_focei = _load("saem_fit").main(plot=False)
    assert saem.converged and focei.converged
    # The exact -2LL (importance sampling) at SAEM's maximum is no higher than
    # at FOCEI's estimates, up to Monte-Carlo error (measured 586.07 vs 586.31).
    assert saem.ofv < at_focei.ofv + 3 * (saem.stochastic.ofv_se**2 + at_focei.se**2) ** 0.5
