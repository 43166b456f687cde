"""pmx_jax: differentiable population PK/PD (nonlinear mixed-effects) modelling in JAX.

The public surface, in the order of the data flow: read a NONMEM dataset, write
a model, predict and simulate.

Importing pmx_jax turns on JAX's 64-bit mode: estimation (Hessians, covariance)
needs double precision, and NONMEM users expect its digits.  Large simulations
can still ask for float32 arrays (``simulate(..., dtype="float32")``); set the
environment variable ``PMX_JAX_X64=0`` before importing to keep JAX's default.

Compiled programs are kept on disk (JAX's persistent compilation cache, in
``~/.cache/pmx_jax/jax``), so that a second run of a job compiles nothing;
``PMX_JAX_CACHE_DIR`` moves the folder, ``PMX_JAX_CACHE_DIR=off`` turns it off.
"""

import os as _os

import jax as _jax

if _os.environ.get("PMX_JAX_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

from . import bayes as bayes
from . import datasets as datasets
from . import diagnostics as diagnostics
from . import dynamics as dynamics
from . import estimation as estimation
from . import library as library
from . import likelihood as likelihood
from . import pk as pk
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._memory import ResultTooLargeError as ResultTooLargeError
from ._results import RESULTS as RESULTS
from .bayes import sample as sample
from .data import Dataset as Dataset
from .data import DatasetError as DatasetError
from .data import DatasetWarning as DatasetWarning
from .data import MissingCovariateError as MissingCovariateError
from .data import read_nonmem as read_nonmem
from .dynamics import AbstractDynamics as AbstractDynamics
from .dynamics import AbstractODE as AbstractODE
from .estimation import FisherInformation as FisherInformation
from .estimation import FitResult as FitResult
from .estimation import fisher_information as fisher_information
from .estimation import fit as fit
from .estimation import ofv as ofv
from .model import AbstractErrorModel as AbstractErrorModel
from .model import Additive as Additive
from .model import AmountsView as AmountsView
from .model import Combined1 as Combined1
from .model import Combined2 as Combined2
from .model import CovariateView as CovariateView
from .model import EtaView as EtaView
from .model import Exponential as Exponential
from .model import LogNormal as LogNormal
from .model import Model as Model
from .model import Normal as Normal
from .model import Omega as Omega
from .model import Proportional as Proportional
from .model import SelectedEndpoint as SelectedEndpoint
from .model import Theta as Theta
from .model import allometric as allometric
from .model import categorical as categorical
from .model import exponential as exponential
from .model import linear as linear
from .model import omega as omega
from .model import omega_block as omega_block
from .model import power as power
from .model import theta as theta
from .model._errors import CompartmentNameError as CompartmentNameError
from .model._errors import IndividualParametersError as IndividualParametersError
from .model._errors import ModelDefinitionError as ModelDefinitionError
from .model._errors import ObservationError as ObservationError
from .model._errors import OmegaNotPositiveDefiniteError as OmegaNotPositiveDefiniteError
from .model._errors import ThetaBoundsError as ThetaBoundsError
from .model._errors import UnknownEtaError as UnknownEtaError
from .simulation import Dose as Dose
from .simulation import Regimen as Regimen
from .simulation import SimulationResult as SimulationResult
from .simulation import predict as predict
from .simulation import simulate as simulate

ODE = AbstractODE  # the short name used in model definitions: class M(pmx.ODE)

enable_compilation_cache()  # before anything is compiled; PMX_JAX_CACHE_DIR=off turns it off

__version__ = "0.1.0"
