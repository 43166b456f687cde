"""Reading NONMEM-style datasets: derivations, defaults, ADDL, covariates, padding.

Reference datasets come from ``../shared/refdata`` (``PMX_REFDATA`` overrides it);
tests that need them are skipped where the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from pmx_jax import datasets
from pmx_jax.data import (
    CensoringError,
    Dataset,
    DatasetWarning,
    Subjects,
    UnsortedTimeError,
    read_nonmem,
)

jax.config.update("jax_enable_x64", True)

REFDATA = Path(
    os.environ.get("PMX_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)


def refdata(name: str) -> Path:
    path = REFDATA / name
    if not path.exists():
        pytest.skip(f"reference data {path} not available")
    return path


def valid(subjects: Subjects, field: str) -> list[np.ndarray]:
    """A field's values per subject, without padding."""
    mask = np.asarray(subjects.valid)
    values = np.asarray(getattr(subjects, field))
    return [values[i][mask[i]] for i in range(mask.shape[0])]


# ------------------------------------------------------------ bundled data
def test_theophylline_counts_and_shapes():
    data = datasets.load("theophylline")
    assert (data.n_subjects, data.n_observations, data.n_doses) == (12, 132, 12)
    subjects = data.subjects()
    assert subjects.time.shape == (12, 12)
    assert subjects.cov.shape == (12, 12, 1)
    assert subjects.covariate_names == ("WT",)
    assert subjects.time.dtype == jnp.float64
    assert bool(subjects.valid.all())  # every subject has 12 records: no padding
    # The t=0 sample follows the dose (NONMEM record order): dose, then observation.
    assert np.asarray(subjects.evid)[:, :2].tolist() == [[1, 0]] * 12
    assert np.asarray(subjects.cmt)[0, :2].tolist() == [1, 2]


def test_phenobarbital_counts_shapes_and_padding():
    data = datasets.load("pheno")
    assert (data.n_subjects, data.n_observations, data.n_doses) == (59, 155, 589)
    subjects = data.subjects()
    counts = data.records.groupby("subject").size().to_numpy()
    assert subjects.time.shape == (59, counts.max())
    assert np.asarray(subjects.valid).sum(axis=1).tolist() == counts.tolist()
    pad = ~np.asarray(subjects.valid)
    assert pad.any()
    assert (np.asarray(subjects.evid)[pad] == 2).all()
    assert (np.asarray(subjects.amt)[pad] == 0).all()
    assert (np.asarray(subjects.row)[pad] == -1).all()
    assert not np.asarray(subjects.is_obs)[pad].any()
    last_time = data.records.groupby("subject")["time"].last().to_numpy()
    time = np.asarray(subjects.time)
    assert (time == np.where(pad, last_time[:, None], time)).all()
    assert int(np.asarray(subjects.is_obs).sum()) == 155


def test_observation_table_matches_subjects():
    data = datasets.load("pheno")
    subjects = data.subjects()
    obs = data.observation_table()
    is_obs = np.asarray(subjects.is_obs)
    assert np.array_equal(obs["DV"].to_numpy(), np.asarray(subjects.dv)[is_obs])
    assert np.array_equal(obs["row"].to_numpy(), np.asarray(subjects.row)[is_obs])
    assert list(obs.columns) == ["ID", "TIME", "DV", "DVID", "CENS", "row"]
    assert obs["ID"].iloc[0] == 1


def test_subjects_is_a_pytree_that_jax_transforms():
    subjects = datasets.load("theo").subjects()
    leaves = jax.tree_util.tree_leaves(subjects)
    assert len(leaves) == 18  # covariate_names is static
    total = jax.jit(jax.vmap(lambda s: jnp.sum(jnp.where(s.is_obs, s.dv, 0.0))))(subjects)
    assert total.shape == (12,)
    assert np.isclose(float(total.sum()), float(subjects.dv.sum()))
    one = jax.tree_util.tree_map(lambda x: x[0], subjects)
    assert one.time.shape == (12,)
    assert isinstance(eqx.filter(subjects, eqx.is_array), Subjects)


def test_float32_and_pad_to():
    subjects = datasets.load("theo").subjects(dtype=jnp.float32, pad_to=16)
    assert subjects.time.dtype == jnp.float32 and subjects.dv.dtype == jnp.float32
    assert subjects.time.shape == (12, 16)
    assert np.asarray(subjects.valid)[:, 12:].sum() == 0


def test_summary_names_counts_roles_and_notes():
    text = repr(datasets.load("theo"))
    assert "12 subjects" in text and "observations: 132" in text and "doses: 12" in text
    assert "WT (numeric)" in text


# ---------------------------------------------------------------- refdata
def test_theo_sd_reads_evid_101_as_bolus_into_cmt_1():
    data = read_nonmem(refdata("theo_sd.csv"))
    assert (data.n_subjects, data.n_observations) == (12, 132)
    doses = data.records[data.records["evid"] == 1]
    assert len(doses) == 12 and (doses["cmt"] == 1).all()
    assert any("EVID 101" in note for note in data.notes)
    bundled = datasets.load("theo").observation_table()
    same = data.observation_table()
    assert np.allclose(same["DV"], bundled["DV"]) and np.allclose(same["TIME"], bundled["TIME"])


def test_pheno_sd_evid_derived_without_evid_and_mdv():
    table = pd.read_csv(refdata("pheno_sd.csv"))
    data = read_nonmem(table.drop(columns=["EVID", "MDV"]))
    assert (data.n_subjects, data.n_observations, data.n_doses) == (59, 155, 589)
    assert np.array_equal(data.records["evid"].to_numpy(), table["EVID"].to_numpy())
    assert np.array_equal(data.records["mdv"].to_numpy(), table["MDV"].to_numpy())
    assert any("EVID derived from AMT" in note for note in data.notes)
    # DV = 0 on pheno's dose records is a placeholder: ignored without a note.
    assert not any("DV ignored" in note for note in data.notes)


def test_pheno_sd_as_given():
    data = read_nonmem(refdata("pheno_sd.csv"))
    assert (data.n_subjects, data.n_observations) == (59, 155)
    assert data.subjects().cov.shape[-1] == 2


def test_warfarin_endpoints_and_categories():
    data = read_nonmem(refdata("warfarin.csv"))
    assert data.dvid_levels == ("cp", "pca")
    assert data.categories == {"sex": ("female", "male")}
    assert data.covariate_names == ("wt", "age", "sex")
    obs = data.observation_table()
    assert (obs["DVID"] == "cp").sum() == 251 and data.n_subjects == 32
    subjects = data.subjects(covariates=["WT", "SEX"])
    assert subjects.covariate_names == ("WT", "SEX")
    sex = np.asarray(subjects.cov)[..., 1]
    assert set(np.unique(sex)) <= {0.0, 1.0}
    assert set(np.unique(np.asarray(subjects.dvid)[np.asarray(subjects.is_obs)])) == {0, 1}


def test_bolus_2cpt_needs_its_ss_code_explained():
    data = read_nonmem(refdata("Bolus_2CPT.csv"), ss_codes={99: 0})
    assert data.n_subjects == 120
    assert set(data.records["ss"]) == {0, 1}
    sd = data.records.index[data.table["SD"].to_numpy() == 1]
    assert int(data.records.loc[sd].eval("evid == 0 and mdv == 0").sum()) == 2280


def test_nmtest_dosing_items():
    data = read_nonmem(refdata("nmtest.csv"))
    records = data.records
    assert data.n_subjects == 54
    assert set(records["evid"]) == {0, 1, 3, 4}
    assert set(records["ss"]) == {0, 1, 2}
    assert {-2.0} <= set(records["rate"])
    subjects = data.subjects()
    # Every ADDL dose is present once, after expansion.
    assert int(np.asarray(subjects.is_addl).sum()) == int(records["addl"].sum()) == 184
    per_subject = np.asarray(subjects.valid).sum(axis=1)
    expected = records.groupby("subject").size() + records.groupby("subject")["addl"].sum()
    assert per_subject.tolist() == expected.tolist()
    for time in valid(subjects, "time"):
        assert (np.diff(time) >= 0).all()


def test_nmtest_with_predictions_as_dv():
    data = read_nonmem(refdata("nmtest.csv"), dv_name="cp")
    assert data.roles["DV"] == "cp"
    assert data.n_observations == 7074


def test_mavoglurant_restarts_time_each_occasion():
    path = refdata("mavoglurant.csv")
    with pytest.raises(UnsortedTimeError, match="reset_when_time_decreases=True"):
        read_nonmem(path)
    data = read_nonmem(path, reset_when_time_decreases=True)
    assert data.occ_levels == (1, 2)
    assert data.n_subjects == 120
    assert int((data.records["evid"] == 4).sum()) == 78
    subjects = data.subjects()
    for time in valid(subjects, "time"):
        assert (np.diff(time) >= 0).all()
    # Reports keep the dataset's TIME.
    assert data.observation_table()["TIME"].min() > 0
    assert set(np.unique(np.asarray(subjects.occ))) == {0, 1}


NONMEM_SHAPED = [
    ("theo_sd.csv", {}),
    ("theo_md.csv", {}),
    ("pheno_sd.csv", {}),
    ("warfarin.csv", {}),
    ("warfarin_PKS_nonmem.csv", {}),
    ("nmtest.csv", {}),
    ("mavoglurant.csv", {"reset_when_time_decreases": True}),
    ("nimoData.csv", {}),
    ("mox_simulated_log_for_mox1.csv", {}),
    ("mox_simulated_normal_for_mox2.csv", {}),
    ("bauer2019_402.csv", {}),
    ("bauer2019_501.csv", {}),
    ("bauer2019_ad3tr4_blq.csv", {"columns": {"LOGC": "DV", "LOQ": "LLOQ"}}),
    ("THEOPP_nonmem.csv", {"columns": {"DOSE": "AMT", "CP": "DV"}}),
] + [
    (f"{route}_{model}.csv", {"ss_codes": {99: 0}} if "MM" not in model else {})
    for route in ("Bolus", "Infusion", "Oral")
    for model in ("1CPT", "1CPTMM", "2CPT", "2CPTMM")
]


@pytest.mark.parametrize(("name", "options"), NONMEM_SHAPED, ids=[n for n, _ in NONMEM_SHAPED])
def test_reference_datasets_read_and_batch(name, options):
    data = read_nonmem(refdata(name), **options)
    subjects = data.subjects()
    n_records = data.n_records + data.n_addl_doses
    assert subjects.time.shape[0] == data.n_subjects
    assert int(np.asarray(subjects.valid).sum()) == n_records
    assert int(np.asarray(subjects.is_obs).sum()) == data.n_observations
    assert subjects.cov.shape == (*subjects.time.shape, len(data.covariate_names))


def test_blq_dataset_with_lloq_column():
    data = read_nonmem(
        refdata("bauer2019_ad3tr4_blq.csv"), columns={"LOGC": "DV", "LOQ": "LLOQ"}, covariates=[]
    )
    subjects = data.subjects()
    cens = np.asarray(subjects.cens)
    assert cens.sum() > 0 and set(np.unique(cens)) == {0, 1}
    limit = np.asarray(subjects.limit)
    assert np.allclose(limit[cens == 1], -5.8)
    assert (np.asarray(subjects.dv)[cens == 1] < -5.8).all()


# ------------------------------------------------------------- derivations
def test_evid_from_mdv_without_evid():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1],
            "TIME": [0.0, 1, 2, 3],
            "AMT": [100.0, 0, 0, 0],
            "MDV": [1, 1, 0, 0],
            "DV": [np.nan, np.nan, 4.0, 3.0],
        }
    )
    data = read_nonmem(table)
    assert data.records["evid"].tolist() == [1, 2, 0, 0]
    assert any("EVID derived from MDV and AMT" in note for note in data.notes)


def test_mdv_derived_from_evid_and_missing_dv():
    table = pd.DataFrame(
        {"ID": [1, 1, 1], "TIME": [0.0, 1, 2], "AMT": [5.0, 0, 0], "DV": [np.nan, np.nan, 2.0]}
    )
    data = read_nonmem(table)
    assert data.records["mdv"].tolist() == [1, 1, 0]
    assert data.n_observations == 1
    assert any("without DV are not used" in note for note in data.notes)


def test_defaults_for_absent_items():
    table = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 1], "AMT": [5.0, 0], "DV": [np.nan, 1.0]})
    records = read_nonmem(table).records
    for item in ("cmt", "rate", "ii", "addl", "ss", "dvid", "occ", "cens"):
        assert (records[item] == 0).all(), item


def test_csv_with_nonmem_missing_values(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        "id,time,amt,dv,evid,mdv,wt\n"
        "1,0,100,.,1,1,70\n1,1,.,5.2,0,0,.\n"
        "2, 0,100,,1,1,80\n2,1,.,3,0,0,.\n"
    )
    data = read_nonmem(path)
    assert data.roles == {
        "ID": "id",
        "TIME": "time",
        "AMT": "amt",
        "DV": "dv",
        "EVID": "evid",
        "MDV": "mdv",
    }
    assert data.records["amt"].tolist() == [100, 0, 100, 0]
    assert data.covariates["wt"].tolist() == [70, 70, 80, 80]
    assert data.table.shape == (4, 7)  # the table as read


def test_column_mapping_and_case():
    table = pd.DataFrame(
        {
            "Subject": ["a", "a", "b"],
            "Hours": [0.0, 1, 0],
            "Dose": [10.0, 0, 10],
            "Conc": [np.nan, 2.0, np.nan],
        }
    )
    data = read_nonmem(
        table, columns={"subject": "id", "HOURS": "time", "dose": "AMT", "conc": "dv"}
    )
    assert data.ids == ("a", "b")
    assert data.roles == {"ID": "Subject", "TIME": "Hours", "AMT": "Dose", "DV": "Conc"}
    assert data.covariate_names == ()
    assert data.subjects().cov.shape == (2, 2, 0)


def test_dataframe_is_not_modified():
    table = pd.DataFrame(
        {"ID": [1, 1], "TIME": [0.0, 1], "AMT": [5.0, 0], "DV": [9.0, 1.0], "EVID": [101, 0]}
    )
    before = table.copy()
    data = read_nonmem(table)
    pd.testing.assert_frame_equal(table, before)
    pd.testing.assert_frame_equal(data.table, before)


def test_ids_in_order_of_first_appearance():
    table = pd.DataFrame(
        {
            "ID": [30, 30, 4, 4, 17],
            "TIME": [0.0, 1, 0, 1, 0],
            "AMT": [1.0, 0, 1, 0, 1],
            "DV": [np.nan, 1, np.nan, 2, np.nan],
        }
    )
    data = read_nonmem(table)
    assert data.ids == (30, 4, 17) and data.n_subjects == 3
    assert data.subjects().time.shape == (3, 2)


def test_dvid_numbers_sorted_and_dose_records_add_no_level():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1],
            "TIME": [0.0, 1, 2],
            "AMT": [1.0, 0, 0],
            "DV": [np.nan, 1, 2],
            "DVID": [0, 2, 1],
        }
    )
    data = read_nonmem(table)
    assert data.dvid_levels == (1, 2)
    assert data.records["dvid"].tolist() == [0, 1, 0]


# -------------------------------------------------------------------- ADDL
def addl_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": [1, 1, 1, 1, 1],
            "TIME": [0.0, 12.0, 24.0, 24.0, 30.0],
            "AMT": [100.0, 0, 0, 50, 0],
            "DV": [np.nan, 1.0, 2.0, np.nan, 3.0],
            "EVID": [1, 0, 0, 1, 0],
            "CMT": [1, 2, 2, 1, 2],
            "RATE": [10.0, 0, 0, 0, 0],
            "ADDL": [2, 0, 0, 0, 0],
            "II": [12.0, 0, 0, 0, 0],
            "WT": [70.0, 71.0, 72.0, 73.0, 74.0],
        }
    )


def test_addl_expansion_order_and_fields():
    subjects = read_nonmem(addl_table()).subjects()
    time, evid, row, is_addl = (valid(subjects, f)[0] for f in ("time", "evid", "row", "is_addl"))
    # Doses at 12 and 24 generated from row 0, placed before records at the same time.
    assert time.tolist() == [0, 12, 12, 24, 24, 24, 30]
    assert evid.tolist() == [1, 1, 0, 1, 0, 1, 0]
    assert row.tolist() == [0, 0, 1, 0, 2, 3, 4]
    assert is_addl.tolist() == [False, True, False, True, False, False, False]
    amt, rate, cmt, ss = (valid(subjects, f)[0] for f in ("amt", "rate", "cmt", "ss"))
    assert amt[is_addl].tolist() == [100, 100] and rate[is_addl].tolist() == [10, 10]
    assert cmt[is_addl].tolist() == [1, 1] and ss[is_addl].tolist() == [0, 0]
    # Covariates of a generated dose are its source dose record's: NONMEM computes the
    # dose modifiers (F, ALAG, rate, duration) of additional doses at that record.
    wt = np.asarray(subjects.cov)[0, :, 0]
    assert wt[is_addl].tolist() == [70.0, 70.0]
    assert wt[~is_addl].tolist() == [70.0, 71.0, 72.0, 73.0, 74.0]


def test_addl_after_steady_state_dose_is_not_steady_state():
    table = addl_table().assign(SS=[1, 0, 0, 0, 0], RATE=0.0)
    subjects = read_nonmem(table).subjects()
    ss, ii, is_addl = (valid(subjects, f)[0] for f in ("ss", "ii", "is_addl"))
    assert ss.tolist()[0] == 1 and ii.tolist()[0] == 12.0
    assert (ss[is_addl] == 0).all() and (ii[is_addl] == 0).all()


def test_addl_counts_in_summary():
    data = read_nonmem(addl_table())
    assert data.n_addl_doses == 2
    assert "(+2 from ADDL)" in data.summary()


# -------------------------------------------------------------- covariates
def test_covariates_carried_forward_then_back():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1, 2, 2],
            "TIME": [0.0, 1, 2, 3, 0, 1],
            "AMT": [1.0, 0, 0, 0, 1, 0],
            "DV": [np.nan, 1, 2, 3, np.nan, 4],
            "WT": [np.nan, 70, np.nan, 75, np.nan, 60],
        }
    )
    data = read_nonmem(table)
    assert data.covariates["WT"].tolist() == [70, 70, 70, 75, 60, 60]
    wt = np.asarray(data.subjects(covariates=["wt"]).cov)[..., 0]
    assert wt[0].tolist() == [70, 70, 70, 75]
    assert wt[1].tolist() == [60, 60, 60, 60]  # padding carries the last value
    assert any("carried forward" in note for note in data.notes)


def test_categorical_covariates_coded_in_sorted_order():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 2, 2, 3],
            "TIME": [0.0, 1, 0, 1, 0],
            "AMT": [1.0, 0, 1, 0, 1],
            "DV": [np.nan, 1, np.nan, 2, np.nan],
            "GENO": ["*1/*2", "*1/*2", "*1/*1", None, "*2/*2"],
        }
    )
    data = read_nonmem(table)
    assert data.categories["GENO"] == ("*1/*1", "*1/*2", "*2/*2")
    assert data.covariates["GENO"].tolist() == [1, 1, 0, 0, 2]


def test_requested_covariates_only():
    table = addl_table().assign(AGE=40.0, SITE="x")
    data = read_nonmem(table, covariates=["age"])
    assert data.covariate_names == ("AGE",)
    assert any("columns not used" in note and "WT" in note for note in data.notes)


# ---------------------------------------------------------------- censoring
def test_cens_column_monolix_convention():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1],
            "TIME": [0.0, 1, 2, 3],
            "AMT": [1.0, 0, 0, 0],
            "DV": [np.nan, 5.0, 0.1, 40.0],
            "CENS": [0, 0, 1, -1],
        }
    )
    subjects = read_nonmem(table).subjects()
    assert np.asarray(subjects.cens)[0].tolist() == [0, 0, 1, -1]
    assert np.asarray(subjects.limit)[0].tolist() == [0, 0, 0.1, 40.0]


def test_blq_flag_with_lloq_fills_missing_dv():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1],
            "TIME": [0.0, 1, 2],
            "AMT": [1.0, 0, 0],
            "DV": [np.nan, 5.0, np.nan],
            "BLQ": [0, 0, 1],
            "LLOQ": [0.5, 0.5, 0.5],
        }
    )
    data = read_nonmem(table)
    assert data.n_observations == 2
    subjects = data.subjects()
    assert np.asarray(subjects.cens)[0].tolist() == [0, 0, 1]
    assert np.asarray(subjects.limit)[0].tolist() == [0, 0, 0.5]
    assert any("set to their LLOQ" in note for note in data.notes)


def test_lloq_column_censors_observations_below_it():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1],
            "TIME": [0.0, 1, 2],
            "AMT": [1.0, 0, 0],
            "DV": [np.nan, 5.0, 0.2],
            "LLOQ": [0.5, 0.5, 0.5],
        }
    )
    subjects = read_nonmem(table).subjects()
    assert np.asarray(subjects.cens)[0].tolist() == [0, 0, 1]


def test_bloq_is_a_blq_flag():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1],
            "TIME": [0.0, 1, 2],
            "AMT": [1.0, 0, 0],
            "DV": [np.nan, 5.0, 0.5],
            "BLOQ": [0, 0, 1],
        }
    )
    data = read_nonmem(table)
    assert data.roles["CENS"] == "BLOQ" and "BLOQ" not in data.covariate_names
    assert np.asarray(data.subjects().cens)[0].tolist() == [0, 0, 1]
    with pytest.raises(CensoringError, match="BLOQ"):
        read_nonmem(table.assign(BLOQ=[0, 0, -1]))  # a 0/1 flag, as BLQ


def test_blq_record_with_mdv_1_is_left_out_with_a_warning():
    # NONMEM: an MDV 1 record is not an observation, BLQ or not (M1).  Kept so,
    # but said: the warning and the note name the row and what to change.
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1],
            "TIME": [0.0, 1, 2, 3],
            "AMT": [1.0, 0, 0, 0],
            "DV": [np.nan, 5.0, 0.5, 0.4],
            "EVID": [1, 0, 0, 0],
            "MDV": [1, 0, 0, 1],
            "BLQ": [0, 0, 1, 1],
        }
    )
    with pytest.warns(DatasetWarning, match=r"row 4 \(ID 1\).*MDV is 1.*M3"):
        data = read_nonmem(table)
    assert np.asarray(data.subjects().cens)[0].tolist() == [0, 0, 1, 0]
    assert data.n_observations == 2
    assert any("MDV to 0 on BLQ records" in note for note in data.notes)


# ------------------------------------------------------------------ subsets
def test_subset_keeps_rows_and_levels():
    data = datasets.load("pheno")
    part = data.subset([5, 2])
    assert isinstance(part, Dataset)
    assert part.ids == (2, 5)  # dataset order
    assert part.n_records == int(data.records["id"].isin([2, 5]).sum())
    full_rows = data.records.loc[data.records["id"] == 5, "row"].tolist()
    assert part.records.loc[part.records["id"] == 5, "row"].tolist() == full_rows
    subjects = part.subjects()
    assert subjects.time.shape[0] == 2
    assert np.asarray(subjects.row)[1, 0] == full_rows[0]
    assert len(part.table) == part.n_records


def test_time_restart_on_explicit_reset_shifts_event_time():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1],
            "TIME": [0.0, 10.0, 0.0, 5.0],
            "AMT": [10.0, 0, 10.0, 0],
            "DV": [np.nan, 1.0, np.nan, 2.0],
            "EVID": [1, 0, 4, 0],
        }
    )
    data = read_nonmem(table)
    assert data.records["event_time"].tolist() == [0, 10, 10, 15]
    assert valid(data.subjects(), "time")[0].tolist() == [0, 10, 10, 15]
    assert data.observation_table()["TIME"].tolist() == [10, 5]
