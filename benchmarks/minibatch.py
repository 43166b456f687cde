"""Minibatch benchmark: a full-batch FOCEI fit against the same fit after a
stochastic-gradient phase over subjects (``pmx.fit(..., minibatch=...)``).

The population and model are ``benchmarks/fit.py``'s (one-compartment oral,
10 samples per subject, estimates 20-100% off).  For each size, in one
process: the full-batch fit, then the minibatch fit (Adam on ``n / m`` times
the OFV gradient of ``m`` subjects, ``--epochs`` epochs, then the
quasi-Newton fit from there).  Each fit is timed in full (wall), with the
compilation in it reported apart; for the minibatch fit also the phase alone,
and the quasi-Newton iterations and evaluations after it.  Both fits use
``--ebe-search`` (default ``local``: the global EBE search costs ``2 n_eta +
1`` full evaluations at the start and at the end point whichever way the fit
gets there).

    python benchmarks/minibatch.py                       # 20,000 subjects
    python benchmarks/minibatch.py --sizes 100000 --batch-size 4096 --epochs 2

Printed as a table and written to ``benchmarks/results/minibatch.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine  # noqa: E402
from fit import (  # noqa: E402 (sets PMX_JAX_CACHE_DIR=off unless set: cold compiles)
    TRUTH,
    _compiled_during,
    fit_summary,
    initial_model,
    simulate_population,
)

import pmx_jax as pmx  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def one_fit(prepared, ebe_search: str, minibatch: dict | None) -> dict:
    result, wall_s, compile_s = _compiled_during(
        pmx.fit, initial_model(), prepared, "focei", covariance=None, ebe_search=ebe_search,
        minibatch=minibatch,
    )  # fmt: skip
    row = dict(wall_s=wall_s, compile_s=compile_s, **fit_summary(result))
    if minibatch is not None:
        steps = result.minibatch
        row.update(
            phase_s=float(steps["seconds"].sum()),
            phase_steps=len(steps),
            first_step_s=float(steps["seconds"].iloc[0]),
            ofv_estimate_last_epoch=float(
                steps[steps["epoch"] == steps["epoch"].max()]["ofv_estimate"].mean()
            ),
        )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000])
    parser.add_argument(
        "--batch-size", default="auto", help="'auto' (n / 64 within 256-8,192) or a number"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--ebe-search", choices=["local", "global"], default="local")
    parser.add_argument("--output", type=Path, default=RESULTS / "minibatch.json")
    args = parser.parse_args(argv)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    minibatch = dict(batch_size=batch, epochs=args.epochs, learning_rate=args.learning_rate)
    report = dict(
        benchmark="minibatch",
        machine=machine(),
        minibatch=minibatch,
        ebe_search=args.ebe_search,
        truth=TRUTH,
        results=[],
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        prepared = pmx.likelihood.prepare(
            initial_model(), pmx.read_nonmem(simulate_population(n, seed=1))
        )
        for label, options in (("full batch", None), ("minibatch", minibatch)):
            print(f"{n:,} subjects, {label} ...", flush=True)
            row = dict(n_subjects=n, fit=label, load_before=load_average())
            row.update(one_fit(prepared, args.ebe_search, options))
            row["load_after"] = load_average()
            report["results"].append(row)
            args.output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    header = (
        f"{'subjects':>9} {'fit':<11} {'wall':>8} {'compile':>8} {'phase':>8} {'iter':>5} "
        f"{'evals':>6} {'OFV':>14} {'conv':>5}"
    )
    print(header + "\n" + "-" * len(header))
    for row in report["results"]:
        phase = f"{row['phase_s']:.1f}" if "phase_s" in row else "-"
        print(
            f"{row['n_subjects']:>9,} {row['fit']:<11} {row['wall_s']:>8.1f} "
            f"{row['compile_s']:>8.1f} {phase:>8} {row['iterations']:>5} {row['n_evaluations']:>6} "
            f"{row['ofv']:>14.3f} {'yes' if row['converged'] else 'NO':>5}"
        )
    full = {r["n_subjects"]: r for r in report["results"] if r["fit"] == "full batch"}
    for row in report["results"]:
        if row["fit"] == "minibatch":
            base = full[row["n_subjects"]]["estimates"]
            worst = max(abs(row["estimates"][k] / base[k] - 1) for k in base)
            print(
                f"{row['n_subjects']:,}: largest relative difference of the estimates {worst:.2e}"
            )
    print(f"written {args.output}")
    return report


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
