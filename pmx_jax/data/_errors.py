"""Named errors for everything a user can get wrong in a NONMEM-style dataset.

Every error is a :class:`DatasetError` (itself a :class:`ValueError`), so
``except ValueError`` keeps working while tests and tools can catch the precise
problem.  Messages name the column, the subject and the row, and say what to change.

Rows are counted as NONMEM counts data records: 1-based, the first data record
(the line after the header of a CSV file) is row 1.  ``row`` fields stored in
:class:`~pmx_jax.data.Subjects` and :attr:`Dataset.records` are the 0-based
positions of the same records in :attr:`Dataset.table`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """Base class: the dataset cannot be used as it is."""


class DatasetWarning(UserWarning):
    """A record is read by a NONMEM rule the user may not expect (and is listed
    in ``Dataset.notes``): nothing is dropped without this warning."""


class MissingColumnError(DatasetError):
    """A required column (ID, TIME, DV or AMT, or one named in ``columns=``) is absent."""


class InvalidValueError(DatasetError):
    """A value outside what its column allows (MDV not 0/1, missing TIME, CENS not -1/0/1...)."""


class NonNumericValueError(DatasetError):
    """Text where a numeric data item (TIME, AMT, EVID, ...) is required."""


class NonContiguousIdError(DatasetError):
    """An ID reappears after another ID: NONMEM would read it as a new subject."""


class UnsortedTimeError(DatasetError):
    """TIME decreases within a subject."""


class NegativeDoseError(DatasetError):
    """AMT < 0."""


class InvalidDoseError(DatasetError):
    """An inconsistent dose record: RATE not >0/0/-1/-2, ADDL without II, AMT on an observation."""


class SteadyStateError(DatasetError):
    """SS not in 0/1/2, SS without II > 0, or SS on a record that is not a dose."""


class UnknownEvidError(DatasetError):
    """EVID outside 0-4 (after reading rxode2's 101 as a bolus into CMT 1)."""


class UnknownCompartmentError(DatasetError):
    """CMT outside the compartments of the model the dataset is used with."""


class MissingObservationError(DatasetError):
    """An observation record (EVID 0, MDV 0) without a DV value."""


class CensoringError(DatasetError):
    """CENS/BLQ/LLOQ/LIMIT values that cannot be read as censoring information."""


class MissingCovariateError(DatasetError):
    """A covariate the model needs is absent, or missing for every record of a subject."""


def format_id(value: Any) -> str:
    """An ID as a user typed it (``3`` rather than ``3.0`` or ``np.int64(3)``)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def where(row: int, subject_id: Any) -> str:
    """``"row 17 (ID 3)"`` for the 0-based table position 16 of subject 3."""
    return f"row {int(row) + 1} (ID {format_id(subject_id)})"


def where_many(
    rows: Sequence[int] | np.ndarray, ids: Sequence[Any] | np.ndarray, limit: int = 3
) -> str:
    """Name the first few offending records, and count the rest."""
    rows = list(rows)
    ids = list(ids)
    shown = ", ".join(where(r, i) for r, i in zip(rows[:limit], ids[:limit], strict=True))
    rest = len(rows) - limit
    return shown if rest <= 0 else f"{shown} and {rest} more row{'s' if rest > 1 else ''}"
