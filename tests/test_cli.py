"""The ``pmx`` command line and run specifications."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pmx_jax._cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "simulate" in capsys.readouterr().out


def run_command(*argv: str) -> subprocess.CompletedProcess:
    """The installed ``pmx`` entry point (``run``: ``main``, then a fast exit) in
    a new process."""
    code = "from pmx_jax._cli import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300
    )


def test_the_command_ends_with_its_exit_code_and_all_its_output(tmp_path):
    done = run_command("check", str(CONFIGS / "theophylline.toml"))
    assert done.returncode == 0
    assert done.stdout.rstrip().endswith("match the dataset")
    missing = run_command("fit", str(tmp_path / "nothing.toml"))
    assert missing.returncode == 2
    assert "pmx: error: no run specification at" in missing.stderr


def test_simulate_bundled_config(tmp_path, capsys):
    code = main(
        [
            "simulate",
            str(CONFIGS / "theophylline_simulation.toml"),
            "--n-subjects",
            "25",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "P50" in out and "simulated 25 subjects" in out
    frame = pd.read_csv(tmp_path / "theophylline_simulation.csv")
    assert frame.SIM_ID.nunique() == 25 and len(frame) == 25 * 43


def test_dataset_config_runs(tmp_path):
    code = main(
        [
            "simulate",
            str(CONFIGS / "theophylline_dataset_simulation.toml"),
            "--n-subjects",
            "24",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    frame = pd.read_csv(tmp_path / "theophylline_design_simulation.csv")
    assert len(frame) == 24 * 11  # theophylline: 11 samples per subject (132 / 12)


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nuse = "pmx_jax.library:Theophylline"\n[model.theta]\ntkx = 1.0\n')
    assert main(["simulate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "tkx" in err and "tka" in err


def test_fit_bundled_config(tmp_path, capsys):
    """The README's main command: FOCEI on theophylline (nlmixr2: OFV 116.8038)."""
    code = main(["fit", str(CONFIGS / "theophylline.toml"), "--output", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "converged" in out
    import json

    result = json.loads((tmp_path / "theophylline_fit.json").read_text())
    assert abs(result["ofv"] - 116.8038) < 0.01
    assert result["covariance_step"] == "sandwich"
    table = pd.read_csv(tmp_path / "theophylline_table.csv")
    assert {"PRED", "IPRED", "CWRES", "IWRES"} <= set(table.columns)
    assert table.CWRES.notna().sum() == 132
