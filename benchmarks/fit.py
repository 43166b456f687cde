"""Population fit benchmark: FOCEI and Laplace on simulated one-compartment oral data.

The design: one oral dose of 320 mg at t = 0 and 10 samples over 24 h (0.25,
0.5, 1, 2, 3.5, 5, 7, 9, 12, 24 h) per subject; populations of 100, 1,000 and
10,000 subjects (and 100,000 when JAX runs on an accelerator).  The model is the
theophylline model of ``pmx.library`` (log-normal IIV on ka, CL and V) with a
proportional residual error; data are simulated from the true values below and
every fit starts from initial estimates 20-50% off the truth.

What is reported, per population size and method:

- *compile*: the time JAX reports as compilation (tracing, lowering, XLA) during
  a warm-up ``pmx.fit(..., max_iterations=1)`` on the same data, which compiles
  everything the full fit runs (the fit's step compiles once per data shape);
- *fit*: wall time of the full ``pmx.fit`` after that warm-up (no compilation
  left; checked and reported as ``fit_compile_s``), with its number of
  accepted BFGS iterations, of objective+gradient evaluations (line-search
  trials included) and final OFV;
- *global*: the part of *fit* spent in the global EBE searches (from the
  fixed starts along OMEGA's principal axes) at every end point of the
  quasi-Newton search (``n_global`` of them; more than one when a global
  search found lower modes and the fit continued: ``restarts``);
- *eval*: one objective+gradient evaluation outside the fit (best of
  ``--repeats``): ``jax.value_and_grad`` of ``pmx.estimation.ofv(...).ofv`` with
  respect to the unconstrained parameter vector, jitted, at the initial
  estimates.  ``eval_s`` warm-starts the EBE search from the EBEs of that same
  point (the Newton search stops after one step: the cost of the kernel
  itself); ``eval_cold_s`` starts from zero EBEs.  Both use the local EBE
  search (``ebe_search="local"``), as the fit's iterations do.
  ``fit_s / n_evaluations`` (``per_eval_in_fit_s``) is the mean cost in
  the fit, driver and EBE warm starts from the last accepted point included.

The peer is R's ``nlme`` (``nlme(conc ~ SSfol(Dose, Time, lKe, lKa, lCl))``,
diagonal random effects on the three log parameters, proportional error by
``varPower(fixed = 1)``), run with ``Rscript`` on the same simulated data when R
and nlme are installed.  Only the ``nlme()`` call is timed (``nlme_s``; the
whole subprocess, R start-up and CSV reading included, is ``nlme_total_s``).
nlme maximises a different approximation (Lindstrom-Bates) of a differently
parametrised model (IIV on log ke rather than log V), so its log-likelihood is
not comparable to the OFV: only the times are compared, ``ratio = nlme_s /
fit_s`` (above 1: pmx_jax is faster, compile excluded; ``ratio_with_compile``
counts pmx_jax's compile time too).  nlme's estimates are printed as a sanity
check.

    python benchmarks/fit.py                              # 100, 1,000, 10,000; FOCEI, Laplace
    python benchmarks/fit.py --sizes 100 1000 --methods focei --no-r
    python benchmarks/fit.py --sizes 1000 10000 --methods focei --ebe-search local

Results are printed as a table and written, with the machine's description,
to ``benchmarks/results/fit.json`` (rewritten after every row).  The target on
the project's 2-core CPU: a 10,000-subject FOCEI fit in under 15 s after compile,
and faster than nlme.
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

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import load_average as _load  # noqa: E402
from _common import machine  # noqa: E402

os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

DOSE = 320.0  # mg, oral, at t = 0
SAMPLE_TIMES = (0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0, 24.0)  # h

# The truth the data are simulated from, and the initial estimates of every fit
# (ka 40% low, CL 40% high, V 30% low, CV and OMEGAs 50-100% off).
TRUTH = dict(ka=1.5, cl=2.7, v=32.0, prop_cv=0.15, omega_ka=0.3, omega_cl=0.1, omega_v=0.05)
INITIAL = dict(ka=0.9, cl=3.8, v=22.4, prop_cv=0.25, omega_ka=0.15, omega_cl=0.2, omega_v=0.1)


class OralPopPK(pmx.Model):
    """One compartment, first-order absorption (ADVAN2); ``ka``, ``CL``, ``V``
    log-normal with diagonal OMEGA; ``DV = C (1 + eps)``, CV ``prop_cv``."""

    tka: pmx.Theta = pmx.theta(np.log(TRUTH["ka"]))  # log 1/h
    tcl: pmx.Theta = pmx.theta(np.log(TRUTH["cl"]))  # log L/h
    tv: pmx.Theta = pmx.theta(np.log(TRUTH["v"]))  # log L
    prop_cv: pmx.Theta = pmx.theta(TRUTH["prop_cv"], lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=TRUTH["omega_ka"], cl=TRUTH["omega_cl"], v=TRUTH["omega_v"])
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop_cv)


def initial_model() -> OralPopPK:
    return OralPopPK(
        tka=pmx.theta(np.log(INITIAL["ka"])),
        tcl=pmx.theta(np.log(INITIAL["cl"])),
        tv=pmx.theta(np.log(INITIAL["v"])),
        prop_cv=pmx.theta(INITIAL["prop_cv"], lower=0.0),
        iiv=pmx.omega(ka=INITIAL["omega_ka"], cl=INITIAL["omega_cl"], v=INITIAL["omega_v"]),
    )


def simulate_population(n_subjects: int, seed: int) -> pd.DataFrame:
    """A NONMEM table (ID TIME AMT EVID CMT ... DV MDV) of ``n_subjects``
    simulated from the truth: one dose row and 10 samples per subject."""
    regimen = pmx.Regimen.oral(DOSE).sample(SAMPLE_TIMES)
    sims = pmx.simulate(OralPopPK(), regimen, key=jax.random.key(seed), n_subjects=n_subjects)
    observed = sims.to_frame()  # SIM_ID, TIME order, observations only
    template = regimen.to_table()
    table = pd.concat([template] * n_subjects, ignore_index=True)
    table["ID"] = np.repeat(np.arange(1, n_subjects + 1), len(template))
    is_obs = table["EVID"].to_numpy() == 0
    dv = table["DV"].to_numpy(dtype=float, copy=True)
    dv[is_obs] = observed["DV"].to_numpy()
    dv[~is_obs] = 0.0
    table["DV"] = dv
    return table


# JAX reports how long each compilation phase took (tracing to a jaxpr, lowering
# to StableHLO, XLA's compilation), as each one ends.  Phases nest (the trace of
# a jitted function called inside another is part of the outer trace), so the
# compile time of a call is the length of the union of those intervals, not
# their sum.
_compile_intervals: list[tuple[float, float]] = []


def _count_compile_time(event: str, seconds: float, **_) -> None:
    if event.startswith("/jax/core/compile/"):
        end = time.perf_counter()
        _compile_intervals.append((end - seconds, end))


jax.monitoring.register_event_duration_secs_listener(_count_compile_time)


def _union_length(intervals) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _compiled_during(function, *args, **kwargs):
    """``function(*args, **kwargs)``, its wall time and the compile time in it."""
    _compile_intervals.clear()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start, _union_length(_compile_intervals)


def time_evaluation(model, prepared, method: str, repeats: int) -> dict:
    """Objective+gradient evaluations outside the fit (see the module notes)."""
    y0, unravel = ravel_pytree(model.to_unconstrained())

    # ``prepared`` is closed over (a constant of the jitted function), as in
    # ``pmx.fit``: passed as an argument it would be traced and ``ofv`` would
    # have to assume censored records.
    @eqx.filter_jit
    def value_and_grad(y, ebe_init):
        def objective(y):
            result = pmx.estimation.ofv(
                model.from_unconstrained(unravel(y)),
                prepared,
                method,
                ebe_init=ebe_init,
                ebe_search="local",
            )
            return result.ofv, result.ebes

        return jax.value_and_grad(objective, has_aux=True)(y)

    zeros = jnp.zeros((prepared.subjects.n_subjects, len(model.eta_names)), y0.dtype)
    (_, ebes), _ = value_and_grad(y0, zeros)  # compiles
    jax.block_until_ready(ebes)
    warm, cold = [], []
    for _ in range(repeats):
        for start, times in ((ebes, warm), (zeros, cold)):
            _, seconds, _ = _compiled_during(
                lambda ebe_init: jax.block_until_ready(value_and_grad(y0, ebe_init)), start
            )
            times.append(seconds)
    return dict(eval_s=min(warm), eval_cold_s=min(cold))


FIT_OPTIONS: dict = {}


def time_fit(model, prepared, method: str) -> dict:
    """A warm-up fit (one iteration: compiles) and the timed full fit."""
    # No covariance step: only the minimisation is timed.
    _, warm_up_s, compile_s = _compiled_during(
        pmx.fit, model, prepared, method, max_iterations=1, covariance=None, **FIT_OPTIONS
    )
    result, fit_s, fit_compile_s = _compiled_during(
        pmx.fit, model, prepared, method, covariance=None, **FIT_OPTIONS
    )
    estimates = result.estimates()
    trace = result.trace
    global_rows = trace[trace["event"] == "check"]
    return dict(
        compile_s=compile_s,
        warm_up_s=warm_up_s,
        fit_s=fit_s,
        global_s=float(global_rows["seconds"].sum()),
        n_global=len(global_rows),
        restarts=result.restarts,
        status=result.status.name,
        fit_compile_s=fit_compile_s,
        iterations=result.iterations,
        n_evaluations=result.n_evaluations,
        per_eval_in_fit_s=fit_s / max(result.n_evaluations, 1),
        ofv=result.ofv,
        converged=result.converged,
        message=result.message,
        ebe_failures=int(np.sum(np.asarray(result.ebe_status) != 0)),
        estimates=dict(zip(estimates["parameter"], map(float, estimates["estimate"]), strict=True)),
    )


def fit_summary(result) -> dict:
    """Iterations, evaluations, OFV, convergence and the estimates on the
    scale of ``TRUTH`` of a fit of this benchmark's model."""
    estimates = result.estimates()
    values = dict(zip(estimates["parameter"], map(float, estimates["estimate"]), strict=True))
    return dict(
        iterations=result.iterations,
        n_evaluations=result.n_evaluations,
        ofv=result.ofv,
        converged=bool(result.converged),
        message=result.message,
        estimates=natural_scale(values),
    )


def natural_scale(estimates: dict) -> dict:
    """pmx_jax estimates on the scale of ``TRUTH`` (ka, CL, V, CV, OMEGAs)."""
    return dict(
        ka=np.exp(estimates["tka"]),
        cl=np.exp(estimates["tcl"]),
        v=np.exp(estimates["tv"]),
        prop_cv=estimates["prop_cv"],
        omega_ka=estimates["iiv.ka"],
        omega_cl=estimates["iiv.cl"],
        omega_v=estimates["iiv.v"],
    )


# -- the R nlme peer ------------------------------------------------------------------

_NLME_SCRIPT = r"""
suppressPackageStartupMessages(library(nlme))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d <- groupedData(conc ~ Time | Subject, data = d)
start <- c(lKe = as.numeric(args[2]), lKa = as.numeric(args[3]), lCl = as.numeric(args[4]))
t0 <- proc.time()[["elapsed"]]
fit <- tryCatch(
  nlme(conc ~ SSfol(Dose, Time, lKe, lKa, lCl), data = d,
       fixed = lKe + lKa + lCl ~ 1, random = pdDiag(lKe + lKa + lCl ~ 1),
       groups = ~Subject, start = start, weights = varPower(fixed = 1),
       control = nlmeControl(maxIter = 200, msMaxIter = 200, pnlsMaxIter = 20,
                             returnObject = TRUE)),
  error = function(e) e)
elapsed <- proc.time()[["elapsed"]] - t0
cat(sprintf("nlme_seconds %.6f\n", elapsed))
if (inherits(fit, "error")) {
  cat("nlme_error", gsub("\n", " ", conditionMessage(fit)), "\n")
} else {
  cat(sprintf("logLik %.6f\n", as.numeric(logLik(fit))))
  cat(sprintf("iterations %d\n", as.integer(fit$numIter)))
  fe <- fixef(fit)
  for (n in names(fe)) cat(sprintf("fixed_%s %.6f\n", n, fe[[n]]))
  vc <- as.numeric(VarCorr(fit)[, "Variance"])
  nm <- c("lKe", "lKa", "lCl", "residual")
  for (i in seq_along(vc)) cat(sprintf("variance_%s %.6f\n", nm[i], vc[i]))
  cat(sprintf("sigma %.6f\n", fit$sigma))
}
"""


def r_available() -> str | None:
    """R's version string if ``Rscript`` runs and nlme loads, else None."""
    if shutil.which("Rscript") is None:
        return None
    try:
        out = subprocess.run(
            [
                "Rscript",
                "-e",
                'library(nlme); cat(R.version.string, "nlme",'
                ' as.character(packageVersion("nlme")))',
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_nlme(table: pd.DataFrame, timeout: float) -> dict:
    """Fit the same observations with R's nlme; times and estimates."""
    obs = table[table["EVID"] == 0]
    frame = pd.DataFrame(
        dict(Subject=obs["ID"].to_numpy(), Time=obs["TIME"], conc=obs["DV"], Dose=DOSE)
    )
    start = (
        np.log(INITIAL["cl"] / INITIAL["v"]),
        np.log(INITIAL["ka"]),
        np.log(INITIAL["cl"]),
    )
    with tempfile.TemporaryDirectory() as folder:
        csv = Path(folder) / "data.csv"
        script = Path(folder) / "fit.R"
        frame.to_csv(csv, index=False)
        script.write_text(_NLME_SCRIPT)
        command = ["Rscript", str(script), str(csv), *(f"{s:.10g}" for s in start)]
        began = time.perf_counter()
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return dict(nlme_status=f"timed out after {timeout:.0f} s", nlme_s=None)
        total = time.perf_counter() - began
    values, error = {}, None
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "nlme_error":
            error = value.strip()
        elif key:
            values[key] = float(value)
    if out.returncode != 0 and "nlme_seconds" not in values:
        return dict(nlme_status=f"Rscript failed: {out.stderr.strip()[-300:]}", nlme_s=None)
    status = f"error: {error}" if error else "ok"
    result = dict(nlme_status=status, nlme_s=values.get("nlme_seconds"), nlme_total_s=total)
    if error is None:
        result.update(
            nlme_loglik=values.get("logLik"),
            nlme_iterations=values.get("iterations"),
            nlme_estimates=dict(
                ka=np.exp(values["fixed_lKa"]),
                cl=np.exp(values["fixed_lCl"]),
                v=np.exp(values["fixed_lCl"] - values["fixed_lKe"]),
                prop_cv=values["sigma"],
                omega_ke=values["variance_lKe"],
                omega_ka=values["variance_lKa"],
                omega_cl=values["variance_lCl"],
            ),
        )
    return result


# -- report ---------------------------------------------------------------------------


def _seconds(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def _format_row(row: dict) -> str:
    ratio = f"{row['ratio']:.2f}" if row.get("ratio") else "-"
    return (
        f"{row['n_subjects']:>8,} {row['method']:<8} {_seconds(row['compile_s']):>8} "
        f"{_seconds(row.get('eval_s')):>8} {_seconds(row.get('eval_cold_s')):>8} "
        f"{row['iterations']:>5} {row['n_evaluations']:>6} {_seconds(row['fit_s']):>9} "
        f"{_seconds(row['global_s']):>7} "
        f"{row['ofv']:>14.3f} {'yes' if row['converged'] else 'NO':>5} "
        f"{_seconds(row.get('nlme_s')):>9} {ratio:>6}"
    )


HEADER = (
    f"{'subjects':>8} {'method':<8} {'compile':>8} {'eval':>8} {'eval0':>8} "
    f"{'iter':>5} {'evals':>6} {'fit':>9} {'global':>7} {'OFV':>14} {'conv':>5} {'nlme':>9} "
    f"{'ratio':>6}"
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="population sizes (default: 100 1000 10000, and 100000 off CPU)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=["focei", "laplace"], choices=pmx.estimation.METHODS
    )
    parser.add_argument("--no-r", action="store_true", help="do not run R's nlme")
    parser.add_argument(
        "--r-timeout", type=float, default=600.0, help="seconds allowed to each nlme run"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed evaluations; the best is reported"
    )
    parser.add_argument(
        "--no-eval", action="store_true", help="skip the separate evaluation timing"
    )
    parser.add_argument(
        "--ebe-search",
        choices=["global", "local"],
        default="global",
        help="the fit's objective (pmx.fit(..., ebe_search=...)); default global",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "fit.json", help="JSON file to write"
    )
    args = parser.parse_args(argv)
    FIT_OPTIONS["ebe_search"] = args.ebe_search

    sizes = args.sizes or [100, 1_000, 10_000] + (
        [100_000] if jax.default_backend() != "cpu" else []
    )
    r_version = None if args.no_r else r_available()
    r_note = "not run (--no-r)" if args.no_r else (r_version or "R not installed")
    info = machine()
    print(
        f"1-cmt oral, {DOSE:g} mg, {len(SAMPLE_TIMES)} samples/subject; jax "
        f"{info['jax_version']} on {info['backend']} ({info['device_kind']}, "
        f"{info['cpu_count']} CPUs, load {info['load_average'][0]:.1f}); R: {r_note}"
    )
    rows = []
    report = dict(
        benchmark="fit",
        ebe_search=args.ebe_search,
        design=dict(
            dose=f"{DOSE:g} mg oral at t = 0",
            sample_times_h=list(SAMPLE_TIMES),
            truth=TRUTH,
            initial_estimates=INITIAL,
            residual_error="proportional",
            seed=args.seed,
        ),
        timing_notes=(
            "compile_s: JAX compile time during a warm-up fit (max_iterations=1); "
            "fit_s: wall time of the full fit after it; eval_s / eval_cold_s: best of "
            "`repeats` jitted value_and_grad of pmx.estimation.ofv at the initial "
            "estimates, EBEs warm-started at that point / from zeros; nlme_s: the "
            "nlme() call inside R; ratio = nlme_s / fit_s"
        ),
        r=r_note,
        repeats=args.repeats,
        machine=info,
        results=rows,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for n_subjects in sizes:
        table = simulate_population(n_subjects, args.seed)
        model = initial_model()
        prepared = pmx.likelihood.prepare(model, pmx.read_nonmem(table))
        peer = dict(nlme_status=r_note, nlme_s=None)
        if r_version is not None:
            print(f"  nlme on {n_subjects:,} subjects ...", flush=True)
            peer = run_nlme(table, args.r_timeout)
            estimates = peer.get("nlme_estimates")
            detail = " ".join(f"{k}={v:.4g}" for k, v in estimates.items()) if estimates else ""
            print(f"  nlme: {peer['nlme_status']}, {_seconds(peer['nlme_s'])} s {detail}")
        for method in args.methods:
            print(f"  {method} on {n_subjects:,} subjects ...", flush=True)
            load_before = _load()
            row = dict(n_subjects=n_subjects, method=method, load_average_before=load_before)
            row.update(time_fit(model, prepared, method))
            if not args.no_eval:
                row.update(time_evaluation(model, prepared, method, args.repeats))
            row.update(peer)
            row["ratio"] = peer["nlme_s"] / row["fit_s"] if peer["nlme_s"] else None
            row["ratio_with_compile"] = (
                peer["nlme_s"] / (row["fit_s"] + row["compile_s"]) if peer["nlme_s"] else None
            )
            row["load_average_after"] = _load()
            rows.append(row)
            truth = " ".join(
                f"{k}={v:.4g}({TRUTH[k]:g})" for k, v in natural_scale(row["estimates"]).items()
            )
            print(f"  {method}: {row['message']}; estimate(truth): {truth}")
            info["load_average"] = _load()
            args.output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        print(_format_row(row))
    print(
        "times in s; compile: JAX compilation (warm-up fit); eval/eval0: one OFV+gradient "
        "(EBEs warm/cold); fit: full fit after compile; global: its global EBE searches; "
        "ratio: nlme / fit"
    )
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
