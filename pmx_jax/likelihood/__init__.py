"""The likelihood floor: everything between a dataset and a number.

Estimation (FO to Laplace), simulation, the Bayesian backend and the
diagnostics all stand on this layer and on nothing of each other's:

- **Data preparation**: :func:`prepare` checks a :class:`~pmx_jax.Dataset`
  against a model and batches it (:class:`Prepared`); :func:`make_problem`
  lays it out over devices and memory chunks (:class:`Problem`), and
  :func:`map_subjects` runs a per-subject function over it.
- **The per-subject unit**: :class:`SubjectData`, one subject's records and
  dosing plan as one pytree.
- **The per-subject kernel**: :func:`subject_predictions` (the $PK block, the
  event engine and the $ERROR block), :func:`record_terms` (residual moments
  and the log-likelihood of every record, BLQ by M3),
  :func:`conditional_log_likelihood`, the prior (:func:`log_prior`,
  :class:`Prior`) and :class:`SubjectLikelihood`, which makes individual
  objectives plain functions of the random effects ``b`` (IIV etas, then IOV
  etas by occasion: :class:`Layout`).
- **Empirical Bayes estimates**: :func:`newton_ebe` (one damped Newton
  search), :func:`global_ebe` over the fixed :func:`prior_starts`, and
  :func:`implicit_ebe`, the EBE as a differentiable function of the
  parameters.
- **The population objective**: :func:`ofv` (NONMEM's OFV by FO, FOCE, FOCEI
  or Laplace; an :class:`OFVResult`) and :func:`population_ofv`, its jitted
  core on a laid-out problem, which the fit, the covariance step, the
  bootstrap and SIR share.

Outcomes are :class:`pmx_jax.RESULTS` members throughout (``EBEStatus``
names those of the EBE search).
"""

from ._curvature import floor_acts as floor_acts
from ._curvature import floored_logdet as floored_logdet
from ._curvature import smallest_relative_curvature as smallest_relative_curvature
from ._ebe import EBEResult as EBEResult
from ._ebe import EBEStatus as EBEStatus
from ._ebe import global_ebe as global_ebe
from ._ebe import newton_ebe as newton_ebe
from ._ebe import positive_definite as positive_definite
from ._ebe import prior_starts as prior_starts
from ._implicit import forward_only as forward_only
from ._implicit import implicit_ebe as implicit_ebe
from ._kernel import LOG_2PI as LOG_2PI
from ._kernel import Layout as Layout
from ._kernel import Prior as Prior
from ._kernel import RecordTerms as RecordTerms
from ._kernel import SubjectLikelihood as SubjectLikelihood
from ._kernel import conditional_log_likelihood as conditional_log_likelihood
from ._kernel import log_prior as log_prior
from ._kernel import logdet as logdet
from ._kernel import moments_and_jacobian as moments_and_jacobian
from ._kernel import record_terms as record_terms
from ._mu import mu_referenced_thetas as mu_referenced_thetas
from ._objective import METHODS as METHODS
from ._objective import Method as Method
from ._objective import NonFiniteOFVWarning as NonFiniteOFVWarning
from ._objective import OFVResult as OFVResult
from ._objective import check_ebe_search as check_ebe_search
from ._objective import ofv as ofv
from ._objective import population_ofv as population_ofv
from ._predictions import SubjectPrediction as SubjectPrediction
from ._predictions import record_parameters as record_parameters
from ._predictions import subject_predictions as subject_predictions
from ._prepare import Prepared as Prepared
from ._prepare import SubjectData as SubjectData
from ._prepare import prepare as prepare
from ._prepare import record_frame_index as record_frame_index
from ._prepare import used_covariates as used_covariates
from ._problem import Problem as Problem
from ._problem import make_problem as make_problem
from ._problem import map_subjects as map_subjects
