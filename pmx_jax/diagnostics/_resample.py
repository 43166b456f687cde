"""Resampling subjects with replacement, the draw behind the nonparametric
bootstrap: within strata when asked, each drawn subject becoming a new
subject (IDs renumbered 1..n), either as a new :class:`Dataset` or as the
original padded arrays indexed by the drawn subjects (same shapes and static
flags, hence the same compiled objective)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import pandas as pd

from ..data._dataset import Dataset
from ..likelihood import Prepared


def subject_strata(dataset: Dataset, stratify: Any) -> np.ndarray:
    """One stratum label per subject of ``dataset``.

    ``stratify``: a covariate or table column name (matched case-insensitively;
    the subject's first record, i.e. its baseline value, is used), a sequence of
    one label per subject (dataset order), or a mapping ID -> label.
    """
    n = dataset.n_subjects
    if isinstance(stratify, str):
        first = dataset.records.groupby("subject", sort=True).head(1).index.to_numpy()
        for frame in (dataset.covariates, dataset.table.reset_index(drop=True)):
            by_upper = {str(c).upper(): c for c in frame.columns}
            column = by_upper.get(stratify.upper())
            if column is not None:
                return frame[column].to_numpy()[first]
        raise KeyError(
            f"cannot stratify by {stratify!r}: the dataset has no such covariate or column "
            f"(covariates: {', '.join(dataset.covariate_names) or '(none)'}; columns: "
            f"{', '.join(map(str, dataset.table.columns))})"
        )
    if isinstance(stratify, Mapping):
        missing = [i for i in dataset.ids if i not in stratify]
        if missing:
            raise KeyError(f"stratify has no label for ID(s) {missing[:5]}")
        return np.asarray([stratify[i] for i in dataset.ids])
    labels = np.asarray(stratify)
    if labels.shape != (n,):
        raise ValueError(
            f"stratify must give one label per subject ({n}), got shape {labels.shape}"
        )
    return labels


def resample_indices(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Subject indices drawn with replacement, within each stratum: position
    ``k`` of the result is a subject of the same stratum as subject ``k``, so
    every stratum keeps its number of subjects."""
    strata = np.asarray(strata)
    index = np.empty(strata.shape[0], dtype=np.int64)
    for label in pd.unique(strata):
        members = np.flatnonzero(strata == label)
        index[members] = rng.choice(members, size=members.size, replace=True)
    return index


def resampled_dataset(dataset: Dataset, index: Sequence[int]) -> Dataset:
    """The dataset of subjects ``index`` (subject positions, repeats allowed),
    renumbered ``ID = 1..len(index)``: a subject drawn twice is two subjects.
    ``table`` keeps every original column with the new IDs, ``row`` counts rows
    of the new table."""
    index = np.asarray(index, dtype=np.int64)
    if index.ndim != 1 or index.size == 0:
        raise ValueError("index must be a non-empty vector of subject positions")
    if index.min() < 0 or index.max() >= dataset.n_subjects:
        raise IndexError(f"subject positions must lie in 0..{dataset.n_subjects - 1}")
    subject = dataset.records["subject"].to_numpy()
    rows_of = [np.flatnonzero(subject == s) for s in range(dataset.n_subjects)]
    positions = np.concatenate([rows_of[s] for s in index])
    new_subject = np.concatenate(
        [np.full(rows_of[s].size, k, dtype=np.int64) for k, s in enumerate(index)]
    )
    new_ids = np.arange(1, index.size + 1)
    records = dataset.records.iloc[positions].reset_index(drop=True)
    records["subject"] = new_subject
    records["id"] = new_ids[new_subject]
    records["row"] = np.arange(positions.size)
    table = dataset.table.iloc[positions].reset_index(drop=True)
    id_column = dataset.roles.get("ID")
    if id_column is not None and id_column in table.columns:
        table[id_column] = new_ids[new_subject]
    return Dataset(
        table=table,
        records=records,
        covariates=dataset.covariates.iloc[positions].reset_index(drop=True),
        roles=dataset.roles,
        ids=new_ids,
        dvid_levels=dataset.dvid_levels,
        occ_levels=dataset.occ_levels,
        categories=dataset.categories,
        notes=[
            *dataset.notes,
            f"bootstrap resample: {index.size} subjects drawn with replacement from "
            f"{dataset.n_subjects}, renumbered 1..{index.size}",
        ],
    )


def resample_subjects(
    dataset: Dataset, *, seed: int | np.random.Generator = 0, stratify: Any = None
) -> tuple[Dataset, np.ndarray]:
    """One bootstrap sample of ``dataset``: as many subjects, drawn with
    replacement (within strata of ``stratify``, see :func:`subject_strata`),
    IDs renumbered 1..n.  Returns the dataset and the drawn subject positions
    (``dataset.ids[index[k]]`` is the original ID of new subject ``k + 1``)."""
    rng = np.random.default_rng(seed)
    strata = np.zeros(dataset.n_subjects) if stratify is None else subject_strata(dataset, stratify)
    index = resample_indices(strata, rng)
    return resampled_dataset(dataset, index), index


def _resampled_prepared(source: Prepared, index: np.ndarray) -> Prepared:
    """``source`` (padded arrays, subject axis first) for subjects ``index``:
    same shapes and static flags, hence the same compiled objective."""

    def take(x):
        if isinstance(x, jax.Array | np.ndarray) and np.ndim(x) >= 1:
            return jax.device_put(np.asarray(x)[index])
        return x

    return jax.tree_util.tree_map(take, source)
