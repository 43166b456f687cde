"""The ``pmx`` command line: ``pmx simulate CONFIG``, ``pmx fit CONFIG``, ``pmx report RUN``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _simulate(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", not args.float32)
    import numpy as np

    from ._config import load_config
    from .simulation import simulate

    config = load_config(args.config)
    options = config.simulate
    design = config.regimen if config.regimen is not None else config.data
    if design is None:
        print(f"{args.config}: needs a [data] or a [regimen] section", file=sys.stderr)
        return 2
    n_subjects = int(args.n_subjects or options.get("n_subjects", 0)) or None
    seed = int(args.seed if args.seed is not None else options.get("seed", 0))
    print(config.model)
    print(
        f"design: {'regimen' if config.regimen is not None else 'dataset'}; "
        f"virtual subjects: {n_subjects or 'as in data'}; seed {seed}"
    )
    covariates = None
    if "covariates" in options:
        rng = np.random.default_rng(seed)
        covariates = {}
        n = n_subjects or (config.data.n_subjects if config.data is not None else 1)
        for name, dist in options["covariates"].items():
            if dist.get("distribution") == "lognormal":
                covariates[name] = np.exp(rng.normal(np.log(dist["median"]), dist["sd_log"], n))
            elif dist.get("distribution") == "normal":
                covariates[name] = rng.normal(dist["mean"], dist["sd"], n)
            else:
                raise SystemExit(f"covariate {name}: distribution must be normal or lognormal")
    start = time.perf_counter()
    result = simulate(
        config.model,
        design,
        key=jax.random.PRNGKey(seed),
        n_subjects=n_subjects,
        covariates=covariates,
        chunk_size=options.get("chunk_size"),
    )
    elapsed = time.perf_counter() - start
    assert result is not None  # no on_chunk callback: results are accumulated
    frame = result.to_frame()
    summary = frame.groupby("TIME")["DV"].quantile([0.05, 0.5, 0.95]).unstack()
    summary.columns = ["P05", "P50", "P95"]
    print(
        f"\nsimulated {result.n_subjects} subjects, {len(frame)} observations "
        f"in {elapsed:.2f} s (including compilation)"
    )
    print("\nSimulated DV percentiles by time:")
    print(summary.round(3).to_string())
    out_dir = Path(args.output or config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{config.name}_simulation.csv"
    frame.to_csv(out, index=False)
    result.etas_frame().to_csv(out_dir / f"{config.name}_etas.csv", index=False)
    print(f"\nwrote {out} and {config.name}_etas.csv")
    return 0


def _fit(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._config import load_config
    from .estimation import fit

    config = load_config(args.config)
    if config.data is None:
        print(f"{args.config}: a fit needs a [data] section", file=sys.stderr)
        return 2
    options = dict(config.fit)
    method = args.method or options.pop("method", "focei")
    options.pop("method", None)
    options.setdefault("covariance", "sandwich")  # NONMEM's default $COV matrix
    print(config.model)
    print(config.data)
    print(f"\nfitting by {method.upper()} ...")
    result = fit(config.model, config.data, method=method, progress=True, **options)
    print()
    print(result)
    out_dir = Path(args.output or config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{config.name}_fit.json"
    result.to_json(out)
    result.ebes.to_csv(out_dir / f"{config.name}_ebes.csv", index=False)
    result.table().to_csv(out_dir / f"{config.name}_table.csv", index=False)
    # -- pmx report: what rebuilds the fitted model without refitting ------------
    from .diagnostics._report import write_run_record

    write_run_record(out_dir / f"{config.name}_run.json", args.config, result)
    # -- end pmx report -----------------------------------------------------------
    print(
        f"\nwrote {out}, {config.name}_ebes.csv, {config.name}_table.csv and {config.name}_run.json"
    )
    return 0 if result.converged else 1


# -- pmx report ------------------------------------------------------------------
def _report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import jax

    jax.config.update("jax_enable_x64", True)
    from .diagnostics._report import report

    units = {k: v for k, v in (("time", args.time_unit), ("conc", args.conc_unit)) if v}
    start = time.perf_counter()
    files = report(
        args.run_dir, formats=args.format, units=units or None, log_y=args.log, out_dir=args.output
    )
    print(f"wrote {len(files)} plot files in {time.perf_counter() - start:.1f} s:")
    for path in files:
        print(f"  {path}")
    return 0


def _add_report_parser(sub) -> None:
    rep = sub.add_parser("report", help="goodness-of-fit plots of a finished `pmx fit` run")
    rep.add_argument(
        "run_dir", metavar="RUN", help="output folder of `pmx fit` (or its *_fit.json / *_run.json)"
    )
    rep.add_argument(
        "--format",
        nargs="+",
        choices=["png", "svg", "pdf"],
        default=["png"],
        help="file types (default png); e.g. --format png svg",
    )
    rep.add_argument("--output", default=None, help="plot folder (default: RUN/plots)")
    rep.add_argument("--time-unit", default=None, help="time unit for axis labels, e.g. h")
    rep.add_argument("--conc-unit", default=None, help="DV unit for axis labels, e.g. mg/L")
    rep.add_argument("--log", action="store_true", help="log concentration axes")
    rep.set_defaults(run=_report)


# -- end pmx report ----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pmx",
        description="pmx_jax: population PK/PD modelling (NONMEM-style) on CPU and GPU.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="simulate virtual subjects from a run specification")
    sim.add_argument(
        "config", help="TOML run specification, e.g. configs/theophylline_simulation.toml"
    )
    sim.add_argument("--n-subjects", type=int, default=None, help="override [simulate] n_subjects")
    sim.add_argument("--seed", type=int, default=None, help="override [simulate] seed")
    sim.add_argument("--output", default=None, help="output folder (default: output_dir or runs/)")
    sim.add_argument("--float32", action="store_true", help="simulate in float32")
    sim.set_defaults(run=_simulate)
    fit = sub.add_parser("fit", help="estimate a population model (FO, FOCE, FOCEI, Laplace)")
    fit.add_argument("config", help="TOML run specification, e.g. configs/theophylline.toml")
    fit.add_argument(
        "--method",
        choices=["fo", "foce", "focei", "laplace"],
        default=None,
        help="override [fit] method",
    )
    fit.add_argument("--output", default=None, help="output folder (default: output_dir or runs/)")
    fit.set_defaults(run=_fit)
    _add_report_parser(sub)  # pmx report
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as e:  # dataset, model and config errors carry their own message
        print(f"pmx: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
