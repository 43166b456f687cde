"""pmx_jax: differentiable population PK/PD (nonlinear mixed-effects) modelling in JAX.

The public surface, in the order of the data flow: read a NONMEM dataset, write
a model, predict and simulate.

Importing pmx_jax turns on JAX's 64-bit mode: estimation (Hessians, covariance)
needs double precision, and NONMEM users expect its digits.  Large simulations
can still ask for float32 arrays (``simulate(..., dtype="float32")``); set the
environment variable ``PMX_JAX_X64=0`` before importing to keep JAX's default.

Importing pmx_jax is quick: each part (and JAX, NumPyro, matplotlib) loads
the first time it is used (``pmx.fit`` loads estimation, ``pmx.sample`` the
Bayesian layer).

Compiled programs are kept on disk (JAX's persistent compilation cache, in
``~/.cache/pmx_jax/jax``), so that a second run of a job compiles nothing;
``PMX_JAX_CACHE_DIR`` moves the folder, ``PMX_JAX_CACHE_DIR=off`` turns it off.
"""

import importlib as _importlib
from typing import TYPE_CHECKING

from . import _cache

# Before JAX loads (or at once, if it is loaded): 64-bit mode, the persistent
# compilation cache (PMX_JAX_CACHE_DIR=off turns it off), the CPU compiler
# options and the quiet cache reads of pmx_jax._cache.
_cache.enable_x64()
_cache.faster_cpu_compilation()
if _cache.enable_compilation_cache() is not None:
    _cache.quiet_cache_reads()

__version__ = "0.1.0"

_SUBMODULES = (
    "bayes",
    "data",
    "datasets",
    "diagnostics",
    "dynamics",
    "estimation",
    "events",
    "library",
    "likelihood",
    "model",
    "nonmem",
    "pk",
    "simulation",
)
# Public name -> the module that defines it (loaded on first use).
_NAMES = {
    "enable_compilation_cache": "._cache",
    "ResultTooLargeError": "._memory",
    "RESULTS": "._results",
    "sample": ".bayes",
    "Dataset": ".data",
    "DatasetError": ".data",
    "DatasetWarning": ".data",
    "MissingCovariateError": ".data",
    "read_nonmem": ".data",
    "AbstractDynamics": ".dynamics",
    "AbstractODE": ".dynamics",
    "FisherInformation": ".estimation",
    "FitResult": ".estimation",
    "fisher_information": ".estimation",
    "fit": ".estimation",
    "importance_ofv": ".estimation",
    "saem": ".estimation",
    "ofv": ".estimation",
    "AbstractErrorModel": ".model",
    "Additive": ".model",
    "Bernoulli": ".model",
    "Binomial": ".model",
    "LogLikelihood": ".model",
    "NegativeBinomial": ".model",
    "OrderedCategorical": ".model",
    "Poisson": ".model",
    "TimeToEvent": ".model",
    "ZeroInflatedPoisson": ".model",
    "AbstractLikelihood": ".model",
    "AmountsView": ".model",
    "Combined1": ".model",
    "Combined2": ".model",
    "CovariateView": ".model",
    "EtaView": ".model",
    "Exponential": ".model",
    "LogNormal": ".model",
    "Model": ".model",
    "Normal": ".model",
    "Omega": ".model",
    "Proportional": ".model",
    "SelectedEndpoint": ".model",
    "Theta": ".model",
    "allometric": ".model",
    "categorical": ".model",
    "exponential": ".model",
    "linear": ".model",
    "omega": ".model",
    "omega_block": ".model",
    "power": ".model",
    "theta": ".model",
    "CompartmentNameError": ".model._errors",
    "IndividualParametersError": ".model._errors",
    "ModelDefinitionError": ".model._errors",
    "ObservationError": ".model._errors",
    "OmegaNotPositiveDefiniteError": ".model._errors",
    "ThetaBoundsError": ".model._errors",
    "UnknownEtaError": ".model._errors",
    "Dose": ".simulation",
    "Regimen": ".simulation",
    "SimulationResult": ".simulation",
    "predict": ".simulation",
    "simulate": ".simulation",
    "ODE": ".dynamics",  # the short name used in model definitions: class M(pmx.ODE)
}
_ALIASES = {"ODE": "AbstractODE"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = _importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        module = getattr(_importlib.import_module(_NAMES[name], __name__), _ALIASES.get(name, name))
    else:
        raise AttributeError(f"module 'pmx_jax' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_NAMES))


__all__ = [*_SUBMODULES, *_NAMES]

if TYPE_CHECKING:
    from . import bayes as bayes
    from . import datasets as datasets
    from . import diagnostics as diagnostics
    from . import dynamics as dynamics
    from . import estimation as estimation
    from . import library as library
    from . import likelihood as likelihood
    from . import nonmem as nonmem
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
    from .dynamics import AbstractODE as ODE  # noqa: F401 (in __all__ through _NAMES)
    from .estimation import FisherInformation as FisherInformation
    from .estimation import FitResult as FitResult
    from .estimation import fisher_information as fisher_information
    from .estimation import fit as fit
    from .estimation import importance_ofv as importance_ofv
    from .estimation import ofv as ofv
    from .estimation import saem as saem
    from .model import AbstractErrorModel as AbstractErrorModel
    from .model import AbstractLikelihood as AbstractLikelihood
    from .model import Additive as Additive
    from .model import AmountsView as AmountsView
    from .model import Bernoulli as Bernoulli
    from .model import Binomial as Binomial
    from .model import Combined1 as Combined1
    from .model import Combined2 as Combined2
    from .model import CovariateView as CovariateView
    from .model import EtaView as EtaView
    from .model import Exponential as Exponential
    from .model import LogLikelihood as LogLikelihood
    from .model import LogNormal as LogNormal
    from .model import Model as Model
    from .model import NegativeBinomial as NegativeBinomial
    from .model import Normal as Normal
    from .model import Omega as Omega
    from .model import OrderedCategorical as OrderedCategorical
    from .model import Poisson as Poisson
    from .model import Proportional as Proportional
    from .model import SelectedEndpoint as SelectedEndpoint
    from .model import Theta as Theta
    from .model import TimeToEvent as TimeToEvent
    from .model import ZeroInflatedPoisson as ZeroInflatedPoisson
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
