"""NONMEM-format result files of a pmx fit (``pmx_jax/nonmem/_results.py``):
written for the README's theophylline FOCEI fit and read back with
pharmpy-core's own readers (``NONMEMTableFile`` with its ``ExtTable``,
``PhiTable`` and ``CovTable``, the ext parser behind pharmpy's modelfit
results, and ``parse_modelfit_results`` with a control stream of the same
model); their layout compared with real NONMEM output (the ``_ext.csv`` and
``_phi.csv`` reference runs, and the text of the pheno run bundled with
pharmpy); and the phi-file ETC and the shk-file definitions checked against
NONMEM's own numbers for phenobarbital.

pharmpy is a test-only client: the tests that read with it skip without it.
One fit (about 30 s with its covariance step, mostly compilation) is shared
by the module.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.estimation import ofv
from pmx_jax.estimation._fit import parameter_values
from pmx_jax.estimation._residuals import residual_table
from pmx_jax.likelihood import make_problem
from pmx_jax.model import natural_names
from pmx_jax.nonmem._results import (
    METHOD_TITLES,
    _header,
    _title,
    conditional_covariances,
    ext_line,
    matrix_line,
    parameter_columns,
    phi_line,
    shrinkage_table,
    write_nonmem_results,
)

# pharmpy 2.1 reads tables with pandas features that pandas 3 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pharmpy")

STEM = "run1"
# The special rows of an ext file.
FINAL, SE, EIGEN, CONDITION, SDCORR, SDCORR_SE, FIXED = range(-1000000000, -1000000007, -1)


@pytest.fixture(scope="module")
def fit():
    result = pmx.fit(pmx.library.Theophylline(), pmx.datasets.load("theophylline"), "focei")
    assert result.converged, result.message
    assert result.covariance is not None and result.covariance.ok
    return result


@pytest.fixture(scope="module")
def folder(fit, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nonmem")
    paths = write_nonmem_results(fit, folder, STEM)
    assert [p.name for p in paths] == [
        f"{STEM}.{s}" for s in ("ext", "phi", "cov", "cor", "coi", "shk")
    ]
    return folder


def read_table(path: Path) -> pd.DataFrame:
    """A one-table NONMEM file as NONMEM tools read it (whitespace-separated,
    after the TABLE NO. line)."""
    return pd.read_csv(path, sep=r"\s+", skiprows=1)


def pharmpy_table(path: Path):
    table = pytest.importorskip("pharmpy.model.external.nonmem.table")
    tables = table.NONMEMTableFile(path)
    assert len(tables) == 1
    return tables[0]


def estimates(fit) -> pd.Series:
    return fit.estimates().set_index("parameter")["estimate"]


# -- what the fit records ---------------------------------------------------------------


def test_fit_records_the_estimates_of_every_accepted_iteration(fit):
    history = fit.iteration_estimates
    assert list(history["iteration"]) == list(range(fit.iterations + 1))
    assert list(history.columns) == ["iteration", "ofv"] + list(fit.estimates()["parameter"])
    trace = fit.trace
    assert history["ofv"].iloc[0] == trace["ofv"].iloc[0]  # the initial estimates
    accepted = trace[trace["accepted"]]
    np.testing.assert_array_equal(history["ofv"].iloc[1:], accepted["ofv"])
    # The last iteration is the final point.
    final = parameter_values(fit.model)
    assert history.iloc[-1].drop(["iteration", "ofv"]).to_dict() == final
    assert history.iloc[-1]["ofv"] == pytest.approx(fit.ofv, abs=1e-6)
    # The first is the model's initial estimates (through the unconstrained scale).
    initial = parameter_values(pmx.library.Theophylline())
    assert history.iloc[0].drop(["iteration", "ofv"]).to_dict() == pytest.approx(initial, 1e-12)


# -- ext --------------------------------------------------------------------------------


def test_ext_reads_back_with_pharmpy(fit, folder):
    ext = pharmpy_table(folder / f"{STEM}.ext")
    assert type(ext).__name__ == "ExtTable"
    assert ext.method == METHOD_TITLES["focei"] and ext.problem == 1 and ext.subproblem == 0
    assert ext.goal_function == "MINIMUM VALUE OF OBJECTIVE FUNCTION"
    assert ext.final_ofv == fit.ofv  # 17 significant digits
    assert ext.iterations == list(range(fit.iterations + 1))
    names = ["THETA(1)", "THETA(2)", "THETA(3)", "THETA(4)", "OMEGA(1,1)", "OMEGA(2,2)"]
    names += ["OMEGA(3,3)"]
    est = estimates(fit)
    final = ext.final_parameter_estimates
    np.testing.assert_allclose(final[names], est.to_numpy(), rtol=5e-6)  # %.5E
    assert final["SIGMA(1,1)"] == 1.0 and final["OMEGA(2,1)"] == 0.0
    fixed = ext.fixed
    assert list(fixed[fixed].index) == ["OMEGA(2,1)", "OMEGA(3,1)", "OMEGA(3,2)", "SIGMA(1,1)"]
    cov = fit.covariance
    se = ext.standard_errors
    np.testing.assert_allclose(se[names], cov.se, rtol=5e-6)
    assert se["SIGMA(1,1)"] == 1e10 and se["OMEGA(3,2)"] == 1e10
    assert ext.condition_number == pytest.approx(cov.condition_number, rel=5e-6)
    sd = ext.omega_sigma_stdcorr
    np.testing.assert_allclose(sd[names[4:]], np.sqrt(est.to_numpy()[4:]), rtol=5e-6)
    assert sd["SIGMA(1,1)"] == 1.0
    # Standard errors of the SDs by the delta method.
    sd_se = ext.omega_sigma_se_stdcorr
    variance = est.to_numpy()[4:]
    np.testing.assert_allclose(sd_se[names[4:]], cov.se[4:] / (2 * np.sqrt(variance)), rtol=5e-6)


def test_ext_has_one_row_per_iteration_then_nonmem_special_rows(fit, folder):
    table = read_table(folder / f"{STEM}.ext")
    iterations = table[table["ITERATION"] >= 0]
    history = fit.iteration_estimates
    assert len(iterations) == fit.iterations + 1
    labels = [c for c in table.columns if c.startswith(("THETA", "OMEGA"))]
    # Each row: the parameters at that iteration, not the final values repeated.
    pmx_names = ["tka", "tcl", "tv", "add_sd", "iiv.ka", "iiv.cl", "iiv.v"]
    written = iterations[[c for c in labels if c not in ("OMEGA(2,1)", "OMEGA(3,1)", "OMEGA(3,2)")]]
    np.testing.assert_allclose(written, history[pmx_names], rtol=5e-6)
    assert len(np.unique(written.to_numpy().round(5), axis=0)) > fit.iterations // 2
    # OBJ: as the search evaluated it; the last iteration's is the fit's OFV.
    np.testing.assert_array_equal(iterations["OBJ"].iloc[:-1], history["ofv"].iloc[:-1])
    assert iterations["OBJ"].iloc[-1] == fit.ofv
    special = list(table.loc[table["ITERATION"] < 0, "ITERATION"])
    assert special == [FINAL, SE, EIGEN, CONDITION, SDCORR, SDCORR_SE, FIXED]
    rows = table.set_index("ITERATION")
    eigenvalues = rows.loc[EIGEN].drop("OBJ").to_numpy()  # every parameter column
    cov = fit.covariance
    np.testing.assert_allclose(eigenvalues[:7], cov.eigenvalues, rtol=5e-6)
    assert np.all(eigenvalues[7:] == 0.0)
    condition = rows.loc[CONDITION, ["THETA1", "THETA2", "THETA3"]].to_numpy()
    expected = [cov.condition_number, min(cov.eigenvalues), max(cov.eigenvalues)]
    np.testing.assert_allclose(condition, expected, rtol=5e-6)
    assert np.all(rows.loc[[SE, EIGEN, CONDITION, SDCORR, SDCORR_SE, FIXED], "OBJ"] == 0.0)


def test_ext_without_a_covariance_step(fit, tmp_path):
    pytest.importorskip("pharmpy")
    from pharmpy.model.external.nonmem.table import NONMEMTableFile
    from pharmpy.tools.external.nonmem.results import _parse_ext

    bare = fit.replace(covariance=None, covariance_note="not computed")
    paths = write_nonmem_results(bare, tmp_path, STEM)
    assert sorted(p.suffix for p in paths) == [".ext", ".phi", ".shk"]
    table = read_table(tmp_path / f"{STEM}.ext")
    assert list(table.loc[table["ITERATION"] < 0, "ITERATION"]) == [FINAL, SDCORR, FIXED]
    # pharmpy's ext parser (that of its modelfit results): no standard errors.
    parsed = _parse_ext(None, {}, NONMEMTableFile(tmp_path / f"{STEM}.ext"), None, None)
    assert parsed.final_ofv == fit.ofv
    assert parsed.ses.isna().all() and not parsed.cov_abort


def test_pharmpy_modelfit_parser_reads_the_ext_file(fit, folder):
    """The parser behind pharmpy's modelfit results (fixed parameters dropped,
    the last iteration checked against the final row)."""
    pytest.importorskip("pharmpy")
    from pharmpy.model.external.nonmem.table import NONMEMTableFile
    from pharmpy.tools.external.nonmem.results import _parse_ext

    parsed = _parse_ext(None, {}, NONMEMTableFile(folder / f"{STEM}.ext"), None, None)
    assert parsed.final_ofv == fit.ofv
    assert len(parsed.ofv) == fit.iterations + 1
    np.testing.assert_array_equal(parsed.ofv.iloc[:-1], fit.iteration_estimates["ofv"].iloc[:-1])
    assert parsed.pe.shape == (fit.iterations + 1, 7)
    np.testing.assert_allclose(parsed.final_pe, estimates(fit), rtol=5e-6)
    np.testing.assert_allclose(parsed.ses, fit.covariance.se, rtol=5e-6)
    assert parsed.condition_number == pytest.approx(fit.covariance.condition_number, rel=5e-6)


# The theophylline model as a NONMEM user writes it (THETA-based residual
# error with SIGMA 1 FIX), for pharmpy's parse_modelfit_results.
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


def test_pharmpy_modelfit_results_from_the_folder(fit, folder):
    """pharmpy's ``parse_modelfit_results`` on the written files, with the
    control stream of the same model: estimates, SEs, iterations, per-subject
    OFV, EBEs and their covariances.  (pharmpy reads the status of the
    minimisation and of the covariance step, and so the .cov file, from the
    .lst report, which is not written here.)"""
    pytest.importorskip("pharmpy")
    from pharmpy.modeling import read_model_from_string
    from pharmpy.tools.external.nonmem.results import parse_modelfit_results

    model = read_model_from_string(CONTROL_STREAM)
    results = parse_modelfit_results(model, folder / f"{STEM}.mod")
    assert results.ofv == fit.ofv
    names = ["tka", "tcl", "tv", "add_sd", "OMEGA_1_1", "OMEGA_2_2", "OMEGA_3_3"]
    assert list(results.parameter_estimates.index) == names
    np.testing.assert_allclose(results.parameter_estimates, estimates(fit), rtol=5e-6)
    np.testing.assert_allclose(results.standard_errors, fit.covariance.se, rtol=5e-6)
    assert len(results.ofv_iterations) == fit.iterations + 1
    assert results.individual_ofv.sum() == pytest.approx(fit.ofv, abs=1e-9)
    etas = results.individual_estimates
    assert list(etas.index) == list(fit.ids)
    np.testing.assert_allclose(etas, fit.ebes[["ka", "cl", "v"]], rtol=5e-6, atol=1e-10)
    covariances = results.individual_estimates_covariance
    assert len(covariances) == fit.n_subjects
    for matrix in covariances:
        assert np.all(np.linalg.eigvalsh(matrix.to_numpy()) > 0)


# -- phi --------------------------------------------------------------------------------


def test_phi_reads_back_with_pharmpy(fit, folder):
    phi = pharmpy_table(folder / f"{STEM}.phi")
    assert type(phi).__name__ == "PhiTable" and phi.method == METHOD_TITLES["focei"]
    iofv = phi.iofv
    assert list(iofv.index) == list(fit.ids)
    assert iofv.sum() == pytest.approx(fit.ofv, abs=1e-9)  # the OFV, subject by subject
    np.testing.assert_allclose(phi.etas, fit.ebe_matrix, rtol=5e-6, atol=1e-10)
    for matrix in phi.etcs:
        matrix = matrix.to_numpy()
        np.testing.assert_array_equal(matrix, matrix.T)
        assert np.all(np.linalg.eigvalsh(matrix) > 0)
        # Less uncertain than the prior (OMEGA) in every direction.
        omega = np.asarray(fit.model.omega_matrix())
        assert np.all(np.linalg.eigvalsh(omega - matrix) > 0)


def test_phi_objective_is_the_per_subject_ofv(fit, folder):
    """The phi OBJ is pmx.ofv's per-subject term (to its print precision)."""
    table = read_table(folder / f"{STEM}.phi")
    fresh = ofv(fit.model, fit.problem, fit.method, ebe_search=fit.ebe_search)
    np.testing.assert_allclose(table["OBJ"], np.asarray(fresh.per_subject), rtol=1e-9)
    assert list(table["SUBJECT_NO"]) == list(range(1, fit.n_subjects + 1))


# -- cov, cor, coi ----------------------------------------------------------------------


def test_covariance_files_read_back_with_pharmpy(fit, folder):
    cov = fit.covariance
    matrices = {kind: pharmpy_table(folder / f"{STEM}.{kind}") for kind in ("cov", "cor", "coi")}
    assert all(type(m).__name__ == "CovTable" for m in matrices.values())
    names = ["THETA(1)", "THETA(2)", "THETA(3)", "THETA(4)", "OMEGA(1,1)", "OMEGA(2,2)"]
    names += ["OMEGA(3,3)"]
    for matrix in matrices.values():  # pharmpy drops the zero rows (what is fixed)
        assert list(matrix.data_frame.index) == names and list(matrix.data_frame.columns) == names
    covariance = matrices["cov"].data_frame.to_numpy()
    np.testing.assert_allclose(covariance, cov.covariance, rtol=5e-6, atol=1e-20)
    correlation = matrices["cor"].data_frame.to_numpy()
    np.testing.assert_allclose(np.diagonal(correlation), cov.se, rtol=5e-6)  # NONMEM: SEs
    off = ~np.eye(len(names), dtype=bool)
    np.testing.assert_allclose(correlation[off], cov.correlation[off], atol=1e-5)
    inverse = matrices["coi"].data_frame.to_numpy()
    np.testing.assert_allclose(inverse @ cov.covariance, np.eye(len(names)), atol=1e-4)


def test_covariance_is_on_nonmem_scale(fit, folder):
    """NONMEM's .cov is the covariance of THETA and of the OMEGA variances: the
    unconstrained-scale matrix transformed by the exact Jacobian of the
    natural parameters, whose rows are here those of an unbounded THETA (1),
    of a positive THETA or a variance on the log scale (its value)."""
    cov = fit.covariance
    table = read_table(folder / f"{STEM}.cov").set_index("NAME")
    labels = ["THETA1", "THETA2", "THETA3", "THETA4", "OMEGA(1,1)", "OMEGA(2,2)", "OMEGA(3,3)"]
    written = table.loc[labels, labels].to_numpy()
    expected = cov.jacobian @ cov.covariance_unconstrained @ cov.jacobian.T
    np.testing.assert_allclose(written, expected, rtol=5e-6, atol=1e-20)
    est = estimates(fit).to_numpy()
    scale = np.abs(cov.jacobian).max(axis=1)
    np.testing.assert_allclose(scale, [1.0, 1.0, 1.0, est[3], *est[4:]], rtol=1e-10)
    assert np.all(np.count_nonzero(cov.jacobian, axis=1) == 1)
    assert np.all(table.loc["SIGMA(1,1)"] == 0.0) and np.all(table["OMEGA(3,2)"] == 0.0)


# -- shk --------------------------------------------------------------------------------


def test_shrinkage_file(fit, folder):
    table = read_table(folder / f"{STEM}.shk")
    assert list(table.columns) == ["TYPE", "SUBPOP", "ETA(1)", "ETA(2)", "ETA(3)"]
    assert list(table["TYPE"]) == list(range(1, 12)) and np.all(table["SUBPOP"] == 1)
    rows = table.set_index("TYPE")[["ETA(1)", "ETA(2)", "ETA(3)"]]
    etas = fit.ebe_matrix
    omega = estimates(fit).to_numpy()[4:]
    np.testing.assert_allclose(rows.loc[1], etas.mean(axis=0), rtol=5e-6)
    sd = etas.std(axis=0)  # divisor n, as NONMEM
    np.testing.assert_allclose(rows.loc[4], 100 * (1 - sd / np.sqrt(omega)), rtol=5e-6)
    np.testing.assert_allclose(rows.loc[8], 100 * (1 - sd**2 / omega), rtol=5e-6)
    assert np.all(rows.loc[7] == fit.n_subjects)
    # pmx's eta_shrinkage divides by n - 1: close, not equal.
    np.testing.assert_allclose(rows.loc[4] / 100, fit.eta_shrinkage, atol=0.05)
    iwres = fit.table().query("EVID == 0")["IWRES"].dropna().to_numpy()
    assert rows.loc[5, "ETA(1)"] == pytest.approx(100 * (1 - np.sqrt(np.mean(iwres**2))), 1e-5)
    assert np.all(rows.loc[[5, 10], ["ETA(2)", "ETA(3)"]] == 0.0)  # one EPS


# -- the layout of NONMEM's own files -----------------------------------------------------


def nonmem_name(label: str) -> str:
    """``OMEGA(2,1)`` -> ``OMEGA2_1`` (the CSV conversions of the reference runs)."""
    return label.replace("(", "").replace(")", "").replace(",", "_")


def test_layout_matches_nonmem_reference_runs(folder, refdata):
    """Column names and special rows against warfarin's NONMEM run (three
    diagonal etas and SIGMA 1 FIX, as theophylline here)."""
    outputs = refdata / "nonmem_outputs"
    reference = pd.read_csv(outputs / "warfarinPK_run000_FOCEI_combined2_ext.csv")
    assert set(reference["METHOD"]) == {METHOD_TITLES["focei"]}
    ours = read_table(folder / f"{STEM}.ext")
    columns = [nonmem_name(c) for c in ours.columns]
    theirs = list(reference.columns[2:])
    thetas = [c for c in columns if c.startswith("THETA")]
    assert thetas == [f"THETA{k}" for k in range(1, len(thetas) + 1)]
    assert [c for c in columns if not c.startswith("THETA")] == [
        c for c in theirs if not c.startswith("THETA")
    ]
    special = set(ours["ITERATION"][ours["ITERATION"] < 0])
    assert set(reference["ITERATION"][reference["ITERATION"] < 0]) - special == {
        -1000000007,  # termination status and final gradient: not written
        -1000000008,
    }
    # The same fixed flags, SEs and SD form for SIGMA 1 FIX and the diagonal OMEGA.
    ours = ours.set_index("ITERATION").rename(columns=nonmem_name)
    reference = reference.set_index("ITERATION")
    rest = [c for c in theirs if c.startswith(("SIGMA", "OMEGA"))]
    assert list(ours.loc[FIXED, rest]) == list(reference.loc[FIXED, rest])
    for row in (SE, SDCORR_SE):
        assert list(ours.loc[row, rest] == 1e10) == list(reference.loc[row, rest] == 1e10)
    assert ours.loc[SDCORR, "SIGMA1_1"] == reference.loc[SDCORR, "SIGMA1_1"] == 1.0
    phi = pd.read_csv(outputs / "warfarinPK_run000_FOCEI_combined2_phi.csv")
    ours_phi = read_table(folder / f"{STEM}.phi")
    assert [nonmem_name(c) for c in ours_phi.columns] == list(phi.columns[2:])


def pharmpy_example(name: str) -> Path:
    pharmpy = pytest.importorskip("pharmpy")
    path = Path(pharmpy.__file__).parent / "internals" / "example_models" / name
    if not path.exists():
        pytest.skip(f"pharmpy's example {name} not installed")
    return path


def test_number_formats_reproduce_nonmem_text():
    """NONMEM's pheno run as bundled with pharmpy (ext, phi, cov), rewritten
    line by line from its own values, character for character."""
    ext = pharmpy_example("pheno.ext").read_text().splitlines()
    assert ext[0] == _title("focei", goal=True)
    assert ext[1] == _header(ext[1].split())
    for line in ext[2:]:
        fields = line.split()
        assert line == ext_line(int(fields[0]), [float(x) for x in fields[1:-1]], float(fields[-1]))
    phi = pharmpy_example("pheno.phi").read_text().splitlines()
    assert phi[0] == _title("focei") and phi[1] == _header(phi[1].split())
    for line in phi[2:]:
        fields = line.split()
        values = [float(x) for x in fields[2:-1]]
        assert line == phi_line(int(fields[0]), int(fields[1]), values, float(fields[-1]))
    cov = pharmpy_example("pheno.cov").read_text().splitlines()
    assert cov[0] == _title("focei") and cov[1] == _header(cov[1].split())
    for line in cov[2:]:
        fields = line.split()
        assert line == matrix_line(fields[0], [float(x) for x in fields[1:]])


# -- NONMEM's ETC and shrinkage on phenobarbital -------------------------------------------

# NONMEM's report of its pheno FOCEI run (pharmpy's example pheno.lst; the
# ext and phi files of the same run are REFERENCE_CASES R3's).
PHENO_LST = {
    "ETABAR": [1.6884e-03, -1.1976e-03],
    "SE": [1.1692e-02, 1.8795e-02],
    "P VAL.": [8.8518e-01, 9.4919e-01],
    "ETASHRINKSD(%)": [4.7580e01, 1.3581e01],
    "ETASHRINKVR(%)": [7.2522e01, 2.5317e01],
    "EBVSHRINKSD(%)": [4.7738e01, 1.3692e01],
    "EBVSHRINKVR(%)": [7.2687e01, 2.5509e01],
    "EPSSHRINKSD(%)": [2.1198e01],
    "EPSSHRINKVR(%)": [3.7903e01],
}


def test_etc_and_shrinkage_reproduce_nonmem_on_phenobarbital(refdata):
    outputs = refdata / "nonmem_outputs"
    ext = pd.read_csv(outputs / "pheno_real_FOCEI_ext.csv").set_index("ITERATION")
    row = ext.loc[FINAL]
    model = pmx.library.Phenobarbital().with_values(
        th_cl=row["THETA1"],
        th_v=row["THETA2"],
        th_apgar=row["THETA3"],
        prop_cv=math.sqrt(row["SIGMA1_1"]),  # Y = F + F*EPS, SIGMA a variance
        iiv=[row["OMEGA1_1"], row["OMEGA2_2"]],
    )
    data = pmx.read_nonmem(refdata / "pheno_sd.csv")
    problem = make_problem(model, data, "focei")
    result = ofv(model, problem, "focei")
    ebes = np.asarray(result.ebes)
    phi = pd.read_csv(outputs / "pheno_real_FOCEI_phi.csv")
    np.testing.assert_allclose(ebes, phi[["ETA1", "ETA2"]], atol=1e-4)
    # ETC: the inverse of FOCEI's first-order information at the EBE.
    etc = conditional_covariances(model, problem, ebes, "focei")
    lower = np.stack([etc[:, 0, 0], etc[:, 1, 0], etc[:, 1, 1]], axis=1)
    reference = phi[["ETC1_1", "ETC2_1", "ETC2_2"]].to_numpy()
    np.testing.assert_allclose(lower, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    # The shk definitions on NONMEM's own EBEs and ETCs, IWRES from pmx.
    omega = [row["OMEGA1_1"], row["OMEGA2_2"]]
    nonmem_etc = np.stack(
        [[[a, b], [b, c]] for a, b, c in zip(*reference.T, strict=True)]  # symmetric
    )
    table = residual_table(model, data, problem.source, ebes, "focei")
    iwres = table.loc[table["EVID"] == 0, "IWRES"].to_numpy()
    shk = shrinkage_table(phi[["ETA1", "ETA2"]].to_numpy(), omega, nonmem_etc, iwres)
    rows = dict(zip(PHENO_LST, (1, 2, 3, 4, 8, 6, 9, 5, 10), strict=True))
    for name, kind in rows.items():
        expected = PHENO_LST[name]
        got = shk.loc[kind].to_numpy()[: len(expected)]
        # ETABAR from 6-digit EBEs: to 1e-6; the rest to NONMEM's 5 digits.
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=name)


# -- parameter columns --------------------------------------------------------------------


class Blocks(pmx.Model):
    """A fixed THETA, a full block, a fixed diagonal block and an IOV block."""

    tka: pmx.Theta = pmx.theta(0.5)
    tv: pmx.Theta = pmx.theta(3.0, fixed=True)
    tcl: pmx.Theta = pmx.theta(1.0)
    iov: pmx.Omega = pmx.omega(cl_occ=0.05, occasion=True)
    iiv: pmx.Omega = pmx.omega_block(["cl", "v"], [[0.1, 0.01], [0.01, 0.2]])
    iiv_ka: pmx.Omega = pmx.omega(ka=0.3, fixed=True)
    add_sd: pmx.Theta = pmx.theta(0.1, lower=0.0)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(ka=self.tka, cl=self.tcl, v=self.tv)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.add_sd)


def test_parameter_columns_follow_nonmem_numbering():
    """THETAs in field order, SIGMA, then OMEGA over the ETA numbering: IIV
    blocks in field order, then the IOV block once per occasion (SAME copies
    fixed)."""
    columns = parameter_columns(Blocks(), n_occasions=2)
    table = {c.label: (c.parameter, c.fixed) for c in columns}
    assert [c.label for c in columns[:5]] == ["THETA1", "THETA2", "THETA3", "THETA4", "SIGMA(1,1)"]
    assert table["THETA2"] == ("tv", True) and table["THETA4"] == ("add_sd", False)
    assert table["SIGMA(1,1)"] == (None, True)
    omega = [c.label for c in columns if c.kind == "omega"]
    assert omega == [f"OMEGA({i},{j})" for i in range(1, 6) for j in range(1, i + 1)]
    assert table["OMEGA(1,1)"] == ("iiv.cl", False)
    assert table["OMEGA(2,1)"] == ("iiv.cl,v", False)
    assert table["OMEGA(3,3)"] == ("iiv_ka.ka", True)
    assert table["OMEGA(3,1)"] == (None, True)
    assert table["OMEGA(4,4)"] == ("iov.cl_occ", False)
    assert table["OMEGA(5,5)"] == ("iov.cl_occ", True)  # occasion 2: SAME
    assert table["OMEGA(5,4)"] == (None, True)
    estimated = [c.parameter for c in columns if c.estimated]
    assert estimated == ["tka", "tcl", "add_sd", "iiv.cl", "iiv.cl,v", "iiv.v", "iov.cl_occ"]
    # The free parameters of the covariance step (in field order), matched by name.
    assert sorted(estimated) == sorted(natural_names(Blocks()))


def test_a_count_model_with_two_parameters_writes_its_files(tmp_path):
    # No Gaussian endpoint (no SIGMA column) and fewer than three columns:
    # the ext file's condition-number row still fits the run's columns.
    from test_observation_models import CountModel

    rng = np.random.default_rng(0)
    rows = [
        (i, float(t), float(rng.poisson(np.exp(1 + rng.normal(0, 0.5)))))
        for i in range(1, 21)
        for t in range(4)
    ]
    data = pmx.read_nonmem(pd.DataFrame(rows, columns=["ID", "TIME", "DV"]))
    fit = pmx.fit(CountModel(), data, "laplace", progress=False)
    written = {p.suffix for p in write_nonmem_results(fit, tmp_path, "counts")}
    assert written == {".ext", ".phi", ".cov", ".cor", ".coi", ".shk"}
    ext = pd.read_csv(tmp_path / "counts.ext", sep=r"\s+", skiprows=1)
    assert list(ext.columns) == ["ITERATION", "THETA1", "OMEGA(1,1)", "OBJ"]
    final = ext[ext["ITERATION"] == -1000000000].iloc[0]
    assert final["OBJ"] == pytest.approx(fit.ofv, rel=1e-12)
    condition = ext[ext["ITERATION"] == -1000000003].iloc[0]
    assert condition["THETA1"] == pytest.approx(fit.covariance.condition_number, rel=1e-5)
