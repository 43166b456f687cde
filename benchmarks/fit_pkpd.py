"""PK/PD fit benchmark: the warfarin turnover model of ``examples/warfarin_pkpd.py``.

``warfarin.csv`` (not bundled: read from ``../shared/refdata`` or
``$PMX_REFDATA``): 32 subjects, one oral dose, 251 concentrations and 232
prothrombin complex activity (PCA) values.  Two FOCEI fits, as in the
example's sequential method: the PK model alone (one compartment, first-order
absorption, closed form; REFERENCE_CASES R4), then the PK/PD model (an
indirect-response ODE, kind 1, integrated with the PK) on both endpoints with
the PK population parameters fixed at the first fit's estimates.

*compile* is the JAX compile time inside each fit (``jax.monitoring``), *fit
after compile* the rest of its wall time.

    python benchmarks/fit_pkpd.py

Results are printed and written to ``benchmarks/results/fit_pkpd.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fit import _compiled_during, _load, machine  # noqa: E402

os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
REFDATA = Path(os.environ.get("PMX_REFDATA", ROOT.parent / "shared" / "refdata"))


def _example():
    spec = importlib.util.spec_from_file_location(
        "warfarin_pkpd", ROOT / "examples" / "warfarin_pkpd.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(stage: str, data: pmx.Dataset, result, wall_s: float, compile_s: float, load) -> dict:
    trace = result.trace
    return dict(
        stage=stage,
        n_subjects=data.n_subjects,
        n_observations=data.n_observations,
        compile_s=compile_s,
        fit_after_compile_s=wall_s - compile_s,
        wall_s=wall_s,
        iterations=result.iterations,
        n_evaluations=result.n_evaluations,
        seconds_per_evaluation=float(trace["seconds"].mean()),
        ofv=result.ofv,
        converged=bool(result.converged),
        message=result.message,
        estimates=result.estimates().to_dict(orient="index"),
        load_average_before=load,
        load_average_after=_load(),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS / "fit_pkpd.json")
    args = parser.parse_args(argv)
    if not (REFDATA / "warfarin.csv").exists():
        sys.exit(f"{REFDATA / 'warfarin.csv'} not found (set PMX_REFDATA to its folder)")
    example = _example()
    pk_data, pkpd_data = example.load_data(REFDATA)
    rows = []
    report = dict(benchmark="fit_pkpd", data="warfarin.csv", machine=machine(), results=rows)

    print(f"  FOCEI, PK ({pk_data.n_subjects} subjects) ...", flush=True)
    load = _load()
    pk, wall_s, compile_s = _compiled_during(
        pmx.fit, example.WarfarinPK(), pk_data, "focei", covariance=None
    )
    rows.append(_row("pk (closed form)", pk_data, pk, wall_s, compile_s, load))

    print("  FOCEI, PK/PD with the PK population fixed ...", flush=True)
    load = _load()
    start = example.pkpd_start(pk.model, fix_pk=True)
    pkpd, wall_s, compile_s = _compiled_during(pmx.fit, start, pkpd_data, "focei", covariance=None)
    rows.append(_row("pk/pd (IDR ODE)", pkpd_data, pkpd, wall_s, compile_s, load))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(
        f"{'stage':<18} {'obs':>5} {'compile s':>10} {'fit s':>8} {'iter':>5} {'evals':>6} "
        f"{'s/eval':>7} {'OFV':>11} conv"
    )
    for row in rows:
        print(
            f"{row['stage']:<18} {row['n_observations']:>5} {row['compile_s']:>10.1f} "
            f"{row['fit_after_compile_s']:>8.1f} {row['iterations']:>5} "
            f"{row['n_evaluations']:>6} {row['seconds_per_evaluation']:>7.2f} "
            f"{row['ofv']:>11.4f} {'yes' if row['converged'] else 'NO'}"
        )
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
