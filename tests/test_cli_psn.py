"""PsN's jobs on the command line (``pmx vpc``, ``npde``, ``bootstrap``,
``sir``, ``sample``, ``compare``), the ``.lst`` report in the run folder,
``pmx check`` of a run specification and the SIGMA hint of the
specification reader.

One ``pmx fit`` of the README's theophylline specification (about 15 s,
mostly compilation) is shared by the module; each job then reads its run
folder, with small numbers of replicates.  The numbers a job writes are
checked against independent computations on what it wrote (quantiles of the
observations per bin, scipy's tests on the NPDE, the SD of the bootstrap
replicates, the covariance step's SEs in the fit's JSON).
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pmx_jax as pmx
from pmx_jax._cli import main
from pmx_jax._config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
NAME = "theophylline"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("theophylline_run")
    assert main(["fit", str(CONFIGS / "theophylline.toml"), "--output", str(folder)]) == 0
    return folder


def fit_json(folder: Path) -> dict:
    return json.loads((folder / f"{NAME}_fit.json").read_text())


def cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the run folder's report --------------------------------------------------------------


def test_fit_writes_a_listing_ending_with_the_ofv(run):
    text = (run / f"{NAME}.lst").read_text()
    ofv = fit_json(run)["ofv"]
    assert text.rstrip().splitlines()[-1] == f"OFV {ofv:.6f}"
    assert "0MINIMIZATION SUCCESSFUL" in text and " #OBJV:" in text
    assert 'name = "theophylline"' in text  # the run specification, echoed
    assert "Elapsed covariance  time in seconds:" in text


# -- vpc -----------------------------------------------------------------------------------------


def test_vpc_of_a_run_folder(run, capsys):
    out = run / "vpc"
    code, printed, _ = cli(["vpc", run, "--n-sim", 50, "--output", out], capsys)
    assert code == 0 and "VPC: 50 replicates" in printed
    table = pd.read_csv(out / f"{NAME}_vpc_percentiles.csv")
    assert (out / f"{NAME}_vpc.png").stat().st_size > 10_000
    summary = json.loads((out / f"{NAME}_vpc.json").read_text())
    assert summary["n_sim"] == 50 and summary["n_bins"] == table.BIN.nunique()
    # the observed percentiles are those of the data in each bin
    data = pmx.datasets.load("theophylline").observation_table()
    for row in table[table.QUANTILE == 0.5].itertuples():
        last = row.BIN == table.BIN.max()
        above = data.TIME >= row.TIME_LOW
        below = (data.TIME <= row.TIME_HIGH) if last else (data.TIME < row.TIME_HIGH)
        inside = above & below
        assert row.N_OBS == inside.sum()
        assert row.OBSERVED == pytest.approx(np.quantile(data.DV[inside], 0.5))
    outside = (table.OBSERVED < table.SIM_LOWER) | (table.OBSERVED > table.SIM_UPPER)
    assert sum(summary["observed_outside_interval"].values()) == outside.sum()


def test_vpc_of_a_specification_uses_its_values(tmp_path, capsys):
    spec = tmp_path / "theo.toml"
    text = (CONFIGS / "theophylline.toml").read_text()
    spec.write_text(f'output_dir = "{tmp_path.as_posix()}"\n' + text)
    # 50 replicates, as above: the same compiled simulation serves both
    code, printed, _ = cli(["vpc", spec, "--n-sim", 50], capsys)
    assert code == 0 and "at the specification's values" in printed
    assert (tmp_path / f"{NAME}_vpc" / f"{NAME}_vpc_percentiles.csv").is_file()


# -- npde ----------------------------------------------------------------------------------------


def test_npde_summary_is_scipy_on_the_written_npde(run, capsys):
    out = run / "npde"
    # 50 replicates, as the VPC's: the same compiled simulation
    code, printed, _ = cli(["npde", run, "--n-sim", 50, "--output", out], capsys)
    assert code == 0 and "NPDE of 132 observations" in printed
    frame = pd.read_csv(out / f"{NAME}_npde.csv")
    values = frame["NPDE"].dropna().to_numpy()
    summary = json.loads((out / f"{NAME}_npde.json").read_text())
    assert summary["n"] == values.size == 132
    assert summary["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert summary["variance"] == pytest.approx(values.var(ddof=1), rel=1e-12)
    assert summary["p_mean"] == pytest.approx(stats.ttest_1samp(values, 0).pvalue, rel=1e-10)
    assert summary["p_normality"] == pytest.approx(stats.shapiro(values).pvalue, rel=1e-10)
    chi2 = (values.size - 1) * values.var(ddof=1)
    p_variance = 2 * min(
        stats.chi2.cdf(chi2, values.size - 1), stats.chi2.sf(chi2, values.size - 1)
    )
    assert summary["p_variance"] == pytest.approx(p_variance, rel=1e-10)
    assert summary["p_global"] == pytest.approx(
        min(1, 3 * min(summary["p_mean"], p_variance, summary["p_normality"]))
    )
    assert (out / f"{NAME}_npde_qq.png").is_file()


# -- bootstrap and sir ----------------------------------------------------------------------------


def test_bootstrap_of_a_run_folder(run, capsys):
    out = run / "boot"
    code, printed, err = cli(["bootstrap", run, "--n", 3, "--seed", 2, "--output", out], capsys)
    assert code == 0 and "Bootstrap: 3 replicates" in printed
    assert "refitting from the run's final estimates" in printed
    assert "bootstrap: 3/3 refits" in err  # the progress line
    replicates = pd.read_csv(out / f"{NAME}_bootstrap_replicates.csv")
    summary = pd.read_csv(out / f"{NAME}_bootstrap_summary.csv").set_index("parameter")
    assert len(replicates) == 3
    used = replicates[replicates.status == "converged"]
    for name in ("tcl", "iiv.v"):
        assert summary.loc[name, "se"] == pytest.approx(used[name].std(ddof=1), rel=1e-10)
    record = json.loads((out / f"{NAME}_bootstrap.json").read_text())
    assert record["n"] == 3 and record["seed"] == 2
    assert record["ofv"] == pytest.approx(fit_json(run)["ofv"], abs=1e-6)


def test_bootstrap_by_a_column_the_data_lack(run, capsys):
    code, _, err = cli(["bootstrap", run, "--n", 2, "--stratify", "SEXX"], capsys)
    assert code == 2 and err.startswith("pmx: error: --stratify") and "SEXX" in err


def test_sir_of_a_run_folder(run, capsys):
    out = run / "sir"
    code, printed, _ = cli(["sir", run, "--samples", 40, "--output", out], capsys)
    assert code == 0 and "SIR: 40 proposal draws, 8 resampled" in printed
    assert len(pd.read_csv(out / f"{NAME}_sir_samples.csv")) == 8
    summary = pd.read_csv(out / f"{NAME}_sir_summary.csv").set_index("parameter")
    standard_errors = {e["parameter"]: e["se"] for e in fit_json(run)["estimates"]}
    for name, se in standard_errors.items():
        assert summary.loc[name, "cov_se"] == pytest.approx(se, rel=1e-6)
    dofv = pd.read_csv(out / f"{NAME}_sir_dofv.csv")
    np.testing.assert_allclose(dofv.chi_square, stats.chi2.ppf(dofv.probability, 7), rtol=1e-8)


@pytest.mark.slow
def test_sample_of_a_run_folder(run, capsys):
    """NUTS (about 15 s of compilation): one short chain."""
    out = run / "nuts"
    argv = ["sample", run, "--chains", 1, "--warmup", 20, "--samples", 20, "--output", out]
    code, printed, _ = cli(argv, capsys)
    assert code == 0 and "NUTS: 1 chains" in printed
    draws = pd.read_csv(out / f"{NAME}_sample_draws.csv")
    assert len(draws) == 20 and "tcl" in draws
    summary = pd.read_csv(out / f"{NAME}_sample_summary.csv").set_index("parameter")
    assert summary.loc["tcl", "mean"] == pytest.approx(draws.tcl.mean(), rel=1e-10)


# -- compare ---------------------------------------------------------------------------------------


def test_compare_runs(run, tmp_path, capsys):
    other = tmp_path / "run2"
    other.mkdir()
    record = fit_json(run)
    record.update(ofv=record["ofv"] + 3.5, n_parameters=6, aic=record["aic"] + 1.5)
    (other / f"{NAME}_fit.json").write_text(json.dumps(record))
    table_path = tmp_path / "compare.csv"
    code, printed, _ = cli(["compare", run, other, "--output", table_path], capsys)
    assert code == 0 and "dOFV: OFV - OFV of" in printed
    table = pd.read_csv(table_path)
    assert list(table.dofv) == pytest.approx([0.0, 3.5])
    assert list(table.n_parameters) == [7, 6]
    assert list(table.delta_aic) == pytest.approx([0.0, 1.5])
    assert table.run[1] == f"run2/{NAME}"


def test_compare_refuses_runs_of_other_data(run, tmp_path, capsys):
    other = tmp_path / "run3"
    other.mkdir()
    record = fit_json(run)
    record["n_observations"] = 100
    (other / f"{NAME}_fit.json").write_text(json.dumps(record))
    code, _, err = cli(["compare", run, other], capsys)
    assert code == 2 and "different data" in err and "100 observations" in err
    code, _, err = cli(["compare", tmp_path / "nowhere"], capsys)
    assert code == 2 and "no run folder or file" in err


# -- what the jobs read -------------------------------------------------------------------------


def test_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    code, _, err = cli(["vpc", tmp_path], capsys)
    assert code == 2 and "holds no *_run.json" in err


def test_help_of_the_jobs(capsys):
    for command, options in [
        ("vpc", ["--n-sim", "--bins", "--stratify", "--pred-corrected", "--output"]),
        ("npde", ["--n-sim", "--decorrelation"]),
        ("bootstrap", ["--n", "--stratify", "--include", "--seed"]),
        ("sir", ["--samples", "--resamples", "--inflation", "--df"]),
        ("sample", ["--chains", "--warmup", "--samples"]),
        ("compare", ["--output"]),
    ]:
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert all(option in out for option in options), command


def test_check_of_a_specification(tmp_path, capsys):
    spec = tmp_path / "theo.toml"
    spec.write_text(
        '[model]\nuse = "pmx_jax.library:Theophylline"\nfix = ["add_sd"]\n'
        "[model.theta]\nadd_sd = 0.5\n[model.bounds]\ntcl = [-5, 5]\n"
        "[model.omega]\niiv = [0.5, 0.01, 0.2, 0.0, 0.0, 0.1]\n"
        '[data]\ndataset = "theophylline"\n'
    )
    code, printed, _ = cli(["check", spec], capsys)
    assert code == 0
    assert "add_sd  0.5   (0, inf)  FIX" in printed and "tcl     1     (-5, 5)" in printed
    assert "block" in printed and "12 subjects" in printed
    assert "match the dataset" in printed


# -- the specification's residual error -----------------------------------------------------


def test_sigma_section_names_the_residual_error_thetas(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[model]\nuse = "pmx_jax.library:Phenobarbital"\n[model.sigma]\nprop = 0.01\n')
    with pytest.raises(ConfigError) as info:
        load_config(spec)
    message = str(info.value)
    assert "unknown key 'sigma' in [model]" in message and "[model.theta]" in message
    assert "prop_cv (Proportional.cv)" in message and "SIGMA 0.49 is an SD of 0.7" in message


def test_residual_sd_fixed_and_bounded_by_the_specification(tmp_path):
    """NONMEM's ``$SIGMA 0.25 FIX`` with ``Y = F + EPS(1)`` is, in a
    specification, the THETA at the SD: ``add_sd = 0.5`` and ``fix``."""
    spec = tmp_path / "s.toml"
    spec.write_text(
        '[model]\nuse = "pmx_jax.library:Theophylline"\nfix = ["add_sd"]\n'
        f"[model.theta]\nadd_sd = {math.sqrt(0.25)}\n[model.bounds]\nadd_sd = [0.1, 2]\n"
    )
    model = load_config(spec).model
    assert float(model.add_sd) ** 2 == pytest.approx(0.25)
    assert model.add_sd.fixed and (model.add_sd.lower, model.add_sd.upper) == (0.1, 2.0)
    assert "add_sd" not in model.to_unconstrained()


def test_run_folder_files_are_readable_after_a_move(run, tmp_path, capsys):
    """A run folder moved elsewhere still works: the record names its specification."""
    moved = tmp_path / "moved"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("vpc", "npde", "boot", "sir"))
    code, printed, _ = cli(["compare", moved], capsys)
    assert code == 0 and f"moved/{NAME}" in printed
