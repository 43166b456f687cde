"""``pmx report RUN``: the plots of a finished ``pmx fit`` run, without refitting."""

import json
import shutil
from pathlib import Path

import pytest

from pmx_jax._cli import main
from pmx_jax.diagnostics._report import RunRecordError, load_run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PLOTS = {"gof_panel", "qq_cwres", "individual_fits", "eta_distributions", "eta_vs_covariates"}


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    # the README's `pmx fit`: the same fit (and compile) as tests/test_cli.py
    run = tmp_path_factory.mktemp("theophylline_run")
    assert main(["fit", str(CONFIGS / "theophylline.toml"), "--output", str(run)]) == 0
    return run


def test_fit_writes_a_run_record(fitted_run):
    record = json.loads((fitted_run / "theophylline_run.json").read_text())
    assert record["method"] == "focei" and Path(record["config"]).is_file()
    fit = json.loads((fitted_run / "theophylline_fit.json").read_text())
    estimates = {e["parameter"]: e["estimate"] for e in fit["estimates"]}
    assert record["theta"]["tcl"] == pytest.approx(estimates["tcl"], rel=1e-12)
    assert record["omega"]["iiv"][0][0] == pytest.approx(estimates["iiv.ka"], rel=1e-12)


def test_load_run_rebuilds_the_fitted_model(fitted_run):
    run = load_run(fitted_run / "theophylline_fit.json")
    fit = json.loads((fitted_run / "theophylline_fit.json").read_text())
    assert float(run.model.tv) == pytest.approx(
        next(e["estimate"] for e in fit["estimates"] if e["parameter"] == "tv"), rel=1e-12
    )
    assert run.eta_shrinkage.to_dict() == pytest.approx(fit["eta_shrinkage"], abs=1e-9)
    assert list(run.ebes.ID) == list(range(1, 13))


def test_report_writes_every_plot(fitted_run, capsys):
    code = main(
        [
            "report",
            str(fitted_run),
            "--time-unit",
            "h",
            "--conc-unit",
            "mg/L",
            "--format",
            "png",
            "svg",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    plots = fitted_run / "plots"
    for stem in PLOTS:
        for suffix in (".png", ".svg"):
            path = plots / f"{stem}{suffix}"
            assert path.is_file() and path.stat().st_size > 10_000, path
            assert str(path) in out


def test_report_errors_name_what_is_missing(fitted_run, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no run folder" in capsys.readouterr().err
    # an old run folder: results without the run record
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(fitted_run / "theophylline_fit.json", old)
    with pytest.raises(RunRecordError, match="rerun `pmx fit`"):
        load_run(old)
    # two runs in one folder: say which to pick
    for name in ("a_run.json", "b_run.json"):
        (old / name).write_text("{}")
    with pytest.raises(RunRecordError, match="several runs"):
        load_run(old)


def test_run_record_says_where_the_fit_came_from(fitted_run):
    import hashlib

    import pmx_jax as pmx

    record = json.loads((fitted_run / "theophylline_run.json").read_text())
    provenance = record["provenance"]
    assert provenance["versions"]["pmx_jax"] == pmx.__version__
    assert provenance["versions"]["jax"] and provenance["versions"]["numpy"]
    assert provenance["backend"] == "cpu" and provenance["n_subjects"] == 12
    # The hash is that of the table as read (here the bundled data set).
    table = pmx.datasets.load("theophylline").table
    expected = hashlib.sha256(table.to_csv(index=False, lineterminator="\n").encode())
    assert provenance["data_sha256"] == expected.hexdigest()
    seconds = provenance["seconds"]
    assert 0 < seconds["compilation"] <= seconds["total"]
    assert provenance["created"].endswith("+00:00")


def test_fit_writes_the_files_nonmem_writes(fitted_run):
    import pandas as pd

    names = {path.name for path in fitted_run.iterdir()}
    for suffix in (".ext", ".phi", ".cov", ".cor", ".coi", ".shk"):
        assert f"theophylline{suffix}" in names
    assert {"sdtab1", "patab1"} <= names
    fit = json.loads((fitted_run / "theophylline_fit.json").read_text())
    ext = pd.read_csv(fitted_run / "theophylline.ext", sep=r"\s+", skiprows=1)
    final = ext[ext["ITERATION"] == -1000000000].iloc[0]
    assert final["OBJ"] == pytest.approx(fit["ofv"], rel=1e-12)
    # one row per accepted iteration, 0 to the last
    iterations = ext[ext["ITERATION"] >= 0]["ITERATION"].tolist()
    assert iterations == list(range(fit["iterations"] + 1))
