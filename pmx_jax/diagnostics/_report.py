"""``pmx report RUN``: the goodness-of-fit plots of a finished ``pmx fit`` run.

``pmx fit`` writes, next to ``{name}_fit.json``, a run record ``{name}_run.json``
(:func:`write_run_record`): the run specification's path, the estimation method
and the final THETA and OMEGA values.  :func:`load_run` rebuilds the fitted
model from it (the configuration's model with those values), reads the data the
configuration names, and takes the EBEs and the residual table from the run's
``{name}_ebes.csv`` and ``{name}_table.csv``: nothing is refitted, so a report
costs the plots and one prediction on a dense time grid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RUN_RECORD_VERSION = 1
PLOT_FORMATS = ("png", "svg", "pdf")


class RunRecordError(ValueError):
    """A run folder that ``pmx report`` cannot read; the message says what is missing."""


def write_run_record(path: str | Path, config_path: str | Path, result: Any) -> Path:
    """Write what a report needs to rebuild a fit without refitting.

    Args:
        path: the JSON file to write (``pmx fit`` uses ``{name}_run.json``).
        config_path: the run specification the fit came from.
        result: the :class:`~pmx_jax.estimation.FitResult`.
    """
    model = result.model
    record = dict(
        version=RUN_RECORD_VERSION,
        config=str(Path(config_path).resolve()),
        method=result.method,
        model=type(model).__name__,
        theta={name: float(theta) for name, theta in model.thetas().items()},
        omega={
            name: np.asarray(block.matrix, dtype=float).tolist()
            for name, block in model.omega_blocks()
        },
        ids=[i if isinstance(i, int | float | str) else str(i) for i in result.ids],
        provenance=provenance(result),
    )
    path = Path(path)
    path.write_text(json.dumps(record, indent=2))
    return path


def provenance(result: Any) -> dict[str, Any]:
    """Where a fit came from, for its run record: when and by which command
    it ran, the versions of pmx_jax and of the libraries that computed it,
    the device, a SHA-256 of the data table (the same data give the same
    hash whatever file or bundled name they came from), and the run time
    split into compilation and the rest."""
    import datetime
    import hashlib
    import platform
    import sys
    from importlib import metadata

    import jax

    from .. import __version__

    versions = {"pmx_jax": __version__, "python": platform.python_version()}
    for package in ("jax", "jaxlib", "numpy", "equinox", "diffrax", "optimistix", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    dataset = getattr(result, "dataset", None)
    data_hash = None
    if dataset is not None:
        csv = dataset.table.to_csv(index=False, lineterminator="\n").encode()
        data_hash = hashlib.sha256(csv).hexdigest()
    return dict(
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=" ".join(sys.argv),
        versions=versions,
        backend=jax.default_backend(),
        devices=[str(device) for device in jax.devices()],
        data_sha256=data_hash,
        n_subjects=int(result.n_subjects),
        seconds=dict(
            total=round(float(result.elapsed_seconds), 3),
            compilation=round(float(result.compile_seconds), 3),
        ),
    )


class FittedRun:
    """A finished fit read back from disk, with the attributes the plots use
    (``model``, ``method``, ``dataset``, ``ebes``, ``eta_shrinkage``, ``table()``),
    as a :class:`~pmx_jax.estimation.FitResult` has them."""

    def __init__(
        self, *, name: str, folder: Path, model, method: str, dataset, ebes, table
    ) -> None:
        self.name = name
        self.folder = folder
        self.model = model
        self.method = method
        self.dataset = dataset
        self.ebes = ebes
        self._table = table

    def table(self) -> pd.DataFrame:
        return self._table.copy()

    @property
    def eta_shrinkage(self) -> pd.Series:
        """SD eta shrinkage as :attr:`FitResult.eta_shrinkage` defines it."""
        names = list(self.model.eta_names)
        eta = self.ebes[names].to_numpy(dtype=float)
        omega = np.diagonal(np.asarray(self.model.omega_matrix()))
        ddof = 1 if eta.shape[0] > 1 else 0
        shrink = 1.0 - np.std(eta, axis=0, ddof=ddof) / np.sqrt(omega)
        return pd.Series(shrink, index=names, name="eta_shrinkage")


def _find_record(run: Path) -> Path:
    if run.is_file():
        if run.name.endswith("_run.json"):
            return run
        if run.name.endswith("_fit.json"):
            record = run.with_name(run.name[: -len("_fit.json")] + "_run.json")
            if record.is_file():
                return record
            raise RunRecordError(
                f"{run} has no run record {record.name} beside it (written by `pmx fit` "
                f"since `pmx report` exists): rerun `pmx fit` to make one"
            )
        raise RunRecordError(f"{run}: expected a run folder, a *_fit.json or a *_run.json file")
    if not run.is_dir():
        raise RunRecordError(f"no run folder or file at {run}")
    records = sorted(run.glob("*_run.json"))
    if not records:
        fits = sorted(p.name for p in run.glob("*_fit.json"))
        hint = f" (it has {', '.join(fits)}: rerun `pmx fit` to add a run record)" if fits else ""
        raise RunRecordError(f"{run} holds no *_run.json written by `pmx fit`{hint}")
    if len(records) > 1:
        raise RunRecordError(
            f"{run} holds several runs ({', '.join(p.name for p in records)}): "
            f"name one, e.g. `pmx report {records[0]}`"
        )
    return records[0]


def load_run(run: str | Path) -> FittedRun:
    """Read a finished ``pmx fit`` run (its output folder, ``{name}_fit.json`` or
    ``{name}_run.json``) back as a :class:`FittedRun`, without refitting."""
    from .._config import load_config

    record_path = _find_record(Path(run))
    record = json.loads(record_path.read_text())
    name = record_path.name[: -len("_run.json")]
    folder = record_path.parent
    config = load_config(record["config"])
    if config.data is None:
        raise RunRecordError(f"{record['config']}: the run specification has no [data] section")
    if type(config.model).__name__ != record["model"]:
        raise RunRecordError(
            f"{record['config']} now names model {type(config.model).__name__}, but the run "
            f"fitted {record['model']}: rerun `pmx fit`"
        )
    values: dict[str, Any] = dict(record["theta"])
    values.update({k: np.asarray(v, dtype=float) for k, v in record["omega"].items()})
    model = config.model.with_values(**values)
    dataset = config.data

    ebes_path, table_path = folder / f"{name}_ebes.csv", folder / f"{name}_table.csv"
    for path in (ebes_path, table_path):
        if not path.is_file():
            raise RunRecordError(f"{path} is missing: the run folder is incomplete")
    ebes = pd.read_csv(ebes_path)
    if len(ebes) != dataset.n_subjects:
        raise RunRecordError(
            f"{ebes_path} has {len(ebes)} subjects but the data of {record['config']} has "
            f"{dataset.n_subjects}: the data changed since the fit; rerun `pmx fit`"
        )
    # The CSV round trip may change ID types ("007" -> 7): take IDs from the data,
    # in whose order the fit wrote the EBEs.
    ebes["ID"] = list(dataset.ids)
    table = pd.read_csv(table_path)
    if len(table) != dataset.n_records:
        raise RunRecordError(
            f"{table_path} has {len(table)} records but the data has {dataset.n_records}: "
            f"rerun `pmx fit`"
        )
    table["ID"] = dataset.records["id"].to_numpy()[table["row"].to_numpy()]
    return FittedRun(
        name=name,
        folder=folder,
        model=model,
        method=record["method"],
        dataset=dataset,
        ebes=ebes,
        table=table,
    )


def write_report(
    fit: Any,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    units: Mapping[str, str] | None = None,
    log_y: bool = False,
    prefix: str = "",
    per_page: int = 12,
    n_sim: int = 500,
    seed: int = 0,
) -> list[Path]:
    """Write every goodness-of-fit plot of ``fit`` into ``out_dir``, and the
    simulation-based ones: a VPC and the QQ plot of NPDE (``n_sim`` replicates
    of the dataset; ``n_sim=0`` leaves them out).  A model with non-Gaussian
    endpoints gets, instead of the plots of continuous data, the QQ plot of
    its randomized quantile residuals and, per endpoint, a Kaplan-Meier VPC
    (time to event) or a categorical VPC (binary, categories, counts).

    Args:
        fit: a :class:`~pmx_jax.estimation.FitResult` or a :class:`FittedRun`.
        out_dir: the folder (created if needed).
        formats: file types, any of ``png``, ``svg``, ``pdf``.
        units: axis units, e.g. ``dict(time="h", conc="mg/L")``.
        log_y: log concentration axes (DV vs PRED/IPRED, individual fits).
        prefix: put before each file name (e.g. the run name and ``_``).
        per_page: subjects per page of individual fits.
        n_sim, seed: replicates and seed of the VPC and NPDE simulations.

    Returns the files written, in the order made.
    """
    from ._plots import (
        dataset_of,
        eta_distributions,
        eta_vs_covariates,
        gof_panel,
        individual_fits,
        qq_plot,
    )

    formats = tuple(formats)
    unknown = sorted(set(formats) - set(PLOT_FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be among {PLOT_FORMATS}; got {list(formats)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(figure, stem: str) -> None:
        for fmt in formats:
            path = out / f"{prefix}{stem}.{fmt}"
            figure.savefig(path, dpi=120 if fmt == "png" else None)
            written.append(path)

    dataset = dataset_of(fit)
    kinds = _endpoint_kinds(fit.model, dataset)
    gaussian_only = all(kind == "gaussian" for kind in kinds.values())
    if gaussian_only:
        save(gof_panel(fit, units=units, log=log_y), "gof_panel")
        cwres = fit.table()["CWRES"].to_numpy(dtype=float)
        save(qq_plot(cwres, "CWRES"), "qq_cwres")
        pages = individual_fits(fit, per_page=per_page, units=units, log_y=log_y)
        for i, page in enumerate(pages, start=1):
            save(page, f"individual_fits_{i:02d}" if len(pages) > 1 else "individual_fits")
    else:
        # Counts, categories and event times have no CWRES, and curves of a
        # continuous prediction do not describe them: their randomized
        # quantile residuals (standardised residuals for Gaussian endpoints)
        # are N(0, 1) under the model.
        from ._discrete import quantile_residuals

        values = quantile_residuals(fit, seed=seed)["RESIDUAL"].to_numpy(dtype=float)
        save(qq_plot(values, "quantile residual"), "qq_quantile_residuals")
    save(eta_distributions(fit), "eta_distributions")
    if dataset.covariate_names:
        save(eta_vs_covariates(fit), "eta_vs_covariates")
    if n_sim and gaussian_only:
        from ._npde import npde
        from ._vpc import vpc

        checks = vpc(fit.model, dataset, n_sim=n_sim, seed=seed)
        save(checks.plot(units=units, log_y=log_y), "vpc")
        normalised = npde(fit.model, dataset, n_sim=max(n_sim, 100), seed=seed)
        save(qq_plot(normalised["NPDE"].to_numpy(dtype=float), "NPDE"), "qq_npde")
    elif n_sim:
        # One simulation-based check per non-Gaussian endpoint, of its kind.
        from ._discrete import categorical_vpc, kaplan_meier_vpc

        several = len(kinds) > 1
        for dvid, kind in kinds.items():
            suffix = f"_dvid{dvid}" if several else ""
            if kind == "event":
                check = kaplan_meier_vpc(fit.model, dataset, n_sim=n_sim, dvid=dvid, seed=seed)
                save(check.plot(units=units), f"km_vpc{suffix}")
            elif kind == "categorical":
                check = categorical_vpc(fit.model, dataset, n_sim=n_sim, dvid=dvid, seed=seed)
                save(check.plot(units=units), f"categorical_vpc{suffix}")
    return written


def _endpoint_kinds(model: Any, dataset: Any) -> dict[Any, str]:
    """Per DVID value of the data: ``"gaussian"`` (an error model),
    ``"event"`` (time to event), ``"categorical"`` (binary, categories,
    counts) or ``"other"`` (a user's log-likelihood)."""
    from ..likelihood._prepare import level_endpoints
    from ..model._observations import LogLikelihood

    kinds = {}
    for value, endpoint in zip(dataset.dvid_levels, level_endpoints(model, dataset), strict=True):
        if endpoint.gaussian:
            kinds[value] = "gaussian"
        elif endpoint.time_to_event:
            kinds[value] = "event"
        elif isinstance(endpoint, LogLikelihood):
            kinds[value] = "other"
        else:
            kinds[value] = "categorical"
    return kinds


def report(
    run: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    units: Mapping[str, str] | None = None,
    log_y: bool = False,
    out_dir: str | Path | None = None,
) -> list[Path]:
    """The plots of a finished ``pmx fit`` run, written to ``RUN/plots/`` (or
    ``out_dir``); returns the files.  What ``pmx report RUN`` does."""
    fitted = load_run(run)
    target = Path(out_dir) if out_dir is not None else fitted.folder / "plots"
    return write_report(fitted, target, formats=formats, units=units, log_y=log_y)
