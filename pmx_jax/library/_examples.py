import jax.numpy as jnp

from ..dynamics import OneCompartment, OneCompartmentOral
from ..model import Additive, Model, Omega, Proportional, Theta, omega, theta


class Theophylline(Model):
    """``ka = exp(tka + eta_ka)``, ``cl = exp(tcl + eta_cl)``, ``v = exp(tv + eta_v)``;
    ``DV = C + eps`` with SD ``add_sd`` (mg/L).  Dose in CMT 1 (depot)."""

    tka: Theta = theta(0.45)
    tcl: Theta = theta(1.0)
    tv: Theta = theta(3.45)
    add_sd: Theta = theta(0.7, lower=0.0)
    iiv: Omega = omega(ka=0.6, cl=0.3, v=0.1)
    dynamics = OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return Additive(amounts.central / p["v"], self.add_sd)


class Phenobarbital(Model):
    """``CL = TH1*WT*exp(eta1)``, ``V = TH2*WT*(1 + TH3 [APGR < 5])*exp(eta2)``,
    ``DV = C (1 + eps)`` with CV ``prop_cv``.  Initial values as NONMEM's ``pheno``."""

    th_cl: Theta = theta(0.00469307, lower=0.0)
    th_v: Theta = theta(1.00916, lower=0.0)
    th_apgar: Theta = theta(0.1, lower=-0.99)
    prop_cv: Theta = theta(0.1, lower=0.0)
    iiv: Omega = omega(cl=0.0309626, v=0.031128)
    dynamics = OneCompartment()

    def individual(self, eta, cov):
        low_apgar = jnp.where(cov.APGR < 5, 1.0, 0.0)
        return dict(
            cl=self.th_cl * cov.WT * jnp.exp(eta.cl),
            v=self.th_v * cov.WT * (1.0 + self.th_apgar * low_apgar) * jnp.exp(eta.v),
        )

    def observe(self, amounts, p):
        return Proportional(amounts.central / p["v"], self.prop_cv)
