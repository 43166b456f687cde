"""ODE fit benchmark: FOCEI on the Michaelis-Menten reference set ``Bolus_1CPTMM.csv``.

The data: the single-dose part (``SD == 1``) of Schoemaker et al.'s ACOP set,
one compartment with saturable elimination, IV bolus of 10, 20, 40 or 80 g, 19
samples from 0.25 to 72 h per subject, 120 subjects (``--subjects`` takes the
first n).  The model is ``pmx.pk.OneCompartmentMM`` (integrated with diffrax,
Tsit5, rtol 1e-8) with log-normal IIV on VM, KM and V and a proportional error,
started 20-40% off the simulation truth (VM 1000, KM 250, V 70, omega^2 0.09,
20% CV).

The ODE is differentiated by pmx_jax's default forward-sensitivity rule, or
with ``--derivative direct`` by ``diffrax.DirectAdjoint`` (reverse mode through
the solver's steps), for comparison.

What is reported, per size and method (as in ``benchmarks/fit.py``): *compile*,
the JAX compile time during a warm-up ``pmx.fit(..., max_iterations=1)``; *fit*,
the wall time of the full fit after it (its own compile time is checked and
reported as ``fit_compile_s``), accepted iterations, objective evaluations, final
OFV, convergence and the estimates against the truth.

    python benchmarks/fit_ode.py                         # 120 subjects, FOCEI
    python benchmarks/fit_ode.py --subjects 30 120 --methods focei fo

Results are printed as a table and written, with the machine's description,
to ``benchmarks/results/fit_ode.json`` (rewritten after every row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fit import _compiled_during, _load, _seconds, machine  # noqa: E402

os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REFDATA = Path(
    os.environ.get("PMX_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)

TRUTH = dict(vm=1000.0, km=250.0, v=70.0, omega=0.09, prop_cv=0.20)
INITIAL = dict(vm=700.0, km=150.0, v=50.0, omega=0.2, prop_cv=0.3)


def mm_model(method: str, derivative: str = "default") -> pmx.Model:
    """The Michaelis-Menten model at the initial estimates, differentiated by
    pmx_jax's default forward-sensitivity rule or (``derivative="direct"``,
    FOCEI/Laplace only) by ``diffrax.DirectAdjoint``."""
    adjoint = diffrax.DirectAdjoint() if derivative == "direct" and method != "fo" else None

    class MichaelisMentenBolus(pmx.Model):
        tvm: pmx.Theta = pmx.theta(np.log(INITIAL["vm"]))
        tkm: pmx.Theta = pmx.theta(np.log(INITIAL["km"]))
        tv: pmx.Theta = pmx.theta(np.log(INITIAL["v"]))
        prop_cv: pmx.Theta = pmx.theta(INITIAL["prop_cv"], lower=0.0)
        iiv: pmx.Omega = pmx.omega(vm=INITIAL["omega"], km=INITIAL["omega"], v=INITIAL["omega"])
        dynamics = pmx.pk.OneCompartmentMM(adjoint=adjoint, max_steps=256)

        def individual(self, eta, cov):
            return dict(
                vm=jnp.exp(self.tvm + eta.vm),
                km=jnp.exp(self.tkm + eta.km),
                v=jnp.exp(self.tv + eta.v),
            )

        def observe(self, amounts, p):
            return pmx.Proportional(amounts.central / p["v"], self.prop_cv)

    return MichaelisMentenBolus()


def single_dose_table(n_subjects: int | None) -> pd.DataFrame:
    table = pd.read_csv(REFDATA / "Bolus_1CPTMM.csv")
    table = table[table.SD == 1][["ID", "TIME", "DV", "MDV", "AMT", "EVID", "CMT"]]
    if n_subjects is not None:
        table = table[table.ID.isin(sorted(table.ID.unique())[:n_subjects])]
    return table


def natural_scale(model) -> dict:
    omega = np.diag(np.asarray(model.iiv.matrix))
    return dict(
        vm=float(np.exp(model.tvm)),
        km=float(np.exp(model.tkm)),
        v=float(np.exp(model.tv)),
        omega_vm=float(omega[0]),
        omega_km=float(omega[1]),
        omega_v=float(omega[2]),
        prop_cv=float(model.prop_cv),
    )


def time_fit(model, prepared, method: str) -> dict:
    """A warm-up fit (one iteration: compiles) and the timed full fit."""
    _, warm_up_s, compile_s = _compiled_during(
        pmx.fit, model, prepared, method, max_iterations=1, covariance=None
    )
    result, fit_s, fit_compile_s = _compiled_during(
        pmx.fit, model, prepared, method, covariance=None
    )
    return dict(
        compile_s=compile_s,
        warm_up_s=warm_up_s,
        fit_s=fit_s,
        fit_compile_s=fit_compile_s,
        iterations=result.iterations,
        n_evaluations=result.n_evaluations,
        ofv=result.ofv,
        converged=bool(result.converged),
        message=result.message,
        estimates=natural_scale(result.model),
    )


HEADER = (
    f"{'subjects':>8} {'method':<8} {'compile':>8} {'fit':>9} {'iter':>5} {'evals':>6} "
    f"{'s/eval':>7} {'OFV':>14} {'conv':>5}"
)


def _format_row(row: dict) -> str:
    return (
        f"{row['n_subjects']:>8,} {row['method']:<8} {_seconds(row['compile_s']):>8} "
        f"{_seconds(row['fit_s']):>9} {row['iterations']:>5} {row['n_evaluations']:>6} "
        f"{row['fit_s'] / max(row['n_evaluations'], 1):>7.3f} {row['ofv']:>14.3f} "
        f"{'yes' if row['converged'] else 'NO':>5}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subjects", type=int, nargs="+", default=[120], help="first n subjects (max 120)"
    )
    parser.add_argument("--methods", nargs="+", default=["focei"], choices=pmx.estimation.METHODS)
    parser.add_argument(
        "--derivative",
        choices=["default", "direct"],
        default="default",
        help="ODE derivative: the default forward-sensitivity rule, or diffrax.DirectAdjoint",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "fit_ode.json", help="JSON file to write"
    )
    args = parser.parse_args(argv)
    info = machine()
    print(
        f"1-cmt IV bolus, Michaelis-Menten ODE, Bolus_1CPTMM SD == 1; jax "
        f"{info['jax_version']} on {info['backend']} ({info['device_kind']}, "
        f"{info['cpu_count']} CPUs, load {info['load_average'][0]:.1f})"
    )
    rows = []
    report = dict(
        benchmark="fit_ode",
        design=dict(
            data="Bolus_1CPTMM.csv, SD == 1 (single dose, 19 samples/subject)",
            dynamics="pmx.pk.OneCompartmentMM, Tsit5, rtol 1e-8, atol 1e-10",
            derivative=(
                "diffrax.DirectAdjoint for focei/laplace"
                if args.derivative == "direct"
                else "pmx_jax's forward-sensitivity rule"
            ),
            truth=TRUTH,
            initial_estimates=INITIAL,
        ),
        timing_notes=(
            "compile_s: JAX compile time during a warm-up fit (max_iterations=1); "
            "fit_s: wall time of the full fit after it"
        ),
        machine=info,
        results=rows,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for n_subjects in args.subjects:
        data = pmx.read_nonmem(single_dose_table(n_subjects))
        for method in args.methods:
            print(f"  {method} on {data.n_subjects} subjects ...", flush=True)
            model = mm_model(method, args.derivative)
            prepared = pmx.likelihood.prepare(model, data)
            row = dict(n_subjects=data.n_subjects, method=method, load_average_before=_load())
            row.update(time_fit(model, prepared, method))
            row["load_average_after"] = _load()
            rows.append(row)
            truth = " ".join(
                f"{k}={v:.4g}({TRUTH['omega' if k.startswith('omega') else k]:g})"
                for k, v in row["estimates"].items()
            )
            print(f"  {method}: {row['message']}; estimate(truth): {truth}", flush=True)
            info["load_average"] = _load()
            args.output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        print(_format_row(row))
    print("times in s; compile: JAX compilation (warm-up fit); fit: full fit after compile")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
