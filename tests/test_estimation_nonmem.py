"""FOCEI OFV at NONMEM's initial estimates (ITERATION 0 of the ``_ext.csv``
files; REFERENCE_CASES R3-R5), and per subject against the ``_phi.csv`` files
where NONMEM's EBEs are those of the initial estimates' first evaluation.

The models are written as their NONMEM control streams; parameter values are
read from the ext file header (THETAn, SIGMA(1,1), OMEGA(i,i)).  Tolerance: 1e-3
absolute on the OFV (NONMEM prints 12+ digits; its own EBE search stops at a
finite tolerance, so agreement beyond ~1e-4 is not expected).
"""

import math

import numpy as np
import pandas as pd
import pytest
from _reference_models import (
    BOLUS_2CPT_EXT,
    BOLUS_2CPT_PHI,
    WARFARIN_EXT,
    WARFARIN_PHI,
    Bolus2Cpt,
    WarfarinPK,
    bolus_2cpt_data,
    final_estimates,
    initial_estimates,
    omega_diagonal,
    warfarin_data,
)

import pmx_jax as pmx
from pmx_jax.estimation import EBEStatus, ofv
from pmx_jax.library import Phenobarbital


def check_phi(result, refdata, name, n_eta):
    """Per-subject OBJ and EBEs against NONMEM's phi file (final estimates)."""
    phi = pd.read_csv(refdata / "nonmem_outputs" / name)
    np.testing.assert_allclose(result.per_subject, phi["OBJ"], atol=1e-3)
    etas = [f"ETA{i}" for i in range(1, n_eta + 1)]
    np.testing.assert_allclose(result.eta, phi[etas], atol=1e-4)


def test_pheno_focei_at_initial_estimates(refdata):
    row = initial_estimates(refdata, "pheno_real_FOCEI_ext.csv")
    model = Phenobarbital().with_values(
        th_cl=row["THETA1"],
        th_v=row["THETA2"],
        th_apgar=row["THETA3"],
        prop_cv=math.sqrt(row["SIGMA1_1"]),  # Y = F + F*EPS, SIGMA a variance
        iiv=omega_diagonal(row, 2),
    )
    result = ofv(model, pmx.read_nonmem(refdata / "pheno_sd.csv"), "focei")
    assert np.all(result.status == EBEStatus.CONVERGED)
    assert abs(float(result.ofv) - row["OBJ"]) < 1e-3  # 587.36644


@pytest.mark.slow
@pytest.mark.parametrize("estimates", [initial_estimates, final_estimates])
def test_warfarin_focei(refdata, estimates):
    row = estimates(refdata, WARFARIN_EXT)
    model = WarfarinPK.at(row)  # SIGMA 1 FIX: THETA4/5 are the SDs
    data = warfarin_data(refdata)
    assert (data.n_subjects, data.n_observations) == (32, 251)
    result = ofv(model, data, "focei")
    assert np.all(result.status == EBEStatus.CONVERGED)
    assert abs(float(result.ofv) - row["OBJ"]) < 1e-3  # 558.48502 initial, 423.32729 final
    if estimates is final_estimates:
        check_phi(result, refdata, WARFARIN_PHI, 3)


@pytest.mark.slow
@pytest.mark.parametrize("estimates", [initial_estimates, final_estimates])
def test_bolus_2cpt_focei(refdata, estimates):
    row = estimates(refdata, BOLUS_2CPT_EXT)
    model = Bolus2Cpt.at(row)
    data = bolus_2cpt_data(refdata)
    assert (data.n_subjects, data.n_observations) == (120, 2280)
    result = ofv(model, data, "focei")
    assert np.all(result.status == EBEStatus.CONVERGED)
    assert abs(float(result.ofv) - row["OBJ"]) < 1e-3  # 20783.393 initial, 20167.641 final
    if estimates is final_estimates:
        check_phi(result, refdata, BOLUS_2CPT_PHI, 4)


def test_pheno_focei_per_subject_at_final_estimates(refdata):
    row = final_estimates(refdata, "pheno_real_FOCEI_ext.csv")
    model = Phenobarbital().with_values(
        th_cl=row["THETA1"],
        th_v=row["THETA2"],
        th_apgar=row["THETA3"],
        prop_cv=math.sqrt(row["SIGMA1_1"]),
        iiv=omega_diagonal(row, 2),
    )
    result = ofv(model, pmx.read_nonmem(refdata / "pheno_sd.csv"), "focei")
    # The final estimates are printed to 6 significant digits (ext file), which
    # moves the OFV by ~1e-5.
    assert abs(float(result.ofv) - row["OBJ"]) < 1e-3  # 586.27606
    check_phi(result, refdata, "pheno_real_FOCEI_phi.csv", 2)
