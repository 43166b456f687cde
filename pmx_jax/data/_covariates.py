"""Covariates: encoding (numbers and categories) and NONMEM-style carrying forward.

Numeric columns are read as floats.  Text columns (sex "female"/"male", a
genotype, a study site) are categorical: they become integer codes 0..k-1 in the
sorted order of their levels, and ``Dataset.categories[name]`` keeps the levels,
so ``categories["SEX"] == ("female", "male")`` means code 0 is female.

Missing values are carried forward within a subject (last observation carried
forward, as NONMEM does with time-varying covariates), and the first observed
value is carried backward to the subject's earlier records.  A covariate missing
on every record of a subject stays NaN; it is an error only when a model asks for
that covariate (:meth:`Dataset.subjects`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._columns import is_numeric_column, numeric, text_codes
from ._errors import format_id


def encode_covariates(
    table: pd.DataFrame,
    names: list[str],
    subject: np.ndarray,
    ids: np.ndarray,
    id_per_row: np.ndarray,
    notes: list[str],
) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """Return the covariates as a float frame (carried forward) and the category levels."""
    categories: dict[str, tuple] = {}
    encoded: dict[str, np.ndarray] = {}
    for name in names:
        values = table[name]
        if is_numeric_column(values):
            encoded[name] = numeric(values, name, "covariate", id_per_row)
        else:
            index, texts = text_codes(values)
            texts = texts.astype(str)
            rank = np.argsort(np.argsort(texts, kind="stable"))
            levels = tuple(sorted(texts.tolist()))
            encoded[name] = np.r_[rank.astype(np.float64), np.nan][index]
            categories[name] = levels
            notes.append(
                f"covariate {name} is categorical, coded "
                + ", ".join(f"{i} = {level!r}" for i, level in enumerate(levels))
            )
    frame = pd.DataFrame(encoded, index=table.index, columns=names)
    if not names:
        return frame, categories

    missing = frame.isna()
    n_missing = missing.sum()
    groups = frame.groupby(subject, sort=False)
    frame = groups.ffill()
    frame = frame.groupby(subject, sort=False).bfill()
    still = frame.isna()
    for name in names:
        filled = int(n_missing[name] - still[name].sum())
        if filled:
            notes.append(
                f"covariate {name}: {filled} missing values carried forward "
                f"(or back from the first value) within subjects"
            )
        if still[name].any():
            absent = pd.unique(subject[still[name].to_numpy()])
            shown = ", ".join(format_id(ids[s]) for s in absent[:5])
            more = f" and {absent.size - 5} more" if absent.size > 5 else ""
            notes.append(
                f"covariate {name} is missing on every record of {absent.size} subject"
                f"{'s' if absent.size > 1 else ''} (ID {shown}{more})"
            )
    return frame, categories
