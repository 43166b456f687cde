"""NONMEM ``$TABLE`` files from a fit: Xpose's ``sdtab``, ``patab``, ``cotab``
and ``catab``.

:func:`write_tables` writes the four tables of Xpose's naming convention
(``sdtab1``, ``patab1``, ``cotab1``, ``catab1`` for run 1) as NONMEM writes
them with ``$TABLE ... NOPRINT ONEHEADER FILE=sdtab1``, so that Xpose (4 and
the tidyverse ``xpose``), PsN and Pharmpy read them as a NONMEM run's tables:

* the first line is ``TABLE NO.  k`` (``k`` counts the tables written, in the
  order sdtab, patab, cotab, catab, as NONMEM numbers the ``$TABLE`` records
  of a problem);
* the second line the column labels, each in a 12-character field
  (``" ID          TIME  ..."``, no trailing blanks);
* then one line per record, every value in NONMEM's default format
  ``s1PE11.4`` (a space, then ``1.2345E+00`` right-aligned in 11 characters:
  5 significant digits).  ``digits`` sets the mantissa's decimals (NONMEM's
  ``FORMAT=s1PE<digits + 7>.<digits>``).  The ID column alone gets as many
  more digits as its values need to be written exactly (NONMEM would write ID
  123456 as 1.2346E+05).  Values that are not finite are written as gfortran
  writes them (``NaN``, ``Infinity``, ``-Infinity``), which pandas, readr and
  Pharmpy read as NaN/inf.

Rows: one per record of the dataset (``Dataset.records``: every row of the
data file that pmx read as a record, dose and other non-observation records
included, in file order), as NONMEM's ``$TABLE`` writes every data record by
default (no ``FIRSTONLY``).  ADDL-implied doses are not records and have no
row, as in NONMEM.

Tables and columns (Xpose recognises the names; a column is typed by its table
otherwise: parameters in patab, covariates in cotab and catab):

``sdtab``
    ``ID TIME [DVID] [OCC] EVID MDV TAD IPRED CPRED IRES IWRES CWRES
    [NPDE NPD]``, then NONMEM's appended items ``DV PRED RES WRES`` (NONMEM's
    default, no ``NOAPPEND``).  PRED, IPRED, CPRED, RES, IRES, WRES, CWRES and
    IWRES are those of :meth:`pmx_jax.FitResult.table` (CWRES as NONMEM and
    Xpose; WRES with the interaction term for FOCEI/Laplace).  DVID is written
    where the data have several endpoints, OCC where they have an OCC column.
    NPDE and NPD (:func:`pmx_jax.diagnostics.npde`) only with ``npde_n_sim >
    0``.  TAD is :func:`time_after_dose`.
``patab``
    ``ID TIME [OCC]``, the individual parameters of each record (the model's
    ``$PK`` block, ``Model.individual``, at the EBEs and the record's
    covariates and occasion; labels in upper case, ``cl`` -> ``CL``), and the
    EBEs as NONMEM numbers them: ``ETA1 .. ETAn`` the IIV etas in the order of
    ``Model.eta_names``, then for models with IOV one block per occasion
    (``Dataset.occ_levels`` order) of the IOV etas in the order of
    ``Model.iov_eta_names`` (the layout of ``FitResult.ebe_matrix``, that of a
    NONMEM model whose IOV etas are ``ETA(n+1)..`` for occasion 1, and so on).
    The ETAs are constant within a subject, as NONMEM writes them.  pmx's eta
    names are not written as extra columns: Xpose types any column whose name
    starts with ``ET`` as an eta (a second copy would be plotted twice) and any
    other patab column as a parameter.  ``NOAPPEND``, as Xpose's templates.
``cotab`` / ``catab``
    ``ID TIME`` and the covariates of each record as the model sees them
    (``Dataset.covariates``: carried forward within subjects): continuous ones
    in cotab, categorical ones (``Dataset.categories``, and numeric columns
    named in ``categorical``) in catab.  A categorical covariate whose levels
    are numbers is written as its level (SITE 101, 102); one whose levels are
    text as the code the model sees, ``0..k-1`` (``Dataset.categories[name][i]``
    is the text of code ``i``).  ``NOAPPEND``.  A table without covariates is
    not written.

Missing and undefined values: on non-observation records (MDV 1 or EVID not
0: doses, EVID 2/3 records, and MDV 1 observations) RES, IRES, WRES, CWRES, IWRES, NPDE
and NPD are 0, as NONMEM writes its residuals there, and DV is the data's
value, 0 where the data have none (NM-TRAN reads ``.`` as 0).  PRED, IPRED and
CPRED are the predictions at every record.  On observation records where a
residual is not defined (a censored (M3) observation; an observation of a
non-Gaussian endpoint; an NPDE without predictive variance) the value is NaN,
so that nothing passes for a residual of 0; filter on ``MDV == 0`` as usual.
Covariates missing on every record of a subject are NaN.

IDs that are not numbers are written as the subject's position (1, 2, ...),
with a warning; DVID and OCC levels that are not numbers as their index
``0..k-1`` (into ``Dataset.dvid_levels`` / ``occ_levels``).
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._shapes import subjects_bucket
from .._sharding import pad_subjects
from .._stored import stored
from ..data._batch import expand_addl
from ..data._dataset import Dataset
from ..likelihood import Layout, record_frame_index, record_parameters
from ..likelihood._prepare import with_time

#: The tables :func:`write_tables` writes, in order (Xpose's file prefixes).
TABLES = ("sdtab", "patab", "cotab", "catab")

#: The items NONMEM appends to every ``$TABLE`` without ``NOAPPEND``.
APPENDED = ("DV", "PRED", "RES", "WRES")

#: sdtab columns that NONMEM writes as 0 on non-observation records (MDV 1 or EVID not 0).
RESIDUALS = ("RES", "IRES", "WRES", "CWRES", "IWRES", "NPDE", "NPD")

_DOSE_EVIDS = (1, 4)
_RESET_EVID = 3


# ----------------------------------------------------------------- public API
def write_tables(
    fit: Any,
    folder: str | Path,
    run_number: int | str = 1,
    *,
    npde_n_sim: int = 0,
    seed: int = 0,
    categorical: Sequence[str] = (),
    digits: int = 4,
) -> list[Path]:
    """Write ``sdtab<N>``, ``patab<N>``, ``cotab<N>`` and ``catab<N>`` of a fit
    into ``folder`` (created if needed) in NONMEM's table format.

    Args:
        fit: a :class:`~pmx_jax.FitResult` that keeps its dataset.
        folder: where to write the files.
        run_number: the ``N`` of the file names (``1`` -> ``sdtab1``;
            ``"001"`` -> ``sdtab001``, Xpose's other convention).
        npde_n_sim: simulated replicates for the NPDE and NPD columns of
            sdtab (:func:`pmx_jax.diagnostics.npde`; it must exceed the
            largest number of observations of a subject); 0 (default): no
            NPDE columns.
        seed: seed of the NPDE simulation.
        categorical: numeric covariates to write in catab rather than cotab
            (text covariates and ``read_nonmem(..., categorical=...)`` ones are
            there anyway).
        digits: decimals of the mantissa (NONMEM's default 4: 5 significant
            digits).

    Returns:
        the paths written, in the order sdtab, patab, cotab, catab; cotab and
        catab are left out when the dataset has no such covariates.

    See the module notes for the columns and the conventions.
    """
    suffix = str(run_number)
    if not suffix or not re.fullmatch(r"[\w.\-]+", suffix):
        raise ValueError(
            f"run_number must be a number or a short name for file names, got {run_number!r}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = [
        ("sdtab", sdtab(fit, npde_n_sim=npde_n_sim, seed=seed)),
        ("patab", patab(fit)),
        ("cotab", cotab(fit, categorical=categorical)),
        ("catab", catab(fit, categorical=categorical)),
    ]
    paths: list[Path] = []
    for prefix, frame in frames:
        if prefix in ("cotab", "catab") and frame.shape[1] <= 2:
            continue  # only ID and TIME: no covariates of that kind
        path = folder / f"{prefix}{suffix}"
        write_table(frame, path, number=len(paths) + 1, digits=digits)
        paths.append(path)
    return paths


def sdtab(fit: Any, *, npde_n_sim: int = 0, seed: int = 0) -> pd.DataFrame:
    """The columns of ``sdtab`` (one row per record, file order, values as the
    file holds them: residuals 0 on MDV 1 records; see the module notes)."""
    dataset = _dataset_of(fit)
    records = dataset.records
    n = len(records)
    table = fit.table()
    values = _by_record(dataset, table["row"].to_numpy(), table, n)
    mdv = records["mdv"].to_numpy().astype(float)
    evid = records["evid"].to_numpy().astype(float)
    non_obs = (mdv != 0) | (evid != 0)

    frame = _id_time(dataset)
    if len(dataset.dvid_levels) > 1:
        frame["DVID"] = _level_values(dataset.dvid_levels, records["dvid"].to_numpy())
    if "OCC" in dataset.roles:
        frame["OCC"] = _level_values(dataset.occ_levels, records["occ"].to_numpy())
    frame["EVID"] = evid
    frame["MDV"] = mdv
    frame["TAD"] = time_after_dose(dataset)
    for name in ("IPRED", "CPRED", "IRES", "IWRES", "CWRES"):
        frame[name] = values[name]
    if npde_n_sim:
        from ..diagnostics import npde

        result = npde(fit, n_sim=int(npde_n_sim), seed=seed)
        simulated = _by_record(dataset, result["row"].to_numpy(), result, n)
        frame["NPDE"] = simulated["NPDE"]
        frame["NPD"] = simulated["NPD"]
    dv = records["dv"].to_numpy().astype(float)
    frame["DV"] = np.where(np.isnan(dv), 0.0, dv)
    for name in ("PRED", "RES", "WRES"):
        frame[name] = values[name]
    for name in RESIDUALS:
        if name in frame:
            frame[name] = np.where(non_obs, 0.0, frame[name].to_numpy())
    return frame


def patab(fit: Any) -> pd.DataFrame:
    """The columns of ``patab``: ID, TIME, [OCC], the individual parameters of
    every record at the EBEs (labels in upper case) and ETA1.. (NONMEM's
    numbering; see the module notes)."""
    dataset = _dataset_of(fit)
    problem = getattr(fit, "problem", None)
    prepared = getattr(problem, "source", None)
    if prepared is None:
        raise ValueError("this FitResult keeps no laid-out data (fit.problem.source)")
    model = fit.model
    records = dataset.records
    n = len(records)
    subjects = prepared.subjects
    layout = Layout.of(model, prepared.n_occasions)
    ebes = np.asarray(fit.ebe_matrix, dtype=float)
    if ebes.shape != (dataset.n_subjects, layout.size):
        raise ValueError(
            f"EBEs of shape {ebes.shape} do not match {dataset.n_subjects} subjects with "
            f"{layout.size} random effects each"
        )
    to = subjects_bucket(dataset.n_subjects)  # one program per bucket
    padded, laid = pad_subjects((subjects, ebes.astype(subjects.time.dtype)), to)
    params = _record_parameters(model, padded, jnp.asarray(laid), layout)
    sub, rec = record_frame_index(subjects)
    rows = np.asarray(subjects.row)[sub, rec]

    frame = _id_time(dataset)
    if "OCC" in dataset.roles or model.n_iov_eta:
        frame["OCC"] = _level_values(dataset.occ_levels, records["occ"].to_numpy())
    eta_labels = [f"ETA{i + 1}" for i in range(layout.size)]
    names = _parameter_names(model, subjects, layout)
    labels = _labels([k.upper() for k in names], taken=(*frame.columns, *eta_labels))
    by_name = {
        label: np.asarray(jax.device_get(params[name]), dtype=float)[sub, rec]
        for label, name in zip(labels, names, strict=True)
    }
    ordered = _by_record(dataset, rows, pd.DataFrame(by_name), n)
    for label in labels:
        frame[label] = ordered[label]
    subject = records["subject"].to_numpy()
    for j, label in enumerate(eta_labels):
        frame[label] = ebes[subject, j]
    return frame


def cotab(fit: Any, *, categorical: Sequence[str] = ()) -> pd.DataFrame:
    """The columns of ``cotab``: ID, TIME and the continuous covariates of every
    record (carried forward, as the model sees them)."""
    dataset = _dataset_of(fit)
    continuous, _ = _split_covariates(dataset, categorical)
    frame = _id_time(dataset)
    covariates = dataset.covariates
    for label, name in zip(_labels(continuous, taken=frame.columns), continuous, strict=True):
        frame[label] = covariates[name].to_numpy(dtype=float)
    return frame


def catab(fit: Any, *, categorical: Sequence[str] = ()) -> pd.DataFrame:
    """The columns of ``catab``: ID, TIME and the categorical covariates of
    every record (levels that are numbers as themselves, text levels as the
    codes ``0..k-1`` the model sees)."""
    dataset = _dataset_of(fit)
    _, names = _split_covariates(dataset, categorical)
    frame = _id_time(dataset)
    covariates = dataset.covariates
    for label, name in zip(_labels(names, taken=frame.columns), names, strict=True):
        values = covariates[name].to_numpy(dtype=float)
        if name in dataset.categories:
            values = _level_values(dataset.categories[name], values)
        frame[label] = values
    return frame


def time_after_dose(dataset: Dataset) -> np.ndarray:
    """Time after the last dose at every record of ``dataset.records`` (file
    order): the record's time minus that of the subject's latest dose at or
    before it (EVID 1 and 4, doses implied by ADDL included, each at
    ``TIME + k II``; at a dose record, and at an observation at the time of
    an ADDL dose, 0).  Records before the subject's first dose, and after a
    reset (EVID 3) until the next dose, have 0.  Times are those of the event
    engine, which continue across a reset where TIME restarts."""
    records = dataset.records
    fields, _ = expand_addl(records, np.zeros((len(records), 0)))
    time = np.asarray(fields["time"], dtype=float)
    evid = np.asarray(fields["evid"])
    dose_time = np.where(
        np.isin(evid, _DOSE_EVIDS), time, np.where(evid == _RESET_EVID, -np.inf, np.nan)
    )
    last = pd.Series(dose_time).groupby(np.asarray(fields["subject"])).ffill().to_numpy()
    tad = np.where(np.isfinite(last), time - last, 0.0)
    original = ~np.asarray(fields["is_addl"])
    out = np.full(len(records), np.nan)
    out[dataset.record_positions(np.asarray(fields["row"])[original])] = tad[original]
    return out


def write_table(frame: pd.DataFrame, path: str | Path, *, number: int = 1, digits: int = 4) -> Path:
    """Write ``frame`` (numeric columns) to ``path`` as one NONMEM table
    (:func:`format_table`)."""
    path = Path(path)
    path.write_text(format_table(frame, number=number, digits=digits))
    return path


def format_table(frame: pd.DataFrame, *, number: int = 1, digits: int = 4) -> str:
    """``frame`` as the text of a NONMEM table file: ``TABLE NO.  <number>``,
    the labels in 12-character fields, then every value in ``1PE11.4``
    (``digits`` decimals; the ID column as many more as it needs to be exact;
    see the module notes)."""
    digits = int(digits)
    if not 1 <= digits <= 16:
        raise ValueError(f"digits must be between 1 and 16, got {digits}")
    labels = [str(c) for c in frame.columns]
    bad = [c for c in labels if not c or re.search(r"\s", c)]
    if bad:
        raise ValueError(f"column labels must be non-empty and without spaces: {bad}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate column labels: {labels}")
    cells = []
    widths = []
    for label in labels:
        values = np.asarray(frame[label].to_numpy(), dtype=float) + 0.0  # no "-0.0000E+00"
        d = _exact_digits(values, digits) if label == "ID" else digits
        width = d + 7
        widths.append(width)
        cells.append(_format_column(values, width, d))
    header = "".join(f" {label:<{w}}" for label, w in zip(labels, widths, strict=True)).rstrip()
    lines = [f"TABLE NO.{int(number):3d}", header]
    if len(frame):
        rows = cells[0]
        for column in cells[1:]:
            rows = np.char.add(rows, column)
        lines.extend(rows.tolist())
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- helpers
def _dataset_of(fit: Any) -> Dataset:
    dataset = getattr(fit, "dataset", None)
    if dataset is None:
        raise ValueError(
            "this FitResult keeps no dataset (the fit was given prepared data): "
            "fit the Dataset itself to write NONMEM tables"
        )
    return dataset


def _id_time(dataset: Dataset) -> pd.DataFrame:
    """ID and TIME of every record, as numbers."""
    records = dataset.records
    ids = records["id"].to_numpy()
    try:
        values = ids.astype(float)
        numeric = np.isfinite(values).all()
    except (TypeError, ValueError):
        numeric = False
    if not numeric:
        warnings.warn(
            "the dataset's IDs are not all numbers: NONMEM tables write the subject's "
            "position (1, 2, ... in Dataset.ids order) as ID",
            UserWarning,
            stacklevel=3,
        )
        values = records["subject"].to_numpy().astype(float) + 1.0
    return pd.DataFrame({"ID": values, "TIME": records["time"].to_numpy().astype(float)})


def _by_record(dataset: Dataset, rows: np.ndarray, frame: pd.DataFrame, n: int) -> dict:
    """The columns of ``frame`` (one row per table row ``rows``) in the order
    of ``dataset.records``."""
    positions = dataset.record_positions(rows)
    out = {}
    for name in frame.columns:
        column = np.full(n, np.nan)
        column[positions] = np.asarray(frame[name].to_numpy(), dtype=float)
        out[name] = column
    return out


def _level_values(levels: Sequence[Any], codes: Any) -> np.ndarray:
    """Codes ``0..k-1`` as their levels when every level is a number, else the
    codes themselves (NaN stays NaN)."""
    codes = np.asarray(codes, dtype=float)
    if not levels or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in levels
    ):
        return codes
    table = np.asarray(levels, dtype=float)
    known = np.isfinite(codes)
    out = np.full(codes.shape, np.nan)
    out[known] = table[codes[known].astype(int)]
    return out


def _split_covariates(dataset: Dataset, categorical: Iterable[str]) -> tuple[list[str], list[str]]:
    """(continuous, categorical) covariate names of the dataset."""
    names = dataset.covariate_names
    by_upper = {n.upper(): n for n in names}
    asked = [str(c) for c in categorical]
    unknown = [c for c in asked if c.upper() not in by_upper]
    if unknown:
        raise KeyError(
            f"categorical covariate(s) {unknown} are not covariates of the dataset; "
            f"its covariates are {', '.join(names) or '(none)'}"
        )
    chosen = set(dataset.categories) | {by_upper[c.upper()] for c in asked}
    return [n for n in names if n not in chosen], [n for n in names if n in chosen]


def _labels(names: Iterable[str], *, taken: Iterable[str]) -> list[str]:
    """Table labels for ``names``: whitespace replaced by ``_``, made unique
    against ``taken`` and each other by a ``_2``, ``_3``... suffix."""
    used = {str(t) for t in taken}
    out = []
    for name in names:
        label = re.sub(r"\s+", "_", str(name).strip()) or "X"
        candidate, k = label, 1
        while candidate in used:
            k += 1
            candidate = f"{label}_{k}"
        used.add(candidate)
        out.append(candidate)
    return out


def _exact_digits(values: np.ndarray, digits: int) -> int:
    """The fewest mantissa decimals (at least ``digits``, at most 16) with
    which every finite value reads back exactly."""
    finite = values[np.isfinite(values)]
    for d in range(digits, 17):
        if np.array_equal(np.char.mod(f"%.{d}E", finite).astype(float), finite):
            return d
    return 16


def _format_column(values: np.ndarray, width: int, digits: int) -> np.ndarray:
    """`` %<width>.<digits>E`` of every value; non-finite values as gfortran
    writes them."""
    text = np.char.mod(f" %{width}.{digits}E", values)
    finite = np.isfinite(values)
    if not finite.all():
        words = np.where(np.isnan(values), "NaN", np.where(values > 0, "Infinity", "-Infinity"))
        padded = np.char.add(" ", np.char.rjust(words, width))
        text = np.where(finite, text, padded)
    return text


def _parameter_names(model, subjects, layout: Layout) -> list[str]:
    """The individual parameters in the order the $PK block returns them (a
    traced dict comes back with its keys sorted)."""
    found: list[str] = []

    def run(records, b):
        eta, iov = layout.split(b)
        names = with_time(records.covariate_names)
        cov = records.cov[0]
        if len(names) > cov.shape[-1]:
            cov = jnp.concatenate([cov, records.time[:1].astype(cov.dtype)])
        iov_eta = iov[records.occ[0]] if layout.n_iov_eta else None
        found[:] = [str(k) for k in model.individual_parameters(eta, cov, names, iov_eta)]
        return jnp.zeros(())

    # Abstract shapes: slicing the arrays would run (and compile) a program each.
    first = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), subjects)
    jax.eval_shape(run, first, jax.ShapeDtypeStruct((layout.size,), subjects.time.dtype))
    return found


@stored("record-parameters")
def _record_parameters(model, subjects, ebes, layout: Layout) -> dict:
    """The $PK block at every record of every subject, at the EBEs
    (``(n_subjects, n_records)`` per parameter)."""

    def one(records, b):
        eta, iov = layout.split(b)
        return record_parameters(model, records, eta, iov if layout.n_iov_eta else None)

    return jax.vmap(one)(subjects, ebes)
