"""Every malformed dataset raises its named error, naming the column, subject and row.

Rows are counted as a user counts data records in a spreadsheet: 1-based, the first
record after the header is row 1.
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

from pmx_jax.data import (
    CensoringError,
    DatasetError,
    InvalidDoseError,
    InvalidValueError,
    MissingColumnError,
    MissingCovariateError,
    MissingObservationError,
    NegativeDoseError,
    NonContiguousIdError,
    NonNumericValueError,
    SteadyStateError,
    UnknownCompartmentError,
    UnknownEvidError,
    UnsortedTimeError,
    check_compartments,
    read_nonmem,
)

jax.config.update("jax_enable_x64", True)


def regimen(**changes) -> pd.DataFrame:
    """Two subjects (ID 1: rows 1-3, ID 2: rows 4-6): a dose then two observations each."""
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 2, 2, 2],
            "TIME": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
            "AMT": [100.0, 0, 0, 100.0, 0, 0],
            "DV": [np.nan, 5.0, 4.0, np.nan, 6.0, 3.0],
            "EVID": [1, 0, 0, 1, 0, 0],
            "MDV": [1, 0, 0, 1, 0, 0],
            "CMT": [1, 2, 2, 1, 2, 2],
        }
    )
    for name, values in changes.items():
        table[name] = values
    return table


def test_the_template_is_valid():
    data = read_nonmem(regimen())
    assert (data.n_subjects, data.n_observations, data.n_doses) == (2, 4, 2)


def test_every_error_is_a_value_error():
    for error in (MissingColumnError, UnsortedTimeError, MissingCovariateError, CensoringError):
        assert issubclass(error, DatasetError)
        assert issubclass(error, ValueError)


# ------------------------------------------------------------------ columns
def test_missing_time_column():
    with pytest.raises(MissingColumnError, match=r"no TIME column.*\"your_name\": \"TIME\""):
        read_nonmem(regimen().drop(columns="TIME"))


def test_missing_dv_and_amt():
    with pytest.raises(MissingColumnError, match="no DV or AMT"):
        read_nonmem(regimen().drop(columns=["DV", "AMT"]))


def test_mapping_to_an_absent_column():
    with pytest.raises(MissingColumnError, match="'conc'"):
        read_nonmem(regimen(), columns={"conc": "DV"})


def test_mapping_to_an_unknown_role():
    with pytest.raises(DatasetError, match="not a NONMEM data item"):
        read_nonmem(regimen(), columns={"DV": "CONC"})


def test_two_columns_for_one_role():
    with pytest.raises(DatasetError, match="both give DV"):
        read_nonmem(regimen(conc=[0.0] * 6), columns={"conc": "DV"})


def test_observations_without_a_dv_column_say_how_to_map_it():
    table = regimen().rename(columns={"DV": "CONC"})
    with pytest.raises(MissingColumnError, match=r"no DV column.*row 2 \(ID 1\)"):
        read_nonmem(table, covariates=[])


# ------------------------------------------------------------------ values
def test_text_in_time():
    time = pd.Series(["0", "1", "two", "0", "1", "2"], dtype=object)
    with pytest.raises(NonNumericValueError, match=r"'TIME'.*row 3 \(ID 1\).*'two'"):
        read_nonmem(regimen(TIME=time))


def test_text_in_amt_names_row_and_subject():
    amt = pd.Series(["100", ".", "", "100mg", ".", "."], dtype=object)
    with pytest.raises(NonNumericValueError, match=r"'AMT'.*row 4 \(ID 2\).*'100mg'"):
        read_nonmem(regimen(AMT=amt))


def test_missing_time():
    with pytest.raises(InvalidValueError, match=r"TIME.*row 5 \(ID 2\)"):
        read_nonmem(regimen(TIME=[0, 1, 2, 0, np.nan, 2]))


def test_missing_id():
    with pytest.raises(InvalidValueError, match="ID.*row 2"):
        read_nonmem(regimen(ID=[1, np.nan, 1, 2, 2, 2]))


def test_mdv_outside_0_1():
    with pytest.raises(InvalidValueError, match=r"MDV.*2.*row 6 \(ID 2\)"):
        read_nonmem(regimen(MDV=[1, 0, 0, 1, 0, 2]))


# ------------------------------------------------------------- subjects & time
def test_time_going_back():
    with pytest.raises(UnsortedTimeError, match=r"row 3 \(ID 1\).*1.5 after 2"):
        read_nonmem(regimen(TIME=[0, 2, 1.5, 0, 1, 2]))


def test_time_may_restart_only_on_a_reset():
    table = regimen(TIME=[0, 1, 2, 0, 1, 2], EVID=[1, 0, 0, 1, 0, 0])
    table = pd.concat([table.iloc[:3], table.iloc[:3]], ignore_index=True)  # ID 1 twice in a row
    with pytest.raises(UnsortedTimeError, match=r"row 4 \(ID 1\).*EVID 4"):
        read_nonmem(table)
    table.loc[3, "EVID"] = 4
    assert read_nonmem(table).n_doses == 2


def test_id_reappearing():
    table = regimen(ID=[1, 1, 2, 2, 2, 1], EVID=[1, 0, 1, 0, 0, 0], AMT=[100, 0, 100, 0, 0, 0])
    with pytest.raises(
        NonContiguousIdError, match=r"'ID'.*ID 1 reappears at row 6 \(ID 1\).*row 1"
    ):
        read_nonmem(table)


# ------------------------------------------------------------------- doses
def test_negative_dose():
    with pytest.raises(NegativeDoseError, match=r"'AMT'.*row 4 \(ID 2\).*-5"):
        read_nonmem(regimen(AMT=[100, 0, 0, -5, 0, 0]))


def test_invalid_rate():
    with pytest.raises(InvalidDoseError, match=r"RATE.*-3.*row 1 \(ID 1\).*-2"):
        read_nonmem(regimen(RATE=[-3, 0, 0, 0, 0, 0]))


def test_modelled_rate_and_duration_are_allowed():
    data = read_nonmem(regimen(RATE=[-1, 0, 0, -2, 0, 0]))
    assert list(data.records["rate"]) == [-1, 0, 0, -2, 0, 0]


def test_addl_without_ii():
    with pytest.raises(InvalidDoseError, match=r"'ADDL'.*3 on row 4 \(ID 2\).*II > 0"):
        read_nonmem(regimen(ADDL=[0, 0, 0, 3, 0, 0], II=[0.0] * 6))


def test_addl_on_an_observation():
    with pytest.raises(InvalidDoseError, match=r"'ADDL'.*2 on row 2 \(ID 1\).*not a dose"):
        read_nonmem(regimen(ADDL=[0, 2, 0, 0, 0, 0], II=[0, 12, 0, 0, 0, 0]))


def test_negative_or_fractional_addl():
    with pytest.raises(InvalidDoseError, match="ADDL.*negative"):
        read_nonmem(regimen(ADDL=[-1, 0, 0, 0, 0, 0], II=[12, 0, 0, 0, 0, 0]))
    with pytest.raises(InvalidDoseError, match=r"whole numbers.*1.5.*row 1 \(ID 1\)"):
        read_nonmem(regimen(ADDL=[1.5, 0, 0, 0, 0, 0], II=[12, 0, 0, 0, 0, 0]))


def test_negative_ii():
    with pytest.raises(InvalidDoseError, match=r"II.*negative.*row 1 \(ID 1\)"):
        read_nonmem(regimen(II=[-12, 0, 0, 0, 0, 0]))


def test_amount_on_an_observation_record():
    with pytest.raises(InvalidDoseError, match=r"'AMT'.*50 on row 5 \(ID 2\).*EVID 0"):
        read_nonmem(regimen(AMT=[100, 0, 0, 100, 50, 0]))


# ------------------------------------------------------------ steady state
def test_unknown_ss_code_suggests_ss_codes():
    with pytest.raises(SteadyStateError, match=r"99 on row 1 \(ID 1\).*ss_codes=\{99: 0\}"):
        read_nonmem(regimen(SS=[99] * 6))


def test_ss_without_ii():
    with pytest.raises(SteadyStateError, match=r"'SS'.*1 on row 4 \(ID 2\).*II > 0"):
        read_nonmem(regimen(SS=[0, 0, 0, 1, 0, 0], II=[0.0] * 6))


def test_ss_on_an_observation():
    with pytest.raises(SteadyStateError, match=r"'SS'.*2 on row 3 \(ID 1\).*not a dose"):
        read_nonmem(regimen(SS=[0, 0, 2, 0, 0, 0], II=[0, 0, 12, 0, 0, 0]))


def test_constant_infusion_at_steady_state():
    # NONMEM's SS=1, AMT=0, RATE>0, II=0: allowed; with an interval it is an error.
    ok = regimen(SS=[1, 0, 0, 0, 0, 0], AMT=[0, 0, 0, 100, 0, 0], RATE=[10, 0, 0, 0, 0, 0])
    assert read_nonmem(ok).records["ss"].iloc[0] == 1
    bad = ok.assign(II=[24, 0, 0, 0, 0, 0])
    with pytest.raises(SteadyStateError, match=r"'SS'.*row 1 \(ID 1\).*constant infusion"):
        read_nonmem(bad)


def test_ss_codes_must_map_to_nonmem_codes():
    with pytest.raises(SteadyStateError, match="must map to 0, 1 or 2"):
        read_nonmem(regimen(SS=[99] * 6), ss_codes={99: 5})


# -------------------------------------------------------------------- EVID
def test_unknown_evid():
    with pytest.raises(UnknownEvidError, match=r"EVID.*5 on row 6 \(ID 2\)"):
        read_nonmem(regimen(EVID=[1, 0, 0, 1, 0, 5]))


def test_rxode_infusion_codes_are_not_guessed():
    with pytest.raises(UnknownEvidError, match=r"10101 on row 1 \(ID 1\).*rxode2"):
        read_nonmem(regimen(EVID=[10101, 0, 0, 1, 0, 0]))


def test_evid_101_with_another_compartment():
    with pytest.raises(UnknownEvidError, match=r"'EVID' is 101.*row 1 \(ID 1\).*CMT is 3"):
        read_nonmem(regimen(EVID=[101, 0, 0, 1, 0, 0], CMT=[3, 2, 2, 1, 2, 2]))


# ------------------------------------------------------------- compartments
def test_fractional_cmt():
    with pytest.raises(UnknownCompartmentError, match=r"whole numbers.*row 2 \(ID 1\)"):
        read_nonmem(regimen(CMT=[1, 2.5, 2, 1, 2, 2]))


def test_cmt_beyond_the_model():
    data = read_nonmem(regimen(CMT=[1, 2, 2, 1, 2, 3]))
    check_compartments(data, 3)
    with pytest.raises(
        UnknownCompartmentError, match=r"'CMT'.*3 on row 6 \(ID 2\).*2 compartments"
    ):
        check_compartments(data, 2, model="TwoCompartment")
    with pytest.raises(UnknownCompartmentError, match="TwoCompartment"):
        data.check_compartments(2, model="TwoCompartment")


def test_cmt_beyond_the_model_from_subjects():
    data = read_nonmem(regimen(CMT=[1, 2, 2, 4, 2, 2]))
    subjects = data.subjects()
    with pytest.raises(UnknownCompartmentError, match=r"row 4 \(ID 2\)"):
        check_compartments(subjects, 2, ids=data.ids)
    with pytest.raises(UnknownCompartmentError, match=r"row 4 \(ID index 1\)"):
        check_compartments(subjects, 2)


# ------------------------------------------------------------- observations
def test_observation_without_dv():
    with pytest.raises(MissingObservationError, match=r"'DV'.*row 3 \(ID 1\).*MDV 1"):
        read_nonmem(regimen(DV=[np.nan, 5, np.nan, np.nan, 6, 3]))


def test_missing_dvid_on_an_observation():
    with pytest.raises(InvalidValueError, match=r"DVID.*row 5 \(ID 2\)"):
        read_nonmem(regimen(DVID=["cp", "cp", "cp", "cp", None, "cp"]))


def test_missing_occasion():
    with pytest.raises(InvalidValueError, match=r"OCC.*row 2 \(ID 1\)"):
        read_nonmem(regimen(OCC=[1, np.nan, 1, 1, 1, 1]))


# ---------------------------------------------------------------- censoring
def test_cens_outside_minus_one_to_one():
    with pytest.raises(CensoringError, match=r"'CENS'.*row 3 \(ID 1\).*2"):
        read_nonmem(regimen(CENS=[0, 0, 2, 0, 0, 0]))


def test_blq_flag_is_zero_or_one():
    with pytest.raises(CensoringError, match=r"'BLQ'.*0, 1.*row 5 \(ID 2\)"):
        read_nonmem(regimen(BLQ=[0, 0, 0, 0, -1, 0]))


def test_censored_without_a_limit():
    table = regimen(CENS=[0, 0, 1, 0, 0, 0], MDV=[1, 0, 1, 1, 0, 0])
    table.loc[2, "DV"] = np.nan
    table = table.drop(columns="MDV")
    with pytest.raises(CensoringError, match=r"'CENS' is 1 on row 3 \(ID 1\).*LLOQ"):
        read_nonmem(table)


def test_limit_on_the_wrong_side():
    table = regimen(CENS=[0, 0, 1, 0, 0, 0], LIMIT=[np.nan, np.nan, 10.0, np.nan, np.nan, np.nan])
    with pytest.raises(CensoringError, match=r"'LIMIT'.*row 3 \(ID 1\).*LIMIT 10.*wrong side"):
        read_nonmem(table)


def test_interval_censoring_is_carried_to_the_likelihood():
    # (It used to be refused here; the likelihood now uses P(LIMIT < y < DV).)
    table = regimen(CENS=[0, 0, 1, 0, 0, 0], LIMIT=[np.nan, np.nan, -1.0, np.nan, np.nan, np.nan])
    subjects = read_nonmem(table).subjects()
    assert np.asarray(subjects.bound)[0].tolist() == [0.0, 0.0, -1.0]  # row 3: -1 < y < 4


# --------------------------------------------------------------- covariates
def test_absent_covariate_lists_what_is_there():
    data = read_nonmem(regimen(WT=[70.0] * 6))
    with pytest.raises(MissingCovariateError, match=r"BMI.*covariates are WT"):
        data.check_covariates(["WT", "BMI"])
    with pytest.raises(MissingCovariateError, match="BMI"):
        data.subjects(covariates=["BMI"])


def test_asking_for_a_data_item_as_covariate_says_so():
    data = read_nonmem(regimen(WT=[70.0] * 6))
    with pytest.raises(MissingCovariateError, match="AMT is a NONMEM data item"):
        data.check_covariates(["AMT"])


def test_absent_covariate_when_reading():
    with pytest.raises(MissingCovariateError, match="AGE.*WT"):
        read_nonmem(regimen(WT=[70.0] * 6), covariates=["AGE"])


def test_covariate_missing_for_a_whole_subject():
    data = read_nonmem(regimen(WT=[70, np.nan, 72, np.nan, np.nan, np.nan]))
    assert any("missing on every record of 1 subject (ID 2)" in note for note in data.notes)
    with pytest.raises(MissingCovariateError, match=r"'WT'.*ID 2.*row 4"):
        data.subjects(covariates=["WT"])
    # Not requested: no error, the value stays NaN (reported in notes).
    cov = np.asarray(data.subjects().cov)
    assert np.isnan(cov[1]).all() and not np.isnan(cov[0]).any()


# -------------------------------------------------------------------- other
def test_pad_to_shorter_than_a_subject():
    data = read_nonmem(regimen())
    with pytest.raises(ValueError, match="pad_to=2"):
        data.subjects(pad_to=2)


def test_subset_with_unknown_id():
    with pytest.raises(KeyError, match="ID 7"):
        read_nonmem(regimen()).subset([1, 7])


def test_empty_table():
    with pytest.raises(DatasetError, match="no records"):
        read_nonmem(regimen().iloc[:0])


def test_addl_running_into_a_restarted_period():
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1],
            "TIME": [0.0, 30.0, 0.0, 5.0],
            "AMT": [10.0, 0, 10.0, 0],
            "DV": [np.nan, 1.0, np.nan, 2.0],
            "EVID": [1, 0, 4, 0],
            "ADDL": [5, 0, 0, 0],
            "II": [12.0, 0, 0, 0],
        }
    )
    with pytest.raises(InvalidDoseError, match=r"ADDL.*row 1 \(ID 1\).*row 3"):
        read_nonmem(table)
