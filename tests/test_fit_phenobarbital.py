"""FOCEI fit of pheno_sd against NONMEM 7.4.2 (REFERENCE_CASES R3)."""

import numpy as np
import pytest
from _checks import check_reports_its_own_ofv

import pmx_jax as pmx
from pmx_jax.estimation import fit

# NONMEM's final estimates; tolerance 0.01 on the OFV and 1% on the estimates
# (NONMEM stops at 3 significant digits by default).
REF_OFV = 586.27606
REF_THETA = dict(th_cl=0.00469555, th_v=0.984258, th_apgar=0.158920)
REF_OMEGA = [0.0293508, 0.0279060]
REF_SIGMA = 0.0132410  # variance of the proportional error: prop_cv**2


@pytest.mark.slow
def test_pheno_focei_matches_nonmem(refdata):
    data = pmx.read_nonmem(refdata / "pheno_sd.csv")
    result = fit(pmx.library.Phenobarbital(), data, "focei", covariance=None)
    assert result.converged, result.message
    assert abs(result.ofv - REF_OFV) < 0.01
    check_reports_its_own_ofv(result)
    model = result.model
    for name, ref in REF_THETA.items():
        assert float(getattr(model, name)) == pytest.approx(ref, rel=0.01), name
    assert float(model.prop_cv) ** 2 == pytest.approx(REF_SIGMA, rel=0.01)
    omega = np.diagonal(np.asarray(model.omega_matrix()))
    np.testing.assert_allclose(omega, REF_OMEGA, rtol=0.01)
    assert result.n_subjects == 59
    assert result.n_observations == 155
