"""Bayesian estimation: NumPyro NUTS on pmx_jax models, and Bayesian
forecasting of one patient (therapeutic drug monitoring)."""

from ._diagnostics import ess_bulk as ess_bulk
from ._diagnostics import ess_tail as ess_tail
from ._diagnostics import rhat as rhat
from ._forecast import DoseRecommendation as DoseRecommendation
from ._forecast import Forecast as Forecast
from ._forecast import Target as Target
from ._forecast import forecast as forecast
from ._posterior import Posterior as Posterior
from ._posterior import mu_referenced_thetas as mu_referenced_thetas
from ._priors import OmegaPrior as OmegaPrior
from ._priors import PopulationPrior as PopulationPrior
from ._priors import population_prior as population_prior
from ._result import SampleResult as SampleResult
from ._sample import sample as sample
