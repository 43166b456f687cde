"""Textbook compartment models written as ODEs.

The linear ones mirror the closed forms in :mod:`._closed_form` (same
compartments, same parameter names: ``ka``, ``cl``, ``v``, ``q``, ``vp``,
``q2``, ``vp2``), so the ODE path can be checked against the exact solution
and a user can switch a model from closed form to ODE by changing one class.
All amounts are in amount units; concentrations are amount / volume.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import Params
from ._ode import AbstractODE


def _distribution(
    central: Float[Array, ""],
    peripherals: list[Float[Array, ""]],
    p: Params,
    exchanges: tuple[tuple[str, str], ...],
) -> tuple[Float[Array, ""], list[Float[Array, ""]]]:
    """Net flow out of the central compartment by elimination (``cl``) and the
    inter-compartmental clearances ``(q, vp)`` to each peripheral, and the rate
    of change of each peripheral."""
    conc = central / p["v"]
    central_change = -p["cl"] * conc
    peripheral_changes = []
    for amount, (q, vp) in zip(peripherals, exchanges, strict=True):
        flow = p[q] * (conc - amount / p[vp])  # central -> peripheral, amount/time
        central_change = central_change - flow
        peripheral_changes.append(flow)
    return central_change, peripheral_changes


_TWO = (("q", "vp"),)
_THREE = (("q", "vp"), ("q2", "vp2"))


class OneCompartmentODE(AbstractODE):
    """One compartment, IV (ADVAN1 as an ODE). Parameters: ``cl``, ``v``."""

    compartments: ClassVar[tuple[str, ...]] = ("central",)
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        (central,) = amounts
        change, _ = _distribution(central, [], p, ())
        return jnp.stack([change])


class OneCompartmentOralODE(AbstractODE):
    """One compartment, first-order absorption (ADVAN2 as an ODE).
    Parameters: ``ka``, ``cl``, ``v``."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        depot, central = amounts
        absorption = p["ka"] * depot
        change, _ = _distribution(central, [], p, ())
        return jnp.stack([-absorption, absorption + change])


class TwoCompartmentODE(AbstractODE):
    """Two compartments, IV (ADVAN3 as an ODE). Parameters: ``cl``, ``v``,
    ``q``, ``vp``."""

    compartments: ClassVar[tuple[str, ...]] = ("central", "peripheral")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        central, peripheral = amounts
        change, (to_peripheral,) = _distribution(central, [peripheral], p, _TWO)
        return jnp.stack([change, to_peripheral])


class TwoCompartmentOralODE(AbstractODE):
    """Two compartments, first-order absorption (ADVAN4 as an ODE).
    Parameters: ``ka``, ``cl``, ``v``, ``q``, ``vp``."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "peripheral")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        depot, central, peripheral = amounts
        absorption = p["ka"] * depot
        change, (to_peripheral,) = _distribution(central, [peripheral], p, _TWO)
        return jnp.stack([-absorption, absorption + change, to_peripheral])


class ThreeCompartmentODE(AbstractODE):
    """Three compartments, IV (ADVAN11 as an ODE). Parameters: ``cl``, ``v``,
    ``q``, ``vp``, ``q2``, ``vp2``."""

    compartments: ClassVar[tuple[str, ...]] = ("central", "peripheral1", "peripheral2")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        central, peripheral1, peripheral2 = amounts
        change, flows = _distribution(central, [peripheral1, peripheral2], p, _THREE)
        return jnp.stack([change, *flows])


class ThreeCompartmentOralODE(AbstractODE):
    """Three compartments, first-order absorption (ADVAN12 as an ODE).
    Parameters: ``ka``, ``cl``, ``v``, ``q``, ``vp``, ``q2``, ``vp2``."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "peripheral1", "peripheral2")
    is_linear: ClassVar[bool] = True

    def rhs(self, t, amounts, p):
        depot, central, peripheral1, peripheral2 = amounts
        absorption = p["ka"] * depot
        change, flows = _distribution(central, [peripheral1, peripheral2], p, _THREE)
        return jnp.stack([-absorption, absorption + change, *flows])


class OneCompartmentOralMM(AbstractODE):
    """One compartment, first-order absorption, Michaelis-Menten elimination
    (saturable metabolism, e.g. phenytoin).  Parameters: ``ka`` (1/time),
    ``vm`` (maximum elimination rate, amount/time), ``km`` (concentration at
    half-maximal rate, amount/volume), ``v`` (volume)."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central")
    is_linear: ClassVar[bool] = False

    def rhs(self, t, amounts, p):
        depot, central = amounts
        absorption = p["ka"] * depot
        conc = central / p["v"]
        elimination = p["vm"] * conc / (p["km"] + conc)
        return jnp.stack([-absorption, absorption - elimination])
