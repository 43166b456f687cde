"""Model definition: parameters (THETA, OMEGA), the Model base class, named
views for the $PK/$ERROR blocks, residual error models and covariate effects."""

from ._covariates import allometric as allometric
from ._covariates import categorical as categorical
from ._covariates import exponential as exponential
from ._covariates import linear as linear
from ._covariates import power as power
from ._endpoints import SelectedEndpoint as SelectedEndpoint
from ._error import AbstractErrorModel as AbstractErrorModel
from ._error import Additive as Additive
from ._error import Combined1 as Combined1
from ._error import Combined2 as Combined2
from ._error import Exponential as Exponential
from ._error import LogNormal as LogNormal
from ._error import Normal as Normal
from ._error import Proportional as Proportional
from ._errors import CompartmentNameError as CompartmentNameError
from ._errors import IndividualParametersError as IndividualParametersError
from ._errors import ModelDefinitionError as ModelDefinitionError
from ._errors import ObservationError as ObservationError
from ._errors import OmegaNotPositiveDefiniteError as OmegaNotPositiveDefiniteError
from ._errors import ThetaBoundsError as ThetaBoundsError
from ._errors import UnknownEtaError as UnknownEtaError
from ._model import Model as Model
from ._natural import natural_names as natural_names
from ._natural import natural_vector as natural_vector
from ._parameters import Omega as Omega
from ._parameters import Theta as Theta
from ._parameters import omega as omega
from ._parameters import omega_block as omega_block
from ._parameters import theta as theta
from ._views import AmountsView as AmountsView
from ._views import CovariateView as CovariateView
from ._views import EtaView as EtaView
