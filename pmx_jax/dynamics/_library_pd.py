"""Pharmacodynamic, disease and cell-kinetic models of the model library.

Two kinds of building blocks:

- **Direct-effect functions** (:func:`emax`, :func:`sigmoid_emax`,
  :func:`operational_effect` and its derived :func:`operational_emax`,
  :func:`operational_ec50`): pure functions of a concentration, used in a
  model's ``observe`` (NONMEM ``$ERROR``), e.g.
  ``Additive(emax(amounts.central / p["v"], p["e0"], p["emax"], p["ec50"]), sd)``.
- **ODE systems** (:class:`EffectCompartment`, :class:`IndirectResponse`,
  :class:`Friberg`, :class:`TumourGrowth`, :class:`CarT`,
  :class:`BiomarkerPlateau`): :class:`~pmx_jax.dynamics.AbstractODE` subclasses
  whose drug input is a one-compartment PK model with first-order absorption,
  compartments ``depot`` (CMT 1: oral doses) and ``central`` (CMT 2: IV bolus or
  infusion), parameters ``ka``, ``cl``, ``v``, concentration ``C = central / v``.
  The pharmacodynamic states follow; they are in their own units (effect-site
  concentration, response, cells), not drug amounts.  Systems with a baseline
  (turnover, myelosuppression, tumour size) start at it: their
  :meth:`initial_amounts` return the steady state without drug, so a subject's
  record starts there (and restarts there after a reset, EVID 3/4).

The parameter names are the usual ones of the pharmacometric literature and are
listed in each class docstring; ``individual`` must return all of them.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._base import Params
from ._ode import AbstractODE

# --------------------------------------------------------------------------------
# Direct effect (functions of concentration)
# --------------------------------------------------------------------------------


def emax(c: ArrayLike, e0: ArrayLike, emax: ArrayLike, ec50: ArrayLike) -> Float[Array, "..."]:
    """Hyperbolic Emax model with a baseline:

        E = E0 + Emax C / (EC50 + C)

    ``e0``: effect without drug; ``emax``: maximal drug effect (negative for an
    inhibitory effect); ``ec50``: concentration giving half of ``emax``.

    >>> float(emax(2.0, e0=10.0, emax=50.0, ec50=2.0))
    35.0
    """
    c = jnp.asarray(c)
    return e0 + emax * c / (ec50 + c)


def sigmoid_emax(
    c: ArrayLike, e0: ArrayLike, emax: ArrayLike, ec50: ArrayLike, hill: ArrayLike
) -> Float[Array, "..."]:
    """Sigmoid Emax (Hill) model with a baseline:

        E = E0 + Emax C^hill / (EC50^hill + C^hill)

    ``hill`` (the Hill coefficient, gamma) sets the steepness; ``hill = 1`` is
    :func:`emax`.  Written as ``Emax / (1 + (EC50/C)^hill)`` so that ``C = 0``
    gives ``E0`` without a 0/0 and large powers do not overflow.

    >>> float(sigmoid_emax(3.0, e0=0.0, emax=100.0, ec50=3.0, hill=4.0))
    50.0
    """
    c = jnp.asarray(c)
    positive = c > 0
    ratio = jnp.where(positive, ec50 / jnp.where(positive, c, 1.0), 1.0)
    return e0 + jnp.where(positive, emax / (1.0 + ratio**hill), 0.0)


def operational_effect(
    c: ArrayLike,
    e0: ArrayLike,
    em: ArrayLike,
    ka_affinity: ArrayLike,
    tau: ArrayLike,
    n: ArrayLike = 1.0,
) -> Float[Array, "..."]:
    """Operational model of agonism (Black & Leff 1983) with a baseline:

        E = E0 + Em tau^n C^n / ((KA + C)^n + tau^n C^n)

    ``em``: maximal response of the system (not of the drug); ``ka_affinity``:
    the agonist-receptor dissociation constant KA (affinity, concentration
    units; not the absorption rate ``ka``); ``tau``: transducer ratio, efficacy
    times receptor density (``tau = R0 / KE``, see :func:`transducer_ratio`);
    ``n``: slope of the transducer function.  The drug's observed Emax and EC50
    follow from these (:func:`operational_emax`, :func:`operational_ec50`): a
    partial agonist has small ``tau``, and receptor loss lowers ``tau`` and so
    both Emax and potency.
    """
    c = jnp.asarray(c)
    stimulus = (tau * c) ** n
    return e0 + em * stimulus / ((ka_affinity + c) ** n + stimulus)


def transducer_ratio(receptor_density: ArrayLike, ke: ArrayLike) -> Float[Array, "..."]:
    """``tau = R0 / KE``: total receptor density over the concentration of
    agonist-receptor complex giving half the maximal system response."""
    return jnp.asarray(receptor_density) / ke


def operational_emax(em: ArrayLike, tau: ArrayLike, n: ArrayLike = 1.0) -> Float[Array, "..."]:
    """Observed maximal drug effect of the operational model:
    ``Emax = Em tau^n / (1 + tau^n)``."""
    tau_n = jnp.asarray(tau) ** n
    return em * tau_n / (1.0 + tau_n)


def operational_ec50(
    ka_affinity: ArrayLike, tau: ArrayLike, n: ArrayLike = 1.0
) -> Float[Array, "..."]:
    """Concentration giving half of :func:`operational_emax`:

        EC50 = KA / ((2 + tau^n)^(1/n) - 1)

    (solve ``E(C) = Emax/2``: ``(2 + tau^n) C^n = (KA + C)^n``); for ``n = 1``
    ``EC50 = KA / (1 + tau)``, and the operational curve is then exactly
    ``emax(c, e0, Emax, EC50)``.
    """
    tau_n = jnp.asarray(tau) ** n
    return ka_affinity / ((2.0 + tau_n) ** (1.0 / n) - 1.0)


# --------------------------------------------------------------------------------
# Drug input shared by the ODE systems
# --------------------------------------------------------------------------------


def _one_compartment_oral(
    depot: Float[Array, ""], central: Float[Array, ""], p: Params
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """Rates of change of ``depot`` and ``central`` (``ka``, ``cl``, ``v``)
    and the plasma concentration ``C = central / v``."""
    absorption = p["ka"] * depot
    conc = central / p["v"]
    return -absorption, absorption - p["cl"] * conc, conc


def _with_baseline(like: Float[Array, ""], n_zero: int, *baseline: ArrayLike) -> Array:
    """``[0] * n_zero + baseline`` as one float vector (initial amounts)."""
    dtype = jnp.result_type(float, like)
    values = [jnp.zeros((), dtype)] * n_zero + [jnp.asarray(b, dtype) for b in baseline]
    return jnp.stack(values)


# --------------------------------------------------------------------------------
# Effect compartment
# --------------------------------------------------------------------------------


class EffectCompartment(AbstractODE):
    """One-compartment PK with an effect compartment (Sheiner et al. 1979).

    The effect site is a hypothetical compartment of negligible volume that
    lags behind plasma (hysteresis):

        dCe/dt = ke0 (C - Ce),      C = central / v

    ``effect`` holds the effect-site concentration Ce (concentration units),
    starting at 0.  The effect is a direct function of Ce, written in
    ``observe``, e.g. ``sigmoid_emax(amounts.effect, p["e0"], p["emax"],
    p["ec50"], p["hill"])``; ``ln 2 / ke0`` is the equilibration half-life.

    Parameters: ``ka``, ``cl``, ``v``, ``ke0`` (1/time).  Doses: CMT 1
    (depot, oral) or CMT 2 (central, IV).
    """

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "effect")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        depot, central, effect = amounts
        d_depot, d_central, conc = _one_compartment_oral(depot, central, p)
        return jnp.stack([d_depot, d_central, p["ke0"] * (conc - effect)])


# --------------------------------------------------------------------------------
# Indirect response (turnover) models
# --------------------------------------------------------------------------------


def _drug_action(conc: Float[Array, ""], maximum: Array, half: Array, p: Params) -> Array:
    """``max C^h / (half^h + C^h)`` with the optional Hill coefficient ``hill``
    (default 1)."""
    if "hill" in p:
        return sigmoid_emax(conc, 0.0, maximum, half, p["hill"])
    return maximum * conc / (half + conc)


class IndirectResponse(AbstractODE):
    """The four indirect response (turnover) models (Dayneka, Garg & Jusko 1993).

    A response R is produced at zero-order rate ``kin`` and lost at first-order
    rate ``kout``; the drug, with plasma concentration C from one-compartment
    PK, inhibits or stimulates one of the two processes:

    ====  ======================  =====================================  =====================
    kind  drug action             dR/dt                                  steady state at C
    ====  ======================  =====================================  =====================
    1     inhibits production     kin (1 - I(C)) - kout R                R0 (1 - I(C))
    2     inhibits loss           kin - kout (1 - I(C)) R                R0 / (1 - I(C))
    3     stimulates production   kin (1 + S(C)) - kout R                R0 (1 + S(C))
    4     stimulates loss         kin - kout (1 + S(C)) R                R0 / (1 + S(C))
    ====  ======================  =====================================  =====================

    with ``I(C) = imax C / (ic50 + C)`` (``0 < imax <= 1``) and
    ``S(C) = emax C / (ec50 + C)``; if ``hill`` is among the parameters both
    become sigmoid (``C^hill / (ic50^hill + C^hill)``).  The response starts at
    its baseline ``R0 = kin / kout``.  (Warfarin and prothrombin complex
    activity: kind 1.)

    Parameters: ``ka``, ``cl``, ``v``, ``kin`` (response units/time), ``kout``
    (1/time), and ``imax``, ``ic50`` (kinds 1, 2) or ``emax``, ``ec50`` (kinds
    3, 4); optionally ``hill``.  Re-parameterise with ``kin = r0 * kout`` in
    ``individual`` to estimate the baseline directly.
    """

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "response")
    is_linear: ClassVar[bool] = False

    kind: Literal[1, 2, 3, 4] = eqx.field(default=1, static=True)

    def __check_init__(self):
        if self.kind not in (1, 2, 3, 4):
            raise ValueError(
                f"IndirectResponse: kind must be 1 (inhibition of kin), 2 (inhibition of "
                f"kout), 3 (stimulation of kin) or 4 (stimulation of kout); got {self.kind!r}"
            )

    def drug_effect(self, conc: Float[Array, ""], p: Params) -> Float[Array, ""]:
        """``I(C)`` for kinds 1 and 2, ``S(C)`` for kinds 3 and 4."""
        if self.kind in (1, 2):
            return _drug_action(conc, p["imax"], p["ic50"], p)
        return _drug_action(conc, p["emax"], p["ec50"], p)

    def rhs(self, t, amounts, p):
        depot, central, response = amounts
        d_depot, d_central, conc = _one_compartment_oral(depot, central, p)
        effect = self.drug_effect(conc, p)
        production, loss = p["kin"], p["kout"] * response
        if self.kind == 1:
            production = production * (1.0 - effect)
        elif self.kind == 2:
            loss = loss * (1.0 - effect)
        elif self.kind == 3:
            production = production * (1.0 + effect)
        else:
            loss = loss * (1.0 + effect)
        return jnp.stack([d_depot, d_central, production - loss])

    def initial_amounts(self, params: Params) -> Float[Array, " n_cmt"]:
        """No drug, response at baseline ``R0 = kin / kout``."""
        return _with_baseline(params["kin"], 2, params["kin"] / params["kout"])


# --------------------------------------------------------------------------------
# Myelosuppression
# --------------------------------------------------------------------------------


class Friberg(AbstractODE):
    """Semi-mechanistic myelosuppression model (Friberg et al. 2002).

    Proliferating cells (``prol``) mature through three transit compartments
    into circulating cells (``circ``, e.g. neutrophils); one rate constant
    ``ktr = 4 / mtt`` for the whole chain, so ``mtt`` is the mean maturation
    time from ``prol`` to ``circ``.  Circulating cells feed back on
    proliferation, and the drug (linear effect of plasma concentration) kills
    proliferating cells:

        Edrug      = slope C
        dProl/dt   = ktr Prol (1 - Edrug) (Circ0 / Circ)^gamma - ktr Prol
        dTransit1/dt = ktr (Prol - Transit1)
        dTransit2/dt = ktr (Transit1 - Transit2)
        dTransit3/dt = ktr (Transit2 - Transit3)
        dCirc/dt   = ktr (Transit3 - Circ)

    Every cell compartment starts at ``circ0``, the baseline count.

    Parameters: ``ka``, ``cl``, ``v``, ``circ0`` (cells/volume), ``mtt``
    (time), ``gamma`` (feedback exponent, ~0.17 in the original fits),
    ``slope`` (1/concentration).
    """

    compartments: ClassVar[tuple[str, ...]] = (
        "depot",
        "central",
        "prol",
        "transit1",
        "transit2",
        "transit3",
        "circ",
    )
    is_linear: ClassVar[bool] = False

    def rhs(self, t, amounts, p):
        depot, central, prol, transit1, transit2, transit3, circ = amounts
        d_depot, d_central, conc = _one_compartment_oral(depot, central, p)
        ktr = 4.0 / p["mtt"]
        feedback = (p["circ0"] / circ) ** p["gamma"]
        drug = p["slope"] * conc
        return jnp.stack(
            [
                d_depot,
                d_central,
                ktr * prol * (1.0 - drug) * feedback - ktr * prol,
                ktr * (prol - transit1),
                ktr * (transit1 - transit2),
                ktr * (transit2 - transit3),
                ktr * (transit3 - circ),
            ]
        )

    def initial_amounts(self, params: Params) -> Float[Array, " n_cmt"]:
        """No drug, every cell compartment at ``circ0``."""
        return _with_baseline(params["circ0"], 2, *([params["circ0"]] * 5))


# --------------------------------------------------------------------------------
# Tumour growth inhibition
# --------------------------------------------------------------------------------


class TumourGrowth(AbstractODE):
    """Tumour growth with drug kill delayed by a transit chain (after Simeoni
    et al. 2004 and Lobo & Balthasar 2002).

    The plasma concentration C passes through ``n_transit`` transit
    compartments (signal ``s_1 ... s_n``, concentration units) before it kills
    tumour cells, which grow by a Gompertz or logistic law towards the
    carrying capacity ``tsmax``:

        ds_1/dt = ktr (C - s_1),   ds_i/dt = ktr (s_(i-1) - s_i)
        dTS/dt  = growth(TS) - kkill s_n TS
        growth  = kg TS ln(tsmax / TS)        (growth="gompertz")
                  kg TS (1 - TS / tsmax)      (growth="logistic")

    The mean delay of the signal is ``n_transit / ktr``.  Without drug,
    ``TS(t) = tsmax exp(ln(ts0 / tsmax) e^(-kg t))`` (Gompertz) and
    ``TS(t) = tsmax / (1 + (tsmax / ts0 - 1) e^(-kg t))`` (logistic).

    Parameters: ``ka``, ``cl``, ``v``, ``kg`` (1/time), ``tsmax`` and ``ts0``
    (tumour size, e.g. mm or mm^3, at capacity and at time 0), ``ktr``
    (1/time), ``kkill`` (1/(concentration time)).  Compartment names:
    ``depot``, ``central``, ``signal1`` ... ``signal<n>``, ``tumour``.
    """

    growth: Literal["gompertz", "logistic"] = eqx.field(default="gompertz", static=True)
    n_transit: int = eqx.field(default=3, static=True)
    is_linear: ClassVar[bool] = False

    @property
    def compartments(self) -> tuple[str, ...]:
        signals = tuple(f"signal{i + 1}" for i in range(self.n_transit))
        return ("depot", "central", *signals, "tumour")

    def __check_init__(self):
        if self.growth not in ("gompertz", "logistic"):
            raise ValueError(
                f"TumourGrowth: growth must be 'gompertz' or 'logistic', got {self.growth!r}"
            )
        if self.n_transit < 1:
            raise ValueError(f"TumourGrowth: n_transit must be >= 1, got {self.n_transit}")

    def growth_rate(self, tumour: Float[Array, ""], p: Params) -> Float[Array, ""]:
        """Net growth of the untreated tumour (size/time)."""
        if self.growth == "gompertz":
            return p["kg"] * tumour * jnp.log(p["tsmax"] / tumour)
        return p["kg"] * tumour * (1.0 - tumour / p["tsmax"])

    def rhs(self, t, amounts, p):
        depot, central = amounts[0], amounts[1]
        signals, tumour = amounts[2:-1], amounts[-1]
        d_depot, d_central, conc = _one_compartment_oral(depot, central, p)
        upstream = jnp.concatenate([conc[None], signals[:-1]])
        d_signals = p["ktr"] * (upstream - signals)
        d_tumour = self.growth_rate(tumour, p) - p["kkill"] * signals[-1] * tumour
        return jnp.concatenate([jnp.stack([d_depot, d_central]), d_signals, d_tumour[None]])

    def initial_amounts(self, params: Params) -> Float[Array, " n_cmt"]:
        """No drug, no signal, tumour size ``ts0``."""
        return _with_baseline(params["ts0"], 2 + self.n_transit, params["ts0"])


# --------------------------------------------------------------------------------
# CAR-T cellular kinetics
# --------------------------------------------------------------------------------


class CarT(AbstractODE):
    """CAR-T cellular kinetics with effector and memory cells and the tumour
    (simplified from Stein et al. 2019 and Liu et al. 2021).

    Effector CAR-T cells ``effector`` (E) expand on antigen, contract, and
    convert to long-lived memory cells ``memory`` (M), which re-expand into
    effectors on antigen; effectors kill tumour cells ``tumour`` (T), which grow
    logistically.  Antigen stimulation saturates with tumour burden,
    ``f(T) = T / (t50 + T)``:

        dE/dt = rho f(T) E - alpha E - kem E + kme f(T) M
        dM/dt = kem E - kme f(T) M - beta M
        dT/dt = kg T (1 - T / tsmax) - kkill E T

    Every flow is proportional to the population it leaves, so all three stay
    non-negative; with ``alpha = beta = 0`` and no expansion (``rho = 0``),
    E + M is conserved.  Without tumour the cells decline as a linear
    two-compartment system (contraction ``alpha + kem``, memory decay ``beta``).

    Parameters: ``rho`` (expansion, 1/time), ``alpha`` (effector contraction,
    1/time), ``kem`` (effector-to-memory conversion, 1/time), ``kme`` (memory
    re-activation, 1/time), ``beta`` (memory decay, 1/time), ``t50`` (tumour
    cells giving half-maximal stimulation), ``kg`` (1/time), ``tsmax`` (tumour
    capacity), ``kkill`` (1/(cells time)), ``ts0`` (tumour at time 0).  The
    CAR-T infusion is a dose into CMT 1 (effector), in cells.
    """

    compartments: ClassVar[tuple[str, ...]] = ("effector", "memory", "tumour")
    is_linear: ClassVar[bool] = False

    def rhs(self, t, amounts, p):
        effector, memory, tumour = amounts
        stimulation = tumour / (p["t50"] + tumour)
        to_memory = p["kem"] * effector
        reactivation = p["kme"] * stimulation * memory
        d_effector = (p["rho"] * stimulation - p["alpha"]) * effector - to_memory + reactivation
        d_memory = to_memory - reactivation - p["beta"] * memory
        d_tumour = p["kg"] * tumour * (1.0 - tumour / p["tsmax"]) - p["kkill"] * effector * tumour
        return jnp.stack([d_effector, d_memory, d_tumour])

    def initial_amounts(self, params: Params) -> Float[Array, " n_cmt"]:
        """No CAR-T cells yet, tumour at ``ts0``."""
        return _with_baseline(params["ts0"], 2, params["ts0"])


# --------------------------------------------------------------------------------
# Biomarker decaying to a plateau
# --------------------------------------------------------------------------------


class BiomarkerPlateau(AbstractODE):
    """Turnover biomarker that falls to a non-zero plateau when the drug
    depletes part of its production (e.g. autoantibodies after B-cell
    depletion: short-lived plasma cells derive from B cells, long-lived plasma
    cells do not).

    A fraction ``producers`` (P, 1 at baseline) of the drug-sensitive
    production remains; the drug depletes it (second order in concentration and
    cells) and it recovers at ``krec`` (0: no recovery).  The biomarker B turns
    over at ``kout`` between a drug-insensitive production (giving the plateau
    ``bplat``) and the sensitive part (``b0 - bplat`` at baseline):

        dP/dt = -kdep C P + krec (1 - P)
        dB/dt = kout (bplat + (b0 - bplat) P - B)

    Once P is depleted, ``dB/dt = -kout (B - bplat)``:
    ``B(t) = bplat + (B(t1) - bplat) e^(-kout (t - t1))``.

    Parameters: ``ka``, ``cl``, ``v``, ``kdep`` (1/(concentration time)),
    ``krec`` (1/time), ``kout`` (1/time), ``b0`` (baseline), ``bplat``
    (plateau under full depletion, ``0 <= bplat <= b0``).
    """

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "producers", "biomarker")
    is_linear: ClassVar[bool] = False

    def rhs(self, t, amounts, p):
        depot, central, producers, biomarker = amounts
        d_depot, d_central, conc = _one_compartment_oral(depot, central, p)
        d_producers = -p["kdep"] * conc * producers + p["krec"] * (1.0 - producers)
        target = p["bplat"] + (p["b0"] - p["bplat"]) * producers
        return jnp.stack([d_depot, d_central, d_producers, p["kout"] * (target - biomarker)])

    def initial_amounts(self, params: Params) -> Float[Array, " n_cmt"]:
        """No drug, producers intact (1), biomarker at ``b0``."""
        return _with_baseline(params["b0"], 2, 1.0, params["b0"])
