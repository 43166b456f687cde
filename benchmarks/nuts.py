"""NUTS benchmark: a multiple-dose one-compartment oral population model.

The design: 120 subjects, 100 mg once daily for 7 days; samples 0.5, 1, 2, 4
and 12 h after each of the first six doses and 0.5, 1, 2, 4, 8, 12, 24, 36 and
48 h after the last (39 per subject).  Log-normal IIV on KA, CL and V with a
full OMEGA block (correlations 0.2 KA-V, 0.5 CL-V), exponential (log-normal)
residual error, and observations below LLOQ = 0.25 mg/L reported as censored
(CENS = 1, M3 likelihood).  Truth: KA 1 /h, CL 4 L/h, V 40 L, omega^2 0.16 / 0.09
/ 0.09, residual SD 0.15 on the log scale.

``pmx.sample`` runs with its defaults (chains started from a FOCEI fit with
jitter, LKJ(2) prior on the correlation matrix, dense mass matrix for the
population parameters): 4 chains x 500 warmup + 1,000 draws.  Reported:

- *fit*: the starting FOCEI fit (compilation included), *warmup* (NUTS
  compilation included) and *sampling* wall times;
- *compile*: the compilation time JAX reports during NUTS (warmup and
  sampling are run as two phases to time them, so the sampler compiles twice;
  ``--one-phase`` runs them as one, as ``pmx.sample`` does by default, and
  its compile time is then that of a plain ``pmx.sample``);
- per population parameter: posterior mean, truth, R-hat, bulk ESS and bulk ESS
  per second over warmup + sampling (``ess_per_s``) and over the starting fit +
  warmup + sampling (``ess_per_s_all``);
- divergences, and whether any chain is trapped in another mode (a chain
  whose mean of a THETA lies more than 4 posterior SDs from the others').

    python benchmarks/nuts.py                        # the benchmark (about 10 min on 2 cores)
    python benchmarks/nuts.py --warmup 200 --samples 200 --chains 2   # a quick look

Results are printed and written to ``benchmarks/results/nuts.json``.  The
target on a 2-core CPU: no trapped chain, every R-hat < 1.01 and at least 1.0
bulk ESS per second (warmup + sampling) for the worst population parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine  # noqa: E402

os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx  # noqa: E402

LLOQ = 0.25
TRUTH = dict(
    tka=np.log(1.0),
    tcl=np.log(4.0),
    tv=np.log(40.0),
    sd=0.15,
)
# KA, CL, V: SDs 0.4, 0.3, 0.3; corr(KA, V) 0.2, corr(CL, V) 0.5
_SD = np.array([0.4, 0.3, 0.3])
_CORR = np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.5], [0.2, 0.5, 1.0]])
TRUE_OMEGA = _CORR * np.outer(_SD, _SD)


class OralMultipleDose(pmx.Model):
    """One compartment, first-order absorption, correlated log-normal IIV,
    log-normal residual error."""

    tka: pmx.Theta = pmx.theta(0.0)
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.5)
    sd: pmx.Theta = pmx.theta(0.3, lower=0.0)
    iiv: pmx.Omega = pmx.omega_block(("ka", "cl", "v"), [0.2, 0.0, 0.2, 0.0, 0.05, 0.2])
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Exponential(amounts.central / p["v"], self.sd)


def design(n_subjects: int) -> pd.DataFrame:
    """Dose and sampling records of the benchmark (DV empty)."""
    rows = []
    first = [0.5, 1, 2, 4, 12]
    last = [0.5, 1, 2, 4, 8, 12, 24, 36, 48]
    for i in range(1, n_subjects + 1):
        for day in range(7):
            t0 = 24.0 * day
            rows.append(dict(ID=i, TIME=t0, AMT=100.0, EVID=1, MDV=1, DV=0.0, CMT=1))
            for dt in first if day < 6 else last:
                rows.append(dict(ID=i, TIME=t0 + dt, AMT=0.0, EVID=0, MDV=0, DV=0.0, CMT=2))
    return pd.DataFrame(rows)


def simulate_data(n_subjects: int = 120, seed: int = 2026) -> pd.DataFrame:
    """The benchmark dataset, with CENS = 1 and DV = LLOQ below LLOQ."""
    table = design(n_subjects)
    truth = OralMultipleDose().with_values(**TRUTH, iiv=TRUE_OMEGA)
    sim = pmx.simulate(truth, table, key=jax.random.PRNGKey(seed))
    frame = sim.to_frame(observations_only=False)
    table["DV"] = np.where(table.EVID == 0, frame["DV"].to_numpy(), 0.0)
    below = (table.EVID == 0) & (table.DV < LLOQ)
    table["CENS"] = below.astype(int)
    table.loc[below, "DV"] = LLOQ
    return table


class _CompileClock:
    """Seconds JAX reports as compilation while active."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, seconds, **_):
        if event == "/jax/compilation_cache/compile_time_saved_sec":
            return
        if event in (
            "/jax/core/compile/backend_compile_duration",
            "/jax/core/compile/jaxpr_trace_duration",
            "/jax/core/compile/jaxpr_to_mlir_module_duration",
        ):
            self.seconds += seconds


def trapped_chains(result: pmx.bayes.SampleResult, names) -> list[int]:
    """Chains whose mean of some THETA is > 4 posterior SDs from the others' mean."""
    trapped = set()
    for name in names:
        x = result.parameter(name)
        for c in range(x.shape[0]):
            others = np.delete(x, c, axis=0)
            if abs(x[c].mean() - others.mean()) > 4 * others.std():
                trapped.add(c)
    return sorted(trapped)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--parameterization", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--one-phase",
        action="store_true",
        help="run warmup and sampling as one phase (pmx.sample's default): the "
        "sampler compiles once, and its compile time is pmx.sample's",
    )
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "nuts.json"))
    args = parser.parse_args(argv)

    data = pmx.read_nonmem(simulate_data(args.subjects))
    n_cens = int(np.sum(data.records["cens"].to_numpy() != 0)) if "cens" in data.records else None
    print(f"{data.n_subjects} subjects, {data.n_observations} observations, {n_cens} below LLOQ")
    clock = _CompileClock()
    result = pmx.sample(
        OralMultipleDose(),
        data,
        n_chains=args.chains,
        n_warmup=args.warmup,
        n_samples=args.samples,
        seed=args.seed,
        parameterization=args.parameterization,
        progress=False,
        time_phases=not args.one_phase,
    )
    t = result.timings
    nuts_s = t["nuts"]
    summary = result.summary()
    truth = dict(TRUTH)
    for i, a in enumerate(("ka", "cl", "v")):
        for j, b in enumerate(("ka", "cl", "v")[: i + 1]):
            name = f"iiv.{a}" if i == j else f"iiv.{b},{a}"
            truth[name] = TRUE_OMEGA[i, j]
    summary["truth"] = [truth.get(n, np.nan) for n in summary.index]
    summary["ess_per_s"] = summary["ess_bulk"] / nuts_s
    summary["ess_per_s_all"] = summary["ess_bulk"] / (nuts_s + t["fit"])
    trapped = trapped_chains(result, ["tka", "tcl", "tv", "sd"])
    print(result)
    print()
    with pd.option_context("display.width", 140, "display.precision", 4):
        print(summary[["mean", "truth", "sd", "rhat", "ess_bulk", "ess_per_s", "ess_per_s_all"]])
    phases = (
        f"NUTS {nuts_s:.1f} s in one phase"
        if args.one_phase
        else f"warmup {t['warmup']:.1f} s, sampling {t['sampling']:.1f} s"
    )
    print(
        f"\nstarting fit {t['fit']:.1f} s, {phases} "
        f"(JAX compilation {t['compile']:.1f} s during NUTS, "
        f"{clock.seconds:.1f} s in all); divergences {result.n_divergent}; "
        f"trapped chains {trapped or 'none'}"
    )
    worst = summary["ess_per_s"].min()
    print(
        f"worst ESS/s {worst:.2f} (target >= 1.0), max R-hat {summary['rhat'].max():.4f} "
        f"(target < 1.01), parameterization {result.settings['parameterization']}"
    )
    record = dict(
        machine=machine(),
        settings=result.settings | dict(n_subjects=args.subjects),
        n_observations=int(data.n_observations),
        n_censored=n_cens,
        timings=t | dict(compile_total=clock.seconds),
        divergences=result.n_divergent,
        mean_tree_steps=float(result.num_steps.mean()),
        trapped_chains=trapped,
        summary=summary.reset_index().to_dict(orient="records"),
        worst_ess_per_s=float(worst),
        max_rhat=float(summary["rhat"].max()),
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2, default=float))
    return record


if __name__ == "__main__":
    main()
