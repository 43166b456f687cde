"""The ``.lst`` report of a pmx fit (``pmx_jax/nonmem/_listing.py``): its
numbers against independent computations (Wald CIs, the delta method,
scipy's normal test of the EBE means, exp of a THETA), its NONMEM layout
against the text of NONMEM's own pheno report (bundled with pharmpy), and
read back by pharmpy's ``parse_modelfit_results``: minimisation status,
covariance step and matrix, function evaluations, shrinkage.

One theophylline FOCEI fit (about 12 s, mostly compilation) is shared by the
module; other outcomes (a failed minimisation, a failed covariance step,
labels and units) are the same fit with fields replaced, not refits.
"""

import math
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pmx_jax as pmx
from pmx_jax import RESULTS
from pmx_jax.nonmem import write_nonmem_results
from pmx_jax.nonmem._listing import (
    _e4,
    _objective_block,
    _row,
    listing,
    objv_line,
    sigma_thetas,
    typical_parameters,
    write_listing,
)

# pharmpy 2.1 reads tables with pandas features that pandas 3 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pharmpy")

Z95 = stats.norm.ppf(0.975)
STEM = "run1"


@pytest.fixture(scope="module")
def fit():
    result = pmx.fit(
        pmx.library.Theophylline(), pmx.datasets.load("theophylline"), "focei", progress=False
    )
    assert result.converged and result.covariance.ok
    return result


@pytest.fixture(scope="module")
def text(fit) -> str:
    return listing(fit, title="theophylline")


def section(text: str, heading: str) -> list[str]:
    """The lines of the summary table that starts with ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return lines[start:end]


def cells(text: str, heading: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in section(text, heading)[1:]}


# -- numbers --------------------------------------------------------------------------------


def test_ofv_lines(fit, text):
    lines = text.splitlines()
    assert lines[-1] == f"OFV {fit.ofv:.6f}"
    assert objv_line(fit.ofv) in lines
    assert f" #OBJV:{'*' * 44}      116.803       {'*' * 50}" in lines


def test_theta_ci_is_estimate_plus_minus_1_96_se(fit, text):
    rows = cells(text, " THETA   label")
    cov = fit.covariance
    for name, estimate, se in zip(cov.names[:4], cov.estimate, cov.se, strict=False):
        ci = " ".join(rows[name]).split("(")[1].split(")")[0]
        low, high = (float(x) for x in ci.split(","))
        assert low == pytest.approx(estimate - Z95 * se, rel=5e-4)
        assert high == pytest.approx(estimate + Z95 * se, rel=5e-4)


def test_back_transformed_ka_is_exp_tka_with_its_ci_transformed(fit, text):
    typical = typical_parameters(fit).set_index("parameter")
    cov = fit.covariance.table().set_index("parameter")
    tka = cov.loc["tka"]
    ka = typical.loc["ka"]
    assert ka.estimate == pytest.approx(math.exp(tka.estimate), rel=1e-12)
    assert ka.se == pytest.approx(math.exp(tka.estimate) * tka.se, rel=1e-10)  # delta method
    assert ka.ci_lower == pytest.approx(math.exp(tka.ci_lower), rel=1e-12)
    assert ka.ci_upper == pytest.approx(math.exp(tka.ci_upper), rel=1e-12)
    assert (ka.theta, ka.ci_method) == ("tka", "transformed")
    assert set(typical.index) == {"ka", "cl", "v"}
    row = " ".join(cells(text, " THETA   label")["tka"])
    assert f"ka = {ka.estimate:.4g} ({ka.ci_lower:.4g}, {ka.ci_upper:.4g})" in row


def test_labels_and_units_are_printed(fit):
    model = fit.model.with_values(
        tka=pmx.theta(float(fit.model.tka), label="KA", unit="1/h"),
        add_sd=pmx.theta(float(fit.model.add_sd), lower=0.0, label="additive SD", unit="mg/L"),
    )
    # Without its data (a fit of prepared data): nothing to recompile for the
    # new model's labels, which are part of its structure.
    text = listing(fit.replace(model=model, dataset=None, problem=None))
    rows = cells(text, " THETA   label")
    assert rows["tka"][1] == "KA" and rows["tka"][-1] == "1/h"  # the unit of KA
    assert "additive SD" in " ".join(rows["add_sd"]) and "mg/L" in rows["add_sd"]
    typical = cells(text, " TYPICAL INDIVIDUAL PARAMETERS")
    assert typical["ka"][2] == "1/h"


def test_typical_parameters_use_the_median_covariates():
    """Phenobarbital: CL = th_cl * WT at the median weight over subjects, from the CSV."""
    model = pmx.library.Phenobarbital()
    data = pmx.datasets.load("phenobarbital")
    fake = types.SimpleNamespace(model=model, dataset=data, covariance=None)
    typical = typical_parameters(fake).set_index("parameter")
    table = data.table
    weight = table.groupby("ID", sort=False)["WT"].first().median()
    assert typical.loc["cl", "estimate"] == pytest.approx(float(model.th_cl) * weight)
    apgar = table.groupby("ID", sort=False)["APGR"].first().median()
    low = 1.0 if apgar < 5 else 0.0
    expected_v = float(model.th_v) * weight * (1 + float(model.th_apgar) * low)
    assert typical.loc["v", "estimate"] == pytest.approx(expected_v)
    # At the median Apgar score (7) th_apgar has no effect: V depends on th_v
    # alone there, and its CI is th_v's transformed.
    assert apgar >= 5 and typical.loc["v", "theta"] == "th_v"
    assert typical.attrs["covariates"] == {"WT": weight, "APGR": apgar}


def test_etabar_p_value_is_the_normal_test_of_the_mean_ebe(fit, text):
    """NONMEM's ETABAR test: z = mean / (sd / sqrt(n)), sd with divisor n,
    two-sided normal p-value (its pheno report is reproduced so, not by
    Student's t: tests/test_nonmem_results.py)."""
    ebes = fit.ebes[["ka", "cl", "v"]].to_numpy()
    n = len(ebes)
    se = ebes.std(axis=0) / math.sqrt(n)
    p = 2 * stats.norm.sf(np.abs(ebes.mean(axis=0) / se))
    etabar = fit.etabar()
    np.testing.assert_allclose(etabar["etabar"], ebes.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(etabar["se"], se, rtol=1e-12)
    np.testing.assert_allclose(etabar["p_value"], p, rtol=1e-12)
    assert list(etabar["n"]) == [n] * 3
    # Student's t on the same EBEs (scipy's one-sample t-test, divisor n - 1)
    # is close, and not what NONMEM prints.
    t_test = stats.ttest_1samp(ebes, 0.0).pvalue
    np.testing.assert_allclose(p, t_test, atol=0.05)
    printed = [float(x) for x in section(text, " P VAL.:")[0].split()[2:]]
    np.testing.assert_allclose(printed, p, rtol=1e-4)


def test_eta_shrinkage_uses_divisor_n_and_matches_the_shk_file(fit, text, tmp_path):
    write_nonmem_results(fit, tmp_path, STEM)
    shk = pd.read_csv(tmp_path / f"{STEM}.shk", sep=r"\s+", skiprows=1).set_index("TYPE")
    ebes = fit.ebes[["ka", "cl", "v"]].to_numpy()
    omega = np.diagonal(np.asarray(fit.model.omega_matrix()))
    expected = 100 * (1 - ebes.std(axis=0) / np.sqrt(omega))
    printed = [float(x) for x in section(text, " ETASHRINKSD(%)")[0].split()[1:]]
    np.testing.assert_allclose(printed, expected, rtol=1e-4)
    np.testing.assert_allclose(printed, shk.loc[4, ["ETA(1)", "ETA(2)", "ETA(3)"]], rtol=1e-4)
    omega_rows = cells(text, " OMEGA   estimate")
    assert float(omega_rows["iiv.ka"][4]) == pytest.approx(expected[0], rel=1e-2)
    eps = float(section(text, " EPSSHRINKSD(%)")[0].split()[1])
    table = fit.table()
    iwres = table.loc[table.EVID == 0, "IWRES"].to_numpy()
    assert eps == pytest.approx(100 * (1 - math.sqrt(np.mean(iwres**2))), rel=1e-4)


def test_omega_as_variance_sd_and_cv(fit, text):
    rows = cells(text, " OMEGA   estimate")
    variance = float(np.asarray(fit.model.iiv.matrix)[0, 0])
    name, estimate, sd, cv = rows["iiv.ka"][:4]
    assert float(estimate) == pytest.approx(variance, rel=1e-4)
    assert float(sd) == pytest.approx(math.sqrt(variance), rel=1e-3)
    assert float(cv) == pytest.approx(100 * math.sqrt(math.expm1(variance)), rel=1e-2)


def test_sigma_is_the_square_of_the_residual_sd(fit, text):
    assert sigma_thetas(fit.model) == {"add_sd": "Additive.sd"}
    row = cells(text, " THETA   error model")["add_sd"]
    sd = float(fit.model.add_sd)
    se = dict(zip(fit.covariance.names, fit.covariance.se, strict=True))["add_sd"]
    assert float(row[3]) == pytest.approx(sd**2, rel=1e-4)
    assert float(row[4]) == pytest.approx(2 * sd * se, rel=1e-2)  # delta method
    assert "SIGMA(1,1) = 1 FIX" in text


def test_sigma_thetas_only_take_an_sd_passed_unchanged():
    class Scaled(pmx.library.Theophylline):
        def observe(self, amounts, p):
            return pmx.Additive(amounts.central / p["v"], 2.0 * self.add_sd)

    class Combined(pmx.library.Theophylline):
        prop_cv: pmx.Theta = pmx.theta(0.1, lower=0.0)

        def observe(self, amounts, p):
            return pmx.Combined2(amounts.central / p["v"], self.add_sd, self.prop_cv)

    assert sigma_thetas(Scaled()) == {}
    assert sigma_thetas(Combined()) == {"add_sd": "Combined2.add", "prop_cv": "Combined2.prop"}


def test_correlation_matrix_eigenvalues_and_condition_number(fit, text):
    cov = fit.covariance
    lines = section(text, " CORRELATION MATRIX OF THE ESTIMATES")
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    names = list(cov.names)
    for i, name in enumerate(names):
        values = [float(x.rstrip("*")) for x in rows[name]]
        np.testing.assert_allclose(values, np.asarray(cov.correlation)[i, : i + 1], atol=5e-4)
    eigen = next(line for line in text.splitlines() if "EIGENVALUES OF THE CORRELATION" in line)
    np.testing.assert_allclose(
        [float(x) for x in eigen.split(":")[1].split()], np.sort(cov.eigenvalues), rtol=1e-3
    )
    assert f"{cov.condition_number:.4g}" in text


def test_strong_correlations_are_flagged(fit):
    cov = fit.covariance
    correlation = np.array(cov.correlation, copy=True)
    correlation[1, 0] = correlation[0, 1] = 0.97
    fake = types.SimpleNamespace(**{**cov.__dict__, "correlation": correlation})
    text = listing(fit.replace(covariance=fake))
    assert "   tka ~ tcl: +0.970" in text.splitlines()
    row = section(text, " CORRELATION MATRIX")[3]
    assert row.split()[1] == "0.970*"


def test_run_time_is_split_into_compilation_and_search(fit, text):
    line = next(line for line in text.splitlines() if line.startswith(" RUN TIME"))
    assert f"{fit.elapsed_seconds:.2f} s = {fit.compile_seconds:.2f} s" in line
    search = fit.elapsed_seconds - fit.compile_seconds
    assert f"+ {search:.2f} s search; covariance step" in line


def test_failed_minimisation_and_covariance_step_are_reported(fit):
    failed = fit.replace(
        status=RESULTS.max_iterations, message="maximum number of iterations reached"
    )
    text = listing(failed)
    assert "0MINIMIZATION TERMINATED\n DUE TO MAX. NO. OF FUNCTION EVALUATIONS EXCEEDED" in text
    no_cov = listing(fit.replace(covariance=None, covariance_note="not requested"))
    assert "Elapsed covariance" not in no_cov and "not requested (no standard errors)" in no_cov


# -- NONMEM's layout --------------------------------------------------------------------------


def pheno_lst() -> list[str]:
    pharmpy = pytest.importorskip("pharmpy")
    path = Path(pharmpy.__file__).parent / "internals" / "example_models" / "pheno.lst"
    if not path.exists():
        pytest.skip("pharmpy's example pheno.lst not installed")
    return path.read_text(encoding="utf-8").splitlines()


def test_lines_reproduce_nonmem_text():
    """NONMEM's pheno report (bundled with pharmpy), rewritten from its own
    numbers: the #OBJV line, ETABAR and shrinkage rows, the OFV block."""
    lines = pheno_lst()
    assert objv_line(586.27605628520962) in lines
    for label in ("ETABAR:", "SE:", "P VAL.:", "ETASHRINKSD(%)", "EPSSHRINKVR(%)"):
        line = next(line for line in lines if line.startswith(f" {label}"))
        values = [float(x) for x in line[15:].split()]
        assert _row(label, [_e4(x) for x in values]) == line
    n_line = next(line for line in lines if line.startswith(" N:"))
    assert _row("N:", ["59", "59"]) == n_line
    fake = types.SimpleNamespace(n_observations=155, ofv=586.27605628520962)
    block = _objective_block(fake)[1:5]
    start = lines.index(block[0])
    assert lines[start : start + 4] == block


# -- read back by pharmpy ------------------------------------------------------------------------


CONTROL_STREAM = """$PROBLEM theophylline (pmx_jax.library.Theophylline)
$INPUT ID TIME DV AMT EVID CMT
$DATA run1.csv IGNORE=@
$SUBROUTINE ADVAN2 TRANS2
$PK
KA = EXP(THETA(1) + ETA(1))
CL = EXP(THETA(2) + ETA(2))
V = EXP(THETA(3) + ETA(3))
S2 = V
$ERROR
Y = F + THETA(4)*EPS(1)
$THETA 0.45 ; tka
$THETA 1.0 ; tcl
$THETA 3.45 ; tv
$THETA (0, 0.7) ; add_sd
$OMEGA 0.6 0.3 0.1
$SIGMA 1 FIX
$ESTIMATION METHOD=1 INTERACTION
$COVARIANCE
"""


def pharmpy_results(fit, folder: Path):
    pytest.importorskip("pharmpy")
    from pharmpy.modeling import read_model_from_string
    from pharmpy.tools.external.nonmem.results import parse_modelfit_results

    write_nonmem_results(fit, folder, STEM)
    write_listing(fit, folder / f"{STEM}.lst", title="theophylline")
    return parse_modelfit_results(read_model_from_string(CONTROL_STREAM), folder / f"{STEM}.mod")


def test_pharmpy_reads_status_and_covariance_from_the_listing(fit, tmp_path):
    results = pharmpy_results(fit, tmp_path)
    assert results.minimization_successful is True
    assert results.covstep_successful is True
    assert results.function_evaluations == fit.n_evaluations
    assert results.estimation_runtime == pytest.approx(fit.elapsed_seconds, abs=0.01)
    assert results.log_likelihood == pytest.approx(fit.minus_two_log_likelihood, abs=1e-9)
    np.testing.assert_allclose(results.covariance_matrix, fit.covariance.covariance, rtol=1e-4)
    shrinkage = results.eta_shrinkage
    ebes = fit.ebes[["ka", "cl", "v"]].to_numpy()
    omega = np.diagonal(np.asarray(fit.model.omega_matrix()))
    np.testing.assert_allclose(shrinkage["sd"], 1 - ebes.std(axis=0) / np.sqrt(omega), rtol=1e-4)


def test_pharmpy_reads_a_failed_minimisation(fit, tmp_path):
    failed = fit.replace(
        status=RESULTS.max_iterations,
        message="maximum number of iterations reached",
        covariance=None,
        covariance_note="not computed",
    )
    results = pharmpy_results(failed, tmp_path)
    assert results.minimization_successful is False
    assert results.termination_cause == "maxevals_exceeded"
    assert results.covstep_successful is False


def test_write_listing_names_the_file(fit, tmp_path):
    path = write_listing(fit, tmp_path / "sub" / "run7.lst", title="run 7", source="name = 'x'")
    text = path.read_text()
    assert text.startswith(tuple("MTWFS"))  # an English date, as NONMEM's first line
    assert "$PROBLEM    run 7" in text and "  name = 'x'" in text
    assert "NONMEM DID NOT RUN" in text


# -- pmx run: a control stream in, a NONMEM run folder out ------------------------------------

THEO_CONTROL = """$PROBLEM theophylline
$INPUT ID TIME DV AMT EVID MDV CMT WT
$DATA theo.csv IGNORE=@
$SUBROUTINES ADVAN2 TRANS2
$PK
  KA = EXP(THETA(1) + ETA(1))
  CL = EXP(THETA(2) + ETA(2))
  V  = EXP(THETA(3) + ETA(3))
  S2 = V
$ERROR
  Y = F + THETA(4)*EPS(1)
$THETA 0.45 ; log ka
$THETA 1.0  ; log cl
$THETA 3.45 ; log v
$THETA (0, 0.7) ; add sd
$OMEGA 0.6 0.3 0.1
$SIGMA 1 FIX
$EST METHOD=COND INTER MAXEVAL=500
$COV
"""


def test_pharmpy_reads_a_pmx_run_folder(tmp_path, capsys):
    """``pmx run run1.ctl`` writes run1.lst beside run1.ext and the stream;
    ``pharmpy.tools.read_modelfit_results`` then reads the folder as a
    NONMEM run: status, covariance step, OFV, estimates and SEs."""
    pharmpy_tools = pytest.importorskip("pharmpy.tools")
    from pmx_jax._cli import main

    table = pmx.datasets.load_table("theophylline")
    table.to_csv(tmp_path / "theo.csv", index=False, na_rep=".")
    control = tmp_path / f"{STEM}.ctl"
    control.write_text(THEO_CONTROL)
    assert main(["run", str(control)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    text = (tmp_path / f"{STEM}.lst").read_text()
    assert text.rstrip().splitlines()[-1] == printed  # OFV <value>
    assert "  $THETA (0, 0.7) ; add sd" in text  # the stream, echoed
    results = pharmpy_tools.read_modelfit_results(control)
    assert results.minimization_successful is True
    assert results.covstep_successful is True
    assert results.ofv == pytest.approx(float(printed.split()[1]), abs=1e-6)
    assert results.ofv == pytest.approx(116.8038, abs=0.01)  # nlmixr2's OFV (REFERENCE_CASES R2)
    assert results.covariance_matrix.shape == (7, 7)
    assert np.all(np.isfinite(results.standard_errors))


def test_theta_label_and_unit_are_text():
    tka = pmx.theta(0.45, label="KA", unit="1/h")
    assert (tka.label, tka.unit) == ("KA", "1/h")
    assert "label='KA'" in repr(tka) and "unit='1/h'" in repr(tka)
    with pytest.raises(TypeError, match="unit"):
        pmx.theta(0.45, unit=1)
