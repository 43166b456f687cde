"""The bundled example datasets: names, raw tables, and the NONMEM conversion of quinidine."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pmx_jax import datasets

jax.config.update("jax_enable_x64", True)


def test_names_and_aliases():
    assert datasets.names() == ("theophylline", "phenobarbital", "quinidine")
    assert datasets.load("theo").n_subjects == datasets.load("Theophylline").n_subjects == 12
    with pytest.raises(KeyError, match="choose one of theophylline"):
        datasets.load("warfarin")


def test_load_table_is_the_csv_as_shipped():
    raw = datasets.load_table("quinidine")
    assert raw.shape == (1471, 14)
    assert list(raw.columns[:5]) == ["Subject", "time", "conc", "dose", "interval"]
    theo = datasets.load_table("theo")
    assert list(theo.columns) == ["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "WT"]
    assert theo["DV"].isna().sum() == 12  # '.' on dose records


def test_quinidine_in_nonmem_layout():
    data = datasets.load("quinidine")
    assert (data.n_subjects, data.n_observations, data.n_doses) == (136, 361, 1028)
    records = data.records
    assert int((records["evid"] == 2).sum()) == 82
    assert set(records.loc[records["evid"] == 1, "cmt"]) == {1}
    assert set(records.loc[records["evid"] == 0, "cmt"]) == {2}
    assert data.categories["Creatinine"] == ("< 50", ">= 50")
    assert data.categories["Race"] == ("Black", "Caucasian", "Latin")
    assert "interval" not in data.covariate_names
    assert any("249 doses carry a dosing interval" in note for note in data.notes)
    subjects = data.subjects(covariates=["Weight", "glyco", "Creatinine"])
    assert subjects.cov.shape == (136, 47, 3)
    assert not np.isnan(np.asarray(subjects.cov)).any()


def test_quinidine_steady_state_option():
    data = datasets.load("quinidine", steady_state=True)
    regimen = data.records["ss"] == 1
    assert int(regimen.sum()) == 249
    assert (data.records.loc[regimen, "ii"] > 0).all()
