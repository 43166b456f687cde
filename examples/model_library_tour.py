"""A tour of the model library: one small model, one typical profile and one
number a pharmacometrician would check, for every library model.

Each entry of ``REGISTRY`` defines a typical subject (parameter values of the
order reported in the cited source, rounded; illustrative, not a validated
model of the drug), predicts its profile for a standard regimen with
``pmx.predict`` and returns a :class:`Summary`: the quantity, its value, and
the profile (for the optional plot).  The models have no etas: in a fit the
values would be THETAs with IIV, as in ``examples/theophylline_fit.py``.

    python examples/model_library_tour.py                      # every model
    python examples/model_library_tour.py --models mm idr1     # some of them
    python examples/model_library_tour.py --plot tour.png      # and a PNG grid
    python examples/model_library_tour.py --list
"""

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx
from pmx_jax.dynamics import (
    BiomarkerPlateau,
    CarT,
    EffectCompartment,
    Friberg,
    IndirectResponse,
    TumourGrowth,
    emax,
    operational_ec50,
    operational_effect,
    operational_emax,
    sigmoid_emax,
)


class Summary(NamedTuple):
    """What one tour entry reports."""

    label: str  # the quantity, in words
    value: float
    unit: str
    time: np.ndarray  # the typical profile, for the plot
    profile: np.ndarray
    ylabel: str
    at: float = math.nan  # time of the extremum or event the value refers to


class Typical(pmx.Model):
    """A typical subject: ``individual`` returns the class's ``values``."""

    sd: pmx.Theta = pmx.theta(0.1, lower=0.0)
    values: ClassVar[dict[str, float]] = {}

    def individual(self, eta, cov):
        return {name: jnp.asarray(value) for name, value in self.values.items()}


def typical_profile(model: pmx.Model, design: pmx.Regimen | pd.DataFrame, subject=None):
    """Sampling times and the typical prediction (PRED) at them."""
    pred = pmx.predict(model, design)
    pred = pred[pred.EVID == 0]
    if subject is not None:
        pred = pred[pred.ID == subject]
    return pred.TIME.to_numpy(), pred.PRED.to_numpy()


def extremum(t: np.ndarray, y: np.ndarray, kind: str = "max") -> tuple[float, float]:
    """Time and value of the maximum (or minimum) of a sampled profile, refined
    by a parabola through the best sample and its neighbours."""
    i = int(np.argmax(y) if kind == "max" else np.argmin(y))
    if 0 < i < len(y) - 1:
        (t0, t1, t2), (y0, y1, y2) = t[i - 1 : i + 2], y[i - 1 : i + 2]
        denominator = (t0 - t1) * (t0 - t2) * (t1 - t2)
        a = (t2 * (y1 - y0) + t1 * (y0 - y2) + t0 * (y2 - y1)) / denominator
        b = (t2**2 * (y0 - y1) + t1**2 * (y2 - y0) + t0**2 * (y1 - y2)) / denominator
        c = y1 - a * t1**2 - b * t1
        if a != 0:
            top = -b / (2 * a)
            if t0 < top < t2:
                return float(top), float(a * top**2 + b * top + c)
    return float(t[i]), float(y[i])


def first_fall_below(t: np.ndarray, y: np.ndarray, level: float) -> float:
    """First time a declining profile falls below ``level`` (log-linear
    interpolation between samples: exact for a mono-exponential segment)."""
    below = np.flatnonzero((y[1:] < level) & (y[:-1] >= level))
    if below.size == 0:
        return math.nan
    i = below[0]
    fraction = np.log(y[i] / level) / np.log(y[i] / y[i + 1])
    return float(t[i] + fraction * (t[i + 1] - t[i]))


def auc(t: np.ndarray, y: np.ndarray) -> float:
    """Linear trapezoidal area under the samples."""
    return float(np.sum(np.diff(t) * (y[1:] + y[:-1]) / 2.0))


# --------------------------------------------------------------------------------
# PK library
# --------------------------------------------------------------------------------


class Phenytoin(Typical):
    # Michaelis-Menten phenytoin, 70 kg: Vm 7 mg/kg/day, Km 4 mg/L, V 0.7 L/kg
    # (Winter, Basic Clinical Pharmacokinetics, phenytoin chapter).  Time in h.
    dynamics = pmx.pk.OneCompartmentMM()
    values = dict(vm=7.0 * 70 / 24, km=4.0, v=0.7 * 70)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def michaelis_menten() -> Summary:
    """1000 mg IV loading dose: when does elimination become ~linear (C < KM)?"""
    t, c = typical_profile(Phenytoin(), pmx.Regimen.bolus(1000.0).sample(np.arange(0, 120.1, 0.25)))
    when = first_fall_below(t, c, Phenytoin.values["km"])
    return Summary("time to fall below KM after 1000 mg IV", when, "h", t, c, "C (mg/L)")


class MabMixed(Typical):
    # Monoclonal antibody with linear and saturable (target-mediated) clearance,
    # days, mg, L; values of the order of Gibiansky et al. 2008 (J Pharmacokinet
    # Pharmacodyn 35:573) and Dirks & Meibohm 2010 (Clin Pharmacokinet 49:633).
    dynamics = pmx.pk.OneCompartmentMixedElimination()
    values = dict(cl=0.2, v=3.0, vm=2.0, km=1.0)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def mixed_elimination() -> Summary:
    """100 mg IV: apparent clearance Dose/AUC, between CL and CL + VM/KM."""
    times = np.r_[np.arange(0, 10, 0.05), np.arange(10, 400.1, 0.5)]
    t, c = typical_profile(MabMixed(), pmx.Regimen.bolus(100.0).sample(times))
    return Summary(
        "apparent clearance Dose/AUC(0-400 d), 100 mg IV",
        100.0 / auc(t, c),
        "L/day",
        t,
        c,
        "C (mg/L)",
    )


class MabMixed2Cpt(Typical):
    # The same antibody with a peripheral compartment (Q 0.5 L/day, Vp 2.5 L):
    # pmx.pk.TwoCompartmentMixedElimination, elimination from the central one.
    dynamics = pmx.pk.TwoCompartmentMixedElimination()
    values = dict(cl=0.2, v=3.0, q=0.5, vp=2.5, vm=2.0, km=1.0)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


MAB_2CPT_TIMES = np.r_[np.arange(0, 10, 0.01), np.arange(10, 1000.1, 0.25)]


def mixed_elimination_2cpt_clearance(dose: float) -> float:
    """Apparent clearance ``dose / AUC(0-1000 days)`` after an IV bolus, L/day."""
    t, c = typical_profile(MabMixed2Cpt(), pmx.Regimen.bolus(dose).sample(MAB_2CPT_TIMES))
    return dose / auc(t, c)


def mixed_elimination_2cpt() -> Summary:
    """0.01 mg IV (C far below KM): the apparent clearance Dose/AUC of a linear
    system eliminating from the central compartment only is its clearance
    there, ``CL + VM / KM`` (2.2 L/day), whatever the distribution."""
    dose = 0.01
    t, c = typical_profile(MabMixed2Cpt(), pmx.Regimen.bolus(dose).sample(MAB_2CPT_TIMES))
    return Summary(
        "2-cpt mixed elimination: apparent CL of a 0.01 mg dose",
        dose / auc(t, c),
        "L/day",
        t,
        c,
        "C (mg/L)",
    )


class OralMixed(Typical):
    # An oral small molecule with a saturable metabolic pathway (illustrative):
    # h, mg, L.
    dynamics = pmx.pk.OneCompartmentOralMixedElimination()
    values = dict(ka=1.0, cl=5.0, v=50.0, vm=10.0, km=2.0)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def mixed_elimination_oral() -> Summary:
    """400 mg orally: time of the peak concentration."""
    t, c = typical_profile(OralMixed(), pmx.Regimen.oral(400.0).sample(np.arange(0, 48.1, 0.1)))
    when, peak = extremum(t, c)
    return Summary(
        f"tmax after 400 mg orally (Cmax {peak:.2f} mg/L)", when, "h", t, c, "C (mg/L)", when
    )


class Transit(Typical):
    # Transit-compartment absorption (Savic et al. 2007, J Pharmacokinet
    # Pharmacodyn 34:711): 4 compartments, MTT 1 h before the depot; h, mg, L.
    dynamics = pmx.pk.TransitAbsorption(n_transit=4)
    values = dict(ktr=4.0, ka=1.5, cl=10.0, v=50.0)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def transit() -> Summary:
    """100 mg orally: tmax, delayed by the chain (no lag time needed)."""
    t, c = typical_profile(Transit(), pmx.Regimen.oral(100.0).sample(np.arange(0, 24.01, 0.05)))
    when, _ = extremum(t, c)
    return Summary("tmax with 4 transit compartments (MTT 1 h)", when, "h", t, c, "C (mg/L)", when)


class SavicChain(Typical):
    # Savic et al. 2007: a non-integer number of transit compartments (n = 2.5,
    # MTT (n + 1) / ktr = 1.17 h); the dose is a parameter, not a dose record.
    dynamics = pmx.pk.SavicTransit()
    values = dict(dose=100.0, tdose=0.0, n=2.5, ktr=3.0, ka=1.5, cl=10.0, v=50.0)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def savic_transit() -> Summary:
    """100 mg (a parameter): AUC must be F Dose / CL = 10 mg h/L."""
    times = np.r_[np.arange(0, 24, 0.02), np.arange(24, 72.01, 0.1)]
    t, c = typical_profile(SavicChain(), pmx.Regimen().sample(times))
    return Summary(
        "AUC(0-72 h) after 100 mg, n = 2.5 transits", auc(t, c), "mg h/L", t, c, "C (mg/L)"
    )


# TMDD in nmol, nM, L and days: a monoclonal antibody against a soluble target
# (values of the order of Mager & Jusko 2001, J Pharmacokinet Pharmacodyn 28:507,
# and Gibiansky et al. 2008): KD 1 nM, target baseline 1 nM, half-life 1.4 days.
TMDD = dict(cl=0.2, v=3.0, kon=1.0, koff=1.0, kint=0.2, kdeg=0.5, ksyn=0.5)
TMDD_DOSE = 300.0  # nmol (~45 mg of a 150 kDa antibody): 100 nM initially
TMDD_TIMES = np.arange(0, 84.01, 0.25)


class TMDDFullModel(Typical):
    dynamics = pmx.pk.TMDDFull(stiff=True)
    values = TMDD

    def observe(self, amounts, p):  # the free target
        return pmx.Additive(amounts.target, self.sd)


class TMDDQSSModel(Typical):
    dynamics = pmx.pk.TMDDQSS()
    values = dict((k, TMDD[k]) for k in ("cl", "v", "kint", "kdeg", "ksyn")) | dict(
        kss=(TMDD["koff"] + TMDD["kint"]) / TMDD["kon"]
    )

    def observe(self, amounts, p):  # free target = total - bound (Ltot - L)
        free_drug = pmx.pk.TMDDQSS.free_concentration(amounts, p)
        return pmx.Additive(amounts.target - (amounts.central / p["v"] - free_drug), self.sd)


def _target_suppression(model: pmx.Model, name: str) -> Summary:
    t, target = typical_profile(model, pmx.Regimen.bolus(TMDD_DOSE).sample(TMDD_TIMES))
    baseline = TMDD["ksyn"] / TMDD["kdeg"]
    below = first_fall_below(t[::-1], target[::-1], 0.1 * baseline)  # last time below 10%
    return Summary(
        f"{name}: last day free target < 10% of baseline",
        below,
        "day",
        t,
        target,
        "free target (nM)",
    )


def tmdd_full() -> Summary:
    """300 nmol IV: how long is the free target suppressed by more than 90%?"""
    return _target_suppression(TMDDFullModel(), "full TMDD")


def tmdd_qss() -> Summary:
    """The same with the quasi-steady-state approximation (KSS = (koff + kint) / kon)."""
    return _target_suppression(TMDDQSSModel(), "QSS TMDD")


# Two-compartment QSS TMDD, the usual monoclonal antibody structure (nmol, nM,
# L, day): linear distribution of the free drug to a peripheral volume, the
# target in the central compartment; target baseline ksyn / kdeg = 1 nM.
TMDD_2CPT = dict(cl=0.2, v=3.0, q=0.5, vp=2.5, kss=1.0, kint=0.2, ksyn=0.5, kdeg=0.5)
TMDD_2CPT_TIMES = np.arange(0.0, 400.01, 0.25)


class TMDD2CptModel(Typical):
    dynamics = pmx.pk.TwoCompartmentTMDDQSS()
    values = TMDD_2CPT

    def observe(self, amounts, p):  # free drug concentration (nM)
        return pmx.Additive(pmx.pk.TwoCompartmentTMDDQSS.free_concentration(amounts, p), self.sd)


def tmdd_2cpt_clearance(dose: float) -> float:
    """Apparent clearance ``dose / AUC(0-400 days)`` of the free drug after an
    IV bolus of ``dose`` nmol, as a multiple of the linear ``CL``."""
    t, c = typical_profile(TMDD2CptModel(), pmx.Regimen.bolus(dose).sample(TMDD_2CPT_TIMES))
    return dose / auc(t, c) / TMDD_2CPT["cl"]


def tmdd_2cpt() -> Summary:
    """A microdose (0.03 nmol, free drug 1% of KSS): how much faster is it
    cleared than by the linear CL alone?  At concentrations far below KSS the
    bound drug is ``R0 C / KSS`` and internalised at ``kint``: the apparent
    clearance tends to ``CL + kint R0 V / KSS`` (4 CL here)."""
    dose = 0.03
    t, c = typical_profile(TMDD2CptModel(), pmx.Regimen.bolus(dose).sample(TMDD_2CPT_TIMES))
    return Summary(
        "2-cpt QSS TMDD: apparent CL of a microdose / linear CL",
        dose / auc(t, c) / TMDD_2CPT["cl"],
        "x CL",
        t,
        c,
        "free drug (nM)",
    )


class TMDDMMModel(Typical):
    # Michaelis-Menten TMDD: constant total target (kint = kdeg), Rmax = 1 nM.
    dynamics = pmx.pk.TMDDMM()
    values = dict(cl=0.2, v=3.0, kint=0.5, rmax=1.0, kss=1.2)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def tmdd_mm() -> Summary:
    """10 nmol IV (3.3 nM, near KSS): apparent clearance Dose/AUC, above CL."""
    times = np.r_[np.arange(0, 10, 0.02), np.arange(10, 200.1, 0.25)]
    t, c = typical_profile(TMDDMMModel(), pmx.Regimen.bolus(10.0).sample(times))
    return Summary(
        "apparent clearance Dose/AUC(0-200 d), 10 nmol IV",
        10.0 / auc(t, c),
        "L/day",
        t,
        c,
        "C (nM)",
    )


class ParentMetaboliteModel(Typical):
    # Parent and metabolite in molar units, h, L (illustrative): 60% of the
    # parent's clearance forms the metabolite, which is cleared more slowly.
    dynamics = pmx.pk.ParentMetabolite()
    values = dict(cl=10.0, v=50.0, fm=0.6, clm=4.0, vm=30.0)

    def observe(self, amounts, p):  # two endpoints: DVID 1 parent, DVID 2 metabolite
        return (
            pmx.Additive(amounts.central / p["v"], self.sd),
            pmx.Additive(amounts.metabolite / p["vm"], self.sd),
        )


def parent_metabolite() -> Summary:
    """100 umol IV: metabolite-to-parent AUC ratio (fm CL / CLm = 1.5)."""
    times = np.r_[np.arange(0, 24, 0.02), np.arange(24, 120.01, 0.1)]
    table = pmx.Regimen.bolus(100.0).sample(times).to_table()
    table["DVID"] = 1
    metabolite_rows = table[table.EVID == 0].assign(DVID=2)
    table = pd.concat([table, metabolite_rows]).sort_values(["TIME", "DVID"], kind="stable")
    pred = pmx.predict(ParentMetaboliteModel(), table.reset_index(drop=True))
    dvid = table.DVID.to_numpy()[pred.row]
    is_obs = pred.EVID.to_numpy() == 0
    t = pred.TIME.to_numpy()[is_obs & (dvid == 1)]
    parent = pred.PRED.to_numpy()[is_obs & (dvid == 1)]
    metabolite = pred.PRED.to_numpy()[is_obs & (dvid == 2)]
    ratio = auc(t, metabolite) / auc(t, parent)
    return Summary(
        "metabolite/parent AUC(0-120 h) ratio", ratio, "", t, metabolite, "C metabolite (umol/L)"
    )


class ParentMetaboliteOralModel(Typical):
    dynamics = pmx.pk.ParentMetaboliteOral()
    values = dict(ka=1.0, cl=10.0, v=50.0, fm=0.6, clm=4.0, vm=30.0)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.metabolite / p["vm"], self.sd)


def parent_metabolite_oral() -> Summary:
    """100 umol orally: time of the metabolite peak."""
    t, m = typical_profile(
        ParentMetaboliteOralModel(), pmx.Regimen.oral(100.0).sample(np.arange(0, 48.01, 0.1))
    )
    when, _ = extremum(t, m)
    return Summary(
        "metabolite tmax after 100 umol orally", when, "h", t, m, "C metabolite (umol/L)", when
    )


class PBPK(Typical):
    # Minimal flow-limited PBPK, 70 kg adult: blood flows and tissue volumes of
    # the order of Brown et al. 1997 (Toxicol Ind Health 13:407; cardiac output
    # 390 L/h, liver 25%, kidney 19%); a drug with fu 0.1, CLint 300 L/h.  The
    # explicit solver is used: stiff=True (Kvaerno5) gives the same numbers but
    # compiles and runs far slower over this many sampling records.
    dynamics = pmx.pk.MinimalPBPK()
    values = dict(
        q_liver=97.5,
        q_kidney=74.0,
        q_rest=218.5,
        v_venous=3.5,
        v_arterial=1.5,
        v_liver=1.8,
        v_kidney=0.3,
        v_rest=60.0,
        kp_liver=2.0,
        kp_kidney=1.5,
        kp_rest=1.0,
        fu=0.1,
        clint=300.0,
        clr=5.0,
        ka=2.0,
    )

    def observe(self, amounts, p):  # venous blood concentration
        return pmx.Additive(amounts.venous / p["v_venous"], self.sd)


def pbpk() -> Summary:
    """100 mg orally (into the liver) and as a 1-h IV infusion: the oral
    availability is 1 - E_h, so E_h = 1 - AUC_po / AUC_iv.  (An IV bolus into
    the venous pool would leave a spike lasting seconds that the sampling grid
    cannot integrate.)"""
    times = np.r_[np.arange(0, 6, 0.02), np.arange(6, 48.01, 0.1)]
    oral = pmx.Regimen.oral(100.0, cmt=1).sample(times).to_table(id_value=1)
    iv = pmx.Regimen.infusion(100.0, duration=1.0, cmt=2).sample(times).to_table(id_value=2)
    design = pd.concat([oral, iv], ignore_index=True)
    t, c_po = typical_profile(PBPK(), design, subject=1)
    _, c_iv = typical_profile(PBPK(), design, subject=2)
    extraction = 1.0 - auc(t, c_po) / auc(t, c_iv)
    return Summary(
        "hepatic extraction ratio 1 - AUCpo/AUCiv(0-48 h)",
        extraction,
        "",
        t,
        c_po,
        "C venous, oral (mg/L)",
    )


# --------------------------------------------------------------------------------
# Direct effects (functions in observe) and the effect compartment
# --------------------------------------------------------------------------------

# One-compartment oral PK shared by the direct-effect entries (h, mg, L).
ORAL_PK = dict(ka=1.0, cl=5.0, v=50.0)


class EmaxModel(Typical):
    # Hyperbolic Emax on plasma concentration (e.g. heart-rate reduction),
    # illustrative: E0 70, Emax -20, EC50 1 mg/L.
    dynamics = pmx.pk.OneCompartmentOral()
    values = ORAL_PK | dict(e0=70.0, emax=-20.0, ec50=1.0)

    def observe(self, amounts, p):
        c = amounts.central / p["v"]
        return pmx.Additive(emax(c, p["e0"], p["emax"], p["ec50"]), self.sd)


def emax_direct() -> Summary:
    """200 mg orally: fraction of Emax reached at Cmax (direct effect, no delay)."""
    t, effect = typical_profile(
        EmaxModel(), pmx.Regimen.oral(200.0).sample(np.arange(0, 24.01, 0.02))
    )
    p = EmaxModel.values
    when, lowest = extremum(t, effect, "min")
    return Summary(
        "effect at Cmax as a fraction of Emax",
        (lowest - p["e0"]) / p["emax"],
        "",
        t,
        effect,
        "effect",
        when,
    )


class SigmoidEmaxModel(Typical):
    # Sigmoid Emax (Hill 3) after an IV bolus, illustrative: EC50 2 mg/L.
    dynamics = pmx.pk.OneCompartment()
    values = dict(cl=5.0, v=50.0, e0=0.0, emax=100.0, ec50=2.0, hill=3.0)

    def observe(self, amounts, p):
        c = amounts.central / p["v"]
        return pmx.Additive(sigmoid_emax(c, p["e0"], p["emax"], p["ec50"], p["hill"]), self.sd)


def sigmoid_emax_direct() -> Summary:
    """500 mg IV bolus: how long the effect stays above half-maximal."""
    t, effect = typical_profile(
        SigmoidEmaxModel(), pmx.Regimen.bolus(500.0).sample(np.arange(0, 24.01, 0.01))
    )
    half = SigmoidEmaxModel.values["emax"] / 2
    # linear interpolation at the crossing
    i = np.flatnonzero((effect[:-1] > half) & (effect[1:] <= half))[0]
    crossing = t[i] + (effect[i] - half) / (effect[i] - effect[i + 1]) * (t[i + 1] - t[i])
    return Summary(
        "time with effect above Emax/2 (C > EC50)", float(crossing), "h", t, effect, "effect (%)"
    )


class OperationalModel(Typical):
    # Operational model of agonism (Black & Leff 1983): KA 10 mg/L, tau 5
    # (observed EC50 = KA / (1 + tau) = 1.7 mg/L), system maximum Em 100.
    dynamics = pmx.pk.OneCompartmentOral()
    values = ORAL_PK | dict(e0=0.0, em=100.0, ka_affinity=10.0, tau=5.0)

    def observe(self, amounts, p):
        c = amounts.central / p["v"]
        return pmx.Additive(
            operational_effect(c, p["e0"], p["em"], p["ka_affinity"], p["tau"]), self.sd
        )


def operational() -> Summary:
    """200 mg orally: peak effect, and how much of it survives the loss of half
    the receptors (tau 5 -> 2.5; closed form at the same Cmax)."""
    t, effect = typical_profile(
        OperationalModel(), pmx.Regimen.oral(200.0).sample(np.arange(0, 24.01, 0.02))
    )
    when, peak = extremum(t, effect)
    p = OperationalModel.values
    # Invert the (n = 1) operational curve at the peak: E = Emax C / (EC50 + C).
    top, ec50 = operational_emax(p["em"], p["tau"]), operational_ec50(p["ka_affinity"], p["tau"])
    cmax = float(ec50) * peak / (float(top) - peak)
    halved = float(operational_effect(cmax, 0.0, p["em"], p["ka_affinity"], p["tau"] / 2))
    return Summary(
        "peak effect with half the receptors / full",
        halved / peak,
        "",
        t,
        effect,
        "effect (% of system max)",
        when,
    )


class EffectSite(Typical):
    # Effect compartment (Sheiner et al. 1979, Clin Pharmacol Ther 25:358):
    # equilibration half-life ln 2 / ke0 = 1.4 h.
    dynamics = EffectCompartment()
    values = dict(ka=1.0, cl=5.0, v=50.0, ke0=0.5, e0=0.0, emax=100.0, ec50=1.0)

    def observe(self, amounts, p):
        return pmx.Additive(emax(amounts.effect, p["e0"], p["emax"], p["ec50"]), self.sd)


def effect_compartment() -> Summary:
    """200 mg IV bolus (CMT 2): time of the peak effect (hysteresis)."""
    t, effect = typical_profile(
        EffectSite(), pmx.Regimen.bolus(200.0, cmt=2).sample(np.arange(0, 24.01, 0.02))
    )
    when, _ = extremum(t, effect)
    return Summary("time of peak effect after an IV bolus", when, "h", t, effect, "effect", when)


# --------------------------------------------------------------------------------
# Indirect response, myelosuppression, disease and cell kinetics
# --------------------------------------------------------------------------------

# Indirect response (Dayneka, Garg & Jusko 1993, J Pharmacokinet Biopharm
# 21:457): response half-life ln 2 / kout = 6.9 h, baseline 100.
IDR = ORAL_PK | dict(kin=10.0, kout=0.1)
IDR_DRUG = {
    1: dict(imax=0.9, ic50=1.0),
    2: dict(imax=0.9, ic50=1.0),
    3: dict(emax=2.0, ec50=1.0),
    4: dict(emax=2.0, ec50=1.0),
}


def _idr_model(kind: int) -> type[Typical]:
    class IDRModel(Typical):
        dynamics = IndirectResponse(kind=kind)
        values = IDR | IDR_DRUG[kind]

        def observe(self, amounts, p):
            return pmx.Additive(amounts.response, self.sd)

    IDRModel.__name__ = IDRModel.__qualname__ = f"IndirectResponse{kind}"
    return IDRModel


IDR_MODELS = {kind: _idr_model(kind) for kind in (1, 2, 3, 4)}


def _indirect_response(kind: int) -> Summary:
    model = IDR_MODELS[kind]()
    t, response = typical_profile(model, pmx.Regimen.oral(200.0).sample(np.arange(0, 96.01, 0.05)))
    down = kind in (1, 4)
    when, value = extremum(t, response, "min" if down else "max")
    baseline = IDR["kin"] / IDR["kout"]
    word = "nadir" if down else "peak"
    return Summary(
        f"IDR {kind}: {word} of the response (% of baseline) at {when:.1f} h",
        100.0 * value / baseline,
        "%",
        t,
        response,
        "response",
        when,
    )


def idr1() -> Summary:
    """Inhibition of production: nadir and its time after 200 mg orally."""
    return _indirect_response(1)


def idr2() -> Summary:
    """Inhibition of loss: peak and its time."""
    return _indirect_response(2)


def idr3() -> Summary:
    """Stimulation of production: peak and its time."""
    return _indirect_response(3)


def idr4() -> Summary:
    """Stimulation of loss: nadir and its time."""
    return _indirect_response(4)


class Docetaxel(Typical):
    # Friberg et al. 2002 (J Clin Oncol 20:4713), docetaxel: MTT 89 h, gamma
    # 0.16, slope 8.6 /uM, ANC0 5.05e9/L.  PK reduced to one compartment in umol
    # and h with the clinical AUC (~5.7 uM h after 100 mg/m2, 1.8 m2: 223 umol).
    dynamics = Friberg()
    values = dict(ka=1.0, cl=40.0, v=20.0, circ0=5.05, mtt=89.0, gamma=0.16, slope=8.6)

    def observe(self, amounts, p):  # neutrophils, 1e9/L
        return pmx.Additive(amounts.circ, self.sd)


def friberg() -> Summary:
    """223 umol (180 mg docetaxel) as a 1-h infusion: neutrophil nadir and its day."""
    regimen = pmx.Regimen.infusion(223.0, duration=1.0, cmt=2).sample(np.arange(0, 504.1, 1.0))
    t, anc = typical_profile(Docetaxel(), regimen)
    when, nadir = extremum(t, anc, "min")
    return Summary(
        f"ANC nadir (1e9/L) on day {when / 24:.1f}",
        nadir,
        "1e9/L",
        t / 24,
        anc,
        "ANC (1e9/L)",
        when / 24,
    )


# Tumour growth inhibition in days and mm^3 (a mouse xenograft, after Simeoni et
# al. 2004, Cancer Res 64:1094): doubling ~5 days early on, a 4-week course of
# daily oral doses, kill signal delayed through 3 transit compartments.
TUMOUR = dict(ka=10.0, cl=2.0, v=1.0, kg=0.08, tsmax=3000.0, ts0=100.0, ktr=0.5, kkill=0.4)
TUMOUR_REGIMEN = pmx.Regimen.oral(2.0, every=1.0, n=28).sample(np.arange(0, 84.01, 0.5))


def untreated_tumour(t, growth: str, p=TUMOUR):
    """Closed forms of the untreated tumour (TumourGrowth's docstring)."""
    if growth == "gompertz":
        return p["tsmax"] * np.exp(np.log(p["ts0"] / p["tsmax"]) * np.exp(-p["kg"] * t))
    return p["tsmax"] / (1.0 + (p["tsmax"] / p["ts0"] - 1.0) * np.exp(-p["kg"] * t))


def _tumour_model(growth: str) -> type[Typical]:
    class TumourModel(Typical):
        dynamics = TumourGrowth(growth=growth)
        values = TUMOUR

        def observe(self, amounts, p):
            return pmx.Additive(amounts.tumour, self.sd)

    TumourModel.__name__ = TumourModel.__qualname__ = f"Tumour{growth.capitalize()}"
    return TumourModel


TUMOUR_MODELS = {growth: _tumour_model(growth) for growth in ("gompertz", "logistic")}


# With the same constants the two laws answer differently: Gompertz growth is
# fastest when the tumour is small (kg ln(tsmax / TS)), so the kill barely
# dents it and it regrows within weeks, while the logistic tumour, growing at
# most at kg, is nearly eradicated.
def _tumour(growth: str) -> Summary:
    t, size = typical_profile(TUMOUR_MODELS[growth](), TUMOUR_REGIMEN)
    at_week_12 = size[-1] / untreated_tumour(t[-1], growth)
    return Summary(
        f"{growth} tumour at week 12, treated / untreated",
        float(at_week_12),
        "",
        t,
        size,
        "tumour (mm^3)",
    )


def tumour_gompertz() -> Summary:
    """Daily dosing for 4 weeks: tumour size at week 12 relative to untreated."""
    return _tumour("gompertz")


def tumour_logistic() -> Summary:
    """The same with logistic growth."""
    return _tumour("logistic")


class Tisagenlecleucel(Typical):
    # CAR-T kinetics (after Stein et al. 2019, CPT Pharmacometrics Syst
    # Pharmacol 8:285, and Liu et al. 2021), days and cells: expansion, then
    # contraction with a memory pool; 1e8 tumour cells at infusion.
    dynamics = CarT()
    values = dict(
        rho=0.9,
        alpha=0.3,
        kem=0.05,
        kme=0.02,
        beta=0.005,
        t50=1e7,
        kg=0.03,
        tsmax=1e10,
        kkill=2e-8,
        ts0=1e8,
    )

    def observe(self, amounts, p):  # CAR-T cells in blood (effector + memory)
        return pmx.Additive(amounts.effector + amounts.memory, self.sd)


def cart() -> Summary:
    """1e6 CAR-T cells infused at day 0: day of peak expansion."""
    t, cells = typical_profile(
        Tisagenlecleucel(), pmx.Regimen.bolus(1e6).sample(np.arange(0, 120.01, 0.25))
    )
    when, peak = extremum(np.asarray(t), np.log(cells))
    return Summary(
        f"day of peak expansion ({math.exp(peak) / 1e6:.0f}-fold the dose)",
        when,
        "day",
        t,
        cells,
        "CAR-T cells",
        when,
    )


class Autoantibody(Typical):
    # Autoantibody after B-cell depletion (e.g. rituximab; after the plateau
    # argument of long-lived plasma cells): IgG half-life ~23 days, 40% of the
    # production from drug-insensitive long-lived plasma cells; days, mg, L.
    dynamics = BiomarkerPlateau()
    values = dict(ka=5.0, cl=0.3, v=3.0, kdep=0.05, krec=0.01, kout=0.03, b0=100.0, bplat=40.0)

    def observe(self, amounts, p):
        return pmx.Additive(amounts.biomarker, self.sd)


def biomarker_plateau() -> Summary:
    """1000 mg IV (CMT 2) at days 0 and 14: how close does the biomarker come to
    its plateau before the producers recover?"""
    regimen = pmx.Regimen.bolus(1000.0, every=14.0, n=2, cmt=2).sample(np.arange(0, 168.1, 1.0))
    t, marker = typical_profile(Autoantibody(), regimen)
    when, nadir = extremum(t, marker, "min")
    return Summary(
        f"biomarker nadir (% of baseline; plateau 40%) on day {when:.0f}",
        100 * nadir / Autoantibody.values["b0"],
        "%",
        t,
        marker,
        "biomarker",
        when,
    )


REGISTRY: dict[str, Callable[[], Summary]] = {
    "mm": michaelis_menten,
    "mixed_elimination": mixed_elimination,
    "mixed_elimination_oral": mixed_elimination_oral,
    "mixed_elimination_2cpt": mixed_elimination_2cpt,
    "transit": transit,
    "savic_transit": savic_transit,
    "tmdd_full": tmdd_full,
    "tmdd_qss": tmdd_qss,
    "tmdd_2cpt": tmdd_2cpt,
    "tmdd_mm": tmdd_mm,
    "parent_metabolite": parent_metabolite,
    "parent_metabolite_oral": parent_metabolite_oral,
    "pbpk": pbpk,
    "emax": emax_direct,
    "sigmoid_emax": sigmoid_emax_direct,
    "operational": operational,
    "effect_compartment": effect_compartment,
    "idr1": idr1,
    "idr2": idr2,
    "idr3": idr3,
    "idr4": idr4,
    "friberg": friberg,
    "tumour_gompertz": tumour_gompertz,
    "tumour_logistic": tumour_logistic,
    "cart": cart,
    "biomarker_plateau": biomarker_plateau,
}


def plot_grid(summaries: dict[str, Summary], path: str | Path) -> Path:
    """One panel per model: the typical profile and the summary in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(summaries)
    columns = min(4, n)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, (name, s) in zip(axes.flat, summaries.items(), strict=False):
        ax.plot(s.time, s.profile)
        ax.set_title(f"{name}: {s.value:.3g} {s.unit}", fontsize=9)
        ax.set_ylabel(s.ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(models=None, plot: bool | str | Path = False, verbose: bool = True) -> dict[str, Summary]:
    """Run the registry entries named in ``models`` (all by default); print one
    line per model; with ``plot`` (True or a path), write the PNG grid
    (``model_library_tour.png`` for True).  Returns ``{name: Summary}``."""
    names = list(REGISTRY) if models is None else list(models)
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(REGISTRY)}")
    summaries = {}
    for name in names:
        summary = REGISTRY[name]()
        summaries[name] = summary
        if verbose:
            print(f"{name:>24}  {summary.label}: {summary.value:.4g} {summary.unit}")
    if plot:
        path = plot_grid(summaries, "model_library_tour.png" if plot is True else plot)
        if verbose:
            print(f"wrote {path}")
    return summaries


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="registry names (default: all)")
    parser.add_argument(
        "--plot",
        nargs="?",
        const=True,
        default=False,
        help="write a PNG grid (optionally its path)",
    )
    parser.add_argument("--list", action="store_true", help="list the registry and exit")
    args = parser.parse_args()
    if args.list:
        for name, entry in REGISTRY.items():
            print(f"{name:>24}  {entry.__doc__.splitlines()[0]}")
    else:
        main(args.models, args.plot)
