"""FOCEI OFV at NONMEM's initial estimates (ITERATION 0 of the ``_ext.csv``
files; REFERENCE_CASES R3-R5), and per subject against the ``_phi.csv`` files
where NONMEM's EBEs are those of the initial estimates' first evaluation.

The models are written as their NONMEM control streams; parameter values are
read from the ext file header (THETAn, SIGMA(1,1), OMEGA(i,i)).  Tolerance: 1e-3
absolute on the OFV (NONMEM prints 12+ digits; its own EBE search stops at a
finite tolerance, so agreement beyond ~1e-4 is not expected).
"""

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.estimation import EBEStatus, ofv
from pmx_jax.library import Phenobarbital


def initial_estimates(refdata, name):
    return _ext_row(refdata, name, 0)


def final_estimates(refdata, name):
    return _ext_row(refdata, name, -1000000000)


def _ext_row(refdata, name, iteration):
    ext = pd.read_csv(refdata / "nonmem_outputs" / name)
    return ext[ext["ITERATION"] == iteration].iloc[0]


def check_phi(result, refdata, name, n_eta):
    """Per-subject OBJ and EBEs against NONMEM's phi file (final estimates)."""
    phi = pd.read_csv(refdata / "nonmem_outputs" / name)
    np.testing.assert_allclose(result.per_subject, phi["OBJ"], atol=1e-3)
    etas = [f"ETA{i}" for i in range(1, n_eta + 1)]
    np.testing.assert_allclose(result.eta, phi[etas], atol=1e-4)


def omega_diagonal(row, n):
    return [float(row[f"OMEGA{i}_{i}"]) for i in range(1, n + 1)]


class WarfarinPK(pmx.Model):
    """warfarinPK_run000: ``KA, CL, V = exp(TH + eta)``, ``W = sqrt((TH4 F)^2 + TH5^2)``."""

    tka: pmx.Theta = pmx.theta(0.15)
    tcl: pmx.Theta = pmx.theta(-2.0)
    tv: pmx.Theta = pmx.theta(2.0)
    prop: pmx.Theta = pmx.theta(0.2, lower=0.0)
    add: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=1.0, cl=1.0, v=1.0)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka), cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv + eta.v)
        )

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add, self.prop)


class Bolus2Cpt(pmx.Model):
    """runODE032: ``CL, V1, Q, V2 = exp(TH + eta)``, ``W = TH5 * IPRED``."""

    tcl: pmx.Theta = pmx.theta(1.6)
    tv1: pmx.Theta = pmx.theta(4.5)
    tq: pmx.Theta = pmx.theta(1.6)
    tv2: pmx.Theta = pmx.theta(4.0)
    cv: pmx.Theta = pmx.theta(0.3, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.15, v1=0.15, q=0.15, v2=0.15)
    dynamics = pmx.pk.TwoCompartment()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv1 + eta.v1),
            q=jnp.exp(self.tq + eta.q),
            vp=jnp.exp(self.tv2 + eta.v2),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.cv)


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
    row = estimates(refdata, "warfarinPK_run000_FOCEI_combined2_ext.csv")
    assert row["SIGMA1_1"] == 1.0  # SIGMA 1 FIX: THETA4/5 are the SDs
    model = WarfarinPK().with_values(
        tka=row["THETA1"],
        tcl=row["THETA2"],
        tv=row["THETA3"],
        prop=row["THETA4"],
        add=row["THETA5"],
        iiv=omega_diagonal(row, 3),
    )
    table = pd.read_csv(refdata / "warfarin.csv")
    data = pmx.read_nonmem(table[table["dvid"] == "cp"])
    assert (data.n_subjects, data.n_observations) == (32, 251)
    result = ofv(model, data, "focei")
    assert np.all(result.status == EBEStatus.CONVERGED)
    assert abs(float(result.ofv) - row["OBJ"]) < 1e-3  # 558.48502 initial, 423.32729 final
    if estimates is final_estimates:
        check_phi(result, refdata, "warfarinPK_run000_FOCEI_combined2_phi.csv", 3)


@pytest.mark.slow
@pytest.mark.parametrize("estimates", [initial_estimates, final_estimates])
def test_bolus_2cpt_focei(refdata, estimates):
    row = estimates(refdata, "runODE032_Bolus_2CPT_FOCEI_ext.csv")
    assert row["SIGMA1_1"] == 1.0
    model = Bolus2Cpt().with_values(
        tcl=row["THETA1"],
        tv1=row["THETA2"],
        tq=row["THETA3"],
        tv2=row["THETA4"],
        cv=row["THETA5"],
        iiv=omega_diagonal(row, 4),
    )
    table = pd.read_csv(refdata / "Bolus_2CPT.csv")
    data = pmx.read_nonmem(table[table["SD"] == 1], ss_codes={99: 0})
    assert (data.n_subjects, data.n_observations) == (120, 2280)
    result = ofv(model, data, "focei")
    assert np.all(result.status == EBEStatus.CONVERGED)
    assert abs(float(result.ofv) - row["OBJ"]) < 1e-3  # 20783.393 initial, 20167.641 final
    if estimates is final_estimates:
        check_phi(result, refdata, "runODE032_Bolus_2CPT_FOCEI_phi.csv", 4)


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
