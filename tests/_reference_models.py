"""The NONMEM reference runs of REFERENCE_CASES R4 and R5, written as their
control streams, with readers for their data and ``_ext.csv`` rows.

Shared by the fixed-parameter OFV tests (``test_estimation_nonmem.py``) and the
full fits (``test_fit_reference.py``).  Parameter values come from the ext file
(``THETAn``, ``SIGMA(1,1)``, ``OMEGA(i,i)``); both runs have ``SIGMA 1 FIX``, so
their residual THETAs are SDs.
"""

import jax.numpy as jnp
import pandas as pd

import pmx_jax as pmx

WARFARIN_EXT = "warfarinPK_run000_FOCEI_combined2_ext.csv"
WARFARIN_PHI = "warfarinPK_run000_FOCEI_combined2_phi.csv"
BOLUS_2CPT_EXT = "runODE032_Bolus_2CPT_FOCEI_ext.csv"
BOLUS_2CPT_PHI = "runODE032_Bolus_2CPT_FOCEI_phi.csv"

# Special ITERATION codes of NONMEM's ext file.
INITIAL, FINAL, STANDARD_ERRORS = 0, -1000000000, -1000000001


def ext_row(refdata, name, iteration):
    """One row of a NONMEM ``_ext.csv`` (``INITIAL``, ``FINAL``, ...)."""
    ext = pd.read_csv(refdata / "nonmem_outputs" / name)
    return ext[ext["ITERATION"] == iteration].iloc[0]


def initial_estimates(refdata, name):
    return ext_row(refdata, name, INITIAL)


def final_estimates(refdata, name):
    return ext_row(refdata, name, FINAL)


def standard_errors(refdata, name):
    """NONMEM's standard errors of the final estimates (same columns)."""
    return ext_row(refdata, name, STANDARD_ERRORS)


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

    @classmethod
    def at(cls, row):
        """The model at the values of an ext-file row."""
        assert row["SIGMA1_1"] == 1.0  # SIGMA 1 FIX: THETA4/5 are the SDs
        return cls().with_values(
            tka=row["THETA1"],
            tcl=row["THETA2"],
            tv=row["THETA3"],
            prop=row["THETA4"],
            add=row["THETA5"],
            iiv=omega_diagonal(row, 3),
        )


def warfarin_data(refdata):
    """``warfarin.csv`` concentrations (``dvid == "cp"``): 32 subjects, 251 observations."""
    table = pd.read_csv(refdata / "warfarin.csv")
    return pmx.read_nonmem(table[table["dvid"] == "cp"])


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

    @classmethod
    def at(cls, row):
        """The model at the values of an ext-file row."""
        assert row["SIGMA1_1"] == 1.0  # SIGMA 1 FIX: THETA5 is the CV
        return cls().with_values(
            tcl=row["THETA1"],
            tv1=row["THETA2"],
            tq=row["THETA3"],
            tv2=row["THETA4"],
            cv=row["THETA5"],
            iiv=omega_diagonal(row, 4),
        )


def bolus_2cpt_data(refdata):
    """``Bolus_2CPT.csv`` rows with ``SD == 1`` (SS=99 means "not steady state"):
    120 subjects, 2280 observations."""
    table = pd.read_csv(refdata / "Bolus_2CPT.csv")
    return pmx.read_nonmem(table[table["SD"] == 1], ss_codes={99: 0})
