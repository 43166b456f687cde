"""One script for a machine with an accelerator: FOCEI evaluations and fits at
10^5 and 10^6 subjects, simulation of 10^6 subjects x 701 records, and the
cost of a NUTS gradient, written to one JSON file.

It needs only what such a machine already has (JAX with its accelerator
plugin, equinox, diffrax, optax, numpyro, pandas) and this checkout on
``PYTHONPATH``; nothing is downloaded and all data are simulated.  It keeps to
a time budget (``--budget``, 450 s by default, for a machine lent for 8
minutes): every section says how long it needs at least and is skipped, and
recorded as skipped, when less time is left; the JSON is rewritten after
every section, so whatever ran is kept if the machine is taken back.

Sections, in order (sizes by backend; ``--sizes`` and ``--simulate`` change them):

- ``simulate``: ``benchmarks/simulate.py``'s design (one-compartment oral, 28
  daily doses, hourly samples: 701 records per subject), closed form, float64
  and float32; the first call (compilation included) and a second one, each
  chunk reduced on arrival (``on_chunk``) to the mean DV per record, so host
  memory stays small; accelerator 10^6 subjects, CPU 10^4.
- ``focei_eval`` per size: one FOCEI objective + gradient + per-subject
  gradients, as the fit evaluates it (``Engine.at``): the first call
  (compilation reported apart), then the best of three warm-started calls and
  one from ``b = 0``; accelerator 10^5 and 10^6 subjects, CPU 10^3 and 10^4.
- ``focei_fit`` per size: ``pmx.fit(..., "focei", covariance=None)`` from
  estimates 20-100% off (``benchmarks/fit.py``'s model and design), global EBE
  search (the default); wall time, compilation in it, iterations,
  evaluations, OFV and the estimates next to the truth.
- ``nuts``: ``benchmarks/nuts.py``'s 120-subject model (full OMEGA block, M3
  censoring), a short ``pmx.sample`` (4 chains x (150 + 150) by default), and
  the per-gradient cost of its potential, timed on its own (jitted
  ``value_and_grad`` at a posterior draw, best of 20 calls).

The populations above 10^5 subjects are the simulated 10^5-subject population
repeated (``Prepared`` arrays tiled): the cost of an evaluation is that of as
many distinct subjects, and a fit of k copies has the estimates of the fit of
one (its objective is k times the other), which the JSON lets one check.

    PYTHONPATH=. python benchmarks/device_suite.py --output $OUT/device_suite.json
    python benchmarks/device_suite.py --sizes 1000 10000 --no-nuts     # on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
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
from pmx_jax.estimation._engine import Engine  # noqa: E402
from pmx_jax.likelihood._problem import make_problem  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASE_SUBJECTS = 100_000  # larger populations repeat this one (--base)


class Suite:
    """Runs sections within the budget and keeps the JSON up to date."""

    def __init__(self, budget: float, output: Path, argv: list[str]):
        self.start = time.perf_counter()
        self.budget = budget
        self.output = output
        self.report = dict(
            benchmark="device_suite",
            command=" ".join(["python", "benchmarks/device_suite.py", *argv]),
            machine=machine(),
            budget_s=budget,
            sections=[],
        )

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def run(self, name: str, needs_s: float, function, **labels) -> dict | None:
        entry = dict(section=name, **labels, needs_s=needs_s)
        if self.left() < needs_s:
            entry.update(status="skipped", reason=f"{self.left():.0f} s of the budget left")
            print(f"{name} {labels or ''}: skipped ({entry['reason']})", flush=True)
            self._record(entry)
            return None
        print(f"{name} {labels or ''} ...", flush=True)
        tic = time.perf_counter()
        try:
            entry.update(function())
            entry["status"] = "ok"
        except Exception as error:  # recorded, and the suite goes on
            entry.update(status="error", error=repr(error), traceback=traceback.format_exc())
            print(f"  failed: {error!r}", flush=True)
        entry["wall_s"] = time.perf_counter() - tic
        entry["load_average"] = load_average()
        self._record(entry)
        shown = {
            k: v for k, v in entry.items() if not isinstance(v, dict | list) and k != "traceback"
        }
        print("  " + ", ".join(f"{k}={_short(v)}" for k, v in shown.items()), flush=True)
        return entry

    def _record(self, entry: dict) -> None:
        self.report["sections"].append(entry)
        self.report["elapsed_s"] = time.perf_counter() - self.start
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.output.write_text(json.dumps(self.report, indent=2, default=_plain) + "\n")


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# -- populations ---------------------------------------------------------------------


_POPULATIONS: dict[int, pmx.likelihood.Prepared] = {}


def population(n_subjects: int, base: int):
    """``benchmarks/fit.py``'s simulated population of ``n_subjects``, made
    ready for its model; above ``base`` subjects, the ``base``-subject one repeated."""
    if n_subjects in _POPULATIONS:
        return _POPULATIONS[n_subjects]
    if n_subjects > base and n_subjects % base:
        raise ValueError(f"sizes above {base:,} must be multiples of it")
    base = min(n_subjects, base)
    if base not in _POPULATIONS:
        data = pmx.read_nonmem(simulate_population(base, seed=1))
        _POPULATIONS[base] = pmx.likelihood.prepare(initial_model(), data)
    copies = n_subjects // base
    prepared = _POPULATIONS[base]
    if copies > 1:
        prepared = jax.tree_util.tree_map(
            lambda x: np.tile(np.asarray(x), (copies,) + (1,) * (np.ndim(x) - 1)), prepared
        )
    _POPULATIONS[n_subjects] = prepared
    return prepared


# -- sections ------------------------------------------------------------------------


def simulate_section(n_subjects: int, dtype: str) -> dict:
    from simulate import OralPK, design

    regimen = design()
    model = OralPK()
    sums: dict[str, np.ndarray] = {}

    def keep_mean(first, chunk):
        dv = chunk[1]
        sums["dv"] = sums.get("dv", 0.0) + np.sum(dv, axis=0, dtype=np.float64)

    def call(seed):
        sums.clear()
        pmx.simulate(
            model, regimen, key=jax.random.key(seed), n_subjects=n_subjects, dtype=dtype,
            on_chunk=keep_mean,
        )  # fmt: skip
        return sums["dv"] / n_subjects

    mean_dv, first_s, compile_s = _compiled_during(call, 0)
    _, second_s, second_compile_s = _compiled_during(call, 1)
    n_records = len(mean_dv)
    return dict(
        n_subjects=n_subjects,
        n_records=n_records,
        dtype=dtype,
        first_s=first_s,
        compile_s=compile_s,
        run_s=second_s,
        run_compile_s=second_compile_s,
        subject_records_per_s=n_subjects * n_records / second_s,
        mean_dv_at_24h=float(mean_dv[24]),
    )


def focei_eval_section(n_subjects: int, base: int) -> dict:
    model = initial_model()
    tic = time.perf_counter()
    prepared = population(n_subjects, base)
    problem = make_problem(model, prepared, "focei")
    engine = Engine(model, problem, 100, 1e-12)
    setup_s = time.perf_counter() - tic
    first, first_s, compile_s = _compiled_during(engine.at, engine.y0, engine.zeros())
    warm = [engine.at(engine.y0, first.result.ebes) for _ in range(3)]
    cold = engine.at(engine.y0, engine.zeros())
    best = min(warm, key=lambda e: e.seconds)
    return dict(
        n_subjects=n_subjects,
        chunk=problem.chunk,
        n_chunks=problem.n_chunks,
        setup_s=setup_s,
        first_s=first_s,
        compile_s=compile_s,
        eval_s=best.seconds,
        eval_from_zero_s=cold.seconds,
        ofv=best.ofv,
        ebe_steps_warm=best.steps,
        ebe_steps_from_zero=cold.steps,
        max_abs_grad=float(np.max(np.abs(best.grad))),
    )


def focei_fit_section(n_subjects: int, base: int) -> dict:
    prepared = population(n_subjects, base)
    result, fit_s, compile_s = _compiled_during(
        pmx.fit, initial_model(), prepared, "focei", covariance=None, progress=False
    )
    trace = result.trace
    searches = trace[trace["event"].isin(["initial", "check"])]
    return dict(
        n_subjects=n_subjects,
        fit_s=fit_s,
        compile_s=compile_s,
        global_search_s=float(searches["seconds"].sum()),
        ofv_per_subject=result.ofv / n_subjects,
        **fit_summary(result),
        truth=TRUTH,
    )


def nuts_section(chains: int, warmup: int, samples: int) -> dict:
    from nuts import OralMultipleDose, simulate_data

    data = pmx.read_nonmem(simulate_data(120))
    result, wall_s, compile_s = _compiled_during(
        pmx.sample, OralMultipleDose(), data, n_chains=chains, n_warmup=warmup,
        n_samples=samples, seed=0, progress=False,
    )  # fmt: skip
    posterior = result.posterior
    point = dict(pop=jnp.asarray(result.pop[0, -1]), eta=jnp.asarray(result.latent[0, -1]))
    gradient = jax.jit(jax.value_and_grad(posterior.potential))
    jax.block_until_ready(gradient(point))
    times = []
    for _ in range(20):
        tic = time.perf_counter()
        jax.block_until_ready(gradient(point))
        times.append(time.perf_counter() - tic)
    summary = result.summary()
    return dict(
        n_chains=chains,
        n_warmup=warmup,
        n_samples=samples,
        wall_s=wall_s,
        compile_s=compile_s,
        timings=result.timings,
        chain_method=result.settings.get("chain_method"),
        mean_tree_steps=float(result.num_steps.mean()),
        divergences=int(result.n_divergent),
        max_rhat=float(summary["rhat"].max()),
        gradient_s=min(times),
        gradient_median_s=float(np.median(times)),
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    accelerator = jax.default_backend() != "cpu"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000] if accelerator else [1_000, 10_000],
        help="FOCEI population sizes (above 100,000: multiples of it)",
    )
    parser.add_argument(
        "--simulate", type=int, default=1_000_000 if accelerator else 10_000,
        help="subjects to simulate (701 records each)",
    )  # fmt: skip
    parser.add_argument("--no-nuts", action="store_true", help="skip the NUTS section")
    parser.add_argument("--nuts", type=int, nargs=3, default=[4, 150, 150],
                        metavar=("CHAINS", "WARMUP", "SAMPLES"))  # fmt: skip
    parser.add_argument(
        "--base", type=int, default=BASE_SUBJECTS,
        help="distinct simulated subjects; larger sizes repeat them (multiples only)",
    )  # fmt: skip
    parser.add_argument("--budget", type=float, default=450.0, help="seconds in all")
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / f"device_suite_{jax.default_backend()}.json",
        help="JSON file (rewritten after every section)",
    )
    args = parser.parse_args(argv)
    suite = Suite(args.budget, args.output, argv)
    info = suite.report["machine"]
    print(
        f"device suite: {info['backend']} ({info['device_kind']} x {info['n_devices']}), "
        f"jax {info['jax_version']}, {info['cpu_count']} CPUs, budget {args.budget:.0f} s",
        flush=True,
    )
    small, *large = sorted(args.sizes)
    suite.run("simulate", 20, lambda: simulate_section(args.simulate, "float64"), dtype="float64")
    suite.run("simulate", 20, lambda: simulate_section(args.simulate, "float32"), dtype="float32")
    for n in sorted(args.sizes):
        suite.run("focei_eval", 40, lambda n=n: focei_eval_section(n, args.base), n_subjects=n)
    suite.run("focei_fit", 60, lambda: focei_fit_section(small, args.base), n_subjects=small)
    if not args.no_nuts:
        chains, warmup, samples = args.nuts
        suite.run("nuts", 150, lambda: nuts_section(chains, warmup, samples))
    for n in large:
        suite.run("focei_fit", 90, lambda n=n: focei_fit_section(n, args.base), n_subjects=n)
    print(f"written {args.output} ({suite.report['elapsed_s']:.0f} s)", flush=True)
    return suite.report


if __name__ == "__main__":
    main()
