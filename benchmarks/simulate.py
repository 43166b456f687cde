"""Population simulation benchmark: 10,000 subjects, one-compartment oral model.

The design: 28 daily oral doses of 100 mg and hourly sampling for four weeks
(673 samples, t = 0 to 672 h; 701 records per subject once the additional doses
are expanded), log-normal IIV on ka, CL and V and a proportional residual error.
Both the closed form (``pmx.pk.OneCompartmentOral``, NONMEM ADVAN2) and the same
system as an ODE (``pmx.pk.OneCompartmentOralODE``) are timed.

Compile and run are reported separately: *first call* is the wall time of the
first ``pmx.simulate`` (tracing, XLA compilation and one run); *compile* is the
part of it JAX reports as compilation (tracing, lowering, XLA); *run* is the
best of ``--repeats`` further calls with a fresh random key (all compiled).
Results are printed as a table and written, with the machine's description, to
``benchmarks/results/simulate.json`` (``simulate_float32.json`` with
``--float32``); ``chunk_size`` null there means ``pmx.simulate``'s default.

    python benchmarks/simulate.py                 # float64, closed form + ODE
    python benchmarks/simulate.py --float32 --no-ode --chunk-size 512

For reference, mrgsolve took about 10.9 s for this simulation on its
maintainer's 2018 machine; the project's target on a 2-core CPU is < 0.5 s for
the closed form once compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine  # noqa: E402

os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class OralPK(pmx.Model):
    """One compartment, first-order absorption; log-normal IIV on ka, CL, V;
    concentration in mg/L with a proportional residual error (CV 10%)."""

    tka: pmx.Theta = pmx.theta(np.log(1.0))  # 1/h
    tcl: pmx.Theta = pmx.theta(np.log(1.0))  # L/h
    tv: pmx.Theta = pmx.theta(np.log(20.0))  # L
    prop_cv: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.09, cl=0.09, v=0.04)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop_cv)


class OralPKODE(OralPK):
    """The same model integrated numerically (diffrax, default solver settings)."""

    dynamics = pmx.pk.OneCompartmentOralODE()


def design() -> pmx.Regimen:
    return pmx.Regimen.oral(100.0, every=24, n=28).sample(range(0, 673))


def numpy_loop(n_subjects: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The peer: this design hand-coded in numpy, vectorised over subjects.

    It knows what a general engine cannot assume: every interval is one hour,
    so each subject's one-hour transition (depot and central decay, depot to
    central) is computed once, and the loop over the 673 hours is three
    multiply-adds per subject.  Returns (IPRED, DV), each (n_subjects, 673).
    """
    rng = np.random.default_rng(seed)
    eta = rng.standard_normal((n_subjects, 3)) * np.sqrt([0.09, 0.09, 0.04])
    ka = np.exp(eta[:, 0])
    v = 20.0 * np.exp(eta[:, 2])
    k = np.exp(eta[:, 1]) / v
    depot_left, central_left = np.exp(-ka), np.exp(-k)
    depot_to_central = ka * (central_left - depot_left) / (ka - k)
    depot, central = np.zeros(n_subjects), np.zeros(n_subjects)
    ipred = np.empty((n_subjects, 673))
    for hour in range(673):
        if hour % 24 == 0 and hour < 28 * 24:
            depot += 100.0
        ipred[:, hour] = central / v
        depot, central = depot * depot_left, central * central_left + depot * depot_to_central
    dv = ipred * (1.0 + 0.1 * rng.standard_normal(ipred.shape))
    return ipred, dv


def time_numpy_loop(n_subjects: int, repeats: int) -> tuple[list[float], np.ndarray]:
    runs = []
    for seed in range(repeats + 1):
        start = time.perf_counter()
        ipred, _ = numpy_loop(n_subjects, seed)
        runs.append(time.perf_counter() - start)
    return runs[1:], ipred


# JAX reports how long each compilation phase took (tracing to a jaxpr, lowering
# to StableHLO, XLA's compilation); their sum over the first call is its compile
# time.  Measured directly because "first call minus a later call" is unreliable
# when a run takes minutes on a shared machine.
_compile_seconds = [0.0]


def _count_compile_time(event: str, seconds: float, **_) -> None:
    if event.startswith("/jax/core/compile/"):
        _compile_seconds[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile_time)


def time_simulation(model, *, n_subjects, chunk_size, dtype, repeats):
    """Wall times (s) of the first call, of its compilation phases, and of
    ``repeats`` more calls; and the result of the last call (a sanity check)."""
    regimen = design()

    def call(seed):
        start = time.perf_counter()
        result = pmx.simulate(
            model,
            regimen,
            key=jax.random.key(seed),
            n_subjects=n_subjects,
            chunk_size=chunk_size,
            dtype=dtype,
        )
        return time.perf_counter() - start, result

    _compile_seconds[0] = 0.0
    first, result = call(0)
    compile_seconds = _compile_seconds[0]
    runs = []
    for seed in range(1, repeats + 1):
        elapsed, result = call(seed)
        runs.append(elapsed)
    return first, compile_seconds, runs, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-subjects", type=int, default=10_000)
    parser.add_argument("--float32", action="store_true", help="simulate in float32")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="subjects per compiled batch (default: pmx.simulate's)",
    )
    parser.add_argument(
        "--ode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the ODE model (default: yes)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed calls after the first; the best is reported"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON file to write (default: benchmarks/results/simulate.json, or "
        "simulate_float32.json with --float32)",
    )
    args = parser.parse_args(argv)

    dtype = jnp.float32 if args.float32 else jnp.float64
    models = {"closed form": OralPK()}
    if args.ode:
        models["ODE"] = OralPKODE()

    n_records = pmx.read_nonmem(design().to_table()).subjects().time.shape[1]
    info = machine()
    print(
        f"{args.n_subjects} subjects x {n_records} records (28 doses, 673 samples), "
        f"{np.dtype(dtype).name}, chunk {args.chunk_size or 'default'}; "
        f"jax {info['jax_version']} on {info['backend']} ({info['device_kind']}, "
        f"{info['cpu_count']} CPUs, load {info['load_average'][0]:.1f})"
    )
    header = (
        f"{'model':<12} {'first call':>11} {'compile':>9} {'run (best)':>11} {'subjects/s':>12}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name, model in models.items():
        first, compile_seconds, runs, result = time_simulation(
            model,
            n_subjects=args.n_subjects,
            chunk_size=args.chunk_size,
            dtype=dtype,
            repeats=args.repeats,
        )
        best = min(runs)
        rows.append(
            dict(
                model=name,
                dynamics=type(model.dynamics).__name__,
                first_call_s=first,
                compile_s=compile_seconds,
                run_best_s=best,
                run_all_s=runs,
                subjects_per_s=args.n_subjects / best,
                output_dtype=str(result.dv.dtype),
                all_finite=bool(np.all(result.ok)),
                mean_ipred_at_672h=float(result.ipred[:, -1].mean()),
            )
        )
        print(
            f"{name:<12} {first:>10.2f}s {compile_seconds:>8.2f}s {best:>10.3f}s "
            f"{args.n_subjects / best:>12,.0f}"
        )
    runs, ipred = time_numpy_loop(args.n_subjects, args.repeats)
    best = min(runs)
    rows.append(
        dict(
            model="numpy loop",
            dynamics="hand-coded one-hour transitions (float64)",
            run_best_s=best,
            run_all_s=runs,
            subjects_per_s=args.n_subjects / best,
            mean_ipred_at_672h=float(ipred[:, -1].mean()),
        )
    )
    print(f"{'numpy loop':<12} {'':>11} {'':>9} {best:>10.3f}s {args.n_subjects / best:>12,.0f}")
    report = dict(
        benchmark="simulate",
        design=dict(
            n_subjects=args.n_subjects,
            doses="100 mg oral every 24 h x 28",
            samples="hourly, t = 0..672 h (673)",
            records_per_subject=n_records,
        ),
        float_dtype=np.dtype(dtype).name,
        chunk_size=args.chunk_size,
        repeats=args.repeats,
        machine=info,
        results=rows,
    )
    output = args.output or RESULTS / ("simulate_float32.json" if args.float32 else "simulate.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {output}")


if __name__ == "__main__":
    main()
