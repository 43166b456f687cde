"""Malformed inputs that used to be accepted with a wrong answer, or ended in a
raw pandas/Python traceback: each is now a named error (or a NONMEM rule with a
warning), and the message names the column, subject, row or file.

The table is the bundled theophylline dataset (12 subjects, one oral dose each
on rows 1, 13, 25, ...), changed one cell or column at a time.  Warnings are
errors in this suite (pyproject's filterwarnings), so a read outside
``pytest.warns`` also asserts that it warns of nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax import _memory, pk
from pmx_jax.data import (
    DatasetError,
    DatasetWarning,
    InvalidDoseError,
    InvalidValueError,
    MissingColumnError,
    NonNumericValueError,
    read_nonmem,
)

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def theo() -> pd.DataFrame:
    return pmx.datasets.load("theophylline").table.copy()


# -- silently wrong before ------------------------------------------------------------
def test_dose_records_without_an_amt_column(theo):
    with pytest.raises(MissingColumnError, match=r"row 1 \(ID 1\).*dose records.*no AMT column"):
        read_nonmem(theo.drop(columns="AMT"))


def test_misspelled_amt_is_named_in_the_error(theo):
    with pytest.raises(MissingColumnError, match=r"map 'AMNT' to AMT.*columns=\{'AMNT': 'AMT'\}"):
        read_nonmem(theo.rename(columns={"AMT": "AMNT"}))


def test_misspelled_amt_without_evid_warns(theo):
    """Without EVID, doses are derived from AMT: a misspelt AMT leaves no dose at all."""
    table = theo.drop(columns=["EVID"]).rename(columns={"AMT": "AMNT"})
    with pytest.warns(DatasetWarning, match=r"'AMNT'.*no AMT column: is it AMT\?"):
        data = read_nonmem(table)
    assert data.n_doses == 0
    assert any("no AMT column" in note for note in data.notes)


@pytest.mark.parametrize("name", ["ALT", "RACE", "DATE", "VID", "AGE"])
def test_common_covariate_names_are_not_taken_for_typos(theo, name):
    """ALT (alanine aminotransferase) is one letter from AMT, RACE from RATE, VID
    from DVID: a changed letter or first letter is not read as a slip."""
    table = theo.assign(**{name: 1.0})
    data = read_nonmem(table)
    assert name in data.covariate_names


@pytest.mark.parametrize("column", ["DV", "AMT", "WT", "TIME", "CMT"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, 1e300])
def test_non_finite_and_absurd_numbers_are_refused(theo, column, value):
    row = 13 if column != "AMT" else 12  # row 13 (index 12) is subject 2's dose record
    table = theo.astype({column: float})
    table.loc[row, column] = value
    with pytest.raises(InvalidValueError, match=rf"Column '{column}'.*row {row + 1} \(ID 2\)"):
        read_nonmem(table)


def test_infinite_cmt_names_its_value(theo):
    table = theo.astype({"CMT": float})
    table.loc[0, "CMT"] = np.inf
    with pytest.raises(InvalidValueError) as info:
        read_nonmem(table)  # no numpy RuntimeWarning either: warnings are errors here
    assert "is inf on row 1 (ID 1)" in str(info.value)
    assert "-9223372036854775808" not in str(info.value)


def test_infinite_limit_is_nlmixr2s_open_interval(theo):
    """LIMIT = -Inf is how nlmixr2 writes 'no lower end' on a BLQ record."""
    table = theo.assign(CENS=0, LIMIT=np.nan)
    table.loc[1, ["CENS", "DV", "LIMIT"]] = [1, 0.5, -np.inf]
    data = read_nonmem(table)
    assert data.records.loc[1, "bound"] == -np.inf and data.records.loc[1, "cens"] == 1


@pytest.mark.parametrize("text", ["79.6kg", "abc"])
def test_a_text_cell_in_a_numeric_covariate_is_an_error(theo, text):
    table = theo.astype({"WT": object})
    table.loc[12, "WT"] = text
    with pytest.raises(NonNumericValueError) as info:
        read_nonmem(table)
    message = str(info.value)
    assert "Column 'WT'" in message and "row 13 (ID 2)" in message and repr(text) in message
    assert "categorical=['WT']" in message


def test_categorical_is_coded_when_asked_or_all_text(theo):
    sites = {1: 101, 2: 102}
    table = theo.assign(SITE=theo.ID.map(lambda i: sites.get(i, 105)), SEX="F")
    table.loc[table.ID > 6, "SEX"] = "M"
    data = read_nonmem(table, categorical=["site"])
    assert data.categories["SITE"] == (101, 102, 105)
    assert data.categories["SEX"] == ("F", "M")  # all text: categorical anyway
    codes = data.covariates.groupby(data.records["id"])["SITE"].first()
    assert codes.loc[1] == 0 and codes.loc[2] == 1 and codes.loc[12] == 2
    plain = read_nonmem(table)
    assert "SITE" not in plain.categories  # numbers stay numbers unless asked
    assert plain.covariates["SITE"].max() == 105


class ModelledInput(pmx.Model):
    """One compartment; the $PK block defines R1 and D1 or neither."""

    sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
    dynamics = pk.OneCompartment()
    modelled: bool = True

    def individual(self, eta, cov):
        p = dict(cl=jnp.asarray(2.0), v=jnp.asarray(20.0))
        if self.modelled:
            p.update(R1=jnp.asarray(40.0), D1=jnp.asarray(3.0))
        return p

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


@pytest.mark.parametrize(("rate", "name"), [(-1.0, "R1"), (-2.0, "D1")])
def test_modelled_rate_or_duration_must_be_defined(rate, name):
    rows = [(1, 0.0, 120.0, 1, 1, rate, np.nan), (1, 1.0, 0.0, 0, 1, 0.0, 1.0)]
    table = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "EVID", "CMT", "RATE", "DV"])
    data = read_nonmem(table)
    with pytest.raises(InvalidDoseError, match=rf"is {int(rate)} on row 1 \(ID 1\).*no {name}"):
        pmx.predict(ModelledInput(modelled=False), data)
    # Defined, the same dose is an infusion: 120 mg over 3 h (D1 = 3, or R1 = 40 mg/h).
    ipred = pmx.predict(ModelledInput(), data)["IPRED"].iloc[1]
    expected = 40.0 / 2.0 * (1 - np.exp(-0.1 * 1.0))
    np.testing.assert_allclose(ipred, expected, rtol=1e-10)


@pytest.mark.parametrize("bad", ["", ".", np.inf])
def test_dataframe_ids_missing_or_infinite(theo, bad):
    table = theo.astype({"ID": object})
    table.loc[0, "ID"] = bad
    with pytest.raises(InvalidValueError, match=r"Column 'ID' \(ID\) is .* row 1"):
        read_nonmem(table)


def test_dataframe_id_with_blanks_is_the_same_subject_as_in_a_csv(theo, tmp_path):
    table = theo.astype({"ID": object})
    table.loc[0, "ID"] = "1 "  # subject 1's dose record
    from_frame = read_nonmem(table)
    path = tmp_path / "theo.csv"
    table.to_csv(path, index=False)
    from_csv = read_nonmem(path)
    for data in (from_frame, from_csv):
        assert data.n_subjects == 12 and data.ids[0] == 1
        assert data.records.groupby("id")["amt"].sum().loc[1] == theo.AMT.iloc[0]


def test_duplicate_column_names(theo, tmp_path):
    path = tmp_path / "dup.csv"
    text = theo.to_csv(index=False).splitlines()
    text[0] += ",TIME"
    text[1:] = [line + ",0" for line in text[1:]]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DatasetError, match=r"'TIME' more than once \(columns 2, 9\)"):
        read_nonmem(path)
    doubled = pd.concat([theo, theo[["TIME"]]], axis=1)
    with pytest.raises(DatasetError, match=r"DataFrame has the column name\(s\) 'TIME'"):
        read_nonmem(doubled)


def test_mdv_0_on_an_evid_2_record_warns_and_names_the_row(theo):
    table = theo.copy()
    table.loc[1, ["EVID", "MDV"]] = [2, 0]
    with pytest.warns(DatasetWarning, match=r"MDV is 0 on row 2 \(ID 1\).*EVID 2"):
        data = read_nonmem(table)
    assert data.records.loc[1, "mdv"] == 1  # NONMEM's rule, kept
    assert data.n_observations == theo.query("EVID == 0").shape[0] - 1


def test_dose_without_amount_warns_and_names_the_row(theo):
    table = theo.copy()
    table.loc[12, "AMT"] = np.nan
    with pytest.warns(DatasetWarning, match=r"missing on dose row 13 \(ID 2\).*no drug"):
        data = read_nonmem(table)
    assert data.records.loc[12, "amt"] == 0.0


# -- tracebacks before ----------------------------------------------------------------
def test_a_folder_is_not_a_dataset(tmp_path):
    (tmp_path / "theo.csv").write_text("ID,TIME,DV\n1,0,1\n")
    with pytest.raises(DatasetError, match=r"is a folder.*theo\.csv"):
        read_nonmem(tmp_path)


def test_an_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(DatasetError, match="empty.csv' is empty"):
        read_nonmem(tmp_path / "empty.csv")


def test_a_row_with_more_fields_than_the_header(theo, tmp_path):
    lines = theo.to_csv(index=False).splitlines()
    lines[3] += ",5"
    (tmp_path / "extra.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"line 4 \(data row 3\) has 9 fields.*8 columns"):
        read_nonmem(tmp_path / "extra.csv")


def test_a_latin_1_file_is_read_with_a_warning(theo, tmp_path):
    path = tmp_path / "latin.csv"
    theo.assign(SITE=np.where(theo.ID < 7, "Münster", "Köln")).to_csv(
        path, index=False, encoding="latin-1"
    )
    with pytest.warns(DatasetWarning, match=r"not UTF-8.*cp1252.*encoding="):
        data = read_nonmem(path)
    assert data.categories["SITE"] == ("Köln", "Münster")
    assert read_nonmem(path, encoding="latin-1").categories["SITE"] == ("Köln", "Münster")
    with pytest.raises(DatasetError, match="encoding='ascii'"):
        read_nonmem(path, encoding="ascii")


def test_a_byte_order_mark_does_not_rename_the_first_column(theo, tmp_path):
    path = tmp_path / "bom.csv"
    theo.to_csv(path, index=False, encoding="utf-8-sig")
    assert read_nonmem(path).roles["ID"] == "ID"


# -- simulation results that cannot fit -------------------------------------------------
def test_simulation_larger_than_memory_is_refused_before_it_runs(monkeypatch):
    model = pmx.library.Theophylline()
    design = pmx.Regimen.oral(320, every=24, n=7).sample(np.arange(0, 168.5, 0.5))
    key = jax.random.PRNGKey(0)
    result = pmx.simulate(model, design, key=key, n_subjects=40)
    whole = result.to_frame()
    part = result.to_frame(subjects=range(10, 20))
    expected = whole[whole.SIM_ID.between(11, 20)].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, expected)

    # 10^6 subjects x 339 records x 2 arrays x 8 bytes = 5.4 GB; say 1 GB is available.
    monkeypatch.setattr(_memory, "available_bytes", lambda: 10**9)
    with pytest.raises(pmx.ResultTooLargeError, match=r"1,000,000 simulated.*on_chunk="):
        pmx.simulate(model, design, key=key, n_subjects=10**6)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 40 * 96 * 300)
    with pytest.raises(pmx.ResultTooLargeError, match=r"to_frame\(subjects=range"):
        result.to_frame()
    assert len(result.to_frame(subjects=range(0, 5))) == 5 * 337
