"""Ready-made PK dynamics, NONMEM ADVAN equivalents (``pmx.pk.OneCompartmentOral()``).

Closed forms (fast path): ``OneCompartment`` (ADVAN1), ``OneCompartmentOral``
(ADVAN2), ``TwoCompartment`` (ADVAN3), ``TwoCompartmentOral`` (ADVAN4),
``ThreeCompartment`` (ADVAN11), ``ThreeCompartmentOral`` (ADVAN12).  The ``...ODE``
classes are the same systems integrated numerically (for checking, or as a
starting point for a custom ODE), and ``OneCompartmentOralMM`` has
Michaelis-Menten elimination.

Library ODE models: Michaelis-Menten and mixed elimination
(``OneCompartmentMM``, ``OneCompartmentMixedElimination``,
``OneCompartmentOralMixedElimination``, ``TwoCompartmentMixedElimination``),
transit-compartment absorption
(``TransitAbsorption``, the continuous ``SavicTransit``), target-mediated
disposition (``TMDDFull``, ``TMDDQSS``, ``TMDDMM``; ``TwoCompartmentTMDDQSS``
with peripheral distribution), ``ParentMetabolite``
(``...Oral``) and a flow-limited ``MinimalPBPK``.  Zero-order absorption needs
no model: dose with RATE=-2 and return ``D1`` from ``individual``.  ``Pred``
has no compartments (NONMEM's ``$PRED``).
"""

from .dynamics import (
    TMDDMM,
    TMDDQSS,
    MinimalPBPK,
    OneCompartment,
    OneCompartmentMixedElimination,
    OneCompartmentMM,
    OneCompartmentODE,
    OneCompartmentOral,
    OneCompartmentOralMixedElimination,
    OneCompartmentOralMM,
    OneCompartmentOralODE,
    ParentMetabolite,
    ParentMetaboliteOral,
    Pred,
    SavicTransit,
    ThreeCompartment,
    ThreeCompartmentODE,
    ThreeCompartmentOral,
    ThreeCompartmentOralODE,
    TMDDFull,
    TransitAbsorption,
    TwoCompartment,
    TwoCompartmentMixedElimination,
    TwoCompartmentODE,
    TwoCompartmentOral,
    TwoCompartmentOralODE,
    TwoCompartmentTMDDQSS,
)

__all__ = [
    "MinimalPBPK",
    "OneCompartmentMixedElimination",
    "OneCompartmentMM",
    "OneCompartmentOralMixedElimination",
    "ParentMetabolite",
    "ParentMetaboliteOral",
    "Pred",
    "SavicTransit",
    "TMDDFull",
    "TMDDMM",
    "TMDDQSS",
    "TransitAbsorption",
    "TwoCompartmentMixedElimination",
    "TwoCompartmentTMDDQSS",
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
