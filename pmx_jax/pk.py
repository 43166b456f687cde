"""Ready-made PK dynamics, NONMEM ADVAN equivalents (``pmx.pk.OneCompartmentOral()``).

Closed forms (fast path): ``OneCompartment`` (ADVAN1), ``OneCompartmentOral``
(ADVAN2), ``TwoCompartment`` (ADVAN3), ``TwoCompartmentOral`` (ADVAN4),
``ThreeCompartment`` (ADVAN11), ``ThreeCompartmentOral`` (ADVAN12).  The ``...ODE``
classes are the same systems integrated numerically (for checking, or as a
starting point for a custom ODE), and ``OneCompartmentOralMM`` has
Michaelis-Menten elimination.
"""

from .dynamics import (
    OneCompartment,
    OneCompartmentODE,
    OneCompartmentOral,
    OneCompartmentOralMM,
    OneCompartmentOralODE,
    ThreeCompartment,
    ThreeCompartmentODE,
    ThreeCompartmentOral,
    ThreeCompartmentOralODE,
    TwoCompartment,
    TwoCompartmentODE,
    TwoCompartmentOral,
    TwoCompartmentOralODE,
)

__all__ = [
    "OneCompartment",
    "OneCompartmentODE",
    "OneCompartmentOral",
    "OneCompartmentOralMM",
    "OneCompartmentOralODE",
    "ThreeCompartment",
    "ThreeCompartmentODE",
    "ThreeCompartmentOral",
    "ThreeCompartmentOralODE",
    "TwoCompartment",
    "TwoCompartmentODE",
    "TwoCompartmentOral",
    "TwoCompartmentOralODE",
]
