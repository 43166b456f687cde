"""Censored observations (BLQ): CENS/LIMIT as in Monolix and nlmixr2, or an LLOQ column.

Two ways to say an observation is below the limit of quantification:

* **CENS** (or a 0/1 **BLQ**/**BLOQ** flag, read as CENS): ``CENS = 1`` means the true value
  is below the limit, ``CENS = -1`` above it.  The limit is DV on that record
  (the Monolix/nlmixr2 convention), or the LLOQ column when there is one (for
  ``CENS = 1``; then a missing DV is filled with the LLOQ).  An optional
  **LIMIT** column gives the other end of the interval (default -inf for
  ``CENS = 1``, +inf for ``CENS = -1``).
* **LLOQ** without CENS: observation records with ``DV < LLOQ`` are left-censored
  at LLOQ (what Beal's M3 method needs); records at or above it are measured.

The likelihood then uses P(y < limit) (or P(y > limit)) for censored records.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ._columns import numeric
from ._errors import CensoringError, DatasetWarning, where_many


def read_censoring(
    table: pd.DataFrame,
    roles: dict[str, str],
    ids: np.ndarray,
    evid: np.ndarray,
    dv: np.ndarray,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(cens, limit, bound, dv)`` for every record.

    ``limit`` is the censoring limit (LLOQ or ULOQ), ``bound`` the other end of
    the censoring interval (the LIMIT column), both NaN where not censored; ``dv``
    is DV with missing values on censored records filled from LLOQ.
    """
    n = len(table)
    cens = np.zeros(n, dtype=np.int64)
    limit = np.full(n, np.nan)
    bound = np.full(n, np.nan)
    observation = evid == 0
    lloq = numeric(table[roles["LLOQ"]], roles["LLOQ"], "LLOQ", ids) if "LLOQ" in roles else None

    if "CENS" in roles:
        column = roles["CENS"]
        raw = numeric(table[column], column, "CENS", ids)
        allowed = (0.0, 1.0) if column.upper() in ("BLQ", "BLOQ") else (-1.0, 0.0, 1.0)
        bad = np.flatnonzero(~(np.isnan(raw) | np.isin(raw, allowed)))
        if bad.size:
            raise CensoringError(
                f"Column {column!r} must be one of {', '.join(str(int(a)) for a in allowed)} "
                f"(1: below the limit, -1: above it, 0: measured), but "
                f"{where_many(bad, ids[bad])} hold{'s' if bad.size == 1 else ''} "
                f"{raw[bad[0]]:g}."
            )
        cens = np.nan_to_num(raw, nan=0.0).astype(np.int64)
        ignored = int(np.count_nonzero((cens != 0) & ~observation))
        if ignored:
            message = f"{column} ignored on {ignored} records that are not observations (EVID != 0)"
            notes.append(message)
            warnings.warn(message, DatasetWarning, stacklevel=4)
        cens = np.where(observation, cens, 0)
        limit = np.where(cens != 0, dv, np.nan)
        if lloq is not None:
            from_lloq = (cens == 1) & ~np.isnan(lloq)
            filled = int(np.count_nonzero(from_lloq & np.isnan(dv)))
            limit = np.where(from_lloq, lloq, limit)
            dv = np.where(from_lloq & np.isnan(dv), lloq, dv)
            if filled:
                notes.append(f"DV missing on {filled} censored records: set to their LLOQ")
            measured_below = int(np.count_nonzero((cens == 0) & observation & (dv < lloq)))
            if measured_below:
                notes.append(
                    f"{measured_below} observations below LLOQ have {column} = 0 and are "
                    f"used as measured ({column} decides, not LLOQ)"
                )
        bad = np.flatnonzero((cens != 0) & np.isnan(limit))
        if bad.size:
            raise CensoringError(
                f"Column {column!r} is {cens[bad[0]]} on {where_many(bad, ids[bad])} but DV is "
                f"missing there, so "
                f"the censoring limit is unknown. Put the limit of quantification in DV "
                f"(Monolix/nlmixr2 convention) or add an LLOQ column."
            )
    elif lloq is not None:
        below = observation & ~np.isnan(dv) & ~np.isnan(lloq) & (dv < lloq)
        cens = below.astype(np.int64)
        limit = np.where(below, lloq, np.nan)
        notes.append(
            f"{int(below.sum())} observations with DV < LLOQ are left-censored at LLOQ "
            f"(column {roles['LLOQ']!r})"
        )

    if "LIMIT" in roles:
        column = roles["LIMIT"]
        raw = numeric(table[column], column, "LIMIT", ids, infinite_ok=True)
        if not cens.any():
            notes.append(f"{column} ignored: no record is censored")
        else:
            default = np.where(cens == 1, -np.inf, np.inf)
            bound = np.where(cens != 0, np.where(np.isnan(raw), default, raw), np.nan)
            wrong_side = ((cens == 1) & (bound >= limit)) | ((cens == -1) & (bound <= limit))
            bad = np.flatnonzero(wrong_side)
            if bad.size:
                raise CensoringError(
                    f"Column {column!r} (LIMIT) on {where_many(bad, ids[bad])}: LIMIT "
                    f"{bound[bad[0]]:g} is on the wrong side "
                    f"of the censoring limit {limit[bad[0]]:g}. LIMIT is the other end of the "
                    f"interval: below the LLOQ for CENS = 1, above the ULOQ for CENS = -1."
                )
    return cens, limit, bound, dv
