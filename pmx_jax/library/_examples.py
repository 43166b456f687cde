import math

import jax.numpy as jnp

from ..dynamics import (
    OneCompartment,
    OneCompartmentOral,
    TwoCompartment,
    TwoCompartmentMixedElimination,
    TwoCompartmentTMDDQSS,
)
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


def _log_where_positive(conc):
    # The prediction is 0 on a first dose record (no drug yet).  The log is
    # harmless there for the likelihood, but its derivative (0/0) would reach
    # the FOCE/FOCEI Jacobian of every record, so it is taken of 1 where there
    # is no drug; an observation with C = 0 does not occur on this scale.
    return jnp.log(jnp.where(conc > 0, conc, 1.0))


class Nimotuzumab(Model):
    """Two-compartment quasi-steady-state TMDD for nimotuzumab (anti-EGFR IgG1),
    the model of the nlmixr/nlmixr2 example on ``nimoData`` (mg, L, h; DV is
    the log serum concentration): :class:`~pmx_jax.pk.TwoCompartmentTMDDQSS`
    with log-normal IIV on CL, V and KSS and an additive error on the log of
    the free concentration.  Initial estimates as in that example.

    ``tkdeg`` (target degradation, 1/h) is fixed at its initial 7 /h: at these
    values the design cannot tell ``log kdeg`` from ``log KSS`` (expected
    Fisher information of ``nimoData``, fixed effects, unit-diagonal scale:
    smallest eigenvalue 1.6e-8, direction +0.72 tkdeg -0.69 tkss; see
    :func:`pmx_jax.estimation.fisher_information`).  ``model.unfix("tkdeg")``
    estimates it.

    On ``nimoData`` a FOCEI fit of this model does not converge: the linear
    CL runs to zero while KSS and kint grow together (their ratio about
    constant), i.e. towards the limit in which target-mediated elimination is
    Michaelis-Menten with ``VM = ksyn V`` and ``KM = kdeg KSS / kint`` (see
    :class:`~pmx_jax.pk.TwoCompartmentMixedElimination`).  That limit, fitted
    directly, is :class:`NimotuzumabMM`.
    """

    tcl: Theta = theta(math.log(0.001))
    tv: Theta = theta(math.log(1.45))
    tq: Theta = theta(math.log(0.004))
    tvp: Theta = theta(math.log(44.0))
    tkss: Theta = theta(math.log(12.0))
    tkint: Theta = theta(math.log(0.3))
    tksyn: Theta = theta(math.log(1.0))
    tkdeg: Theta = theta(math.log(7.0), fixed=True)
    add_sd: Theta = theta(0.5, lower=0.0)
    iiv: Omega = omega(cl=0.3, v=0.3, kss=0.3)
    dynamics = TwoCompartmentTMDDQSS()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
            q=jnp.exp(self.tq),
            vp=jnp.exp(self.tvp),
            kss=jnp.exp(self.tkss + eta.kss),
            kint=jnp.exp(self.tkint),
            ksyn=jnp.exp(self.tksyn),
            kdeg=jnp.exp(self.tkdeg),
        )

    def observe(self, amounts, p):
        free = TwoCompartmentTMDDQSS.free_concentration(amounts, p)
        return Additive(_log_where_positive(free), self.add_sd)


class NimotuzumabLinear(Model):
    """:class:`Nimotuzumab` without target (``ksyn -> 0``): linear two
    compartments (closed form), IIV on CL and V, the same log-scale error.
    The nested model of the likelihood-ratio comparison."""

    tcl: Theta = theta(math.log(0.01))
    tv: Theta = theta(math.log(1.45))
    tq: Theta = theta(math.log(0.004))
    tvp: Theta = theta(math.log(44.0))
    add_sd: Theta = theta(0.5, lower=0.0)
    iiv: Omega = omega(cl=0.3, v=0.3)
    dynamics = TwoCompartment()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
            q=jnp.exp(self.tq),
            vp=jnp.exp(self.tvp),
        )

    def observe(self, amounts, p):
        return Additive(_log_where_positive(amounts.central / p["v"]), self.add_sd)


class NimotuzumabMM(Model):
    """Michaelis-Menten approximation of target-mediated disposition for the
    nimotuzumab data: two compartments with saturable elimination only
    (:class:`~pmx_jax.pk.TwoCompartmentMixedElimination` with ``CL = 0``),
    log-normal IIV on V and KM, the same additive error on the log
    concentration as :class:`Nimotuzumab`.

    This is where the QSS model goes on ``nimoData``: fitted by FOCEI, its
    linear CL tends to zero and KSS and kint grow together, the limit in which
    the target route is ``VM C / (KM + C)`` with ``VM = ksyn V`` (elimination
    limited by target synthesis) and ``KM = kdeg KSS / kint``.  Here that limit
    is estimated directly, with a typical ``VM`` (mg/h) and ``KM`` (mg/L).
    """

    tv: Theta = theta(math.log(1.45))
    tq: Theta = theta(math.log(0.004))
    tvp: Theta = theta(math.log(44.0))
    tvm: Theta = theta(math.log(1.0))
    tkm: Theta = theta(math.log(10.0))
    add_sd: Theta = theta(0.5, lower=0.0)
    iiv: Omega = omega(v=0.3, km=0.3)
    dynamics = TwoCompartmentMixedElimination()

    def individual(self, eta, cov):
        return dict(
            cl=0.0,
            v=jnp.exp(self.tv + eta.v),
            q=jnp.exp(self.tq),
            vp=jnp.exp(self.tvp),
            vm=jnp.exp(self.tvm),
            km=jnp.exp(self.tkm + eta.km),
        )

    def observe(self, amounts, p):
        return Additive(_log_where_positive(amounts.central / p["v"]), self.add_sd)
