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

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._columns import is_numeric_column, numeric, parse_texts, text_codes
from ._errors import NonNumericValueError, format_id, where_many


def encode_covariates(
    table: pd.DataFrame,
    names: list[str],
    subject: np.ndarray,
    ids: np.ndarray,
    id_per_row: np.ndarray,
    notes: list[str],
    categorical: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """Return the covariates as a float frame (carried forward) and the category levels.

    A column is numeric when every non-missing cell is a number, categorical when
    every one is text (or when it is named in ``categorical``); a column that
    mixes the two raises :class:`NonNumericValueError` naming the text cells.
    """
    as_categories = {str(c).upper() for c in categorical}
    categories: dict[str, tuple] = {}
    encoded: dict[str, np.ndarray] = {}
    for name in names:
        values = table[name]
        asked = name.upper() in as_categories
        if not asked and is_numeric_column(values):
            encoded[name] = numeric(values, name, "covariate", id_per_row)
            continue
        index, texts = text_codes(values)
        numbers = parse_texts(texts)
        if not asked:
            _refuse_mixed(index, texts, numbers, name, id_per_row)
        encoded[name], categories[name] = _category_codes(index, texts, numbers)
        notes.append(
            f"covariate {name} is categorical, coded "
            + ", ".join(f"{i} = {level!r}" for i, level in enumerate(categories[name]))
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


def _category_codes(
    index: np.ndarray, texts: np.ndarray, numbers: np.ndarray
) -> tuple[np.ndarray, tuple]:
    """Codes 0..k-1 of a categorical column (NaN where missing) and its levels:
    numbers in increasing order, text in sorted order.  Arguments: the column's
    :func:`text_codes` and the :func:`parse_texts` of its texts."""
    if texts.size and not np.isnan(numbers).any():
        keys = numbers
        levels = [int(k) if float(k).is_integer() else float(k) for k in np.unique(numbers)]
    else:
        keys = texts.astype(str)
        levels = sorted(keys.tolist())
    rank = np.searchsorted(np.unique(keys), keys).astype(np.float64)
    return np.r_[rank, np.nan][index], tuple(levels)


def _refuse_mixed(
    index: np.ndarray, texts: np.ndarray, numbers: np.ndarray, name: str, ids: np.ndarray
) -> None:
    """A covariate with both numbers and text is a data-entry mistake ('79.6kg')
    more often than a category: name the text cells unless none is a number."""
    is_text = np.isnan(numbers)
    if is_text.all():
        return
    rows = np.flatnonzero(np.r_[is_text, False][index])
    examples = ", ".join(repr(t) for t in texts[is_text][:3])
    raise NonNumericValueError(
        f"Column {name!r} (covariate) holds numbers and text: {where_many(rows, ids[rows])} "
        f"hold{'s' if rows.size == 1 else ''} {examples}, the other cells numbers such as "
        f"{format_id(numbers[~is_text][0])}. Correct the text cells (a number, or '.' where "
        f"missing), or if the column is a category, say so with "
        f"read_nonmem(..., categorical=[{name!r}])."
    )
