"""The ``pmx`` command line: ``pmx simulate CONFIG``, ``pmx fit CONFIG``, ``pmx report RUN``,
``pmx check DATA``.

Errors a user can fix (a run specification, a dataset, a folder) end as one line,
``pmx: error: ...``, and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
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
    result = fit(config.model, config.data, method=method, progress=True, **options)
    print()
    print(result)
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

    nonmem = write_nonmem_results(result, out_dir, config.name)
    nonmem += write_tables(result, out_dir)
    print(
        f"\nwrote {out}, {config.name}_ebes.csv, {config.name}_table.csv and {config.name}_run.json"
    )
    print(f"NONMEM-format files: {', '.join(path.name for path in nonmem)}")
    return 0 if result.converged else 1


# -- pmx run --------------------------------------------------------------------------
def _run_control_stream(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._config import output_folder
    from .estimation import fit
    from .nonmem import read_model, write_nonmem_results, write_tables

    control = Path(args.control)
    model, data, settings = read_model(control, data=args.data)
    out_dir = output_folder(args.output or control.parent, "--output")
    method = settings["method"]
    options: dict = dict(covariance="sandwich" if settings.get("covariance") is not None else None)
    if settings.get("maxeval"):
        options["max_iterations"] = int(settings["maxeval"])
    print(f"{settings.get('problem') or control.stem}: fitting by {method.upper()} ...")
    result = fit(model, data, method=method, progress=True, **options)
    print()
    print(result)
    stem = control.stem
    result.to_json(out_dir / f"{stem}_fit.json")
    written = write_nonmem_results(result, out_dir, stem) + write_tables(result, out_dir)
    print(f"\nwrote {stem}_fit.json, {', '.join(path.name for path in written)} to {out_dir}")
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
        from .likelihood import prepare, used_covariates

        prepare(model, data)  # compartments, covariates and dosing events, as a fit checks them
        covariates = used_covariates(model, data.covariate_names)
        print(
            f"  model {type(model).__name__}: compartments "
            f"({', '.join(model.dynamics.compartments)}) and covariates "
            f"({', '.join(covariates) or 'none used'}) match the dataset"
        )
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
    check.add_argument("data", metavar="DATA", help="the dataset, a CSV file")
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


if __name__ == "__main__":
    raise SystemExit(main())
