"""Warfarin PK/PD: concentrations and prothrombin complex activity (PCA), FOCEI.

O'Reilly's warfarin data (``warfarin.csv``: 32 subjects, a single oral dose of
about 1.5 mg/kg; 251 plasma concentrations in mg/L, DVID ``cp``, and 232 PCA
measurements in % of normal, DVID ``pca``), with the classic turnover model:

- PK (REFERENCE_CASES R4): one compartment, first-order absorption,
  ``KA, CL, V = exp(theta + eta)``, combined error ``Var = add^2 + (prop f)^2``.
- PD: an indirect response model of kind 1 (:class:`pmx.dynamics.IndirectResponse`),
  warfarin inhibiting the synthesis of the clotting factors,
  ``dPCA/dt = kin (1 - C / (IC50 + C)) - kout PCA``, from the baseline
  ``PCA0 = kin / kout``; log-normal IIV on PCA0, kout and IC50, additive error.
  Imax is fixed at 1 (full inhibition of synthesis: PCA falls to 10-20% of
  normal in these subjects, and Imax near 1 is not separable from IC50 here).

The fit is sequential (the PPP&D method of Zhang et al. 2003): first the PK
model alone on the concentrations (this is R4, NONMEM's FOCEI OFV 423.327),
then the PD parameters on both endpoints with the PK THETAs and OMEGA fixed at
those estimates, so each subject's PK etas are still re-estimated from its own
concentrations.  ``simultaneous=True`` instead frees every parameter in the
second stage, started from the sequential estimates.

On a 2-core CPU (``benchmarks/fit_pkpd.py``): about 6 s for the PK stage
(OFV 423.3273, as NONMEM), most of it compiling, and 1 min for the PD stage
(28 s compiling, 24 s fitting; OFV 1422.43; PCA0 96.5 %, kout 0.051 /h, i.e. a
turnover half-life of 14 h, IC50 1.14 mg/L, PCA residual SD 3.6 %).

    python examples/warfarin_pkpd.py
    python examples/warfarin_pkpd.py --simultaneous
"""

import argparse
import os
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx

REFDATA = Path(
    os.environ.get("PMX_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)


class WarfarinPK(pmx.Model):
    """One compartment, first-order absorption, combined error (R4)."""

    tka: pmx.Theta = pmx.theta(np.log(0.5))
    tcl: pmx.Theta = pmx.theta(np.log(0.135))
    tv: pmx.Theta = pmx.theta(np.log(8.0))
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    add: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.5, cl=0.1, v=0.05)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka), cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv + eta.v)
        )

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add, self.prop)


class WarfarinPKPD(pmx.Model):
    """The PK model above plus PCA by a turnover model with inhibited synthesis.

    Endpoints in DVID level order: ``cp`` (mg/L), then ``pca`` (% of normal).
    """

    tka: pmx.Theta = pmx.theta(np.log(0.5))
    tcl: pmx.Theta = pmx.theta(np.log(0.135))
    tv: pmx.Theta = pmx.theta(np.log(8.0))
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    add: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.5, cl=0.1, v=0.05)
    # PD: baseline PCA ~100% of normal, turnover half-life ~1 day, IC50 ~1 mg/L
    tpca0: pmx.Theta = pmx.theta(np.log(100.0))
    tkout: pmx.Theta = pmx.theta(np.log(0.03))
    tic50: pmx.Theta = pmx.theta(np.log(1.0))
    pca_sd: pmx.Theta = pmx.theta(5.0, lower=0.0)
    iiv_pd: pmx.Omega = pmx.omega(pca0=0.01, kout=0.05, ic50=0.1)
    # rtol 1e-6 is plenty for data with a few % residual error, and faster.
    dynamics = pmx.dynamics.IndirectResponse(kind=1, rtol=1e-6, atol=1e-8)

    def individual(self, eta, cov):
        pca0 = jnp.exp(self.tpca0 + eta.pca0)
        kout = jnp.exp(self.tkout + eta.kout)
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
            kin=pca0 * kout,
            kout=kout,
            imax=jnp.asarray(1.0),
            ic50=jnp.exp(self.tic50 + eta.ic50),
        )

    def observe(self, amounts, p):
        return (
            pmx.Combined2(amounts.central / p["v"], self.add, self.prop),
            pmx.Additive(amounts.response, self.pca_sd),
        )


PK_NAMES = ("tka", "tcl", "tv", "prop", "add")


def load_data(refdata: Path = REFDATA) -> tuple[pmx.Dataset, pmx.Dataset]:
    """The concentrations alone (R4) and both endpoints."""
    table = pd.read_csv(refdata / "warfarin.csv")
    return pmx.read_nonmem(table[table["dvid"] == "cp"]), pmx.read_nonmem(table)


def pkpd_start(pk: pmx.Model, *, fix_pk: bool) -> WarfarinPKPD:
    """The PK/PD model with the PK THETAs and OMEGA at the PK estimates (fixed
    for the sequential fit)."""
    default = WarfarinPKPD()
    replace = {}
    for name in PK_NAMES:
        bounds = getattr(default, name)
        replace[name] = pmx.theta(
            float(getattr(pk, name)), bounds.lower, bounds.upper, fixed=fix_pk
        )
    variances = np.diagonal(np.asarray(pk.omega_matrix()))
    replace["iiv"] = pmx.omega(
        fixed=fix_pk, **dict(zip(("ka", "cl", "v"), map(float, variances), strict=True))
    )
    return WarfarinPKPD(**replace)


def pd_parameters(model: WarfarinPKPD) -> dict[str, float]:
    """Typical PD values on their natural scale."""
    kout = float(np.exp(float(model.tkout)))
    return dict(
        pca0=float(np.exp(float(model.tpca0))),
        kout=kout,
        turnover_half_life=float(np.log(2.0) / kout),
        ic50=float(np.exp(float(model.tic50))),
        pca_sd=float(model.pca_sd),
    )


def main(simultaneous: bool = False, covariance: str | None = None, refdata: Path = REFDATA):
    """Fit PK, then PK/PD; print both reports and return both fit results,
    ``(pk_result, pkpd_result)`` (the PK fit is REFERENCE_CASES R4)."""
    pk_data, pkpd_data = load_data(refdata)
    print(
        f"{pkpd_data.n_subjects} subjects, {pk_data.n_observations} concentrations, "
        f"{pkpd_data.n_observations - pk_data.n_observations} PCA observations\n"
    )
    start = time.perf_counter()
    pk_result = pmx.fit(WarfarinPK(), pk_data, "focei", covariance=None)
    print(pk_result)
    print(f"(PK fit: {time.perf_counter() - start:.0f} s)\n")

    start = time.perf_counter()
    model = pkpd_start(pk_result.model, fix_pk=not simultaneous)
    result = pmx.fit(model, pkpd_data, "focei", covariance=covariance)
    print(result)
    print(f"(PK/PD fit: {time.perf_counter() - start:.0f} s)\n")
    print("Typical PD values:")
    for name, value in pd_parameters(result.model).items():
        print(f"  {name:20s} {value:10.4g}")
    return pk_result, result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simultaneous", action="store_true", help="free the PK parameters too")
    parser.add_argument("--covariance", action="store_true", help="run the covariance step")
    args = parser.parse_args()
    main(args.simultaneous, "sandwich" if args.covariance else None)
