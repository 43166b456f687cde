"""Estimation: the likelihood kernel, EBEs (the inner problem) and the
population objective function (FO, FOCE, FOCEI, Laplace), and the fit."""

from ._covariance import CovarianceError as CovarianceError
from ._covariance import CovarianceResult as CovarianceResult
from ._covariance import covariance_step as covariance_step
from ._fit import fit as fit
from ._identifiability import FisherInformation as FisherInformation
from ._identifiability import fisher_information as fisher_information
from ._inner import EBEResult as EBEResult
from ._inner import EBEStatus as EBEStatus
from ._inner import newton_ebe as newton_ebe
from ._kernel import Layout as Layout
from ._kernel import RecordTerms as RecordTerms
from ._kernel import conditional_log_likelihood as conditional_log_likelihood
from ._kernel import log_prior as log_prior
from ._kernel import record_terms as record_terms
from ._objective import METHODS as METHODS
from ._objective import NonFiniteOFVWarning as NonFiniteOFVWarning
from ._objective import OFVResult as OFVResult
from ._objective import ofv as ofv
from ._problem import Problem as Problem
from ._problem import make_problem as make_problem
from ._residuals import residual_table as residual_table
from ._result import FitResult as FitResult
