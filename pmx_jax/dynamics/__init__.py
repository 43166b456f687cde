"""Dynamics between dosing events: closed-form compartment models and ODEs."""

from ._base import AbstractDynamics as AbstractDynamics
from ._closed_form import AbstractLinearCompartments as AbstractLinearCompartments
from ._closed_form import OneCompartment as OneCompartment
from ._closed_form import OneCompartmentOral as OneCompartmentOral
from ._closed_form import ThreeCompartment as ThreeCompartment
from ._closed_form import ThreeCompartmentOral as ThreeCompartmentOral
from ._closed_form import TwoCompartment as TwoCompartment
from ._closed_form import TwoCompartmentOral as TwoCompartmentOral
from ._ode import AbstractODE as AbstractODE
from ._ode_models import OneCompartmentODE as OneCompartmentODE
from ._ode_models import OneCompartmentOralMM as OneCompartmentOralMM
from ._ode_models import OneCompartmentOralODE as OneCompartmentOralODE
from ._ode_models import ThreeCompartmentODE as ThreeCompartmentODE
from ._ode_models import ThreeCompartmentOralODE as ThreeCompartmentOralODE
from ._ode_models import TwoCompartmentODE as TwoCompartmentODE
from ._ode_models import TwoCompartmentOralODE as TwoCompartmentOralODE
