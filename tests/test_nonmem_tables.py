"""NONMEM ``$TABLE`` files (Xpose's sdtab/patab/cotab/catab) from a fit.

One FOCEI fit of theophylline, as the README runs it, is shared by the module;
its tables (with NPDE) are written once and read back with Pharmpy's NONMEM
table reader, a plain pandas whitespace reader and, where R and readr are
installed, the reader Xpose uses.  Other datasets (categorical covariates,
endpoints, occasions, an IOV model) reuse the fit through
``FitResult.replace`` so that nothing else is fitted.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.likelihood import prepare
from pmx_jax.nonmem._tables import (
    APPENDED,
    catab,
    cotab,
    format_table,
    patab,
    sdtab,
    time_after_dose,
    write_table,
    write_tables,
)

N_SIM = 200


@pytest.fixture(scope="module")
def data():
    return pmx.datasets.load("theophylline")


@pytest.fixture(scope="module")
def fit(data):
    return pmx.fit(pmx.library.Theophylline(), data, "focei")


@pytest.fixture(scope="module")
def written(fit, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run1")
    return write_tables(fit, folder, 1, npde_n_sim=N_SIM, seed=0)


def read_plain(path: Path) -> pd.DataFrame:
    """What any whitespace reader sees: skip the TABLE NO. line."""
    return pd.read_csv(path, sep=r"\s+", skiprows=1)


def pharmpy_tables(path: Path):
    """Pharmpy's reader of NONMEM table files (``NONMEMTableFile``)."""
    table_module = pytest.importorskip("pharmpy.model.external.nonmem.table")
    with warnings.catch_warnings():
        # pharmpy 2.1.1 passes pandas 3 a deprecated float_precision="round_trip".
        warnings.filterwarnings("ignore", message=".*float_precision.*deprecated")
        return table_module.NONMEMTableFile(path)


def read_pharmpy(path: Path) -> pd.DataFrame:
    tables = pharmpy_tables(path)
    assert len(tables) == 1
    return tables[0].data_frame


def printed(values) -> np.ndarray:
    """Values as 1PE11.4 prints them (5 significant digits)."""
    return np.array([float(f"{v:.4E}") for v in np.asarray(values, dtype=float)])


def same(read, expected) -> None:
    np.testing.assert_allclose(np.asarray(read, dtype=float), expected, rtol=1e-12, atol=0)


# ------------------------------------------------------------------ the files
def test_files_names_and_header_lines(written):
    assert [p.name for p in written] == ["sdtab1", "patab1", "cotab1"]  # no categorical covariate
    for number, path in enumerate(written, start=1):
        lines = path.read_text().splitlines()
        assert lines[0] == f"TABLE NO.  {number}"
        assert lines[1].startswith(" ID          TIME        ")
        assert lines[1] == lines[1].rstrip()
        # 1PE11.4 after one blank: every value takes 12 characters.
        assert all(len(line) == 12 * len(lines[1].split()) for line in lines[2:])
        assert lines[2].startswith("  1.0000E+00  0.0000E+00")


def test_column_names_follow_xpose(written):
    sd, pa, co = (read_plain(p) for p in written)
    assert list(sd.columns[:2]) == ["ID", "TIME"]
    assert {"DV", "MDV", "EVID", "PRED", "IPRED", "RES", "WRES", "CWRES", "IWRES", "NPDE"} <= set(
        sd.columns
    )
    assert {"TAD", "CPRED", "IRES", "NPD"} <= set(sd.columns)
    assert "DVID" not in sd.columns and "OCC" not in sd.columns  # one endpoint, no OCC
    assert tuple(sd.columns[-4:]) == APPENDED  # NONMEM appends DV PRED RES WRES
    assert list(pa.columns) == ["ID", "TIME", "KA", "CL", "V", "ETA1", "ETA2", "ETA3"]
    assert list(co.columns) == ["ID", "TIME", "WT"]
    # Xpose types any column starting with ET as an eta: only the ETAs do.
    for frame in (sd, pa, co):
        assert [c for c in frame.columns if c.startswith("ET")] == [
            c for c in frame.columns if c.startswith("ETA") and c[3:].isdigit()
        ]


def test_pharmpy_and_pandas_read_the_same_tables(written, data):
    for number, path in enumerate(written, start=1):
        table = pharmpy_tables(path)[0]
        assert table.number == number
        by_pharmpy = table.data_frame
        plain = read_plain(path)
        assert by_pharmpy.shape == (data.n_records, plain.shape[1])
        assert list(by_pharmpy.columns) == list(plain.columns)
        np.testing.assert_allclose(by_pharmpy.to_numpy(), plain.to_numpy(), rtol=1e-15)


# -------------------------------------------------------------------- sdtab
def test_sdtab_values_are_the_fits(written, fit, data):
    sd = read_pharmpy(written[0])
    table = fit.table()
    records = data.records
    assert np.array_equal(table["row"], np.arange(data.n_records))  # file order
    same(sd["ID"], records["id"].to_numpy(float))
    same(sd["TIME"], printed(records["time"]))
    same(sd["EVID"], records["evid"])
    same(sd["MDV"], records["mdv"])
    for name in ("PRED", "IPRED", "CPRED"):
        same(sd[name], printed(table[name]))

    obs = records["mdv"].to_numpy() == 0
    assert obs.sum() == data.n_observations == 132
    for name in ("RES", "IRES", "WRES", "CWRES", "IWRES"):
        same(sd[name][obs], printed(table[name][obs]))
        # NONMEM writes its residuals as 0 on non-observation records.
        assert (sd[name][~obs] == 0).all()
    same(sd["DV"][obs], printed(records["dv"][obs]))
    assert (sd["DV"][~obs] == 0).all()  # '.' in the data, 0 as NM-TRAN reads it


def test_sdtab_npde_is_pmx_npde(written, fit):
    sd = read_pharmpy(written[0])
    reference = pmx.diagnostics.npde(fit, n_sim=N_SIM, seed=0)
    obs = sd["MDV"].to_numpy() == 0
    same(sd["NPDE"][obs], printed(reference["NPDE"][obs]))
    same(sd["NPD"][obs], printed(reference["NPD"][obs]))
    assert (sd["NPDE"][~obs] == 0).all()
    assert np.isfinite(sd["NPDE"]).all()


def test_sdtab_time_after_dose_of_a_single_dose(written, data):
    sd = read_plain(written[0])
    # Theophylline: one dose at TIME 0 for every subject, so TAD is TIME.
    assert (data.records.loc[data.records["evid"] == 1, "time"] == 0).all()
    same(sd["TAD"], sd["TIME"])


def test_sdtab_without_npde_and_frames_match_files(fit, written):
    frame = sdtab(fit)
    assert "NPDE" not in frame.columns
    sd = read_plain(written[0]).drop(columns=["NPDE", "NPD"])
    assert list(frame.columns) == list(sd.columns)
    for name in frame.columns:
        same(sd[name], printed(frame[name]))


# -------------------------------------------------------------------- patab
def test_patab_etas_and_individual_parameters(written, fit, data):
    pa = read_pharmpy(written[1])
    ebes = fit.ebes.set_index("ID")
    subject_etas = pa.groupby("ID")[["ETA1", "ETA2", "ETA3"]]
    assert (subject_etas.nunique() == 1).all().all()  # constant within a subject
    first = subject_etas.first()
    same(first.index, np.asarray(fit.ids, dtype=float))
    for k, eta in enumerate(fit.model.eta_names, start=1):
        same(first[f"ETA{k}"], printed(ebes[eta]))

    # The Theophylline $PK block: ka = exp(tka + eta_ka), cl = ..., v = ...
    model = fit.model
    per_record = ebes.loc[data.records["id"]].to_numpy()
    for column, theta, j in (("KA", model.tka, 0), ("CL", model.tcl, 1), ("V", model.tv, 2)):
        expected = np.exp(float(theta) + per_record[:, j])
        np.testing.assert_allclose(pa[column], expected, rtol=5e-5)
        same(pa[column], printed(patab(fit)[column]))


def test_patab_with_occasions_numbers_iov_etas_as_nonmem(fit, data):
    class TheophyllineIOV(pmx.library.Theophylline):
        iov: pmx.Omega = pmx.omega(cl_occ=0.05, occasion=True)

        def individual(self, eta, cov):
            params = super().individual(eta, cov)
            params["cl"] = jnp.exp(self.tcl + eta.cl + eta.cl_occ)
            return params

    table = data.table.copy()
    table["OCC"] = np.where(table["TIME"] < 5.0, 1, 2)
    occasions = pmx.read_nonmem(table)
    model = TheophyllineIOV().with_values(tka=0.45, tcl=1.0, tv=3.45)
    rng = np.random.default_rng(1)
    ebes = rng.normal(scale=0.3, size=(occasions.n_subjects, 3 + 2 * 1))
    fake = fit.replace(
        model=model,
        dataset=occasions,
        problem=SimpleNamespace(source=prepare(model, occasions)),
        ebe_matrix=ebes,
    )
    frame = patab(fake)
    assert list(frame.columns) == ["ID", "TIME", "OCC", "KA", "CL", "V"] + [
        f"ETA{k}" for k in range(1, 6)
    ]
    subject = occasions.records["subject"].to_numpy()
    occ = occasions.records["occ"].to_numpy()
    same(frame["OCC"], np.where(occasions.records["time"] < 5.0, 1.0, 2.0))
    # ETA4, ETA5: the IOV eta of occasions 1 and 2 (b = IIV etas, then IOV by occasion).
    same(frame["ETA4"], ebes[subject, 3])
    same(frame["ETA5"], ebes[subject, 4])
    np.testing.assert_allclose(
        frame["CL"], np.exp(1.0 + ebes[subject, 1] + ebes[subject, 3 + occ]), rtol=1e-12
    )
    np.testing.assert_allclose(frame["KA"], np.exp(0.45 + ebes[subject, 0]), rtol=1e-12)


# --------------------------------------------------------- cotab and catab
def test_cotab_and_catab(fit, data, written, tmp_path):
    same(read_plain(written[2])["WT"], printed(data.covariates["WT"]))

    table = data.table.copy()
    sex = {i: ("female" if i % 3 else "male") for i in table["ID"].unique()}
    table["SEX"] = table["ID"].map(sex)
    table["SITE"] = np.where(table["ID"] <= 6, 101, 205)
    table["DOSEGRP"] = np.where(table["ID"] <= 4, 1, 2)
    covariates = pmx.read_nonmem(table, categorical=["SITE"])
    assert covariates.categories == {"SEX": ("female", "male"), "SITE": (101, 205)}
    other = fit.replace(dataset=covariates)

    paths = write_tables(other, tmp_path / "out", "001", categorical=["dosegrp"])
    assert [p.name for p in paths] == ["sdtab001", "patab001", "cotab001", "catab001"]
    assert paths[3].read_text().startswith("TABLE NO.  4\n")
    co, ca = read_pharmpy(paths[2]), read_pharmpy(paths[3])
    assert list(co.columns) == ["ID", "TIME", "WT"]
    assert list(ca.columns) == ["ID", "TIME", "SEX", "SITE", "DOSEGRP"]
    same(ca["SEX"], (table["SEX"] == "male").astype(float))  # text: codes 0..k-1
    same(ca["SITE"], table["SITE"])  # numbers: the levels themselves
    same(ca["DOSEGRP"], table["DOSEGRP"])
    assert list(catab(other).columns) == ["ID", "TIME", "SEX", "SITE"]
    assert list(cotab(other).columns) == ["ID", "TIME", "WT", "DOSEGRP"]
    with pytest.raises(KeyError, match="AGE"):
        catab(other, categorical=["AGE"])


def test_sdtab_writes_dvid_and_occ_of_the_data(fit, data):
    table = data.table.copy()
    table["DVID"] = np.where(table["TIME"] > 10.0, 2, 1)
    table["OCC"] = np.where(table["TIME"] > 5.0, 2, 1)
    other = fit.replace(dataset=pmx.read_nonmem(table))
    frame = sdtab(other)
    assert list(frame.columns[:6]) == ["ID", "TIME", "DVID", "OCC", "EVID", "MDV"]
    same(frame["DVID"], table["DVID"])
    same(frame["OCC"], table["OCC"])


# ------------------------------------------------------------ time after dose
def test_time_after_dose_of_several_doses_by_hand():
    rows = [
        # ID TIME  AMT  EVID ADDL II  DV    TAD by hand
        (1, 0.0, 100, 1, 2, 12, None, 0.0),  # doses at 0, 12 and 24 (ADDL)
        (1, 0.0, 0, 0, 0, 0, 1.0, 0.0),  # observation at the dose time: after it
        (1, 2.0, 0, 0, 0, 0, 5.0, 2.0),
        (1, 12.0, 0, 0, 0, 0, 4.0, 0.0),  # at the ADDL dose of 12 h
        (1, 13.5, 0, 0, 0, 0, 6.0, 1.5),
        (1, 30.0, 0, 0, 0, 0, 3.0, 6.0),  # last dose: the ADDL dose at 24 h
        (1, 48.0, 50, 1, 0, 0, None, 0.0),
        (1, 50.5, 0, 0, 0, 0, 2.0, 2.5),
        (2, 0.0, 0, 0, 0, 0, 0.1, 0.0),  # before the first dose
        (2, 1.0, 80, 1, 0, 0, None, 0.0),
        (2, 3.0, 0, 0, 0, 0, 4.0, 2.0),
        (2, 6.0, 0, 2, 0, 0, None, 5.0),  # EVID 2 record
        (2, 8.0, 0, 3, 0, 0, None, 0.0),  # reset: no dose since
        (2, 9.0, 0, 0, 0, 0, 0.2, 0.0),
        (2, 0.0, 90, 4, 0, 0, None, 0.0),  # reset and dose, TIME restarts
        (2, 2.5, 0, 0, 0, 0, 3.0, 2.5),
        (2, 3.0, 40, 1, 1, 4, None, 0.0),  # doses at 3 and 7
        (2, 10.0, 0, 0, 0, 0, 1.0, 3.0),
    ]
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "EVID", "ADDL", "II", "DV", "TAD"])
    dataset = pmx.read_nonmem(frame.drop(columns="TAD"))
    assert dataset.n_records == len(rows)
    np.testing.assert_array_equal(time_after_dose(dataset), frame["TAD"].to_numpy())
    # A subset keeps its rows' numbering: the same TAD for the rows it keeps.
    np.testing.assert_array_equal(time_after_dose(dataset.subset([2])), frame["TAD"][8:])


# --------------------------------------------------------------- the format
def test_format_numbers_missing_values_and_exact_ids(tmp_path):
    frame = pd.DataFrame(
        {
            "ID": [1234567.0, 2.0, 3.0],
            "TIME": [0.0, -0.0, 1.5e-3],
            "CWRES": [-0.123456, np.nan, 2.0],
            "A_LONG_LABEL": [np.inf, -np.inf, 1e100],
        }
    )
    text = format_table(frame, number=2)
    lines = text.splitlines()
    assert lines[0] == "TABLE NO.  2"
    assert lines[1] == " ID            TIME        CWRES       A_LONG_LABEL"
    assert lines[2] == "  1.234567E+06  0.0000E+00 -1.2346E-01    Infinity"
    assert lines[3] == "  2.000000E+00  0.0000E+00         NaN   -Infinity"
    assert lines[4] == "  3.000000E+00  1.5000E-03  2.0000E+00 1.0000E+100"
    path = write_table(frame, tmp_path / "tab", number=2)
    for read in (read_plain, read_pharmpy):
        back = read(path)
        same(back["ID"], frame["ID"])  # exact though beyond 5 digits
        assert np.isnan(back["CWRES"][1])
        assert list(back["A_LONG_LABEL"]) == [np.inf, -np.inf, 1e100]
    wide = format_table(frame[["TIME"]], digits=8).splitlines()
    assert wide[2:] == ["  0.00000000E+00", "  0.00000000E+00", "  1.50000000E-03"]
    with pytest.raises(ValueError, match="spaces"):
        format_table(pd.DataFrame({"A B": [1.0]}))


def test_fit_without_dataset_is_refused(fit):
    with pytest.raises(ValueError, match="no dataset"):
        sdtab(fit.replace(dataset=None))


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_xpose_reader_reads_the_tables(written, tmp_path):
    """Xpose's ``read_args``/``read_nm_tables`` read a table with readr as below
    (skip the TABLE NO. line, labels as NA values, rows without ID dropped)."""
    script = r"""
    for (p in c("readr", "tidyr", "dplyr"))
      if (!requireNamespace(p, quietly = TRUE)) quit(status = 3)
    args <- commandArgs(TRUE)
    top <- readr::read_lines(args[1], n_max = 3)
    stopifnot(grepl("\\d+E[+-]\\d+\\s*", top[3]), grepl("TABLE NO\\.\\s+\\d", top[1]))
    col_names <- strsplit(trimws(top[2]), "\\s+")[[1]]
    d <- readr::read_table(args[1], skip = 1, comment = "TABLE", na = c("NA", col_names),
                           col_names = col_names, col_types = readr::cols(.default = "d"))
    stopifnot(nrow(readr::problems(d)) == 0)
    d <- tidyr::drop_na(d, dplyr::one_of("ID"))
    write.csv(as.data.frame(d), args[2], row.names = FALSE)
    """
    (tmp_path / "read.R").write_text(script)
    for path in written:
        out = tmp_path / f"{path.name}.csv"
        run = subprocess.run(
            ["Rscript", str(tmp_path / "read.R"), str(path), str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if run.returncode == 3:
            pytest.skip("readr, tidyr or dplyr is not installed")
        assert run.returncode == 0, run.stderr
        by_xpose = pd.read_csv(out)
        plain = read_plain(path)
        assert list(by_xpose.columns) == list(plain.columns)
        np.testing.assert_allclose(by_xpose.to_numpy(), plain.to_numpy(), rtol=1e-14)
