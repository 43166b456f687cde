"""The NONMEM reference runs of REFERENCE_CASES R4 and R5, written as their
control streams, with readers for their data and ``_ext.csv`` rows; and the
designs S1-S3 (several modes, BLQ), written from their descriptions.

Shared by the fixed-parameter OFV tests (``test_estimation_nonmem.py``) and the
full fits (``test_fit_reference.py``).  Parameter values come from the ext file
(``THETAn``, ``SIGMA(1,1)``, ``OMEGA(i,i)``); both runs have ``SIGMA 1 FIX``, so
their residual THETAs are SDs.
"""

import jax.numpy as jnp
import numpy as np
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


# -- REFERENCE_CASES S1 and S2: designs whose individual objectives have several modes


class WarfarinLag(pmx.Model):
    """S1: warfarin PK with an absorption lag, ``ALAG1 = exp(TH4 + ETA4)``,
    ``Var = (TH5 IPRED)^2 + TH6^2``; initial estimates as the design says."""

    tka: pmx.Theta = pmx.theta(0.2)
    tcl: pmx.Theta = pmx.theta(-2.0)
    tv: pmx.Theta = pmx.theta(2.0)
    tlag: pmx.Theta = pmx.theta(-0.2)
    prop: pmx.Theta = pmx.theta(0.2, lower=0.0)
    add: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.7, cl=0.2, v=0.2, lag=0.6)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
            ALAG1=jnp.exp(self.tlag + eta.lag),
        )

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add, self.prop)


def warfarin_lag_data(refdata):
    """``warfarin_PKS_nonmem.csv``: 32 subjects, 251 observations."""
    return pmx.read_nonmem(refdata / "warfarin_PKS_nonmem.csv")


class Mox1(pmx.Model):
    """S2: moxonidine, ``CL = TH1 exp(ETA1)``, ``V = TH2 exp(ETA2)``,
    ``KA = TH3 exp(ETA3)``, BLOCK(2) on CL and V, ``Y = log(F) + EPS1`` on
    DV = log concentration (FOCE without interaction).  Initial estimates from
    a one-compartment reading of the single-dose profiles (peak ~0.9 at
    1-2 h, terminal slope ~0.3 /h, AUC ~3.5 per 100)."""

    tcl: pmx.Theta = pmx.theta(27.5, lower=0.0)
    tv: pmx.Theta = pmx.theta(100.0, lower=0.0)
    tka: pmx.Theta = pmx.theta(1.0, lower=0.0)
    sd: pmx.Theta = pmx.theta(0.3, lower=0.0)
    iiv: pmx.Omega = pmx.omega_block(["cl", "v"], [[0.2, 0.1], [0.1, 0.2]])
    iiv_ka: pmx.Omega = pmx.omega(ka=0.3)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            cl=self.tcl * jnp.exp(eta.cl),
            v=self.tv * jnp.exp(eta.v),
            ka=self.tka * jnp.exp(eta.ka),
        )

    def observe(self, amounts, p):
        conc = amounts.central / p["v"]
        # log 0 on the dose records (no drug yet) would reach the derivatives.
        return pmx.Additive(jnp.log(jnp.where(conc > 0, conc, 1.0)), self.sd)


def mox1_data(refdata):
    """``mox_simulated_log_for_mox1.csv`` as NONMEM reads it for mox1: EVID and
    CMT dropped, so AMT > 0 rows are doses (SS=1, II=12 for the second) into
    the depot: 74 subjects, 1022 observations."""
    table = pd.read_csv(refdata / "mox_simulated_log_for_mox1.csv", skipinitialspace=True)
    return pmx.read_nonmem(table.drop(columns=["EVID", "CMT"]))


class Ad3tr4(pmx.Model):
    """S3: two-compartment IV bolus, ``CL, V1, Q, V2 = exp(TH + eta)`` with a
    BLOCK(4) OMEGA, additive error on the log concentration (BLQ by M3).
    Initial estimates from the profiles (dose 100, C(0.2 h) ~ 15, terminal
    half-life ~ 10 h)."""

    tcl: pmx.Theta = pmx.theta(0.0)
    tv1: pmx.Theta = pmx.theta(2.0)
    tq: pmx.Theta = pmx.theta(0.0)
    tv2: pmx.Theta = pmx.theta(2.5)
    sd: pmx.Theta = pmx.theta(0.3, lower=0.0)
    iiv: pmx.Omega = pmx.omega_block(
        ["cl", "v1", "q", "v2"], 0.18 * np.eye(4) + 0.02 * np.ones((4, 4))
    )
    dynamics = pmx.pk.TwoCompartment()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv1 + eta.v1),
            q=jnp.exp(self.tq + eta.q),
            vp=jnp.exp(self.tv2 + eta.v2),
        )

    def observe(self, amounts, p):
        conc = amounts.central / p["v"]
        return pmx.Additive(jnp.log(jnp.where(conc > 0, conc, 1.0)), self.sd)


def ad3tr4_data(refdata):
    """``bauer2019_ad3tr4_blq.csv``: DV = LOGC, BLQ where LOGC < -3.5 (an LLOQ
    column): 100 subjects, 500 observations of which 104 censored."""
    table = pd.read_csv(refdata / "bauer2019_ad3tr4_blq.csv")
    observed = table["EVID"] == 0
    table["DV"] = np.where(observed, table["LOGC"], 0.0)
    table["LLOQ"] = -3.5
    return pmx.read_nonmem(table[["ID", "TIME", "AMT", "RATE", "EVID", "MDV", "CMT", "DV", "LLOQ"]])
