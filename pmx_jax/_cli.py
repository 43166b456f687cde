"""The ``pmx`` command line: ``pmx simulate CONFIG``, ``pmx fit CONFIG``, ``pmx run
CONTROL``, ``pmx report RUN``, ``pmx check DATA``, and PsN's jobs on a run or a
specification: ``pmx vpc``, ``pmx npde``, ``pmx bootstrap``, ``pmx sir``,
``pmx sample``, ``pmx compare RUN...``.

Errors a user can fix (a run specification, a dataset, a folder) end as one line,
``pmx: error: ...``, and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._memory import ResultTooLargeError


def _simulate(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", not args.float32)
    import numpy as np

    from ._config import ConfigError
    from .simulation import simulate

    config = _load_config(args.config)
    options = config.simulate
    design = config.regimen if config.regimen is not None else config.data
    if design is None:
        raise ConfigError(f"{args.config}: a simulation needs a [data] or a [regimen] section")
    out_dir = _output_dir(args.output, config)
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
        for name, dist in options["covariates"].items():  # checked by load_config
            if dist["distribution"] == "lognormal":
                covariates[name] = np.exp(rng.normal(np.log(dist["median"]), dist["sd_log"], n))
            else:
                covariates[name] = rng.normal(dist["mean"], dist["sd"], n)
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
    out = out_dir / f"{config.name}_simulation.csv"
    frame.to_csv(out, index=False)
    result.etas_frame().to_csv(out_dir / f"{config.name}_etas.csv", index=False)
    print(f"\nwrote {out} and {config.name}_etas.csv")
    return 0


def _dataset_warnings(read: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    """``read(*args, **kwargs)`` and the messages of the DatasetWarnings it
    raised, for the command to show as its own lines; other warnings go on as usual."""
    import warnings

    from .data import DatasetWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = read(*args, **kwargs)
    messages = []
    for warning in caught:
        if issubclass(warning.category, DatasetWarning):
            messages.append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return result, messages


def _load_config(path: str) -> Any:
    """The checked run specification; its dataset's warnings as ``pmx: warning:`` lines."""
    from ._config import load_config

    config, messages = _dataset_warnings(load_config, path)
    for message in messages:
        print(f"pmx: warning: {message}", file=sys.stderr)
    return config


def _output_dir(option: str | None, config) -> Path:
    """The output folder, created and checked for writing before the run starts."""
    from ._config import output_folder

    if option is not None:
        return output_folder(option, "--output")
    return output_folder(config.output_dir, f"output_dir of {config.path}")


def _fit(args: argparse.Namespace) -> int:
    tic = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._config import ConfigError
    from .estimation import fit

    config = _load_config(args.config)
    if config.data is None:
        raise ConfigError(f"{args.config}: a fit needs a [data] section")
    out_dir = _output_dir(args.output, config)
    options = dict(config.fit)
    method = args.method or options.pop("method", "focei")
    options.pop("method", None)
    options.setdefault("covariance", "sandwich")  # NONMEM's default $COV matrix
    print(config.model)
    print(config.data)
    print(f"\nfitting by {method.upper()} ...")
    started = datetime.datetime.now(datetime.UTC)
    result = fit(config.model, config.data, method=method, progress=True, **options)
    print()
    print(result)
    writing = time.perf_counter()
    out = out_dir / f"{config.name}_fit.json"
    result.to_json(out)
    result.ebes.to_csv(out_dir / f"{config.name}_ebes.csv", index=False)
    result.table().to_csv(out_dir / f"{config.name}_table.csv", index=False)
    # -- pmx report: what rebuilds the fitted model without refitting ------------
    from .diagnostics._report import write_run_record

    write_run_record(out_dir / f"{config.name}_run.json", args.config, result)
    # -- end pmx report -----------------------------------------------------------
    # The files NONMEM writes, for Pharmpy, Xpose, PsN and Pirana.
    from .nonmem import write_nonmem_results, write_tables
    from .nonmem._listing import write_listing

    nonmem = write_nonmem_results(result, out_dir, config.name)
    nonmem += write_tables(result, out_dir)
    nonmem.append(
        write_listing(
            result,
            out_dir / f"{config.name}.lst",
            title=config.name,
            source=Path(config.path).read_text(),
            started=started,
        )
    )
    print(
        f"\nwrote {out}, {config.name}_ebes.csv, {config.name}_table.csv and {config.name}_run.json"
    )
    print(f"NONMEM-format files: {', '.join(path.name for path in nonmem)}")
    _say_total("pmx fit", tic, result.elapsed_seconds, time.perf_counter() - writing)
    return 0 if result.converged else 1


def _say_total(command: str, tic: float, fit_seconds: float, writing: float) -> None:
    print(
        f"{command}: {time.perf_counter() - tic:.1f} s in all: fit {fit_seconds:.1f} s "
        f"(covariance step included), tables and files {writing:.1f} s"
    )


# -- pmx run --------------------------------------------------------------------------
def _run_control_stream(args: argparse.Namespace) -> int:
    tic = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._config import output_folder
    from .estimation import fit
    from .nonmem import read_model, write_nonmem_results, write_tables
    from .nonmem._listing import write_listing

    control = Path(args.control)
    model, data, settings = read_model(control, data=args.data)
    out_dir = output_folder(args.output or control.parent, "--output")
    method = settings["method"]
    options: dict = dict(covariance="sandwich" if settings.get("covariance") is not None else None)
    if settings.get("maxeval"):
        options["max_iterations"] = int(settings["maxeval"])
    if method == "saem":  # Louis' information is part of SAEM: no covariance option
        options = dict(settings["fit_options"])
    title = settings.get("problem") or control.stem
    print(f"{title}: fitting by {method.upper()} ...")
    started = datetime.datetime.now(datetime.UTC)
    result = fit(model, data, method=method, progress=True, **options)
    print()
    print(result)
    writing = time.perf_counter()
    stem = control.stem
    result.to_json(out_dir / f"{stem}_fit.json")
    written = write_nonmem_results(result, out_dir, stem) + write_tables(result, out_dir)
    source = control.read_text(errors="replace")
    listing = write_listing(
        result, out_dir / f"{stem}.lst", title=title, source=source, started=started
    )
    written.append(listing)
    print(f"\nwrote {stem}_fit.json, {', '.join(path.name for path in written)} to {out_dir}")
    _say_total("pmx run", tic, result.elapsed_seconds, time.perf_counter() - writing)
    # NONMEM's summary line, for scripts that read it.
    print(f"OFV {result.ofv:.6f}")
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


# -- pmx check -----------------------------------------------------------------------
def _check(args: argparse.Namespace) -> int:
    """Read a dataset as `pmx fit` would and say what was derived, coded or ignored."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._config import ConfigError, model_class, read_options
    from .data import read_nonmem

    options: dict[str, Any] = {}
    if args.columns:
        options["columns"] = dict(
            _key_value(item, "--columns", "NAME=ROLE") for item in args.columns
        )
    if args.covariates:
        options["covariates"] = args.covariates
    for item in args.option or ():
        key, text = _key_value(item, "--option", "KEY=VALUE")
        options[key] = _option_value(text)
    options = read_options(options, "--option", "pmx check")
    path = Path(args.data)
    if path.suffix == ".toml" and path.is_file():
        return _check_config(path)
    if not path.is_file():
        what = "is a folder, not a data file" if path.is_dir() else "does not exist"
        raise ConfigError(f"{path} {what}")
    model = model_class(args.model, "pmx check", "--model")() if args.model else None
    data, caught = _dataset_warnings(read_nonmem, path, **options)
    print(f"{path}")
    print(data.summary())
    for message in caught:
        print(f"  warning: {message}")
    if model is not None:
        _check_model(model, data)
    return 0


def _check_model(model: Any, data: Any) -> None:
    from .likelihood import prepare, used_covariates

    prepare(model, data)  # compartments, covariates and dosing events, as a fit checks them
    covariates = used_covariates(model, data.covariate_names)
    print(
        f"  model {type(model).__name__}: compartments "
        f"({', '.join(model.dynamics.compartments)}) and covariates "
        f"({', '.join(covariates) or 'none used'}) match the dataset"
    )


def _check_config(path: Path) -> int:
    """``pmx check CONFIG.toml``: the specification read as `pmx fit` reads it:
    the model with its initial estimates, bounds, OMEGA and FIX, and its data."""
    from ._config import ConfigError

    config = _load_config(str(path))
    print(f"{path}: run specification {config.name!r}")
    print(config.model)
    if config.data is None:
        if config.regimen is None:
            raise ConfigError(f"{path}: neither a [data] nor a [regimen] section")
        print("  design: [regimen] (no dataset)")
        return 0
    print(config.data.summary())
    _check_model(config.model, config.data)
    return 0


def _key_value(item: str, option: str, form: str) -> tuple[str, str]:
    from ._config import ConfigError

    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise ConfigError(f"{option} {item!r}: write {form}")
    return key, value


def _option_value(text: str) -> Any:
    """A ``--option`` value as a TOML value (``true``, ``3``, ``["WT"]``), else as text."""
    import tomllib

    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _add_check_parser(sub) -> None:
    check = sub.add_parser(
        "check",
        help="read a dataset and show what would be derived or ignored",
        description="Read a NONMEM-style CSV file as `pmx fit` would and print its subjects, "
        "records, observations and doses, the role of each column, the covariates (and how "
        "categorical ones are coded), what was derived or ignored, and every warning. "
        "Exit code 2 when the file cannot be used.",
    )
    check.add_argument(
        "data",
        metavar="DATA",
        help="the dataset, a CSV file; or a run specification (.toml), to see its model "
        "(initial estimates, bounds, OMEGA, FIX) and data as `pmx fit` reads them",
    )
    check.add_argument(
        "--columns",
        nargs="+",
        metavar="NAME=ROLE",
        help="the table's names of data items, e.g. --columns conc=DV dose=AMT",
    )
    check.add_argument(
        "--covariates", nargs="+", metavar="NAME", help="covariate columns to keep (default: all)"
    )
    check.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="another keyword argument of pmx_jax.data.read_nonmem, VALUE written as in TOML, "
        "e.g. --option reset_when_time_decreases=true (repeatable)",
    )
    check.add_argument(
        "--model",
        metavar="MODULE:CLASS",
        help="also check compartments and covariates against a model, "
        "e.g. pmx_jax.library:Theophylline",
    )
    check.set_defaults(run=_check)


# -- end pmx check -------------------------------------------------------------------


# -- PsN-style commands: vpc, npde, bootstrap, sir, sample, compare -------------------
#
# Each takes a run specification (the model at its values there; a fit, where
# the job needs one, is run first) or a finished `pmx fit` run (its folder,
# *_fit.json or *_run.json: the model at the run's final estimates), writes
# CSV, JSON and plots into an output folder and prints a short summary.


class _Job:
    """What a command works on: a run's or a specification's model and data."""

    def __init__(
        self,
        *,
        name: str,
        model: Any,
        data: Any,
        method: str,
        fit_options: dict[str, Any],
        base: Path,
        final: bool,
    ) -> None:
        self.name, self.model, self.data, self.method = name, model, data, method
        self.fit_options, self.base, self.final = fit_options, base, final

    def describe(self) -> str:
        where = "the run's final estimates" if self.final else "the specification's values"
        return (
            f"{self.name}: {type(self.model).__name__} at {where}, {self.data.n_subjects} subjects"
        )


def _job(source: str) -> _Job:
    """The model and data of a run specification (.toml), a NONMEM control
    stream (.ctl/.mod: its initial estimates) or a finished `pmx fit` run."""
    from ._config import ConfigError

    path = Path(source)
    if path.suffix == ".toml" and not path.is_dir():
        config = _load_config(source)
        if config.data is None:
            raise ConfigError(f"{source}: this command needs a [data] section")
        options = dict(config.fit)
        method = options.pop("method", "focei")
        return _Job(
            name=config.name,
            model=config.model,
            data=config.data,
            method=method,
            fit_options=options,
            base=Path(config.output_dir),
            final=False,
        )
    if path.suffix in (".ctl", ".mod") and path.is_file():
        from .nonmem import read_model

        model, data, settings = read_model(path)
        options: dict[str, Any] = {}
        if settings.get("maxeval"):
            options["max_iterations"] = int(settings["maxeval"])
        return _Job(
            name=path.stem,
            model=model,
            data=data,
            method=settings["method"],
            fit_options=options,
            base=path.parent,
            final=False,
        )
    import json

    from ._config import load_config
    from .diagnostics._report import _find_record, load_run

    record_path = _find_record(path)
    run, messages = _dataset_warnings(load_run, record_path)
    for message in messages:
        print(f"pmx: warning: {message}", file=sys.stderr)
    # The [fit] settings of the run's specification (its data read again, quietly).
    config, _ = _dataset_warnings(load_config, json.loads(record_path.read_text())["config"])
    options = dict(config.fit)
    options.pop("method", None)
    return _Job(
        name=run.name,
        model=run.model,
        data=run.dataset,
        method=run.method,
        fit_options=options,
        base=run.folder,
        final=True,
    )


def _job_fit(job: _Job, covariance: str | None = None) -> Any:
    """A fit of the job's model: from a run's final estimates it stops at
    once (compilation only), rebuilding the run's FitResult."""
    from .estimation import fit

    options = dict(job.fit_options)
    options["covariance"] = covariance
    what = "refitting from the run's final estimates" if job.final else "fitting"
    print(f"{what} by {job.method.upper()} ...", flush=True)
    result = fit(job.model, job.data, method=job.method, progress=True, **options)
    print(
        f"OFV {result.ofv:.4f} ({result.status.label}, {result.iterations} iterations, "
        f"{result.elapsed_seconds:.1f} s)",
        flush=True,
    )
    return result


def _job_output(option: str | None, job: _Job, command: str) -> Path:
    from ._config import output_folder

    if option is not None:
        return output_folder(option, "--output")
    return output_folder(job.base / f"{job.name}_{command}", "the default output folder")


def _write_json(path: Path, record: dict[str, Any]) -> Path:
    """JSON with NaN and infinities as null."""
    import json
    import math

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if hasattr(value, "item") and not isinstance(value, str):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    path.write_text(json.dumps(clean(record), indent=2))
    return path


def _setup_jax() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _matplotlib() -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed


def _add_job_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "source",
        metavar="RUN_OR_CONFIG",
        help="a finished `pmx fit` run (its folder, *_fit.json or *_run.json), a run "
        "specification (.toml) or a NONMEM control stream (.ctl/.mod)",
    )
    parser.add_argument(
        "--output", default=None, help=f"output folder (default: NAME_{command} beside the run)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _vpc(args: argparse.Namespace) -> int:
    _matplotlib()
    _setup_jax()
    from .diagnostics import vpc

    job = _job(args.source)
    out_dir = _job_output(args.output, job, "vpc")
    print(job.describe())
    bins: Any = args.bins
    if bins != "auto":
        bins = int(bins) if bins.isdigit() else [float(x) for x in bins.split(",")]
    start = time.perf_counter()
    result = vpc(
        job.model,
        job.data,
        n_sim=args.n_sim,
        seed=args.seed,
        bins=bins,
        stratify=args.stratify,
        pred_corrected=args.pred_corrected,
        lloq=args.lloq,
    )
    elapsed = time.perf_counter() - start
    stem = f"{job.name}_{'pcvpc' if args.pred_corrected else 'vpc'}"
    files = [out_dir / f"{stem}_percentiles.csv"]
    result.percentiles.to_csv(files[0], index=False)
    if result.blq is not None:
        files.append(out_dir / f"{stem}_blq.csv")
        result.blq.to_csv(files[-1], index=False)
    figure = result.plot(log_y=args.log)
    for kind in args.format:
        files.append(out_dir / f"{stem}.{kind}")
        figure.savefig(files[-1], dpi=150)
    table = result.percentiles
    outside = (table.OBSERVED < table.SIM_LOWER) | (table.OBSERVED > table.SIM_UPPER)
    by_quantile = {f"{q:g}": int(outside[table.QUANTILE == q].sum()) for q in result.quantiles}
    files.append(
        _write_json(
            out_dir / f"{stem}.json",
            dict(
                n_sim=result.n_sim,
                seed=result.seed,
                pred_corrected=result.pred_corrected,
                stratify=result.stratify,
                n_bins=int(table[["STRATUM", "BIN"]].drop_duplicates().shape[0]),
                observed_outside_interval=by_quantile,
                ci=result.ci,
                notes=list(result.notes),
                seconds=elapsed,
            ),
        )
    )
    n_bins = table[["STRATUM", "BIN"]].drop_duplicates().shape[0]
    print(
        f"{'pc' if args.pred_corrected else ''}VPC: {result.n_sim} replicates, {n_bins} bins, "
        f"{elapsed:.1f} s; observed percentiles outside their simulated "
        f"{100 * result.ci:g}% interval:"
    )
    for q, n in by_quantile.items():
        print(f"  {float(q) * 100:g}th percentile: {n} of {n_bins} bins")
    for note in result.notes:
        print(f"  note: {note}")
    _print_files(files)
    return 0


def _npde_tests(values: Any) -> dict[str, float]:
    """The npde package's summary tests of NPDE ~ N(0, 1): mean (t-test),
    variance (Fisher's test of variance 1), normality (Shapiro-Wilk, on at
    most 5,000 values) and their Bonferroni-adjusted global p-value."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    variance = float(np.var(x, ddof=1))
    chi2 = (n - 1) * variance
    p_variance = 2.0 * min(stats.chi2.cdf(chi2, n - 1), stats.chi2.sf(chi2, n - 1))
    p_mean = float(stats.ttest_1samp(x, 0.0).pvalue)
    p_normal = float(stats.shapiro(x[:5000]).pvalue)
    return dict(
        n=n,
        mean=float(np.mean(x)),
        variance=variance,
        skewness=float(stats.skew(x)),
        kurtosis=float(stats.kurtosis(x)),
        p_mean=p_mean,
        p_variance=float(min(p_variance, 1.0)),
        p_normality=p_normal,
        p_global=float(min(1.0, 3.0 * min(p_mean, p_variance, p_normal))),
    )


def _npde(args: argparse.Namespace) -> int:
    _matplotlib()
    _setup_jax()
    from .diagnostics import npde, qq_plot

    job = _job(args.source)
    out_dir = _job_output(args.output, job, "npde")
    print(job.describe())
    start = time.perf_counter()
    frame = npde(
        job.model, job.data, n_sim=args.n_sim, seed=args.seed, decorrelation=args.decorrelation
    )
    elapsed = time.perf_counter() - start
    files = [out_dir / f"{job.name}_npde.csv"]
    frame.to_csv(files[0], index=False)
    for kind in args.format:
        files.append(out_dir / f"{job.name}_npde_qq.{kind}")
        qq_plot(frame["NPDE"], "NPDE", path=files[-1])
    summary = _npde_tests(frame["NPDE"])
    notes = list(frame.attrs.get("notes", []))
    files.append(
        _write_json(
            out_dir / f"{job.name}_npde.json",
            dict(summary, n_sim=args.n_sim, seed=args.seed, notes=notes, seconds=elapsed),
        )
    )
    print(
        f"NPDE of {summary['n']} observations ({args.n_sim} replicates, {elapsed:.1f} s):\n"
        f"  mean {summary['mean']:.4f} (t-test p = {summary['p_mean']:.3g}), variance "
        f"{summary['variance']:.4f} (Fisher p = {summary['p_variance']:.3g}), skewness "
        f"{summary['skewness']:.3f}, kurtosis {summary['kurtosis']:.3f}\n"
        f"  normality (Shapiro-Wilk) p = {summary['p_normality']:.3g}; global "
        f"(Bonferroni) p = {summary['p_global']:.3g}"
    )
    for note in notes:
        print(f"  note: {note}")
    _print_files(files)
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    _setup_jax()
    from ._config import ConfigError
    from .diagnostics import bootstrap

    job = _job(args.source)
    out_dir = _job_output(args.output, job, "bootstrap")
    print(job.describe())
    fitted = _job_fit(job)
    try:
        result = bootstrap(
            fitted,
            args.n,
            seed=args.seed,
            stratify=args.stratify,
            include=args.include,
            progress=True,
        )
    except KeyError as e:  # a stratification column the data lack
        raise ConfigError(f"--stratify: {e.args[0]}") from None
    stem = f"{job.name}_bootstrap"
    files = [out_dir / f"{stem}_replicates.csv", out_dir / f"{stem}_summary.csv"]
    result.replicates.to_csv(files[0], index=False)
    summary = result.summary()
    summary.to_csv(files[1], index=False)
    files.append(
        _write_json(
            out_dir / f"{stem}.json",
            dict(
                n=result.n,
                n_converged=result.n_converged,
                n_not_converged=result.n_not_converged,
                n_failed=result.n_failed,
                include=result.include,
                level=result.level,
                seed=args.seed,
                stratify=args.stratify,
                ofv=fitted.ofv,
                seconds=result.elapsed_seconds,
                compilations_after_first=result.compilations_after_first,
                summary=summary.to_dict(orient="records"),
            ),
        )
    )
    print(result)
    _print_files(files)
    return 0


def _sir(args: argparse.Namespace) -> int:
    _setup_jax()
    from .diagnostics import sir

    job = _job(args.source)
    out_dir = _job_output(args.output, job, "sir")
    print(job.describe())
    fitted = _job_fit(job, covariance="sandwich")
    result = sir(
        fitted,
        args.samples,
        args.resamples,
        seed=args.seed,
        proposal_inflation=args.inflation,
        proposal_df=args.df,
        progress=True,
    )
    stem = f"{job.name}_sir"
    files = [out_dir / f"{stem}_samples.csv", out_dir / f"{stem}_summary.csv"]
    result.samples.to_csv(files[0], index=False)
    summary = result.summary()
    summary.to_csv(files[1], index=False)
    dofv = result.dofv_table()
    files.append(out_dir / f"{stem}_dofv.csv")
    dofv.to_csv(files[-1], index=False)
    files.append(
        _write_json(
            out_dir / f"{stem}.json",
            dict(
                n_samples=len(result.proposal),
                n_resamples=len(result.samples),
                effective_sample_size=result.effective_sample_size,
                n_nonfinite=result.n_nonfinite,
                n_ebe_failures=result.n_ebe_failures,
                ofv=result.ofv,
                seed=args.seed,
                proposal_inflation=args.inflation,
                proposal_df=args.df,
                seconds=result.elapsed_seconds,
                summary=summary.to_dict(orient="records"),
            ),
        )
    )
    print(result)
    print("\ndOFV quantiles (resampled dOFVs follow chi-square(n_parameters) when SIR agrees):")
    print(dofv.iloc[[1, 9, 17]].round(3).to_string(index=False))
    _print_files(files)
    return 0


def _sample(args: argparse.Namespace) -> int:
    _setup_jax()
    from .bayes import sample

    job = _job(args.source)
    out_dir = _job_output(args.output, job, "sample")
    print(job.describe())
    init: Any = _job_fit(job) if job.final else "fit"
    result = sample(
        job.model,
        job.data,
        n_chains=args.chains,
        n_warmup=args.warmup,
        n_samples=args.samples,
        seed=args.seed,
        init=init,
        progress=args.progress,
    )
    stem = f"{job.name}_sample"
    files = [out_dir / f"{stem}_draws.csv", out_dir / f"{stem}_summary.csv"]
    result.draws().to_csv(files[0], index=False)
    summary = result.summary()
    summary.to_csv(files[1])
    files.append(out_dir / f"{stem}_etas.csv")
    result.etas().to_csv(files[-1], index=False)
    files.append(
        _write_json(
            out_dir / f"{stem}.json",
            dict(
                n_chains=result.n_chains,
                n_draws=result.n_draws,
                n_warmup=args.warmup,
                seed=args.seed,
                divergences=result.n_divergent,
                max_rhat=float(summary["rhat"].max()),
                min_ess_bulk=float(summary["ess_bulk"].min()),
                timings=dict(result.timings),
                summary=summary.reset_index().to_dict(orient="records"),
            ),
        )
    )
    print(result)
    _print_files(files)
    return 0


def _fit_records(sources: list[str]) -> list[tuple[str, Path, dict[str, Any]]]:
    """(label, path, content) of every *_fit.json that ``sources`` name: a
    file, or a folder (each *_fit.json in it)."""
    import json

    from ._config import ConfigError

    found = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            fits = sorted(path.glob("*_fit.json"))
            if not fits:
                raise ConfigError(f"{path} holds no *_fit.json written by `pmx fit` or `pmx run`")
        elif path.name.endswith("_run.json"):
            fits = [path.with_name(path.name[: -len("_run.json")] + "_fit.json")]
        elif path.is_file():
            fits = [path]
        else:
            raise ConfigError(f"no run folder or file at {path}")
        for fit_path in fits:
            if not fit_path.is_file():
                raise ConfigError(f"{fit_path} is missing: name a run folder or a *_fit.json")
            try:
                content = json.loads(fit_path.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{fit_path} is not a result of `pmx fit` ({e})") from None
            if not isinstance(content, dict) or "ofv" not in content:
                raise ConfigError(f"{fit_path} is not a result of `pmx fit` (no OFV)")
            stem = fit_path.name.removesuffix("_fit.json")
            label = f"{fit_path.resolve().parent.name}/{stem}"
            found.append((label, fit_path, content))
    return found


def _compare(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from ._config import ConfigError

    records = _fit_records(args.runs)
    rows = []
    for label, path, fit in records:
        run_record = path.with_name(path.name.replace("_fit.json", "_run.json"))
        data_hash = None
        if run_record.is_file() and run_record != path:
            data_hash = json.loads(run_record.read_text()).get("provenance", {}).get("data_sha256")
        rows.append(
            dict(
                run=label,
                model=fit.get("model"),
                method=fit.get("method"),
                ofv=fit["ofv"],
                n_parameters=fit.get("n_parameters"),
                aic=fit.get("aic"),
                bic=fit.get("bic"),
                converged=fit.get("converged"),
                covariance_step=fit.get("covariance_step"),
                condition_number=fit.get("condition_number"),
                n_subjects=fit.get("n_subjects"),
                n_observations=fit.get("n_observations"),
                data_sha256=data_hash,
            )
        )
    table = pd.DataFrame(rows)
    sizes = table[["n_subjects", "n_observations"]].drop_duplicates()
    hashes = table["data_sha256"].dropna().unique()
    if len(sizes) > 1 or len(hashes) > 1:
        what = "; ".join(
            f"{r.run}: {r.n_subjects} subjects, {r.n_observations} observations"
            + (f", data {r.data_sha256[:12]}" if isinstance(r.data_sha256, str) else "")
            for r in table.itertuples()
        )
        raise ConfigError(f"the runs are of different data, so their OFVs do not compare: {what}")
    reference = table["ofv"].iloc[0]
    table.insert(4, "dofv", table["ofv"] - reference)
    table.insert(8, "delta_aic", table["aic"] - table["aic"].min())
    table.insert(9, "delta_bic", table["bic"] - table["bic"].min())
    shown = table.drop(columns=["data_sha256", "n_subjects", "n_observations"])
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(shown.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(
        f"\ndOFV: OFV - OFV of {table['run'].iloc[0]} (the first run); delta AIC/BIC: from the "
        f"lowest; {int(table['n_subjects'].iloc[0])} subjects, "
        f"{int(table['n_observations'].iloc[0])} observations"
    )
    if args.output:
        out = Path(args.output)
        if out.suffix != ".csv":
            raise ConfigError(f"--output {out}: name a .csv file")
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        print(f"wrote {out}")
    return 0


def _print_files(files: list[Path]) -> None:
    print(f"wrote {len(files)} files to {files[0].parent}:")
    for path in files:
        print(f"  {path.name}")


def _add_psn_parsers(sub) -> None:
    vpc = sub.add_parser(
        "vpc",
        help="visual predictive check (PsN's vpc)",
        description="Simulate the dataset's design N times under the model and compare the "
        "observed percentiles per time bin with the simulated ones; writes the plot, the "
        "percentile table (CSV) and a summary (JSON).",
    )
    _add_job_arguments(vpc, "vpc")
    vpc.add_argument("--n-sim", type=int, default=500, help="replicates (default 500)")
    vpc.add_argument(
        "--bins", default="auto", help="'auto', a number of bins, or edges: 0,1,2,4,8,24"
    )
    vpc.add_argument("--stratify", default=None, help="a column to stratify by, e.g. SEX or DVID")
    vpc.add_argument(
        "--pred-corrected", action="store_true", help="prediction-corrected VPC (pcVPC)"
    )
    vpc.add_argument("--lloq", type=float, default=None, help="limit of quantification")
    vpc.add_argument("--log", action="store_true", help="log concentration axis")
    vpc.add_argument(
        "--format", nargs="+", choices=["png", "svg", "pdf"], default=["png"], help="plot files"
    )
    vpc.set_defaults(run=_vpc)

    npde = sub.add_parser(
        "npde",
        help="normalised prediction distribution errors",
        description="NPDE and NPD of every observation by simulation; writes them (CSV), "
        "their QQ plot and the tests of mean 0, variance 1 and normality (JSON).",
    )
    _add_job_arguments(npde, "npde")
    npde.add_argument("--n-sim", type=int, default=1000, help="replicates (default 1000)")
    npde.add_argument(
        "--decorrelation", choices=["cholesky", "inverse"], default="cholesky", help="V^-1/2"
    )
    npde.add_argument(
        "--format", nargs="+", choices=["png", "svg", "pdf"], default=["png"], help="plot files"
    )
    npde.set_defaults(run=_npde)

    boot = sub.add_parser(
        "bootstrap",
        help="nonparametric bootstrap (PsN's bootstrap)",
        description="Resample subjects with replacement, refit each replicate from the "
        "estimates, and summarise the replicate estimates (percentile CIs, SE, bias); writes "
        "the replicates and the summary (CSV, JSON).",
    )
    _add_job_arguments(boot, "bootstrap")
    boot.add_argument("--n", type=int, default=200, help="replicates (default 200)")
    boot.add_argument("--stratify", default=None, help="resample within strata of this column")
    boot.add_argument(
        "--include",
        choices=["converged", "all"],
        default="converged",
        help="replicates in the statistics (default: converged ones)",
    )
    boot.set_defaults(run=_bootstrap)

    sir = sub.add_parser(
        "sir",
        help="sampling importance resampling (PsN's sir)",
        description="Draw parameter vectors from the covariance step's distribution, weight "
        "them by the likelihood and resample: uncertainty without the normal approximation; "
        "writes the resamples, the summary and the dOFV diagnostic (CSV, JSON).",
    )
    _add_job_arguments(sir, "sir")
    sir.add_argument("--samples", type=int, default=1000, help="proposal draws (default 1000)")
    sir.add_argument(
        "--resamples", type=int, default=None, help="vectors kept (default samples / 5)"
    )
    sir.add_argument("--inflation", type=float, default=1.0, help="proposal covariance factor")
    sir.add_argument("--df", type=float, default=None, help="Student-t proposal df")
    sir.set_defaults(run=_sir)

    bayes = sub.add_parser(
        "sample",
        help="Bayesian estimation by NUTS (pmx.sample)",
        description="Sample the posterior of the population parameters and random effects "
        "with NumPyro's NUTS, starting at the fit's estimates; writes the draws, the "
        "summary (R-hat, ESS) and the Bayesian EBEs (CSV, JSON).",
    )
    _add_job_arguments(bayes, "sample")
    bayes.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    bayes.add_argument("--warmup", type=int, default=500, help="warmup draws (default 500)")
    bayes.add_argument("--samples", type=int, default=1000, help="kept draws per chain")
    bayes.add_argument("--progress", action="store_true", help="NumPyro's progress bar")
    bayes.set_defaults(run=_sample)

    compare = sub.add_parser(
        "compare",
        help="compare finished runs: OFV, dOFV, AIC, BIC, parameters",
        description="One row per run (a `pmx fit`/`pmx run` folder, or its *_fit.json): "
        "OFV and dOFV from the first run, number of estimated parameters, AIC and BIC "
        "(with their differences from the lowest), convergence and covariance step. Runs "
        "of different data are refused.",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders or *_fit.json files")
    compare.add_argument("--output", default=None, help="also write the table to this CSV file")
    compare.set_defaults(run=_compare)


# -- end PsN-style commands ------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pmx_jax")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pmx",
        description="pmx_jax: population PK/PD modelling (NONMEM-style) on CPU and GPU.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = sub.add_parser(
        "simulate",
        help="simulate virtual subjects from a run specification",
        description="Simulate a virtual trial from a run specification ([model], [data] or "
        "[regimen], [simulate]) and write the simulated records and etas as CSV.",
    )
    sim.add_argument(
        "config", help="TOML run specification, e.g. configs/theophylline_simulation.toml"
    )
    sim.add_argument("--n-subjects", type=int, default=None, help="override [simulate] n_subjects")
    sim.add_argument("--seed", type=int, default=None, help="override [simulate] seed")
    sim.add_argument("--output", default=None, help="output folder (default: output_dir or runs/)")
    sim.add_argument("--float32", action="store_true", help="simulate in float32")
    sim.set_defaults(run=_simulate)
    fit = sub.add_parser(
        "fit",
        help="estimate a population model (FO, FOCE, FOCEI, Laplace)",
        description="Fit the model of a run specification ([model], [data], [fit]) and write "
        "the result (JSON), the EBEs and the per-record table (CSV). Exit code 1 when the "
        "minimisation did not converge, 2 when the specification or data cannot be used.",
    )
    fit.add_argument("config", help="TOML run specification, e.g. configs/theophylline.toml")
    fit.add_argument(
        "--method",
        choices=["fo", "foce", "focei", "laplace"],
        default=None,
        help="override [fit] method",
    )
    fit.add_argument("--output", default=None, help="output folder (default: output_dir or runs/)")
    fit.set_defaults(run=_fit)
    run = sub.add_parser(
        "run",
        help="fit a NONMEM control stream",
        description="Read a NONMEM control stream (pmx.nonmem.read_model), fit it by its "
        "$ESTIMATION method, print the result ending with NONMEM's line `OFV <value>`, and "
        "write the run's files (JSON, NONMEM's .ext/.phi/.cov/.shk and sdtab/patab tables) "
        "next to it or to --output. Exit code 1 when the minimisation did not converge, 2 "
        "when the control stream or data cannot be used.",
    )
    run.add_argument("control", help="the control stream, e.g. run1.ctl")
    run.add_argument("--data", default=None, help="data file to read instead of $DATA's")
    run.add_argument("--output", default=None, help="output folder (default: the stream's)")
    run.set_defaults(run=_run_control_stream)
    _add_report_parser(sub)  # pmx report
    _add_check_parser(sub)  # pmx check
    _add_psn_parsers(sub)  # pmx vpc, npde, bootstrap, sir, sample, compare
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as e:  # dataset, model and config errors carry their own message
        print(f"pmx: error: {e}", file=sys.stderr)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"pmx: error: {e.strerror or e}{where}", file=sys.stderr)
    except ResultTooLargeError as e:  # a result refused before it exhausts the memory
        print(f"pmx: error: {e}", file=sys.stderr)
    return 2


def run() -> None:
    """The ``pmx`` command: :func:`main`, then the process ends without
    Python's teardown of JAX's runtime (0.6 s after a fit on a 2-core CPU);
    every output file is written and closed by then."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
