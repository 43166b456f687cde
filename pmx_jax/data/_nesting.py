"""A third level of random effects (study site above subject) by nesting: :func:`nest`.

The likelihood kernel integrates out one random-effect vector per individual,
made of IIV etas and one block of IOV etas per occasion.  Variability between
sites, between subjects within a site, and residual error fit that mould by the
standard NONMEM device: the *site* becomes the individual of the likelihood, and
each subject of the site becomes one of its *occasions*.  Then

* an ordinary IIV block (``pmx.omega(...)``) holds the site-level etas, shared by
  every subject of the site;
* an occasion block (``pmx.omega(..., occasion=True)``) holds the subject-level
  etas, one independent draw per subject;

and FOCEI/Laplace optimise and integrate both levels jointly, site by site.

:func:`nest` rewrites a dataset so: one ID per site, the site's subjects one
after another in time, OCC = 1, 2, ... for its first, second, ... subject, and the
compartments reset where each subject after the first starts, so the events of
one subject never reach the next and each subject's predictions are exactly
those it has alone.  A model for the nested data::

    class SiteModel(pmx.Model):
        tka: pmx.Theta = pmx.theta(0.0)
        tcl: pmx.Theta = pmx.theta(1.0)
        tv: pmx.Theta = pmx.theta(3.0)
        add_sd: pmx.Theta = pmx.theta(0.5, lower=0.0)
        site: pmx.Omega = pmx.omega(site_cl=0.1)                    # between sites
        subject: pmx.Omega = pmx.omega(cl=0.1, v=0.05, occasion=True)  # within a site
        dynamics = pmx.pk.OneCompartmentOral()

        def individual(self, eta, cov):
            return dict(
                ka=jnp.exp(self.tka),
                cl=jnp.exp(self.tcl + eta.site_cl + eta.cl),
                v=jnp.exp(self.tv + eta.v),
            )

        def observe(self, amounts, p):
            return pmx.Additive(amounts.central / p["v"], self.add_sd)

    fit = pmx.fit(SiteModel(), nest(data, by="SITE"), "focei")

In the fit, ``fit.ebes`` has one row per site (the site etas) and
``fit.ebe_matrix`` holds the subject etas occasion by occasion after them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._columns import text_codes
from ._dataset import Dataset
from ._errors import (
    DatasetError,
    InvalidValueError,
    MissingColumnError,
    MissingCovariateError,
    format_id,
    where,
)
from ._read import read_nonmem

#: Columns :func:`nest` adds to the table to map records back to the original dataset.
ORIGINAL_COLUMNS: tuple[str, str, str] = ("ORIG_ID", "ORIG_TIME", "ORIG_ROW")


def nest(dataset: Dataset, by: str = "SITE", *, gap: float = 100.0) -> Dataset:
    """Make the sites (values of column ``by``) the individuals and their subjects
    the occasions, for a model with a third level of random effects.

    Each value of ``by`` becomes one ID (sites in order of first appearance); each
    subject of the site becomes an occasion, OCC = 1..k in dataset order, and is
    placed after the previous one in time: its times are shifted so that it starts
    ``gap`` time units after the previous subject's last record (or last ADDL dose).
    The compartments are reset at the start of every subject after the first: its
    first dose becomes a reset-and-dose (EVID 4), or, when its first record is not
    a dose, a reset record (EVID 3, MDV 1) is added before it.  So a subject's
    predictions in the nested dataset are exactly its predictions alone, whatever
    the model (reset clears lagged doses and running infusions too).

    Every column is carried over.  The NONMEM data items are written under their
    standard names (ID, TIME, EVID, MDV, AMT, DV, OCC and, where the data use them,
    CMT, RATE, II, ADDL, SS, DVID, CENS, LLOQ, LIMIT) with the values as read;
    covariates are written as the model sees them (carried forward within each
    original subject, so that no value crosses from one subject to the next) and
    keep their categories.  Three columns of ``table`` map the records back:
    ``ORIG_ID`` (the subject's ID), ``ORIG_TIME`` (its TIME) and ``ORIG_ROW``
    (the record's 0-based row in the original ``table``, as ``records["row"]``;
    missing on added reset records).  ``predict``'s and ``FitResult.table()``'s
    ``row`` column indexes the nested ``table``, so
    ``nested.table.loc[out["row"], "ORIG_ID"]`` gives each result's subject.

    The model then reads site etas from an IIV block and subject etas from an
    occasion block (see the module notes for a full model)::

        site: pmx.Omega = pmx.omega(site_cl=0.1)
        subject: pmx.Omega = pmx.omega(cl=0.1, v=0.05, occasion=True)
        ...  cl = jnp.exp(self.tcl + eta.site_cl + eta.cl)

    Args:
        dataset: the dataset with one row per record of each subject.
        by: the column that names each subject's site (matched case-insensitively);
            it must be constant within every subject (missing cells are allowed and
            take the subject's value).
        gap: time between one subject's last event and the next subject's first
            record (>= 0; only for readability: the reset makes any gap exact).

    Returns:
        a new :class:`Dataset` with one subject per site.

    Raises:
        MissingColumnError: no column ``by``.
        InvalidValueError: ``by`` changes within a subject or is missing on all its
            records.
        MissingCovariateError: a covariate is missing on every record of a subject
            (nesting would carry another subject's value into it).
        DatasetError: the dataset already has occasions (OCC): a fourth level of
            random effects is not supported; or ``by`` is a NONMEM data item.

    Example:
        >>> import pandas as pd
        >>> table = pd.DataFrame({"ID": [1, 1, 2, 2, 3, 3], "TIME": [0, 2] * 3,
        ...                       "AMT": [100, 0] * 3, "DV": [None, 4.1, None, 3.5, None, 5.0],
        ...                       "SITE": [10, 10, 10, 10, 20, 20]})
        >>> nested = nest(read_nonmem(table), by="SITE")
        >>> nested.ids, nested.occ_levels
        ((10, 20), (1, 2))
        >>> print(nested.table[["ID", "TIME", "EVID", "OCC", "ORIG_ID", "ORIG_TIME"]])
           ID   TIME  EVID  OCC  ORIG_ID  ORIG_TIME
        0  10    0.0     1    1        1        0.0
        1  10    2.0     0    1        1        2.0
        2  10  102.0     4    2        2        0.0
        3  10  104.0     0    2        2        2.0
        4  20    0.0     1    1        3        0.0
        5  20    2.0     0    1        3        2.0
    """
    if not (isinstance(gap, int | float) and math.isfinite(gap) and gap >= 0):
        raise ValueError(f"gap must be a finite number >= 0 (time units), got {gap!r}")
    table = dataset.table.reset_index(drop=True)
    records = dataset.records.reset_index(drop=True)
    column = _site_column(dataset, by)
    _check_nestable(dataset, table)
    site_of_subject, site_value = _sites(table, records, column, dataset)
    _check_covariates_per_subject(dataset, records)

    subject = records["subject"].to_numpy()
    n_subjects = dataset.n_subjects
    # Sites in order of first appearance; subjects of a site in dataset order.
    site_index, site_levels = pd.factorize(pd.Series(site_of_subject), sort=False)
    order = np.lexsort((np.arange(n_subjects), site_index))
    occasion = np.empty(n_subjects, dtype=np.int64)
    sorted_site = site_index[order]
    first_of_site = np.r_[True, sorted_site[1:] != sorted_site[:-1]]
    start_of_block = np.maximum.accumulate(np.where(first_of_site, np.arange(n_subjects), 0))
    occasion[order] = np.arange(n_subjects) - start_of_block + 1

    offset = _time_offsets(records, n_subjects, order, first_of_site, gap)
    new_table, n_added = _nested_table(
        dataset, table, records, subject, site_value, occasion, order, offset
    )
    nested = read_nonmem(new_table, covariates=list(dataset.covariate_names))

    sizes = np.bincount(site_index)
    note = (
        f"nested by {column}: {len(site_levels)} sites are the IDs, their {n_subjects} "
        f"subjects the occasions (OCC 1..{sizes.max()}, {sizes.min()}-{sizes.max()} per site), "
        f"each subject placed {gap:g} time units after the previous one with the compartments "
        f"reset at its start ({n_added} reset records added); table columns "
        f"{', '.join(ORIGINAL_COLUMNS)} give each record's original ID, TIME and row"
    )
    return _with_levels_of(nested, dataset, [*dataset.notes, note])


# -- checks ------------------------------------------------------------------------------


def _site_column(dataset: Dataset, by: str) -> str:
    columns = [str(c) for c in dataset.table.columns]
    if by in columns:
        column = by
    else:
        matches = [c for c in columns if c.casefold() == str(by).casefold()]
        if not matches:
            raise MissingColumnError(
                f"nest(..., by={by!r}): the dataset has no column {by!r}; its columns are "
                f"{', '.join(columns)}. Name the column that holds each subject's site."
            )
        if len(matches) > 1:
            raise DatasetError(
                f"nest(..., by={by!r}): columns {matches} differ only in case; name one exactly."
            )
        column = matches[0]
    role = next((r for r, c in dataset.roles.items() if c == column), None)
    if role is not None:
        raise DatasetError(
            f"nest(..., by={by!r}): column {column!r} is the NONMEM data item {role}, not a "
            f"grouping of subjects; give the column that names each subject's site."
        )
    return column


def _check_nestable(dataset: Dataset, table: pd.DataFrame) -> None:
    if "OCC" in dataset.roles:
        raise DatasetError(
            f"nest(): the dataset already has occasions (column {dataset.roles['OCC']!r}); "
            f"nesting makes the subjects the occasions of their site, and a fourth level of "
            f"random effects (occasions within subjects within sites) is not supported. Drop "
            f"the OCC column (and IOV from the model) to nest, or model either level alone."
        )
    upper = {str(c).upper(): str(c) for c in table.columns}
    clash = [upper[name] for name in ORIGINAL_COLUMNS if name in upper]
    if clash:
        raise DatasetError(
            f"nest(): the dataset already has column(s) {', '.join(clash)}, which nest() adds "
            f"to map records back to the original data; rename them first."
        )


def _sites(
    table: pd.DataFrame, records: pd.DataFrame, column: str, dataset: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Each subject's site as a code and as the value in the table."""
    codes, texts = text_codes(table[column])
    subject = records["subject"].to_numpy()
    rows = records["row"].to_numpy()
    ids = dataset.ids
    known = codes >= 0
    # Per subject: its first non-missing site code, and where another code appears.
    first_known = (
        pd.Series(np.where(known, np.arange(len(codes)), len(codes)))
        .groupby(subject, sort=True)
        .min()
        .reindex(range(dataset.n_subjects), fill_value=len(codes))
        .to_numpy()
    )
    absent = np.flatnonzero(first_known == len(codes))
    if absent.size:
        s = absent[0]
        raise InvalidValueError(
            f"nest(): column {column!r} is missing on every record of ID {format_id(ids[s])}"
            f"{f' and {absent.size - 1} more subjects' if absent.size > 1 else ''}; give every "
            f"subject its site."
        )
    site_code = codes[first_known]
    differs = np.flatnonzero(known & (codes != site_code[subject]))
    if differs.size:
        r = differs[0]
        s = subject[r]
        raise InvalidValueError(
            f"nest(): column {column!r} must be constant within each subject, but ID "
            f"{format_id(ids[s])} has {texts[site_code[s]]!r} and then {texts[codes[r]]!r} at "
            f"{where(rows[r], ids[s])}; a subject belongs to one site. Fix the site of that "
            f"subject, or give the two parts different IDs."
        )
    site_value = table[column].to_numpy()[first_known]
    return site_code, site_value


def _check_covariates_per_subject(dataset: Dataset, records: pd.DataFrame) -> None:
    covariates = dataset.covariates.reset_index(drop=True)
    if not covariates.shape[1]:
        return
    missing = covariates.isna().groupby(records["subject"].to_numpy()).all()
    for name in covariates.columns:
        absent = np.flatnonzero(missing[name].to_numpy())
        if absent.size:
            ids = ", ".join(format_id(dataset.ids[s]) for s in absent[:5])
            raise MissingCovariateError(
                f"nest(): covariate {name!r} is missing on every record of ID {ids}"
                f"{' and more' if absent.size > 5 else ''}; in the nested dataset another "
                f"subject's value would be carried into it. Fill it in, or leave the column "
                f"out of the dataset (read_nonmem(..., covariates=[...])) before nesting."
            )


# -- the nested table --------------------------------------------------------------------


def _time_offsets(
    records: pd.DataFrame,
    n_subjects: int,
    order: np.ndarray,
    first_of_site: np.ndarray,
    gap: float,
) -> np.ndarray:
    """Per subject, what to add to its event times so that within a site each
    subject starts ``gap`` after the previous one's last record or ADDL dose."""
    subject = records["subject"].to_numpy()
    time = records["event_time"].to_numpy(dtype=np.float64)
    last_event = time + records["addl"].to_numpy() * records["ii"].to_numpy(dtype=np.float64)
    start = pd.Series(time).groupby(subject).min().reindex(range(n_subjects)).to_numpy()
    end = pd.Series(last_event).groupby(subject).max().reindex(range(n_subjects)).to_numpy()
    # Along each site's subjects: new start = previous new start + previous span + gap.
    span = (end - start)[order] + gap
    before = np.cumsum(span) - span  # spans of all earlier subjects, every site
    site_start = np.maximum.accumulate(np.where(first_of_site, before, -np.inf))
    new_start = start[order[first_of_site]][np.cumsum(first_of_site) - 1] + before - site_start
    offset = np.empty(n_subjects)
    offset[order] = new_start - start[order]
    return offset


def _nested_table(
    dataset: Dataset,
    table: pd.DataFrame,
    records: pd.DataFrame,
    subject: np.ndarray,
    site_value: np.ndarray,
    occasion: np.ndarray,
    order: np.ndarray,
    offset: np.ndarray,
) -> tuple[pd.DataFrame, int]:
    """The nested table (a fresh RangeIndex) and the number of reset records added."""
    n = len(records)
    evid = records["evid"].to_numpy()
    position = np.arange(n)
    first = np.r_[True, subject[1:] != subject[:-1]]
    later = first & (occasion[subject] > 1)
    # A later subject starting with a dose: that dose resets (EVID 4).  Otherwise a
    # reset record goes before its first record (EVID 3/4 already reset).
    becomes_4 = later & (evid == 1)
    add_reset = later & np.isin(evid, (0, 2))
    source = np.r_[position, position[add_reset]]
    added = np.r_[np.zeros(n, dtype=bool), np.ones(int(add_reset.sum()), dtype=bool)]
    rank = np.empty(dataset.n_subjects, dtype=np.int64)
    rank[order] = np.arange(dataset.n_subjects)
    # Site by site, subject by subject, the added reset just before its subject's records.
    sequence = np.lexsort((~added, position[source], rank[subject[source]]))
    source, added = source[sequence], added[sequence]
    sub = subject[source]

    def take(name: str) -> np.ndarray:
        return records[name].to_numpy()[source]

    new_evid = np.where(becomes_4, 4, evid)[source]
    new_evid = np.where(added, 3, new_evid)
    columns: dict[str, object] = {
        "ID": site_value[sub],
        "TIME": take("event_time") + offset[sub],
        "EVID": new_evid,
        "MDV": np.where(added, 1, take("mdv")),
        "AMT": np.where(added, 0.0, take("amt")),
        "DV": np.where(added, np.nan, take("dv")),
    }
    roles = dataset.roles
    if "CMT" in roles or (records["cmt"] != 0).any():
        columns["CMT"] = np.where(added, 0, take("cmt"))
    for name in ("RATE", "II", "ADDL", "SS"):
        if name in roles or (records[name.lower()] != 0).any():
            columns[name] = np.where(added, 0, take(name.lower()))
    if "DVID" in roles:
        columns["DVID"] = np.asarray(dataset.dvid_levels, dtype=object)[take("dvid")]
    cens = take("cens")
    if (cens != 0).any():
        columns["CENS"] = np.where(added, 0, cens)
        limit = take("limit")
        columns["LLOQ"] = np.where(~added & (cens == 1), limit, np.nan)
        if "LIMIT" in roles:
            columns["LIMIT"] = np.where(~added & (cens != 0), take("bound"), np.nan)
    columns["OCC"] = occasion[sub]

    covariates = dataset.covariates.reset_index(drop=True)
    role_columns = set(roles.values())
    for name in table.columns:
        if name in role_columns:
            continue
        if name in covariates.columns:
            values = covariates[name].to_numpy()[source]
            levels = dataset.categories.get(name)
            if levels is not None:
                values = np.asarray(levels, dtype=object)[values.astype(np.int64)]
            columns[name] = values
        else:
            columns[name] = table[name].to_numpy()[source]
    columns["ORIG_ID"] = take("id")
    columns["ORIG_TIME"] = take("time")
    columns["ORIG_ROW"] = pd.array(take("row"), dtype="Int64")
    frame = pd.DataFrame(columns)
    frame.loc[added, "ORIG_ROW"] = pd.NA
    return frame, int(added.sum())


def _with_levels_of(nested: Dataset, original: Dataset, notes: list[str]) -> Dataset:
    """``nested`` with the original's notes, and its DVID levels in the original order
    (text levels are ordered by first appearance, which nesting may change)."""
    records = nested.records
    levels = nested.dvid_levels
    if set(levels) == set(original.dvid_levels) and levels != original.dvid_levels:
        recode = np.asarray([original.dvid_levels.index(level) for level in levels])
        records = records.assign(dvid=recode[records["dvid"].to_numpy()])
        levels = original.dvid_levels
    return Dataset(
        table=nested.table,
        records=records,
        covariates=nested.covariates,
        roles=nested.roles,
        ids=np.asarray(nested._ids),
        dvid_levels=levels,
        occ_levels=nested.occ_levels,
        categories=nested.categories,
        notes=notes,
    )
