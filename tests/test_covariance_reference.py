"""Covariance step against the reference tools' standard errors:
theo_sd FOCEI vs nlmixr2 (R2) and pheno_sd FOCEI vs NONMEM 7.4.2 (R3).

Both references use the sandwich ``R^-1 S R^-1`` (NONMEM's default; nlmixr2's
default "r,s" for FOCEI), which is what is compared.  Tolerance 10%: the SEs
are printed to 3 digits and the estimates themselves differ in the 3rd-4th digit.
"""

import json
import math

import numpy as np
import pytest

import pmx_jax as pmx
from pmx_jax.estimation import fit

THEO_SE = dict(tka=0.198, tcl=0.0756, tv=0.0429, add_sd=0.0925)
PHENO_SE = {
    "th_cl": 2.10e-4,
    "th_v": 0.0269,
    "th_apgar": 0.0838,
    "iiv.cl": 0.0134,
    "iiv.v": 0.00748,
}
PHENO_SE_SIGMA = 0.00228  # SE of sigma^2 = prop_cv^2


@pytest.fixture(scope="module")
def theo():
    # The covariance step runs by default (sandwich, as NONMEM's $COV).
    return fit(pmx.library.Theophylline(), pmx.datasets.load("theophylline"), "focei")


def test_theo_sandwich_matches_nlmixr2(theo):
    cov = theo.covariance
    assert cov.ok, cov.message
    se = dict(zip(cov.names, cov.se, strict=True))
    for name, ref in THEO_SE.items():
        assert se[name] == pytest.approx(ref, rel=0.10), name


def test_theo_estimates_and_report(theo, tmp_path):
    table = theo.estimates().set_index("parameter")
    assert table["se"].notna().all()
    np.testing.assert_allclose(table["rse"], 100 * table["se"] / table["estimate"].abs())
    text = str(theo)
    assert "R^-1 S R^-1" in text and "condition number" in text
    record = json.loads(theo.to_json())
    assert record["covariance_step"] == "sandwich"
    assert math.isfinite(record["condition_number"])
    # A second kind: a new result (the first one is a value and keeps its
    # sandwich), and the CI on the natural scale.
    with_r = theo.compute_covariance("r")
    assert with_r is not theo and theo.covariance.kind == "sandwich"
    r_only = with_r.covariance
    assert r_only.kind == "r" and with_r.ofv == theo.ofv
    t = r_only.table().set_index("parameter")
    np.testing.assert_allclose(t["ci_upper"] - t["estimate"], 1.959964 * t["se"], rtol=1e-6)


@pytest.mark.slow
def test_pheno_sandwich_matches_nonmem(refdata):
    result = fit(
        pmx.library.Phenobarbital(),
        pmx.read_nonmem(refdata / "pheno_sd.csv"),
        "focei",
        covariance="sandwich",
    )
    cov = result.covariance
    assert cov.ok, cov.message
    se = dict(zip(cov.names, cov.se, strict=True))
    for name, ref in PHENO_SE.items():
        assert se[name] == pytest.approx(ref, rel=0.10), name
    # NONMEM estimates sigma^2 = prop_cv^2: delta method SE = 2 prop_cv SE(prop_cv).
    prop_cv = float(result.model.prop_cv)
    assert 2 * prop_cv * se["prop_cv"] == pytest.approx(PHENO_SE_SIGMA, rel=0.10)
