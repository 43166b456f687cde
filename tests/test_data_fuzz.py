"""A seeded mutation loop over the bundled datasets: whatever is done to a table,
the outcome is a named pmx error or a dataset whose numbers are finite and whose
predictions are finite (or refused naming the subjects); never a bare
traceback, never a warning other than a DatasetWarning, never a non-finite
OFV without a status that says why.

Each mutation changes one or two things, as a user editing a spreadsheet might:
a cell set to inf, NaN, 1e300, a negative or fractional number, text or a
missing marker; a column dropped or renamed with its last letter lost; two rows
swapped; a row duplicated.  Half the tables go through a CSV file.  About 450
tables in ~30 s.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.data import DatasetError, DatasetWarning, read_nonmem
from pmx_jax.likelihood import NonFiniteOFVWarning, prepare

jax.config.update("jax_enable_x64", True)

CELLS = (np.inf, -np.inf, np.nan, 1e300, -1.0, 0.0, -0.5, 2.5, 7.0, 1e9)
CELLS += ("abc", "", ".", " 3 ", "1e5", "NA", "-", "79.6kg")
MUTATIONS_PER_DATASET = 150
NEW_PREDICTION_SHAPES = 4  # compilations allowed per model for changed table shapes


def mutate(table: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    kind = int(rng.integers(8))
    column = table.columns[int(rng.integers(len(table.columns)))]
    row = int(rng.integers(len(table)))
    if kind <= 3:
        value = CELLS[int(rng.integers(len(CELLS)))]
        changed = table.astype({column: object})
        changed.iloc[row, changed.columns.get_loc(column)] = value
        return changed, f"{column} on table row {row} = {value!r}"
    if kind == 4:
        return table.drop(columns=column), f"drop {column}"
    if kind == 5:
        return table.rename(columns={column: column[:-1]}), f"rename {column} -> {column[:-1]}"
    if kind == 6:
        other = int(rng.integers(len(table)))
        order = np.arange(len(table))
        order[[row, other]] = order[[other, row]]
        return table.iloc[order].reset_index(drop=True), f"swap rows {row} and {other}"
    copy = pd.concat([table.iloc[: row + 1], table.iloc[row:]]).reset_index(drop=True)
    return copy, f"duplicate row {row}"


def outcome(source, model) -> tuple[str, pmx.Dataset | None, object]:
    """'error' (a pmx error), 'ok' (with the dataset and its prepared form), or a
    description of what went wrong."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = read_nonmem(source)
            prepared = None if model is None else prepare(model, data)
        except DatasetError as error:
            if not str(error).strip():
                return "an empty error message", None, None
            return "error", None, None
        except Exception as error:  # anything else is what this test looks for
            return f"{type(error).__name__}: {error}", None, None
    other = [w for w in caught if not issubclass(w.category, DatasetWarning)]
    if other:
        return f"{other[0].category.__name__}: {other[0].message}", None, None
    if prepared is not None:
        subjects = prepared.subjects
        for field in ("time", "amt", "rate", "ii", "cov"):
            if not np.isfinite(np.asarray(getattr(subjects, field))).all():
                return f"non-finite {field} accepted", None, None
    return "ok", data, prepared


def test_mutated_bundled_datasets_give_named_errors_or_finite_results(tmp_path):
    rng = np.random.default_rng(20261206)
    models = {
        "theophylline": pmx.library.Theophylline(),
        "phenobarbital": pmx.library.Phenobarbital(),
        "quinidine": None,  # read only: its models live in the examples
    }
    failures, counts = [], {"ok": 0, "error": 0, "predicted": 0, "refused": 0}
    for name, model in models.items():
        original = pmx.datasets.load(name).table
        shapes = {prepare(model, pmx.datasets.load(name)).subjects.time.shape} if model else set()
        new_shapes = 0
        for i in range(MUTATIONS_PER_DATASET):
            table, done = original, []
            for _ in range(int(rng.integers(1, 3))):
                table, what = mutate(table, rng)
                done.append(what)
            source: object = table
            if rng.integers(2):
                source = tmp_path / f"{name}_{i}.csv"
                table.to_csv(source, index=False)
            result, data, prepared = outcome(source, model)
            if result not in ("ok", "error"):
                failures.append(f"{name} [{'; '.join(done)}]: {result}")
                continue
            counts[result] += 1
            if result == "error" or model is None:
                continue
            shape = prepared.subjects.time.shape
            if shape not in shapes:
                if new_shapes == NEW_PREDICTION_SHAPES:
                    continue
                shapes.add(shape)
                new_shapes += 1
            try:
                predictions = pmx.predict(model, data)
            except FloatingPointError as error:  # refused, naming the subjects
                assert "not finite for subject(s) ID" in str(error)
                counts["refused"] += 1
                continue
            counts["predicted"] += 1
            if not np.isfinite(predictions[["PRED", "IPRED"]].to_numpy()).all():
                failures.append(f"{name} [{'; '.join(done)}]: non-finite predictions")
    assert not failures, "\n".join(failures[:20])
    # The loop exercised both outcomes, and predictions on most accepted tables.
    assert counts["ok"] > 100 and counts["error"] > 100, counts
    assert counts["predicted"] > 50, counts


@pytest.mark.parametrize(
    ("column", "value", "finite"), [("DV", 1e6, True), ("WT", 0.0, False), ("AMT", 0.0, False)]
)
def test_a_valid_but_extreme_table_gives_a_finite_ofv_or_a_status(column, value, finite):
    """Values the reader accepts can still make a subject's objective
    non-finite (a weight of 0 gives CL = 0 for phenobarbital; no dose gives
    predictions of 0 under a proportional error): the OFV then comes with a
    warning naming the subject and a status for it, not a silent inf/NaN."""
    model = pmx.library.Phenobarbital()
    table = pmx.datasets.load("phenobarbital").table.copy()
    rows = table.index[table["ID"] == 3]
    table.loc[rows[1] if column == "DV" else rows, column] = value
    data = read_nonmem(table)
    if finite:
        result = pmx.ofv(model, data)
        assert np.isfinite(float(result.ofv)) and not np.asarray(result.status).any()
        return
    with pytest.warns(NonFiniteOFVWarning, match=r"ID 3 \(nonfinite"):
        result = pmx.ofv(model, data)
    per_subject, status = np.asarray(result.per_subject), np.asarray(result.status)
    assert not np.isfinite(per_subject[2]) and status[2] != 0
    assert np.isfinite(np.delete(per_subject, 2)).all() and not np.delete(status, 2).any()
