"""Ready-to-use population models for the bundled example datasets, and for
public reference datasets that are not bundled.

``Theophylline``: one compartment, first-order absorption, log-normal IIV on
KA, CL and V, additive error (the classic nlmixr2 ``theo_sd`` model).
``Phenobarbital``: one compartment IV, CL and V proportional to weight, V
larger when the Apgar score is below 5, proportional error (NONMEM's ``pheno``).
``Nimotuzumab``: two-compartment quasi-steady-state TMDD on the log scale (the
nlmixr2 ``nimoData`` example; the data are not bundled) and ``NimotuzumabLinear``,
its nested linear two-compartment model; ``NimotuzumabMM``, two compartments
with Michaelis-Menten elimination, the limit the QSS fit drifts to on these data.
"""

from ._examples import Nimotuzumab as Nimotuzumab
from ._examples import NimotuzumabLinear as NimotuzumabLinear
from ._examples import NimotuzumabMM as NimotuzumabMM
from ._examples import Phenobarbital as Phenobarbital
from ._examples import Theophylline as Theophylline
