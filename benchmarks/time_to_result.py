"""Time to the first result: whole commands, as a user runs them, side by side
with R's ``nlme`` on the same data.

Every pmx_jax row is one new process (``subprocess``), timed from start to
exit, with its own compilation cache folder (a temporary one, empty at the
start of the benchmark):

- ``pmx --help`` and ``python -c "import pmx_jax"``;
- ``pmx fit configs/theophylline.toml`` (FOCEI, 12 subjects, covariance step
  included) with an empty cache, then again (everything compiled is in the
  cache);
- with that cache, the same model on other data of similar size: 10 of the
  12 subjects, and a 20-subject table (subjects drawn with replacement from the
  12, DV multiplied by ``exp(0.1 z)``, new IDs).  Both fall in the shape bucket
  of the 12-subject dataset (:mod:`pmx_jax._shapes`), so they compile nothing.

The peer is one ``Rscript`` process that loads nlme and fits
``nlme(conc ~ SSfol(Dose, Time, lKe, lKa, lCl))`` to R's own ``Theoph`` (the
same 12 subjects) with standard errors (``summary``), timed the same way.  It
runs when ``Rscript`` and nlme are installed (``--no-r`` skips it).

Each command runs ``--repeats`` times (default 1; the empty-cache run empties
the cache before each) and the table shows the fastest.  The fit's own
report (OFV, seconds in ``pmx.fit``, iterations) is read from the run's JSON.

    python benchmarks/time_to_result.py
    python benchmarks/time_to_result.py --repeats 3 --no-r

Printed as a table; written with the machine's description to
``benchmarks/results/time_to_result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "time_to_result.json"
R_SCRIPT = """
suppressMessages(library(nlme))
fit <- nlme(conc ~ SSfol(Dose, Time, lKe, lKa, lCl), data = Theoph,
            fixed = lKe + lKa + lCl ~ 1, random = pdDiag(lKe + lKa + lCl ~ 1),
            start = c(lKe = -2.4, lKa = 0.45, lCl = -3.2))
print(summary(fit)$tTable)
cat("logLik", logLik(fit), "\\n")
"""

sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine  # noqa: E402


def run(command: list[str], env: dict, cwd: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return dict(seconds=seconds, stdout=done.stdout)


def theophylline_frame() -> pd.DataFrame:
    path = ROOT / "pmx_jax" / "datasets" / "theophylline.csv"
    return pd.read_csv(path, na_values=".")


def write_config(folder: Path, name: str, table: pd.DataFrame) -> Path:
    csv = folder / f"{name}.csv"
    table.to_csv(csv, index=False, na_rep=".")
    base = (ROOT / "configs" / "theophylline.toml").read_text()
    text = base.replace('dataset = "theophylline"', f'path = "{csv.name}"')
    text = text.replace('name = "theophylline"', f'name = "{name}"')
    config = folder / f"{name}.toml"
    config.write_text(text)
    return config


def other_tables(folder: Path) -> dict[str, Path]:
    table = theophylline_frame()
    ids = table["ID"].drop_duplicates().to_numpy()
    ten = table[table["ID"].isin(ids[:10])]
    rng = np.random.default_rng(2026)
    drawn = []
    for new_id, old in enumerate(rng.choice(ids, size=20, replace=True), start=1):
        subject = table[table["ID"] == old].copy()
        subject["ID"] = new_id
        observed = subject["EVID"] == 0
        noise = np.exp(0.1 * rng.standard_normal(len(subject)))
        subject.loc[observed, "DV"] = subject.loc[observed, "DV"] * noise[observed.to_numpy()]
        drawn.append(subject)
    return {
        "10_subjects": write_config(folder, "theo10", ten),
        "20_subjects": write_config(folder, "theo20", pd.concat(drawn)),
    }


def fit_report(output: Path, name: str) -> dict:
    run_json = json.loads((output / f"{name}_fit.json").read_text())
    keep = ("ofv", "elapsed_seconds", "iterations", "converged")
    return {k: run_json.get(k) for k in keep}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-r", action="store_true")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pmx_ttr_"))
    cache = work / "cache"
    env = dict(os.environ, PMX_JAX_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    script = Path(sys.executable).with_name("pmx")
    pmx = [str(script)] if script.exists() else [sys.executable, "-m", "pmx_jax._cli"]
    configs = other_tables(work)
    rows: list[dict] = []

    def timed(label: str, command: list[str], *, empty_cache=False, report=None):
        best = None
        for _ in range(args.repeats):
            if empty_cache:
                shutil.rmtree(cache, ignore_errors=True)
            out = run(command, env, ROOT)
            if best is None or out["seconds"] < best["seconds"]:
                best = out
        row = dict(command=label, seconds=round(best["seconds"], 2))
        if report is not None:
            row.update(fit_report(*report))
        rows.append(row)
        print(f"{label:<58} {row['seconds']:8.2f} s", flush=True)
        return row

    print(f"{'command':<58} {'wall':>10}")
    timed("pmx --help", [*pmx, "--help"])
    timed("python -c 'import pmx_jax'", [sys.executable, "-c", "import pmx_jax"])
    theo = ROOT / "configs" / "theophylline.toml"
    out = work / "out"
    fit = [*pmx, "fit", str(theo), "--output", str(out)]
    timed("pmx fit configs/theophylline.toml (empty cache)", fit, empty_cache=True,
          report=(out, "theophylline"))  # fmt: skip
    timed("pmx fit configs/theophylline.toml (second run)", fit, report=(out, "theophylline"))
    for label, config in configs.items():
        name = config.stem
        command = [*pmx, "fit", str(config), "--output", str(out)]
        timed(f"pmx fit, {label.replace('_', ' ')} (warm cache)", command, report=(out, name))
    if not args.no_r and shutil.which("Rscript"):
        script = work / "theoph_nlme.R"
        script.write_text(R_SCRIPT)
        try:
            timed("Rscript: nlme on Theoph with SEs (whole process)", ["Rscript", str(script)])
        except RuntimeError as error:
            print(f"R nlme skipped: {error}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(machine=machine(), rows=rows), indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
