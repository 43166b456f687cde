"""VPC benchmark: 1,000 replicates of a 1,000-subject dataset (10^6 virtual subjects).

The dataset: 1,000 subjects simulated from a one-compartment oral model
(100 mg once at t = 0; 10 samples at 0.5, 1, 2, 3, 4, 6, 8, 12, 24 and 36 h;
log-normal IIV on ka, CL and V; proportional error, CV 10%).  The VPC
(:func:`pmx_jax.diagnostics._vpc.vpc`, default auto binning: one bin per
nominal time; 5th/50th/95th percentiles with 95% intervals) simulates the
design 1,000 times in one batched ``pmx.simulate`` call and summarises the
replicates per bin.

Timings: *first call* is the wall time of the first ``vpc`` (tracing, XLA
compilation, simulation and summary); *compile* is the part of it JAX reports
as compilation; *run* is the best of ``--repeats`` further calls with other
seeds, split into the simulation (``simulate``) and the binning and
percentiles (``summary``).  ``--pcvpc`` times a prediction-corrected VPC as
well.  Results are printed and written, with the machine's description, to
``benchmarks/results/vpc.json``.

    python benchmarks/vpc.py
    python benchmarks/vpc.py --chunk-size 4096 --repeats 1
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
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate import machine  # noqa: E402

os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx  # noqa: E402
from pmx_jax.diagnostics import _npde, _vpc  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_TIMES = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 24.0, 36.0)


class OralPK(pmx.Model):
    """One compartment, first-order absorption (ka 1/h, CL L/h, V L; mg/L)."""

    tka: pmx.Theta = pmx.theta(np.log(1.0))
    tcl: pmx.Theta = pmx.theta(np.log(1.0))
    tv: pmx.Theta = pmx.theta(np.log(20.0))
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


def dataset(n_subjects: int) -> pmx.Dataset:
    """The design with DV simulated from the model (seed 12345)."""
    ids = np.repeat(np.arange(1, n_subjects + 1), 1 + len(SAMPLE_TIMES))
    times = np.tile((0.0, *SAMPLE_TIMES), n_subjects)
    is_dose = np.tile([True] + [False] * len(SAMPLE_TIMES), n_subjects)
    table = pd.DataFrame(
        {
            "ID": ids,
            "TIME": times,
            "AMT": np.where(is_dose, 100.0, 0.0),
            "DV": np.where(is_dose, np.nan, 0.0),
            "EVID": is_dose.astype(int),
            "CMT": 1,
        }
    )
    sims = pmx.simulate(OralPK(), pmx.read_nonmem(table), key=jax.random.PRNGKey(12345))
    table.loc[~is_dose, "DV"] = sims.to_frame().DV.to_numpy()
    return pmx.read_nonmem(table)


_compile_seconds = [0.0]


def _count_compile_time(event: str, seconds: float, **_) -> None:
    if event.startswith("/jax/core/compile/"):
        _compile_seconds[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile_time)


class _Timed:
    """Wraps the replicate simulation to time it apart from the summary."""

    def __init__(self):
        self.seconds = 0.0
        self._inner = _npde.simulate_replicates

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def time_vpc(data, *, n_sim, chunk_size, repeats, pred_corrected):
    timer = _Timed()
    _vpc.simulate_replicates = timer

    def call(seed):
        timer.seconds = 0.0
        start = time.perf_counter()
        result = _vpc.vpc(
            OralPK(),
            data,
            n_sim=n_sim,
            seed=seed,
            chunk_size=chunk_size,
            pred_corrected=pred_corrected,
        )
        return time.perf_counter() - start, timer.seconds, result

    # The dataset was simulated with the same model and design shapes: drop
    # the compiled functions so that the first call's compilation is counted.
    jax.clear_caches()
    _compile_seconds[0] = 0.0
    first, _, result = call(0)
    compile_seconds = _compile_seconds[0]
    runs = [call(seed) for seed in range(1, repeats + 1)]
    _vpc.simulate_replicates = timer._inner
    return first, compile_seconds, runs, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-subjects", type=int, default=1000)
    parser.add_argument("--n-sim", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pcvpc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--output", type=Path, default=RESULTS / "vpc.json")
    args = parser.parse_args(argv)

    info = machine()
    data = dataset(args.n_subjects)
    print(
        f"VPC: {args.n_sim} replicates x {args.n_subjects} subjects x {len(SAMPLE_TIMES)} "
        f"samples, chunk {args.chunk_size or 'default'}; jax {info['jax_version']} on "
        f"{info['backend']} ({info['device_kind']}, {info['cpu_count']} CPUs, "
        f"load {info['load_average'][0]:.1f})"
    )
    header = (
        f"{'kind':<6} {'first call':>11} {'compile':>9} {'run (best)':>11} "
        f"{'simulate':>9} {'summary':>8} {'virtual subj/s':>15}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for kind in ("VPC", "pcVPC") if args.pcvpc else ("VPC",):
        first, compile_seconds, runs, result = time_vpc(
            data,
            n_sim=args.n_sim,
            chunk_size=args.chunk_size,
            repeats=args.repeats,
            pred_corrected=kind == "pcVPC",
        )
        best, sim_seconds, _ = min(runs, key=lambda r: r[0])
        table = result.to_frame()
        inside = (table.OBSERVED >= table.SIM_LOWER) & (table.OBSERVED <= table.SIM_UPPER)
        n_virtual = args.n_sim * args.n_subjects
        rows.append(
            dict(
                kind=kind,
                first_call_s=first,
                compile_s=compile_seconds,
                run_best_s=best,
                run_simulate_s=sim_seconds,
                run_summary_s=best - sim_seconds,
                run_all_s=[r[0] for r in runs],
                virtual_subjects_per_s=n_virtual / sim_seconds,
                n_bins=int(table.BIN.nunique()),
                percentiles_inside_bands=f"{int(inside.sum())}/{len(table)}",
            )
        )
        print(
            f"{kind:<6} {first:>10.2f}s {compile_seconds:>8.2f}s {best:>10.2f}s "
            f"{sim_seconds:>8.2f}s {best - sim_seconds:>7.2f}s {n_virtual / sim_seconds:>15,.0f}"
        )
    report = dict(
        benchmark="vpc",
        design=dict(
            n_subjects=args.n_subjects,
            doses="100 mg oral once",
            samples=list(SAMPLE_TIMES),
            n_sim=args.n_sim,
            virtual_subjects=args.n_sim * args.n_subjects,
        ),
        chunk_size=args.chunk_size,
        repeats=args.repeats,
        machine=info,
        results=rows,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
