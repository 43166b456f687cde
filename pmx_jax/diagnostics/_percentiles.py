"""The per-parameter table shared by the bootstrap and SIR: estimate, mean,
median, SE, RSE, bias and the percentile interval of resampled estimates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _percentile_table(
    values: np.ndarray, names: Sequence[str], estimate: np.ndarray, level: float
) -> pd.DataFrame:
    """One row per parameter from ``values`` (one row per replicate or
    resample): the central percentile interval at ``level`` and the moments."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = 100.0 * (1.0 - level) / 2.0
    n_used = values.shape[0]
    if n_used:
        lower, upper = np.percentile(values, [tail, 100.0 - tail], axis=0)
        mean, median = values.mean(axis=0), np.median(values, axis=0)
        se = values.std(axis=0, ddof=1) if n_used > 1 else np.full(len(names), np.nan)
    else:
        lower = upper = mean = median = se = np.full(len(names), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rse = 100.0 * se / np.abs(estimate)
    return pd.DataFrame(
        dict(
            parameter=list(names),
            estimate=estimate,
            mean=mean,
            median=median,
            se=se,
            rse=rse,
            bias=mean - estimate,
            ci_lower=lower,
            ci_upper=upper,
        )
    )
