"""Per-record residuals (PRED, IPRED, CPRED, RES, WRES, CWRES, IWRES) against
NONMEM's table for Wang (2007)'s data (REFERENCE_CASES R1): FOCEI,
proportional error, at the reference parameters.  NONMEM prints 5 significant
digits; the tolerance is 2 units of the 5th digit (relative 2e-4) plus 1e-5.
"""

import numpy as np
import pandas as pd
import pytest
from test_estimation_wang import ERRORS, Wang, wang_table

import pmx_jax as pmx
from pmx_jax.estimation import ofv, residual_table
from pmx_jax.likelihood import prepare


@pytest.fixture(scope="module")
def tables(refdata):
    model = Wang().with_values(**ERRORS["proportional"])
    dataset = pmx.read_nonmem(wang_table(refdata))
    prepared = prepare(model, dataset)
    ebes = np.asarray(ofv(model, prepared, "focei").ebes)
    ours = residual_table(model, dataset, prepared, ebes, "focei")
    nonmem = pd.read_csv(refdata / "Wang2007_NONMEM_focei_prop_table.csv")
    return ours[ours.EVID == 0].reset_index(drop=True), nonmem


def close(ours, reference):
    np.testing.assert_allclose(ours, reference, rtol=2e-4, atol=1e-5)


def test_table_has_one_row_per_dataset_row(tables, refdata):
    ours, nonmem = tables
    assert len(ours) == len(nonmem) == 20
    np.testing.assert_array_equal(ours.ID, nonmem.ID)
    np.testing.assert_allclose(ours.TIME, nonmem.TIME)
    np.testing.assert_allclose(ours.DV, nonmem.DV)


@pytest.mark.parametrize(
    "ours_column, nonmem_column",
    [
        ("PRED", "PRED"),
        ("IPRED", "IPRE"),
        ("CPRED", "CPRED"),
        ("RES", "RES"),
        ("IRES", "IRES"),
        ("CWRES", "CWRES"),
        ("IWRES", "IWRES"),
        # NONMEM's WRES under INTERACTION has the eta-epsilon term (NWRES not).
        ("WRES", "WRES"),
    ],
)
def test_matches_nonmem(tables, ours_column, nonmem_column):
    ours, nonmem = tables
    close(ours[ours_column], nonmem[nonmem_column])


def test_fo_weighted_residuals_without_interaction_are_nonmem_nwres(tables, refdata):
    _, nonmem = tables
    model = Wang().with_values(**ERRORS["proportional"])
    dataset = pmx.read_nonmem(wang_table(refdata))
    prepared = prepare(model, dataset)
    ebes = np.asarray(ofv(model, prepared, "focei").ebes)
    fo = residual_table(model, dataset, prepared, ebes, "fo")
    close(fo.WRES[fo.EVID == 0], nonmem["NWRES"])


def test_dose_records_have_predictions_but_no_residuals(refdata):
    model = Wang().with_values(**ERRORS["proportional"])
    dataset = pmx.read_nonmem(wang_table(refdata))
    prepared = prepare(model, dataset)
    table = residual_table(model, dataset, prepared, np.zeros((10, 1)), "focei")
    doses = table[table.EVID == 1]
    assert len(doses) == 10 and np.all(np.isfinite(doses.PRED))
    assert doses[["RES", "WRES", "CWRES", "IWRES"]].isna().all().all()
    # at eta = 0 the conditional quantities are the population ones
    obs = table[table.EVID == 0]
    np.testing.assert_allclose(obs.CPRED, obs.PRED, rtol=1e-12)
    np.testing.assert_allclose(obs.IPRED, obs.PRED, rtol=1e-12)
