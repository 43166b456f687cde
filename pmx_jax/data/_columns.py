"""Column roles (NONMEM data items) and parsing of their values.

A column's role is found from its name, case-insensitively (``time`` and ``Time``
are TIME), or from the ``columns={"their_name": "ROLE"}`` mapping of
:func:`~pmx_jax.data.read_nonmem`.  Everything that is not a role is a covariate
candidate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ._errors import (
    DatasetError,
    InvalidValueError,
    MissingColumnError,
    NonNumericValueError,
    where_many,
)

#: NONMEM data items (and the censoring items of Monolix/nlmixr2) that have a role.
ROLES: tuple[str, ...] = (
    "ID",
    "TIME",
    "DV",
    "AMT",
    "EVID",
    "MDV",
    "CMT",
    "RATE",
    "II",
    "ADDL",
    "SS",
    "DVID",
    "OCC",
    "CENS",
    "LIMIT",
    "LLOQ",
)

#: Other spellings recognised without a mapping.  BLQ (or BLOQ) is a 0/1 flag
#: read as CENS.
ALIASES: Mapping[str, str] = {"BLQ": "CENS", "BLOQ": "CENS"}

#: Strings that mean "missing" in NONMEM and R exports.
MISSING_STRINGS: tuple[str, ...] = (".", "")

#: Largest magnitude a data value may have.  Far beyond any physical quantity in
#: a dataset (10^100 molecules, mg or hours), and large enough that the squares
#: and exponentials a likelihood takes of it overflow double precision: such a
#: number is a typing or unit mistake, refused where it is read.
LARGEST_VALUE = 1e100


def resolve_roles(table_columns: list[str], columns: Mapping[str, str] | None) -> dict[str, str]:
    """Map each role to the table column that carries it.

    ``columns`` maps the table's own names onto roles (both case-insensitive).
    Raises :class:`MissingColumnError` for a mapped column that is absent or a
    required role (ID, TIME, and DV or AMT) that no column carries.
    """
    by_upper: dict[str, list[str]] = {}
    for name in table_columns:
        by_upper.setdefault(name.upper(), []).append(name)

    roles: dict[str, str] = {}
    mapped: set[str] = set()

    def assign(role: str, column: str) -> None:
        if role in roles and roles[role] != column:
            raise DatasetError(
                f"Columns {roles[role]!r} and {column!r} both give {role}; "
                f"drop or rename one of them (or map one to another role with columns=...)."
            )
        roles[role] = column

    for theirs, role in (columns or {}).items():
        role_upper = str(role).upper()
        role_upper = ALIASES.get(role_upper, role_upper)
        if role_upper not in ROLES:
            raise DatasetError(
                f"columns={{{theirs!r}: {role!r}}}: {role!r} is not a NONMEM data item; "
                f"use one of {', '.join(ROLES)} (or BLQ)."
            )
        matches = by_upper.get(str(theirs).upper(), [])
        if not matches:
            raise MissingColumnError(
                f"columns= maps {theirs!r} to {role_upper}, but the table has no column "
                f"{theirs!r}; its columns are {', '.join(table_columns)}."
            )
        if len(matches) > 1:
            raise DatasetError(
                f"Columns {matches} differ only in case; rename one so {theirs!r} is unambiguous."
            )
        assign(role_upper, matches[0])
        mapped.add(matches[0])

    for name in table_columns:
        if name in mapped:
            continue
        role = ALIASES.get(name.upper(), name.upper())
        if role in ROLES and role not in roles:
            roles[role] = name
        elif role in ROLES:
            assign(role, name)

    missing = [r for r in ("ID", "TIME") if r not in roles]
    if "DV" not in roles and "AMT" not in roles:
        missing.append("DV or AMT")
    if missing:
        raise MissingColumnError(
            f"The dataset has no {' and no '.join(missing)} column; its columns are "
            f"{', '.join(table_columns)}. Rename the column, or map it with "
            f'read_nonmem(..., columns={{"your_name": "{missing[0].split()[0]}"}}).'
        )
    return roles


def text_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Distinct texts of a column, stripped, and the index of each record's text.

    NONMEM/R missing markers ('.', '', NA) get index -1.  Work is done on the
    distinct values only, so a 10^6-record column with a few levels is cheap.
    """
    codes, uniques = pd.factorize(values)
    text = pd.Series(np.asarray(uniques, dtype=object), dtype="string").str.strip()
    text = text.mask(text.isin(MISSING_STRINGS))
    text_index, texts = pd.factorize(text)
    lookup = np.r_[text_index, -1]  # code -1 (missing) stays -1
    return lookup[codes], np.asarray(texts, dtype=object)


def _is_number_dtype(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def parse_texts(texts: np.ndarray) -> np.ndarray:
    """Numbers of the distinct texts of :func:`text_codes` (NaN where a text is not one)."""
    return pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def is_numeric_column(values: pd.Series) -> bool:
    """True when every non-missing cell reads as a number."""
    if _is_number_dtype(values):
        return True
    _, texts = text_codes(values)
    return not np.isnan(parse_texts(texts)).any()


def numeric(
    values: pd.Series, column: str, role: str, ids: np.ndarray, *, infinite_ok: bool = False
) -> np.ndarray:
    """A column as float64, NaN where missing.

    Text raises :class:`NonNumericValueError`; +-inf (unless ``infinite_ok``, as
    for nlmixr2's LIMIT of -Inf) and magnitudes beyond :data:`LARGEST_VALUE`
    raise :class:`InvalidValueError`, naming the rows.
    """
    if _is_number_dtype(values):
        number = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        number = _parse_numeric_text(values, column, role, ids)
    _check_finite(number, column, role, ids, infinite_ok)
    return number


def _check_finite(
    number: np.ndarray, column: str, role: str, ids: np.ndarray, infinite_ok: bool
) -> None:
    with np.errstate(invalid="ignore"):
        huge = np.abs(number) > LARGEST_VALUE
    if infinite_ok:
        huge &= np.isfinite(number)
    bad = np.flatnonzero(huge)
    if bad.size:
        value = number[bad[0]]
        what = "infinite" if np.isinf(value) else f"beyond +-{LARGEST_VALUE:g}"
        raise InvalidValueError(
            f"Column {column!r} ({role}) is {value:g} on {where_many(bad, ids[bad])}, {what}: "
            f"a typing or unit mistake? Give a finite value (or '.' where it is missing)."
        )


def _parse_numeric_text(values: pd.Series, column: str, role: str, ids: np.ndarray) -> np.ndarray:
    index, texts = text_codes(values)
    parsed = parse_texts(texts)
    bad_text = np.r_[np.isnan(parsed), False]
    bad = np.flatnonzero(bad_text[index])
    if bad.size:
        first = texts[index[bad[0]]]
        raise NonNumericValueError(
            f"Column {column!r} ({role}) must be numeric, but {where_many(bad, ids[bad])} "
            f"hold{'s' if bad.size == 1 else ''} text such as {first!r}. Replace it with a "
            f"number, or with '.' where the value is missing."
        )
    return np.r_[parsed, np.nan][index]


def levels_and_codes(values: pd.Series, use: np.ndarray) -> tuple[tuple, np.ndarray]:
    """Levels of a DVID/OCC-like column and the 0-based level index of every record.

    Levels are taken from the records where ``use`` is True: numbers in increasing
    order (DVID 1 before DVID 2), text in order of first appearance (as users list
    endpoints: warfarin's "cp" then "pca").  Records whose value is not a level
    (or missing) get code -1; the caller decides whether that matters.
    """
    if _is_number_dtype(values):
        return _number_levels(values.to_numpy(dtype=np.float64, na_value=np.nan), use)
    index, texts = text_codes(values)
    parsed = parse_texts(texts)
    if not np.isnan(parsed).any():
        return _number_levels(np.r_[parsed, np.nan][index], use)
    order = pd.unique(index[use & (index >= 0)])
    lookup = np.full(texts.size + 1, -1, dtype=np.int64)
    lookup[order] = np.arange(order.size)
    return tuple(str(t) for t in texts[order]), lookup[index]


def _number_levels(numbers: np.ndarray, use: np.ndarray) -> tuple[tuple, np.ndarray]:
    keys = np.unique(numbers[use & ~np.isnan(numbers)])
    if not keys.size:
        return (), np.full(numbers.shape, -1, dtype=np.int64)
    codes = np.searchsorted(keys, numbers)
    found = (codes < keys.size) & (keys[np.minimum(codes, keys.size - 1)] == numbers)
    # Show DVID 1, not 1.0, when the numbers are whole.
    levels = tuple(int(k) if float(k).is_integer() else float(k) for k in keys)
    return levels, np.where(found, codes, -1).astype(np.int64)
