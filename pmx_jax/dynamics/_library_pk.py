"""Library of nonlinear and mechanistic PK dynamics (ODEs).

Every class is an :class:`~pmx_jax.dynamics.AbstractODE`: doses go into the
compartment whose 1-based position in ``compartments`` is the record's CMT, the
event engine adds infusions, lag times (``ALAG<n>``), bioavailability
(``F<n>``) and modelled rates/durations (``R<n>``/``D<n>``).  Parameters are
read from the dict returned by ``Model.individual`` under the names a
pharmacometrician uses (``cl``, ``v``, ``vm``, ``km``, ``ka``, ``ktr``, ...).

Units convention: amounts in dose units (mg or nmol), volumes in L, time in
the dataset's time unit (h); concentrations are amount / volume, clearances
volume / time, first-order rate constants 1 / time.  TMDD models keep the drug
in amount units (so doses enter unchanged) and the target in concentration
units; the parent-metabolite model counts the metabolite in parent-equivalent
(molar) amounts.

Zero-order absorption needs no dynamics of its own: dose with ``RATE=-2`` into
the central compartment of a closed-form ``OneCompartment`` and return the
modelled duration ``D1`` from ``individual``::

    class ZeroOrderAbsorption(pmx.Model):
        dynamics = pk.OneCompartment()

        def individual(self, eta, cov):
            return dict(cl=..., v=..., D1=jnp.exp(self.tdur + eta.dur))

(``F1`` and ``ALAG1`` combine with it as in NONMEM.)  The oral Michaelis-Menten
model is :class:`~pmx_jax.dynamics.OneCompartmentOralMM`.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jax.scipy.special import gammaln
from jaxtyping import Array, Float

from ._base import Params
from ._ode import AbstractODE


def _saturable(conc: Float[Array, ""], vm: Float[Array, ""], km: Float[Array, ""]):
    """Michaelis-Menten rate ``vm C / (km + C)`` (amount/time)."""
    return vm * conc / (km + conc)


# -- Michaelis-Menten elimination ------------------------------------------------------


class OneCompartmentMM(AbstractODE):
    """One compartment, IV, Michaelis-Menten elimination (ADVAN10-like).

    ``dA/dt = -VM C / (KM + C)``, ``C = A / V``.

    Parameters: ``vm`` (maximum elimination rate, amount/time), ``km``
    (concentration at half-maximal rate, amount/volume), ``v`` (volume).  For
    ``C << KM`` elimination is linear with ``CL = VM / KM``.  Oral dosing:
    :class:`~pmx_jax.dynamics.OneCompartmentOralMM`.
    """

    compartments: ClassVar[tuple[str, ...]] = ("central",)

    def rhs(self, t, amounts, p):
        (central,) = amounts
        conc = central / p["v"]
        return jnp.stack([-_saturable(conc, p["vm"], p["km"])])


class OneCompartmentMixedElimination(AbstractODE):
    """One compartment, IV, parallel linear and Michaelis-Menten elimination.

    ``dA/dt = -CL C - VM C / (KM + C)``, ``C = A / V``.

    Parameters: ``cl`` (linear clearance, volume/time), ``vm``, ``km``, ``v``
    as in :class:`OneCompartmentMM`.  Typical of monoclonal antibodies
    (non-specific linear clearance plus saturable target-mediated clearance).
    """

    compartments: ClassVar[tuple[str, ...]] = ("central",)

    def rhs(self, t, amounts, p):
        (central,) = amounts
        conc = central / p["v"]
        return jnp.stack([-p["cl"] * conc - _saturable(conc, p["vm"], p["km"])])


class OneCompartmentOralMixedElimination(AbstractODE):
    """One compartment, first-order absorption (``ka``, dose into CMT 1),
    parallel linear (``cl``) and Michaelis-Menten (``vm``, ``km``) elimination.

    ``dDepot/dt = -ka Depot``;
    ``dA/dt = ka Depot - CL C - VM C / (KM + C)``, ``C = A / V``.
    """

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central")

    def rhs(self, t, amounts, p):
        depot, central = amounts
        conc = central / p["v"]
        absorption = p["ka"] * depot
        elimination = p["cl"] * conc + _saturable(conc, p["vm"], p["km"])
        return jnp.stack([-absorption, absorption - elimination])


class TwoCompartmentMixedElimination(AbstractODE):
    """Two compartments, IV, parallel linear and Michaelis-Menten elimination
    from the central compartment (the usual monoclonal-antibody model when the
    target is not described explicitly).

    Compartments: ``central`` (dose here, CMT 1), ``peripheral``.  With
    ``C = central / V``::

        d central/dt    = -CL C - VM C / (KM + C) - Q C + Q / Vp peripheral
        d peripheral/dt =  Q C - Q / Vp peripheral

    Parameters: ``cl``, ``v``, ``q``, ``vp``, ``vm`` (amount/time), ``km``
    (concentration).  Limits of :class:`TwoCompartmentTMDDQSS`: with a constant
    total target (``kint = kdeg``) ``VM = kint Rtot V`` and ``KM = KSS``; with
    complex internalisation much faster than the free target's turnover at
    ``kint / KSS`` fixed (both large), ``VM = ksyn V`` (elimination limited by
    target synthesis) and ``KM = kdeg KSS / kint``.
    """

    compartments: ClassVar[tuple[str, ...]] = ("central", "peripheral")

    def rhs(self, t, amounts, p):
        central, peripheral = amounts
        conc = central / p["v"]
        distribution = p["q"] * conc - p["q"] / p["vp"] * peripheral
        elimination = p["cl"] * conc + _saturable(conc, p["vm"], p["km"])
        return jnp.stack([-elimination - distribution, distribution])


# -- transit-compartment absorption ----------------------------------------------------


class TransitAbsorption(AbstractODE):
    """Absorption through a chain of ``n_transit`` transit compartments, then a
    first-order absorption depot, into a one-compartment disposition.

    The dose goes into CMT 1 (``transit1``; the ``depot`` when
    ``n_transit == 0``)::

        dTransit_1/dt = -ktr Transit_1
        dTransit_i/dt = ktr Transit_{i-1} - ktr Transit_i        (i = 2..n)
        dDepot/dt     = ktr Transit_n - ka Depot
        dA/dt         = ka Depot - CL A / V

    Parameters: ``ktr`` (transit rate constant, 1/time), ``ka``, ``cl``, ``v``.
    The mean transit time to the depot is ``n_transit / ktr`` and the mean
    absorption time ``n_transit / ktr + 1 / ka``.  Savic et al. (2007) count
    the dosing compartment separately: their ``n`` transit compartments are
    ``n_transit = n + 1`` here (MTT = (n + 1) / ktr).  ``n_transit = 0`` is
    ``OneCompartmentOral``.  For a non-integer number of compartments, see
    :class:`SavicTransit`.
    """

    n_transit: int = eqx.field(static=True)
    is_linear: ClassVar[bool] = True

    def __check_init__(self):
        # equinox runs AbstractODE.__check_init__ as well (every class's own).
        if not (isinstance(self.n_transit, int) and self.n_transit >= 0):
            raise ValueError(
                f"TransitAbsorption: n_transit must be an integer >= 0, got {self.n_transit!r}"
            )

    @property
    def compartments(self) -> tuple[str, ...]:  # type: ignore[override]
        transits = tuple(f"transit{i + 1}" for i in range(self.n_transit))
        return (*transits, "depot", "central")

    def rhs(self, t, amounts, p):
        chain, depot, central = amounts[: self.n_transit], amounts[-2], amounts[-1]
        out_of_transit = p["ktr"] * chain
        into_transit = jnp.concatenate([jnp.zeros((1,), amounts.dtype), out_of_transit[:-1]])
        into_depot = out_of_transit[-1] if self.n_transit > 0 else jnp.zeros((), amounts.dtype)
        absorption = p["ka"] * depot
        elimination = p["cl"] * central / p["v"]
        return jnp.concatenate(
            [
                (into_transit - out_of_transit)[: self.n_transit],
                jnp.stack([into_depot - absorption, absorption - elimination]),
            ]
        )


class SavicTransit(AbstractODE):
    """Continuous transit-compartment absorption (Savic et al. 2007) for one
    dose, one-compartment disposition.

    The chain of ``n`` transit compartments is replaced by its output rate
    into the absorption depot, which allows non-integer ``n``::

        input(t)  = F Dose ktr^(n+1) / Gamma(n+1) tau^n exp(-ktr tau),  tau = t - tdose > 0
        dDepot/dt = input(t) - ka Depot
        dA/dt     = ka Depot - CL A / V
        dClock/dt = 1

    The rate needs the time since the dose, which the event engine does not
    pass to ``rhs`` (``t`` restarts at every event), so the state carries a
    ``clock`` compartment (time since the subject's first record, or since the
    last reset).  The dose is a parameter, not a dose record: ``dose``
    (amount), ``tdose`` (its time on that clock, usually 0) and optionally
    ``f`` (bioavailability, default 1); take ``dose`` from a covariate column
    when it varies by subject.  Parameters also ``n`` (number of transit
    compartments, may be non-integer >= 0), ``ktr``, ``ka``, ``cl``, ``v``.
    Mean transit time ``MTT = (n + 1) / ktr``.  With integer ``n`` this equals
    :class:`TransitAbsorption` with ``n_transit = n + 1``.  Not for steady state
    (the clock never settles) or multiple doses.
    """

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "clock")

    def rhs(self, t, amounts, p):
        depot, central, clock = amounts
        tau = clock - p["tdose"]
        after = tau > 0
        tau_safe = jnp.where(after, tau, 1.0)
        n, ktr = p["n"], p["ktr"]
        log_rate = (
            jnp.log(p.get("f", 1.0) * p["dose"])
            + (n + 1) * jnp.log(ktr)
            - gammaln(n + 1)
            + n * jnp.log(tau_safe)
            - ktr * tau_safe
        )
        transit_output = jnp.where(after, jnp.exp(log_rate), 0.0)
        absorption = p["ka"] * depot
        elimination = p["cl"] * central / p["v"]
        return jnp.stack(
            [transit_output - absorption, absorption - elimination, jnp.ones_like(clock)]
        )


# -- target-mediated drug disposition --------------------------------------------------


class TMDDFull(AbstractODE):
    """Full target-mediated drug disposition model (Mager & Jusko 2001), one
    compartment for the drug.

    Compartments: ``central`` (free drug amount, dose here, CMT 1), ``target``
    (free target concentration R), ``complex`` (drug-target complex
    concentration RL).  With ``L = central / V``::

        dL/dt  = -kel L - kon L R + koff RL              (kel = CL / V)
        dR/dt  = ksyn - kdeg R - kon L R + koff RL
        dRL/dt = kon L R - (koff + kint) RL

    Parameters: ``cl``, ``v``, ``kon`` (1/(concentration time)), ``koff``,
    ``kint``, ``kdeg`` (1/time), ``ksyn`` (concentration/time).  The target
    starts at its baseline ``R0 = ksyn / kdeg``.  Fast binding makes the system
    stiff: construct with ``stiff=True`` (and a larger ``max_steps``, e.g.
    65536, when ``kon`` is large: the implicit solver still needs many steps
    per day while the free target is nearly depleted).
    """

    compartments: ClassVar[tuple[str, ...]] = ("central", "target", "complex")

    def rhs(self, t, amounts, p):
        central, target, complex_ = amounts
        ligand = central / p["v"]
        binding = p["kon"] * ligand * target - p["koff"] * complex_
        return jnp.stack(
            [
                -p["cl"] * ligand - binding * p["v"],
                p["ksyn"] - p["kdeg"] * target - binding,
                binding - p["kint"] * complex_,
            ]
        )

    def initial_amounts(self, params: Params):
        baseline = params["ksyn"] / params["kdeg"]
        zero = jnp.zeros_like(baseline)
        return jnp.stack([zero, baseline, zero])


def _qss_free_concentration(total_drug, total_target, kss):
    """Free drug concentration ``L`` from the quasi-steady-state relation
    ``KSS = L R / RL`` with ``Ltot = L + RL``, ``Rtot = R + RL``: the positive
    root of ``L^2 - b L - KSS Ltot = 0``, ``b = Ltot - Rtot - KSS``, in a form
    without cancellation when ``b < 0`` (target in excess)."""
    b = total_drug - total_target - kss
    root = jnp.sqrt(b**2 + 4.0 * kss * total_drug)
    # 0.5 (b + root) == 2 kss Ltot / (root - b); the second form is stable for b < 0.
    return jnp.where(b >= 0, 0.5 * (b + root), 2.0 * kss * total_drug / (root - b))


class TMDDQSS(AbstractODE):
    """Quasi-steady-state approximation of TMDD (Gibiansky et al. 2008).

    Compartments: ``central`` (total drug amount, free + bound, dose here),
    ``target`` (total target concentration Rtot).  With ``Ltot = central / V``
    and the free concentration ``L`` from ``KSS = L R / RL``::

        L       = ((Ltot - Rtot - KSS) + sqrt((Ltot - Rtot - KSS)^2 + 4 KSS Ltot)) / 2
        dLtot/dt = -kel L - kint (Ltot - L)
        dRtot/dt = ksyn - kdeg Rtot - (kint - kdeg) (Ltot - L)

    Parameters: ``cl``, ``v``, ``kss`` (= (koff + kint) / kon, concentration),
    ``kint``, ``ksyn``, ``kdeg``.  ``Rtot`` starts at ``ksyn / kdeg``.  Observe
    the free concentration with :meth:`free_concentration`.  With ``kint = 0``
    (or fast binding) ``KSS`` is the dissociation constant ``KD = koff / kon``:
    the quasi-equilibrium (rapid binding) approximation.
    """

    compartments: ClassVar[tuple[str, ...]] = ("central", "target")

    @staticmethod
    def free_concentration(amounts, p: Params) -> Float[Array, ""]:
        """Free drug concentration ``L`` (amounts as an array or the model's
        amounts view with ``central`` and ``target``)."""
        central = amounts.central if hasattr(amounts, "central") else amounts[0]
        target = amounts.target if hasattr(amounts, "target") else amounts[1]
        return _qss_free_concentration(central / p["v"], target, p["kss"])

    def rhs(self, t, amounts, p):
        central, total_target = amounts
        total_drug = central / p["v"]
        free = _qss_free_concentration(total_drug, total_target, p["kss"])
        bound = total_drug - free
        return jnp.stack(
            [
                (-p["cl"] / p["v"] * free - p["kint"] * bound) * p["v"],
                p["ksyn"] - p["kdeg"] * total_target - (p["kint"] - p["kdeg"]) * bound,
            ]
        )

    def initial_amounts(self, params: Params):
        baseline = params["ksyn"] / params["kdeg"]
        return jnp.stack([jnp.zeros_like(baseline), baseline])


class TwoCompartmentTMDDQSS(AbstractODE):
    """QSS TMDD with a peripheral compartment for the free drug (monoclonal
    antibodies: target in the central compartment, linear distribution).

    Compartments: ``central`` (total drug amount, free + bound, dose here),
    ``peripheral`` (free drug amount), ``target`` (total target concentration
    Rtot, starting at ``ksyn / kdeg``).  With ``Ltot = central / V`` and ``L``
    from ``KSS`` as in :class:`TMDDQSS`::

        d central/dt    = -CL L - Q L + Q / Vp peripheral - kint (Ltot - L) V
        d peripheral/dt =  Q L - Q / Vp peripheral
        d Rtot/dt       = ksyn - kdeg Rtot - (kint - kdeg) (Ltot - L)

    Parameters: ``cl``, ``v``, ``q``, ``vp``, ``kss``, ``kint``, ``ksyn``,
    ``kdeg``.  Without target (``ksyn = 0``) it is the linear two-compartment
    model.  This is the structure of the nlmixr2 nimotuzumab example.
    """

    compartments: ClassVar[tuple[str, ...]] = ("central", "peripheral", "target")

    @staticmethod
    def free_concentration(amounts, p: Params) -> Float[Array, ""]:
        """Free drug concentration ``L`` in the central compartment (amounts as
        an array or the model's amounts view)."""
        central = amounts.central if hasattr(amounts, "central") else amounts[0]
        target = amounts.target if hasattr(amounts, "target") else amounts[2]
        return _qss_free_concentration(central / p["v"], target, p["kss"])

    def rhs(self, t, amounts, p):
        central, peripheral, total_target = amounts
        total_drug = central / p["v"]
        free = _qss_free_concentration(total_drug, total_target, p["kss"])
        bound = total_drug - free
        distribution = p["q"] * free - p["q"] / p["vp"] * peripheral
        return jnp.stack(
            [
                -p["cl"] * free - distribution - p["kint"] * bound * p["v"],
                distribution,
                p["ksyn"] - p["kdeg"] * total_target - (p["kint"] - p["kdeg"]) * bound,
            ]
        )

    def initial_amounts(self, params: Params):
        baseline = params["ksyn"] / params["kdeg"]
        zero = jnp.zeros_like(baseline)
        return jnp.stack([zero, zero, baseline])


class TMDDMM(AbstractODE):
    """Michaelis-Menten approximation of TMDD (Gibiansky et al. 2008).

    When the total target is constant (``kint = kdeg``, ``Rtot = Rmax``) and the
    bound drug is negligible next to the free drug, the QSS model reduces to
    linear plus saturable elimination of the free drug::

        dA/dt = -CL C - kint Rmax C / (KSS + C) V,    C = A / V

    i.e. :class:`OneCompartmentMixedElimination` with ``VM = kint Rmax V`` and
    ``KM = KSS``.  Parameters: ``cl``, ``v``, ``kint``, ``rmax`` (total target
    concentration), ``kss``.
    """

    compartments: ClassVar[tuple[str, ...]] = ("central",)

    def rhs(self, t, amounts, p):
        (central,) = amounts
        conc = central / p["v"]
        target_mediated = p["kint"] * p["rmax"] * conc / (p["kss"] + conc) * p["v"]
        return jnp.stack([-p["cl"] * conc - target_mediated])


# -- parent and metabolite -------------------------------------------------------------


def _parent_metabolite(parent, metabolite, p):
    elimination = p["cl"] * parent / p["v"]
    formation = p["fm"] * elimination
    return -elimination, formation - p["clm"] * metabolite / p["vm"]


class ParentMetabolite(AbstractODE):
    """Parent (one compartment, IV, dose into CMT 1) forming a metabolite
    (one compartment).

    ``dAp/dt = -CL Cp``, ``dAm/dt = fm CL Cp - CLm Cm`` with ``Cp = Ap / V``,
    ``Cm = Am / Vm``.  Parameters: ``cl`` (total parent clearance), ``v``,
    ``fm`` (fraction of parent clearance that forms the metabolite), ``clm``,
    ``vm`` (metabolite clearance and volume).  Amounts are molar or in parent
    equivalents (multiply by MW_metabolite / MW_parent for mass).  Only
    ``fm / vm`` and ``clm / vm`` are identifiable from plasma data without
    metabolite urinary recovery: fix one (often ``fm = 1``).
    """

    compartments: ClassVar[tuple[str, ...]] = ("central", "metabolite")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        central, metabolite = amounts
        return jnp.stack(_parent_metabolite(central, metabolite, p))


class ParentMetaboliteOral(AbstractODE):
    """:class:`ParentMetabolite` with first-order absorption (``ka``) from a
    depot (CMT 1); parent formed pre-systemically is not modelled."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "metabolite")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        depot, central, metabolite = amounts
        absorption = p["ka"] * depot
        parent_change, metabolite_change = _parent_metabolite(central, metabolite, p)
        return jnp.stack([-absorption, absorption + parent_change, metabolite_change])


# -- minimal PBPK ----------------------------------------------------------------------


class MinimalPBPK(AbstractODE):
    """Flow-limited minimal PBPK model: venous and arterial blood, liver,
    kidney and a lumped rest of body, with an oral depot draining into the liver.

    Compartments (CMT order): ``depot`` (oral doses, CMT 1), ``venous`` (IV
    doses, CMT 2), ``arterial``, ``liver``, ``kidney``, ``rest``.  Concentrations
    are in blood; each tissue is well stirred and its venous outflow is at
    ``C_T / Kp_T`` (``Kp``: tissue-to-blood partition coefficient).  Cardiac
    output ``Q_co = q_liver + q_kidney + q_rest`` runs from venous to arterial
    blood (lungs lumped into the blood pools)::

        dVenous/dt   = sum_T Q_T C_T/Kp_T - Q_co C_ven
        dArterial/dt = Q_co C_ven - Q_co C_art
        dLiver/dt    = Q_h (C_art - C_h/Kp_h) - fu CLint C_h/Kp_h + ka Depot
        dKidney/dt   = Q_k (C_art - C_k/Kp_k) - CLr C_k/Kp_k
        dRest/dt     = Q_r (C_art - C_r/Kp_r)
        dDepot/dt    = -ka Depot

    Parameters: flows ``q_liver``, ``q_kidney``, ``q_rest`` (volume/time);
    volumes ``v_venous``, ``v_arterial``, ``v_liver``, ``v_kidney``, ``v_rest``;
    partition coefficients ``kp_liver``, ``kp_kidney``, ``kp_rest``; ``fu``
    (unbound fraction in blood); ``clint`` (hepatic unbound intrinsic
    clearance); ``clr`` (renal clearance acting on the kidney outflow);
    ``ka`` (optional, default 0, only for oral doses).

    Hepatic clearance emerges as the well-stirred model
    ``CL_h = Q_h fu CLint / (Q_h + fu CLint)`` (extraction ``E_h = fu CLint /
    (Q_h + fu CLint)``, oral availability ``1 - E_h``), renal clearance as
    ``Q_k CLr / (Q_k + CLr)`` (``~ CLr`` when ``CLr << Q_k``).  Blood pools turn
    over in seconds: use ``stiff=True`` for simulations over hours.
    """

    compartments: ClassVar[tuple[str, ...]] = (
        "depot",
        "venous",
        "arterial",
        "liver",
        "kidney",
        "rest",
    )
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        depot, venous, arterial, liver, kidney, rest = amounts
        c_venous = venous / p["v_venous"]
        c_arterial = arterial / p["v_arterial"]
        out_liver = liver / (p["v_liver"] * p["kp_liver"])
        out_kidney = kidney / (p["v_kidney"] * p["kp_kidney"])
        out_rest = rest / (p["v_rest"] * p["kp_rest"])
        q_h, q_k, q_r = p["q_liver"], p["q_kidney"], p["q_rest"]
        cardiac_output = q_h + q_k + q_r
        absorption = p.get("ka", 0.0) * depot
        return jnp.stack(
            [
                -absorption,
                q_h * out_liver + q_k * out_kidney + q_r * out_rest - cardiac_output * c_venous,
                cardiac_output * (c_venous - c_arterial),
                q_h * (c_arterial - out_liver) - p["fu"] * p["clint"] * out_liver + absorption,
                q_k * (c_arterial - out_kidney) - p["clr"] * out_kidney,
                q_r * (c_arterial - out_rest),
            ]
        )
