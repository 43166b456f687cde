"""Estimation: population fits by maximum likelihood (FO, FOCE, FOCEI,
Laplace, SAEM), their covariance step, the OFV by importance sampling,
residuals and results.

The objective itself (``ofv``), the EBE search and the per-subject kernel live
in :mod:`pmx_jax.likelihood`; the names a user of the fit meets are
re-exported here.
"""

from ..likelihood import METHODS as METHODS
from ..likelihood import EBEStatus as EBEStatus
from ..likelihood import NonFiniteOFVWarning as NonFiniteOFVWarning
from ..likelihood import OFVResult as OFVResult
from ..likelihood import ofv as ofv
from ._covariance import CovarianceError as CovarianceError
from ._covariance import CovarianceResult as CovarianceResult
from ._covariance import covariance_step as covariance_step
from ._fit import fit as fit
from ._identifiability import FisherInformation as FisherInformation
from ._identifiability import fisher_information as fisher_information
from ._importance import ImportanceResult as ImportanceResult
from ._importance import importance_ofv as importance_ofv
from ._residuals import residual_table as residual_table
from ._result import FitResult as FitResult
from ._saem import SAEMDetails as SAEMDetails
from ._saem import saem as saem
from ._suspect import Suspicion as Suspicion
