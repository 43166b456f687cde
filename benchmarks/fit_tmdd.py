"""TMDD fit benchmark: FOCEI of the nimotuzumab models on ``nimoData.csv``.

The data (nlmixr2data, not bundled: read from ``../shared/refdata`` or
``$PMX_REFDATA``): 12 subjects, ten weekly IV infusions each, 321 log
concentrations over about 13 weeks.  The model: two-compartment
quasi-steady-state TMDD (``pmx.pk.TwoCompartmentTMDDQSS``, Tsit5, rtol 1e-8;
the target turns over in minutes, so the explicit solver takes thousands of
steps per subject), IIV on CL, V and KSS, additive error on the log scale,
``kdeg`` fixed, started at the nlmixr example's initial estimates (model
``tmdd``: it does not converge on these data, see benchmarks/README.md, so it
runs only when asked for, best with ``--max-iterations``).  Its limit there,
two compartments with Michaelis-Menten elimination
(``pmx.library.NimotuzumabMM``, model ``mm``), and the linear two-compartment
model (closed form, ``linear``) run by default.

One fit per model, no warm-up: *compile* is the JAX compile time inside the
fit (``jax.monitoring``), *fit after compile* the rest of its wall time.

    python benchmarks/fit_tmdd.py
    python benchmarks/fit_tmdd.py --models tmdd --max-iterations 20 --log tmdd.jsonl

Results are printed and written to ``benchmarks/results/fit_tmdd.json``.
"""

from __future__ import annotations

import argparse
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

RESULTS = Path(__file__).resolve().parent / "results"
REFDATA = Path(
    os.environ.get("PMX_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)


MODELS = {
    "linear": pmx.library.NimotuzumabLinear,
    "mm": pmx.library.NimotuzumabMM,
    "tmdd": pmx.library.Nimotuzumab,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["linear", "mm"], choices=list(MODELS))
    parser.add_argument("--max-iterations", type=int, default=500)
    parser.add_argument("--output", type=Path, default=RESULTS / "fit_tmdd.json")
    parser.add_argument(
        "--log", type=Path, help="append every OFV evaluation (JSON lines) to this file as it ends"
    )
    args = parser.parse_args(argv)
    path = REFDATA / "nimoData.csv"
    if not path.exists():
        sys.exit(f"{path} not found (set PMX_REFDATA to the folder holding nimoData.csv)")
    data = pmx.read_nonmem(path)
    info = machine()
    rows = []
    report = dict(benchmark="fit_tmdd", data=str(path.name), machine=info, results=rows)
    for name in args.models:
        print(f"  FOCEI, {name} model, {data.n_subjects} subjects ...", flush=True)
        load_before = _load()
        log = args.log.open("a") if args.log else None

        def callback(info, _model, name=name, log=log):
            if log is not None:
                log.write(json.dumps(dict(info, model=name)) + "\n")
                log.flush()

        result, wall_s, compile_s = _compiled_during(
            pmx.fit,
            MODELS[name](),
            data,
            "focei",
            covariance=None,
            progress=True,
            callback=callback,
            max_iterations=args.max_iterations,
        )
        if log is not None:
            log.close()
        trace = result.trace
        row = dict(
            model=name,
            compile_s=compile_s,
            fit_after_compile_s=wall_s - compile_s,
            wall_s=wall_s,
            iterations=result.iterations,
            n_evaluations=result.n_evaluations,
            ofv=result.ofv,
            converged=bool(result.converged),
            message=result.message,
            rejected_evaluations=int((~trace["accepted"]).sum()),
            seconds_per_evaluation=float(trace["seconds"].mean()),
            ebe_steps_max_mean=float(trace["ebe_steps_max"].mean()),
            estimates=result.estimates().to_dict(orient="index"),
            load_average_before=load_before,
            load_average_after=_load(),
        )
        rows.append(row)
        print(result, flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    header = (
        f"{'model':<7} {'compile s':>10} {'fit s':>9} {'iter':>5} {'evals':>6} {'OFV':>12} conv"
    )
    print(header)
    for row in rows:
        print(
            f"{row['model']:<7} {row['compile_s']:>10.1f} {row['fit_after_compile_s']:>9.1f} "
            f"{row['iterations']:>5} {row['n_evaluations']:>6} {row['ofv']:>12.4f} "
            f"{'yes' if row['converged'] else 'NO'}"
        )
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
