"""Model evaluation: residual diagnostics, NPDE, VPC, goodness-of-fit plots, model
comparison, bootstrap and SIR.

Per-record residuals (PRED, IPRED, RES, WRES, CWRES, IWRES) are on the fit
itself: ``fit.table()``.

Each part loads on first use (the plots load matplotlib, model comparison
SciPy's statistics), so that a fit, which writes a run record through
:mod:`._report`, loads neither.
"""

import importlib as _importlib
from typing import TYPE_CHECKING

_NAMES = {
    "BootstrapResult": "._bootstrap",
    "bootstrap": "._bootstrap",
    "LikelihoodRatioTest": "._compare",
    "compare": "._compare",
    "likelihood_ratio_test": "._compare",
    "CategoricalVPCResult": "._discrete",
    "KaplanMeierVPCResult": "._discrete",
    "categorical_vpc": "._discrete",
    "count_vpc": "._discrete",
    "kaplan_meier": "._discrete",
    "kaplan_meier_vpc": "._discrete",
    "quantile_residuals": "._discrete",
    "npde": "._npde",
    "eta_distributions": "._plots",
    "eta_vs_covariates": "._plots",
    "gof_panel": "._plots",
    "individual_fits": "._plots",
    "qq_plot": "._plots",
    "load_run": "._report",
    "report": "._report",
    "write_report": "._report",
    "SIRResult": "._sir",
    "sir": "._sir",
    "VPCResult": "._vpc",
    "vpc": "._vpc",
}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'pmx_jax.diagnostics' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_NAMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES))


__all__ = list(_NAMES)

if TYPE_CHECKING:
    from ._bootstrap import BootstrapResult as BootstrapResult
    from ._bootstrap import bootstrap as bootstrap
    from ._compare import LikelihoodRatioTest as LikelihoodRatioTest
    from ._compare import compare as compare
    from ._compare import likelihood_ratio_test as likelihood_ratio_test
    from ._discrete import CategoricalVPCResult as CategoricalVPCResult
    from ._discrete import KaplanMeierVPCResult as KaplanMeierVPCResult
    from ._discrete import categorical_vpc as categorical_vpc
    from ._discrete import count_vpc as count_vpc
    from ._discrete import kaplan_meier as kaplan_meier
    from ._discrete import kaplan_meier_vpc as kaplan_meier_vpc
    from ._discrete import quantile_residuals as quantile_residuals
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
