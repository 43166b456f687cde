"""Full FOCEI fits against NONMEM 7.4.3 (REFERENCE_CASES R4 warfarin PK and R5
Bolus_2CPT), started like NONMEM from the initial estimates of the ext file
(ITERATION 0) and compared with its final row (ITERATION -1000000000).

Tolerances: the OFV to 0.01 (warfarin) and 0.1 (Bolus_2CPT, an OFV of 2e4 whose
NONMEM search stops at 3 significant digits of the estimates).  THETAs that are
logarithms of KA, CL, V, Q to 0.01 absolute (1% on the parameter itself), the
residual SDs and the OMEGA variances to 1% relative: NONMEM's default
``SIGDIGITS=3`` stops its search once the estimates are stable to about three
significant digits, so closer agreement is not expected.

Standard errors: the covariance step (sandwich ``R^-1 S R^-1``, NONMEM's
default) against the ext file's SE row (ITERATION -1000000001), to 3%: the SEs
are derivatives of the OFV surface at estimates that differ from NONMEM's in
the 3rd-4th digit, which moves them by about 1%.

Each test takes about 40 s (warfarin) and 90 s (Bolus_2CPT) on a CPU, hence slow.
"""

import numpy as np
import pytest
from _checks import check_reports_its_own_ofv
from _reference_models import (
    BOLUS_2CPT_EXT,
    WARFARIN_EXT,
    Bolus2Cpt,
    WarfarinPK,
    bolus_2cpt_data,
    final_estimates,
    initial_estimates,
    standard_errors,
    warfarin_data,
)

import pmx_jax as pmx

LOG_THETA_ATOL = 0.01
RTOL = 0.01
SE_RTOL = 0.03


def check_final_estimates(result, row, log_thetas, scale_thetas, n_eta):
    """Fitted THETAs and OMEGA variances against NONMEM's final ext row.

    ``log_thetas`` / ``scale_thetas`` map model THETA names to ext columns.
    """
    model = result.model
    for name, column in log_thetas.items():
        assert abs(float(getattr(model, name)) - row[column]) < LOG_THETA_ATOL, name
    for name, column in scale_thetas.items():
        assert float(getattr(model, name)) == pytest.approx(row[column], rel=RTOL), name
    omega = np.asarray(model.omega_matrix())
    reference = [row[f"OMEGA{i}_{i}"] for i in range(1, n_eta + 1)]
    np.testing.assert_allclose(np.diagonal(omega), reference, rtol=RTOL)
    # a diagonal OMEGA stays diagonal
    assert np.all(omega[~np.eye(n_eta, dtype=bool)] == 0.0)


def check_standard_errors(result, row, thetas, omegas):
    """Sandwich SEs against NONMEM's SE row; ``thetas``/``omegas`` map the
    parameter names of ``estimates()`` to ext columns."""
    assert result.covariance is not None and result.covariance.ok, result.covariance
    se = result.estimates().set_index("parameter")["se"]
    for name, column in {**thetas, **omegas}.items():
        assert se[name] == pytest.approx(row[column], rel=SE_RTOL), name


@pytest.mark.slow
def test_warfarin_focei_fit_matches_nonmem(refdata):
    start = initial_estimates(refdata, WARFARIN_EXT)
    final = final_estimates(refdata, WARFARIN_EXT)
    data = warfarin_data(refdata)
    result = pmx.fit(WarfarinPK.at(start), data, "focei", covariance="sandwich")
    assert result.converged, result.message
    assert (result.n_subjects, result.n_observations) == (32, 251)
    assert abs(result.ofv - final["OBJ"]) < 0.01  # 423.32729
    check_reports_its_own_ofv(result)
    check_final_estimates(
        result,
        final,
        log_thetas=dict(tka="THETA1", tcl="THETA2", tv="THETA3"),
        scale_thetas=dict(prop="THETA4", add="THETA5"),
        n_eta=3,
    )
    assert np.all(result.ebe_status == pmx.estimation.EBEStatus.CONVERGED)
    check_standard_errors(
        result,
        standard_errors(refdata, WARFARIN_EXT),
        thetas=dict(tka="THETA1", tcl="THETA2", tv="THETA3", prop="THETA4", add="THETA5"),
        omegas={"iiv.ka": "OMEGA1_1", "iiv.cl": "OMEGA2_2", "iiv.v": "OMEGA3_3"},
    )


@pytest.mark.slow
def test_bolus_2cpt_focei_fit_matches_nonmem(refdata):
    start = initial_estimates(refdata, BOLUS_2CPT_EXT)
    final = final_estimates(refdata, BOLUS_2CPT_EXT)
    data = bolus_2cpt_data(refdata)
    result = pmx.fit(Bolus2Cpt.at(start), data, "focei", covariance="sandwich")
    assert result.converged, result.message
    assert (result.n_subjects, result.n_observations) == (120, 2280)
    assert abs(result.ofv - final["OBJ"]) < 0.1  # 20167.641
    check_reports_its_own_ofv(result)
    check_final_estimates(
        result,
        final,
        log_thetas=dict(tcl="THETA1", tv1="THETA2", tq="THETA3", tv2="THETA4"),
        scale_thetas=dict(cv="THETA5"),
        n_eta=4,
    )
    assert np.all(result.ebe_status == pmx.estimation.EBEStatus.CONVERGED)
    check_standard_errors(
        result,
        standard_errors(refdata, BOLUS_2CPT_EXT),
        thetas=dict(tcl="THETA1", tv1="THETA2", tq="THETA3", tv2="THETA4", cv="THETA5"),
        omegas={f"iiv.{n}": f"OMEGA{i}_{i}" for i, n in enumerate(("cl", "v1", "q", "v2"), 1)},
    )
