"""Reading and validating a NONMEM-style dataset: :func:`read_nonmem`.

Every check runs on whole columns (numpy/pandas), so a table of 10^6 records is
read in seconds; every problem raises a named :class:`DatasetError` that
points at the row a user would open in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from ._censoring import read_censoring
from ._columns import (
    MISSING_STRINGS,
    ROLES,
    levels_and_codes,
    numeric,
    parse_texts,
    resolve_roles,
    text_codes,
)
from ._covariates import encode_covariates
from ._dataset import Dataset
from ._errors import (
    DatasetError,
    DatasetWarning,
    InvalidDoseError,
    InvalidValueError,
    MissingColumnError,
    MissingCovariateError,
    MissingObservationError,
    NegativeDoseError,
    NonContiguousIdError,
    SteadyStateError,
    UnknownCompartmentError,
    UnknownEvidError,
    UnsortedTimeError,
    format_id,
    where,
    where_many,
)

#: rxode2/nlmixr2 "classic" EVID for a bolus dose into compartment 1.
RXODE_BOLUS_CMT1 = 101


def read_nonmem(
    source: str | os.PathLike | pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    covariates: Sequence[str] | None = None,
    dv_name: str | None = None,
    ss_codes: Mapping[float, int] | None = None,
    reset_when_time_decreases: bool = False,
    na_values: Sequence[str] = MISSING_STRINGS,
    categorical: Sequence[str] = (),
    encoding: str | None = None,
) -> Dataset:
    """Read a NONMEM-style dataset (a CSV file or a DataFrame) into a :class:`Dataset`.

    Column names are case-insensitive.  Roles: ID, TIME, DV, AMT, EVID, MDV,
    CMT, RATE, II, ADDL, SS, DVID, OCC, CENS (or a 0/1 BLQ flag), LIMIT, LLOQ;
    ID, TIME, and DV or AMT are required.  Absent items take NONMEM's defaults:

    * no EVID: from MDV and AMT (MDV 1 and AMT > 0: dose; MDV 1 and AMT 0: other,
      EVID 2; MDV 0: observation), or from AMT alone without MDV (AMT > 0: dose,
      everything else an observation).  rxode2's EVID 101 is a bolus into CMT 1.
    * no MDV: 1 on non-observation records and where DV is missing.
    * no CMT: 0 (the model's default dose and observation compartments).
    * RATE, II, ADDL, SS: 0.  DVID and OCC: one level.
    * '.' and empty cells (and R's NA) are missing; missing AMT/RATE/II/ADDL/SS/CMT
      read as 0, as NONMEM does.

    Every column that is not a role is a covariate (or only those named in
    ``covariates``); see :mod:`pmx_jax.data._covariates` for categories and
    carrying forward, and :mod:`pmx_jax.data._censoring` for BLQ data.

    Args:
        source: path of a CSV file, or a DataFrame (not modified).
        columns: the table's names for roles, e.g. ``{"conc": "DV", "dose": "AMT"}``.
        covariates: the covariate columns to keep (default: every non-role column).
        dv_name: shorthand for ``columns={dv_name: "DV"}``.
        ss_codes: other SS codes and what they mean, e.g. ``{99: 0}`` for datasets
            where SS = 99 marks "not steady state".
        reset_when_time_decreases: read a dose record whose TIME is earlier than the
            previous record's as a reset-and-dose (EVID 4), for crossover data where
            time restarts each period (e.g. mavoglurant).  NONMEM requires EVID 3/4
            there; without this option other records raise UnsortedTimeError.
        na_values: strings that mean missing in a CSV file.
        categorical: covariate columns to code as categories even though their
            values are numbers (a study site 101, 102, ...); a column whose cells
            are all text is categorical anyway, and one that mixes numbers and
            text is an error unless it is listed here.
        encoding: the text encoding of a CSV file (default: UTF-8, and
            Windows-1252 with a :class:`DatasetWarning` for a file that is not
            UTF-8).

    Returns:
        a validated :class:`Dataset`; ``Dataset.notes`` lists what was derived or ignored.

    Raises:
        DatasetError: one of its subclasses, naming the column, row and subject.

    Example:
        >>> import pandas as pd
        >>> data = read_nonmem(pd.DataFrame({"ID": [1, 1], "TIME": [0, 1],
        ...                                  "AMT": [100, 0], "DV": [None, 5.2]}))
        >>> data.n_subjects, data.n_observations, data.n_doses
        (1, 1, 1)
    """
    table = _load(source, na_values, encoding)
    mapping = dict(columns or {})
    if dv_name is not None:
        mapping[dv_name] = "DV"
    roles = resolve_roles([str(c) for c in table.columns], mapping)
    # Columns are addressed by their string names from here on.
    table = table.rename(columns={c: str(c) for c in table.columns})
    notes: list[str] = []
    n = len(table)
    if n == 0:
        raise DatasetError("The dataset has no records.")

    subject, ids, id_per_row = _subjects(table[roles["ID"]], roles["ID"])
    time = _time(table, roles, id_per_row)

    def column(role: str, default: float) -> np.ndarray:
        """Numeric role column; missing cells (and an absent column) read as ``default``."""
        if role not in roles:
            return np.full(n, default)
        values = numeric(table[roles[role]], roles[role], role, id_per_row)
        n_missing = int(np.isnan(values).sum())
        if n_missing:
            notes.append(f"{roles[role]} missing on {n_missing} records: read as {default:g}")
        return np.where(np.isnan(values), default, values)

    amt_read = (
        numeric(table[roles["AMT"]], roles["AMT"], "AMT", id_per_row)
        if "AMT" in roles
        else np.full(n, np.nan)
    )
    amt = np.nan_to_num(amt_read, nan=0.0)
    dv = (
        numeric(table[roles["DV"]], roles["DV"], "DV", id_per_row)
        if "DV" in roles
        else np.full(n, np.nan)
    )
    cmt_given = "CMT" in roles
    cmt = _integer(
        column("CMT", 0.0), roles.get("CMT", "CMT"), "CMT", id_per_row, UnknownCompartmentError
    )
    if not cmt_given:
        notes.append(
            "no CMT column: doses and observations use the model's default compartments (CMT 0)"
        )
    evid, mdv_given = _evid(table, roles, amt, cmt, id_per_row, notes)
    negative = np.flatnonzero(amt < 0)
    if negative.size:
        raise NegativeDoseError(
            f"Column {roles['AMT']!r} (AMT) is negative on "
            f"{where_many(negative, id_per_row[negative])} (AMT {amt[negative[0]]:g}). "
            f"Doses must be >= 0; to stop an infusion early, "
            f"give its true duration with RATE = AMT / duration."
        )
    event_time = _event_time(
        time, evid, subject, id_per_row, roles["TIME"], reset_when_time_decreases, notes
    )

    cens, limit, bound, dv = read_censoring(table, roles, id_per_row, evid, dv, notes)
    mdv = _mdv(evid, dv, mdv_given, roles, id_per_row, notes)
    cens, limit, bound = _censored_but_missing(cens, limit, bound, mdv, roles, id_per_row, notes)

    dose = (evid == 1) | (evid == 4)
    lookalikes = _lookalike_columns(list(table.columns), roles, covariates)
    if "AMT" not in roles and dose.any():
        first = np.flatnonzero(dose)
        guess = [c for c, role in lookalikes.items() if role == "AMT"]
        raise MissingColumnError(
            f"{where_many(first, id_per_row[first])} "
            f"{'is a dose record' if first.size == 1 else 'are dose records'} (EVID "
            f"{evid[first[0]]}), but the dataset has no AMT column, so the doses have no "
            f"amount. Its columns are {', '.join(map(str, table.columns))}; "
            + (
                f"map {guess[0]!r} to AMT with read_nonmem(..., columns={{{guess[0]!r}: 'AMT'}})."
                if guess
                else "add the AMT column, or name it with columns={'your_name': 'AMT'}."
            )
        )
    for name, role in lookalikes.items():
        _warn(
            notes,
            f"Column {name!r} is not a NONMEM data item and is read as a covariate, but the "
            f"dataset has no {role} column: is it {role}? If so, rename it or map it with "
            f"read_nonmem(..., columns={{{name!r}: {role!r}}}).",
        )
    ignored_dv = np.flatnonzero(~np.isnan(dv) & (dv != 0) & (evid != 0))
    if ignored_dv.size:
        # A warning where MDV says "observation" (_mdv); EVID and MDV agreeing is routine
        # (NONMEM output tables carry DV on dose records).
        notes.append(
            f"DV not used on {ignored_dv.size} records that are not observations (EVID 1-4), "
            f"e.g. {where(ignored_dv[0], id_per_row[ignored_dv[0]])}"
        )
    amt_elsewhere = np.flatnonzero((amt != 0) & ~dose)
    if amt_elsewhere.size:
        r = amt_elsewhere[0]
        raise InvalidDoseError(
            f"Column {roles['AMT']!r} (AMT) is {amt[r]:g} on "
            f"{where_many(amt_elsewhere, id_per_row[amt_elsewhere])}, which "
            f"{'is' if amt_elsewhere.size == 1 else 'are'} not a dose record (EVID {evid[r]}). "
            f"Make it a dose (EVID 1, MDV 1) or set AMT to 0 or '.'."
        )

    rate, ii, addl, ss = _dosing(roles, column, amt, dose, id_per_row, ss_codes, notes)
    no_amount = np.flatnonzero(dose & np.isnan(amt_read) & ~((rate > 0) & (ss > 0)))
    if "AMT" in roles and no_amount.size:
        _warn(
            notes,
            f"Column {roles['AMT']!r} (AMT) is missing on dose "
            f"{where_many(no_amount, id_per_row[no_amount])}: read as 0 (NONMEM's rule), so "
            f"{'it gives' if no_amount.size == 1 else 'they give'} no drug. Give the amount, "
            f"or make the record EVID 2 if it is not a dose.",
        )
    elif "AMT" in roles and np.isnan(amt_read).any():
        notes.append(
            f"{roles['AMT']} missing on {int(np.isnan(amt_read).sum())} records that are not "
            f"doses: read as 0"
        )
    elif "AMT" not in roles:
        notes.append("no AMT column: the dataset has no doses")
    _check_addl_before_restart(event_time, time, addl, ii, subject, id_per_row)

    dvid_levels, dvid, occ_levels, occ = _endpoints_and_occasions(table, roles, evid, id_per_row)

    covariate_names, unused = _covariate_names(table, roles, covariates)
    if unused:
        notes.append(
            f"columns not used (neither a role nor a requested covariate): {', '.join(unused)}"
        )
    cov_frame, categories = encode_covariates(
        table, covariate_names, subject, ids, id_per_row, notes, categorical
    )

    records = pd.DataFrame(
        {
            "id": id_per_row,
            "subject": subject,
            "row": np.arange(n, dtype=np.int64),
            "time": time,
            "event_time": event_time,
            "evid": evid,
            "mdv": mdv,
            "amt": amt,
            "cmt": cmt,
            "rate": rate,
            "ii": ii,
            "addl": addl,
            "ss": ss,
            "dv": dv,
            "dvid": dvid,
            "occ": occ,
            "cens": cens,
            "limit": limit,
            "bound": bound,
        }
    )
    return Dataset(
        table=table,
        records=records,
        covariates=cov_frame.reset_index(drop=True),
        roles=roles,
        ids=ids,
        dvid_levels=dvid_levels,
        occ_levels=occ_levels,
        categories=categories,
        notes=notes,
    )


def _endpoints_and_occasions(
    table: pd.DataFrame, roles: dict[str, str], evid: np.ndarray, ids: np.ndarray
) -> tuple[tuple, np.ndarray, tuple, np.ndarray]:
    """DVID and OCC levels, and the 0-based level index of every record."""
    n = len(table)
    everywhere = np.ones(n, dtype=bool)
    if "DVID" in roles:
        column = roles["DVID"]
        # Levels come from observations, so 0s or blanks on dose records add no endpoint.
        dvid_levels, dvid = levels_and_codes(table[column], evid == 0)
        if not dvid_levels:
            dvid_levels, dvid = levels_and_codes(table[column], everywhere)
        unknown = np.flatnonzero((dvid < 0) & (evid == 0))
        if unknown.size:
            raise InvalidValueError(
                f"Column {column!r} (DVID) is missing on observation "
                f"{where_many(unknown, ids[unknown])}; give every observation its endpoint."
            )
        dvid = np.maximum(dvid, 0)
    else:
        dvid_levels, dvid = (1,), np.zeros(n, dtype=np.int64)
    if "OCC" in roles:
        column = roles["OCC"]
        occ_levels, occ = levels_and_codes(table[column], everywhere)
        unknown = np.flatnonzero(occ < 0)
        if unknown.size:
            raise InvalidValueError(
                f"Column {column!r} (OCC) is missing on {where_many(unknown, ids[unknown])}; "
                f"give every record its occasion."
            )
    else:
        occ_levels, occ = (1,), np.zeros(n, dtype=np.int64)
    return dvid_levels, dvid, occ_levels, occ


def _load(
    source: str | os.PathLike | pd.DataFrame, na_values: Sequence[str], encoding: str | None
) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        _check_unique_names([str(c) for c in source.columns], "The DataFrame")
        return source.copy()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"No dataset at {str(path)!r}.")
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.csv"))[:5]
        raise DatasetError(
            f"{str(path)!r} is a folder, not a dataset file; give the path of the CSV file"
            + (f" (it holds {', '.join(inside)})." if inside else ".")
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise DatasetError(f"{str(path)!r} is empty: a dataset needs a header line and records.")
    text = _decode(raw, path, encoding)
    header = next(csv.reader(io.StringIO(text)), [])
    _check_unique_names([name.strip() for name in header], f"The header of {str(path)!r}")
    try:
        # skipinitialspace: NONMEM tables written by Fortran pad numbers with blanks.
        return pd.read_csv(
            io.StringIO(text),
            na_values=list(na_values),
            keep_default_na=True,
            skipinitialspace=True,
        )
    except pd.errors.ParserError as e:
        raise DatasetError(
            f"{str(path)!r} cannot be read as a CSV table: {_parser_message(e)}"
        ) from e


def _check_unique_names(names: list[str], what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(
            f"{what} has the column name(s) {', '.join(map(repr, repeated))} more than once "
            f"(columns {', '.join(str(i + 1) for i, n in enumerate(names) if n in repeated)}); "
            f"rename or drop the copies so each column has one meaning."
        )


def _decode(raw: bytes, path: Path, encoding: str | None) -> str:
    """The file's text: UTF-8 (with or without a byte-order mark) unless ``encoding``
    says otherwise; a file that is not UTF-8 is read as Windows-1252 (Latin-1
    with a few more symbols), the usual encoding of files exported on Windows
    and from SAS, with a warning that says so."""
    if encoding is not None:
        try:
            return raw.decode(encoding)
        except (LookupError, UnicodeDecodeError) as e:
            raise DatasetError(
                f"{str(path)!r} cannot be read with encoding={encoding!r}: {e}"
            ) from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        fallback = "cp1252"
        try:
            text = raw.decode(fallback)
        except UnicodeDecodeError:
            fallback = "latin-1"
            text = raw.decode(fallback)
        warnings.warn(
            f"{str(path)!r} is not UTF-8 (byte {raw[e.start : e.start + 1]!r} on line "
            f"{line}): read as {fallback}. If its text looks wrong, pass "
            f"read_nonmem(..., encoding=...).",
            DatasetWarning,
            stacklevel=4,
        )
        return text


def _parser_message(error: Exception) -> str:
    """pandas' tokenizer message in a user's terms (line 1 is the header)."""
    text = str(error).strip()
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if found:
        expected, line, saw = found.groups()
        return (
            f"line {line} (data row {int(line) - 1}) has {saw} fields but the header names "
            f"{expected} columns. Remove the extra separators (a comma inside a text cell must "
            f"be quoted) or add the missing column names."
        )
    return text


def _subjects(raw_ids: pd.Series, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject index per record, the IDs in order of appearance, and the ID per record."""
    raw_ids = _normalized_ids(raw_ids)
    missing = np.flatnonzero(raw_ids.isna().to_numpy())
    if missing.size:
        rows = ", ".join(f"row {r + 1}" for r in missing[:3])
        raise InvalidValueError(
            f"Column {column!r} (ID) is missing on {rows}; every record needs an ID."
        )
    if is_numeric_dtype(raw_ids):
        bad = np.flatnonzero(~np.isfinite(raw_ids.to_numpy(dtype=np.float64)))
        if bad.size:
            rows = ", ".join(f"row {r + 1}" for r in bad[:3])
            raise InvalidValueError(
                f"Column {column!r} (ID) is {raw_ids.iloc[bad[0]]} on {rows}; an ID must be a "
                f"finite number or a text."
            )
    codes, uniques = pd.factorize(raw_ids, sort=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    block_codes = codes[starts]
    again = pd.Series(block_codes).duplicated().to_numpy()
    if again.any():
        start = starts[np.flatnonzero(again)[0]]
        the_id = uniques[codes[start]]
        first = np.flatnonzero(codes == codes[start])[0]
        raise NonContiguousIdError(
            f"Column {column!r} (ID): ID {format_id(the_id)} reappears at {where(start, the_id)} "
            f"after other subjects (its records start at row {first + 1}); NONMEM would read "
            f"it as a new subject. "
            f"Sort the table by ID (then TIME), or give the second block its own ID."
        )
    return codes.astype(np.int64), np.asarray(uniques), raw_ids.to_numpy()


def _normalized_ids(raw_ids: pd.Series) -> pd.Series:
    """IDs as a CSV file gives them: text is stripped ('1 ' is 1), NONMEM's missing
    markers ('.', '') are missing, and a text column whose cells all read as
    numbers becomes a number column (so 1 and '1' are one subject)."""
    if is_numeric_dtype(raw_ids):
        return raw_ids
    index, texts = text_codes(raw_ids)
    if (index < 0).any():
        return pd.Series(np.r_[texts, [None]][index], dtype=object)
    numbers = parse_texts(texts)
    if np.isnan(numbers).any():
        return pd.Series(texts[index], dtype=object)
    if (np.abs(numbers) < 2**53).all() and (numbers == np.round(numbers)).all():
        return pd.Series(numbers.astype(np.int64)[index])
    return pd.Series(numbers[index])


def _time(table: pd.DataFrame, roles: dict[str, str], ids: np.ndarray) -> np.ndarray:
    column = roles["TIME"]
    time = numeric(table[column], column, "TIME", ids)
    bad = np.flatnonzero(~np.isfinite(time))
    if bad.size:
        raise InvalidValueError(
            f"Column {column!r} (TIME) is missing or infinite on {where_many(bad, ids[bad])}; "
            f"every record needs a time."
        )
    return time


def _event_time(
    time: np.ndarray,
    evid: np.ndarray,
    subject: np.ndarray,
    ids: np.ndarray,
    column: str,
    reset_when_time_decreases: bool,
    notes: list[str],
) -> np.ndarray:
    """A non-decreasing time axis per subject.

    TIME must not decrease within a subject, except on a reset record (EVID 3 or 4)
    where, as in NONMEM, time restarts (crossover periods).  The kinetics start
    from zero there, so later records are shifted to continue from the previous
    record's time: the event time used by the numerical layers stays sorted and
    predictions do not change.
    """
    back = np.r_[False, (np.diff(time) < 0) & (subject[1:] == subject[:-1])]
    if reset_when_time_decreases:
        doses = back & (evid == 1)
        if doses.any():
            evid[doses] = 4
            notes.append(
                f"TIME restarts on {int(doses.sum())} dose records: read as reset-and-dose (EVID 4)"
            )
    bad = np.flatnonzero(back & (evid != 3) & (evid != 4))
    if bad.size:
        r = bad[0]
        raise UnsortedTimeError(
            f"Column {column!r} (TIME) decreases at {where(r, ids[r])}: {time[r]:g} after "
            f"{time[r - 1]:g} on row {r}; {bad.size} record(s) go back in time. Sort each "
            f"subject's records by time (doses before observations at the same time). If "
            f"time restarts for a new period (crossover), that record must reset the system: "
            f"EVID 4 on a dose, or a record with EVID 3 (read_nonmem(..., "
            f"reset_when_time_decreases=True) makes such doses EVID 4)."
        )
    if not back.any():
        return time
    step = np.where(back, np.r_[0.0, time[:-1]] - time, 0.0)
    offset = pd.Series(step).groupby(subject, sort=False).cumsum().to_numpy()
    notes.append(
        f"TIME restarts at {int(back.sum())} reset records (EVID 3/4): Subjects.time continues "
        f"from the previous record there, Dataset.records 'time' keeps TIME"
    )
    return time + offset


def _check_addl_before_restart(
    event_time: np.ndarray,
    time: np.ndarray,
    addl: np.ndarray,
    ii: np.ndarray,
    subject: np.ndarray,
    ids: np.ndarray,
) -> None:
    """ADDL doses may not run into a later period whose TIME restarts (ambiguous in NONMEM)."""
    restart = np.flatnonzero(np.r_[False, (np.diff(time) < 0) & (subject[1:] == subject[:-1])])
    source = np.flatnonzero(addl > 0)
    if not restart.size or not source.size:
        return
    # First restart after each ADDL source in the same subject.
    nxt = np.searchsorted(restart, source, side="right")
    has = nxt < restart.size
    source, nxt = source[has], restart[nxt[has]]
    same = subject[nxt] == subject[source]
    source, nxt = source[same], nxt[same]
    last_dose = event_time[source] + addl[source] * ii[source]
    bad = np.flatnonzero(last_dose >= event_time[nxt])
    if bad.size:
        r, q = source[bad[0]], nxt[bad[0]]
        raise InvalidDoseError(
            f"Column ADDL: the additional doses of {where(r, ids[r])} run past the reset at "
            f"row {q + 1}, where TIME restarts; reduce ADDL so the regimen ends before that "
            f"period."
        )


def _integer(
    values: np.ndarray, column: str, role: str, ids: np.ndarray, error: type[DatasetError]
) -> np.ndarray:
    bad = np.flatnonzero(values != np.round(values))
    if bad.size:
        raise error(
            f"Column {column!r} ({role}) must hold whole numbers, but it is {values[bad[0]]:g} on "
            f"{where_many(bad, ids[bad])}."
        )
    return values.astype(np.int64)


def _evid(
    table: pd.DataFrame,
    roles: dict[str, str],
    amt: np.ndarray,
    cmt: np.ndarray,
    ids: np.ndarray,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """EVID of every record (0-4) and MDV as given (NaN where absent); may set CMT for EVID 101."""
    n = len(table)
    mdv = np.full(n, np.nan)
    if "MDV" in roles:
        mdv = numeric(table[roles["MDV"]], roles["MDV"], "MDV", ids)
        bad = np.flatnonzero(~np.isnan(mdv) & ~np.isin(mdv, (0.0, 1.0)))
        if bad.size:
            raise InvalidValueError(
                f"Column {roles['MDV']!r} (MDV) must be 0 or 1, but it is {mdv[bad[0]]:g} on "
                f"{where_many(bad, ids[bad])}."
            )
    # NONMEM's rule for records without EVID: doses are the records with AMT > 0.
    derived = np.where(
        np.isnan(mdv),
        np.where(amt > 0, 1, 0),
        np.where(mdv == 0, 0, np.where(amt > 0, 1, 2)),
    ).astype(np.int64)
    if "EVID" not in roles:
        source = "MDV and AMT" if "MDV" in roles else "AMT"
        notes.append(
            f"no EVID column: EVID derived from {source} ({int((derived == 1).sum())} doses, "
            f"{int((derived == 0).sum())} observation records, {int((derived == 2).sum())} other)"
        )
        return derived, mdv

    column = roles["EVID"]
    raw = numeric(table[column], column, "EVID", ids)
    missing = np.isnan(raw)
    if missing.any():
        notes.append(f"{column} missing on {int(missing.sum())} records: derived from AMT/MDV")
    raw = np.where(missing, derived, raw)
    rxode = raw == RXODE_BOLUS_CMT1
    if rxode.any():
        clash = np.flatnonzero(rxode & (cmt != 0) & (cmt != 1))
        if clash.size:
            raise UnknownEvidError(
                f"Column {column!r} is 101 (rxode2: bolus into compartment 1) on "
                f"{where_many(clash, ids[clash])}, whose CMT is {cmt[clash[0]]}; use EVID 1 with "
                f"that CMT instead."
            )
        cmt[rxode] = 1
        raw = np.where(rxode, 1.0, raw)
        notes.append(
            f"EVID 101 read as a bolus into CMT 1 (EVID 1, CMT 1) on {int(rxode.sum())} records"
        )
    bad = np.flatnonzero(~np.isin(raw, (0.0, 1.0, 2.0, 3.0, 4.0)))
    if bad.size:
        raise UnknownEvidError(
            f"Column {column!r} (EVID) is {raw[bad[0]]:g} on {where_many(bad, ids[bad])}. "
            f"EVID must be 0 (observation), 1 (dose), 2 (other), 3 (reset) or 4 (reset and dose); "
            f"rxode2 codes other than 101 must be converted to NONMEM EVID, CMT and RATE."
        )
    return raw.astype(np.int64), mdv


def _mdv(
    evid: np.ndarray,
    dv: np.ndarray,
    given: np.ndarray,
    roles: dict[str, str],
    ids: np.ndarray,
    notes: list[str],
) -> np.ndarray:
    """MDV of every record: as given, else 1 off observations and where DV is missing."""
    missing_dv = np.isnan(dv)
    stated = ~np.isnan(given)
    empty = np.flatnonzero(stated & (given == 0) & (evid == 0) & missing_dv)
    if empty.size and "DV" not in roles:
        raise MissingColumnError(
            f"The dataset has no DV column, but {where_many(empty, ids[empty])} are observations "
            f"(EVID 0, MDV 0). Name the column that holds the observations with "
            f'read_nonmem(..., columns={{"your_name": "DV"}}).'
        )
    if empty.size:
        raise MissingObservationError(
            f"Column {roles.get('DV', 'DV')!r} (DV) is missing on observation "
            f"{where_many(empty, ids[empty])} (EVID 0, MDV 0). Give the value, or set MDV 1 "
            f"to keep the record without using it."
        )
    observed_dose = np.flatnonzero(stated & (given == 0) & (evid != 0))
    if observed_dose.size:
        _warn(
            notes,
            f"MDV is 0 on {where_many(observed_dose, ids[observed_dose])}, which "
            f"{'is not an observation' if observed_dose.size == 1 else 'are not observations'}"
            f" (EVID {evid[observed_dose[0]]}): read as MDV 1 (NONMEM's rule). Set EVID 0 if "
            f"the record is a measurement.",
        )
    mdv = np.where(stated, given, ((evid != 0) | missing_dv).astype(np.float64))
    mdv = np.where(evid != 0, 1.0, mdv).astype(np.int64)
    derived_missing = int(np.count_nonzero(~stated & (evid == 0) & missing_dv))
    if "MDV" not in roles:
        notes.append("no MDV column: MDV derived from EVID and DV")
    elif (~stated).any():
        notes.append(
            f"{roles['MDV']} missing on {int((~stated).sum())} records: derived from EVID and DV"
        )
    if derived_missing:
        notes.append(
            f"{derived_missing} observation records (EVID 0) without DV are not used (MDV 1)"
        )
    return mdv


def _dosing(
    roles: dict[str, str],
    column: Callable[[str, float], np.ndarray],
    amt: np.ndarray,
    dose: np.ndarray,
    ids: np.ndarray,
    ss_codes: Mapping[float, int] | None,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RATE, II, ADDL and SS, checked against NONMEM's rules for dose records."""
    rate = column("RATE", 0.0)
    bad = np.flatnonzero(dose & (rate < 0) & (rate != -1) & (rate != -2))
    if bad.size:
        raise InvalidDoseError(
            f"Column {roles['RATE']!r} (RATE) is {rate[bad[0]]:g} on "
            f"{where_many(bad, ids[bad])}. RATE must be > 0 (infusion rate), 0 (bolus), "
            f"-1 (rate modelled, R in $PK) or -2 "
            f"(duration modelled, D in $PK)."
        )
    off_dose = int(np.count_nonzero((rate != 0) & ~dose))
    if off_dose:
        notes.append(f"RATE ignored on {off_dose} records that are not doses")
        rate = np.where(dose, rate, 0.0)

    ii = column("II", 0.0)
    off_dose = int(np.count_nonzero((ii != 0) & ~dose))
    if off_dose:
        notes.append(f"II ignored on {off_dose} records that are not doses")
        ii = np.where(dose, ii, 0.0)
    bad = np.flatnonzero(ii < 0)
    if bad.size:
        raise InvalidDoseError(
            f"Column {roles['II']!r} (II) is negative ({ii[bad[0]]:g}) on "
            f"{where_many(bad, ids[bad])}; the interdose interval must be >= 0."
        )
    addl_column = roles.get("ADDL", "ADDL")
    addl = _integer(column("ADDL", 0.0), addl_column, "ADDL", ids, InvalidDoseError)
    bad = np.flatnonzero(addl < 0)
    if bad.size:
        raise InvalidDoseError(
            f"Column {addl_column!r} (ADDL) is negative on {where_many(bad, ids[bad])}; "
            f"NONMEM 7.5's empirical steady state (ADDL < 0) is not supported: use SS = 1 with II."
        )
    bad = np.flatnonzero((addl > 0) & ~dose)
    if bad.size:
        raise InvalidDoseError(
            f"Column {addl_column!r} (ADDL) is {addl[bad[0]]} on {where_many(bad, ids[bad])}, "
            f"which is not a dose record; "
            f"additional doses belong on a dose record (EVID 1 or 4)."
        )
    bad = np.flatnonzero((addl > 0) & (ii <= 0))
    if bad.size:
        raise InvalidDoseError(
            f"Column {addl_column!r} (ADDL) is {addl[bad[0]]} on {where_many(bad, ids[bad])} "
            f"without an interdose interval: "
            f"set II > 0 (the time between additional doses)."
        )

    ss_column = roles.get("SS", "SS")
    ss_raw = column("SS", 0.0)
    if ss_codes:
        recoded = np.zeros(ss_raw.shape, dtype=bool)
        for code, meaning in ss_codes.items():
            if meaning not in (0, 1, 2):
                raise SteadyStateError(
                    f"ss_codes={{{code!r}: {meaning!r}}}: SS codes must map to 0, 1 or 2."
                )
            hit = ss_raw == float(code)
            ss_raw = np.where(hit & ~recoded, float(meaning), ss_raw)
            recoded |= hit
        if recoded.any():
            notes.append(
                f"{ss_column} recoded on {int(recoded.sum())} records: "
                + ", ".join(f"{code} -> {meaning}" for code, meaning in ss_codes.items())
            )
    bad = np.flatnonzero(~np.isin(ss_raw, (0.0, 1.0, 2.0)))
    if bad.size:
        raise SteadyStateError(
            f"Column {ss_column!r} (SS) is {ss_raw[bad[0]]:g} on {where_many(bad, ids[bad])}. "
            f"SS must be 0 (no steady state), 1 (reset to steady state) or 2 (steady state "
            f"added). If this "
            f"code has a meaning in your dataset, say so with read_nonmem(..., ss_codes="
            f"{{{ss_raw[bad[0]]:g}: 0}})."
        )
    ss = ss_raw.astype(np.int64)
    bad = np.flatnonzero((ss > 0) & ~dose)
    if bad.size:
        raise SteadyStateError(
            f"Column {ss_column!r} (SS) is {ss[bad[0]]} on {where_many(bad, ids[bad])}, which "
            f"is not a dose record; "
            f"steady state is a property of a dose (EVID 1 or 4). Set SS to 0 there."
        )
    # NONMEM's constant-infusion steady state: AMT 0, RATE > 0, II 0 (and no ADDL).
    constant_infusion = (ss > 0) & (amt == 0) & (rate > 0)
    bad = np.flatnonzero(constant_infusion & ((ii > 0) | (addl > 0)))
    if bad.size:
        raise SteadyStateError(
            f"Column {ss_column!r} (SS) on {where_many(bad, ids[bad])}: a steady-state "
            f"constant infusion "
            f"(SS > 0, AMT 0, RATE > 0) must have II 0 and ADDL 0; for a periodic infusion "
            f"give AMT and II."
        )
    bad = np.flatnonzero((ss > 0) & (ii <= 0) & ~constant_infusion)
    if bad.size:
        raise SteadyStateError(
            f"Column {ss_column!r} (SS) is {ss[bad[0]]} on {where_many(bad, ids[bad])}, which "
            f"needs the dosing interval: set II > 0 "
            f"(or AMT 0 with RATE > 0 for a constant infusion at steady state)."
        )
    return rate, ii, addl, ss


def _covariate_names(
    table: pd.DataFrame, roles: dict[str, str], requested: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """Covariate columns (table spelling) and the columns that are neither roles nor covariates."""
    role_columns = set(roles.values())
    candidates = [c for c in table.columns if c not in role_columns]
    if requested is None:
        return candidates, []
    by_upper = {c.upper(): c for c in candidates}
    names, absent = [], []
    for name in requested:
        match = by_upper.get(str(name).upper())
        if match is None:
            absent.append(str(name))
        elif match not in names:
            names.append(match)
    if absent:
        raise MissingCovariateError(
            f"Covariate column(s) {', '.join(absent)} not found; the covariate columns are "
            f"{', '.join(candidates) or '(none)'}."
        )
    return names, [c for c in candidates if c not in names]


def _warn(notes: list[str], message: str) -> None:
    """A NONMEM rule the user may not expect: in ``Dataset.notes`` and as a warning."""
    notes.append(message)
    warnings.warn(message, DatasetWarning, stacklevel=4)


def _lookalike_columns(
    columns: list[str], roles: dict[str, str], requested: Sequence[str] | None
) -> dict[str, str]:
    """Non-role columns one slip of the keyboard away from a data item the dataset
    lacks (a letter added, dropped or two swapped after the first: AMNT, EVDI,
    TIM): column -> the item it may be meant as.  A changed letter and a different
    first letter are not counted: ALT, RACE and DATE are common covariates, VID
    a visit."""
    absent = [r for r in ROLES if r not in roles and len(r) >= 3]
    used = set(roles.values())
    wanted = {str(c).upper() for c in requested or ()}
    found = {}
    for name in columns:
        if name in used or name.upper() in wanted:
            continue
        for role in absent:
            if name[:1].upper() == role[0] and _one_slip(name.upper(), role):
                found[name] = role
                break
    return found


def _one_slip(typed: str, word: str) -> bool:
    """``typed`` is ``word`` with one letter added or dropped, or two neighbours swapped."""
    if len(typed) == len(word) + 1:
        return any(typed[:i] + typed[i + 1 :] == word for i in range(len(typed)))
    if len(typed) == len(word) - 1:
        return _one_slip(word, typed)
    if len(typed) == len(word) and typed != word:
        return any(
            typed[:i] + typed[i + 1] + typed[i] + typed[i + 2 :] == word
            for i in range(len(typed) - 1)
        )
    return False


def _censored_but_missing(cens, limit, bound, mdv, roles, ids, notes):
    """NONMEM's rule for a censored (BLQ) record with MDV 1: it is not an
    observation, so it does not enter the likelihood (Beal's M1, not M3).
    Kept as NONMEM keeps it, but said in the notes and as a warning."""
    skipped = np.flatnonzero((cens != 0) & (mdv == 1))
    if skipped.size == 0:
        return cens, limit, bound
    column = roles.get("CENS", roles.get("LLOQ", "CENS"))
    message = (
        f"{column} marks {where_many(skipped, ids[skipped])} as censored, but MDV is 1 there: "
        f"{'it is' if skipped.size == 1 else 'they are'} not used (NONMEM: MDV 1 records are "
        f"not observations, i.e. M1). Set MDV to 0 on BLQ records for the M3 likelihood."
    )
    notes.append(message)
    warnings.warn(message, DatasetWarning, stacklevel=3)
    keep = np.ones(cens.shape, bool)
    keep[skipped] = False
    return np.where(keep, cens, 0), np.where(keep, limit, np.nan), np.where(keep, bound, np.nan)
