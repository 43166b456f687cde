"""Model evaluation: residual diagnostics, NPDE, VPC, goodness-of-fit plots, model
comparison, bootstrap and SIR.

Per-record residuals (PRED, IPRED, RES, WRES, CWRES, IWRES) are on the fit
itself: ``fit.table()``.
"""

from ._bootstrap import BootstrapResult as BootstrapResult
from ._bootstrap import bootstrap as bootstrap
from ._compare import LikelihoodRatioTest as LikelihoodRatioTest
from ._compare import compare as compare
from ._compare import likelihood_ratio_test as likelihood_ratio_test
from ._npde import npde as npde
from ._plots import eta_distributions as eta_distributions
from ._plots import eta_vs_covariates as eta_vs_covariates
from ._plots import gof_panel as gof_panel
from ._plots import individual_fits as individual_fits
from ._plots import qq_plot as qq_plot
from ._report import load_run as load_run
from ._report import report as report
from ._report import write_report as write_report
from ._sir import SIRResult as SIRResult
from ._sir import sir as sir
from ._vpc import VPCResult as VPCResult
from ._vpc import vpc as vpc
