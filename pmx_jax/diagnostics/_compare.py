"""Model comparison: an OFV/AIC/BIC table for fits of the same data, and the
likelihood-ratio test of nested models (what a pharmacometrician reads off
NONMEM's ``.lst`` files when choosing between runs).

Conventions (those of :class:`~pmx_jax.estimation.FitResult`): the OFV is
NONMEM's ``-2 log L - N log 2 pi``; ``-2LL`` includes the constant; AIC is
``-2LL + 2 p`` and BIC ``-2LL + p log N`` with ``p`` the estimated parameters
(free THETAs and OMEGA elements) and ``N`` the normally distributed
observations (nlmixr2's convention).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats


def chi2_sf(x: float, df: float) -> float:
    """``P(X > x)`` for ``X ~ chi-square(df)``; ``df = 0`` is the point mass at 0
    (the distribution of dOFV for a parameter on its boundary)."""
    if df < 0:
        raise ValueError(f"degrees of freedom must be >= 0, got {df}")
    if df == 0:
        return 1.0 if x <= 0 else 0.0
    return float(stats.chi2.sf(x, df))


def _data_signature(fit: Any) -> tuple:
    """What two fits of the same data share: subject and observation counts."""
    return (
        int(fit.n_subjects),
        int(fit.n_observations),
        int(getattr(fit, "n_censored", 0)),
        int(getattr(fit, "n_general", 0)),
    )


def _observed(fit: Any) -> np.ndarray | None:
    """The observed DVs in the order the fit saw them (None when unknown)."""
    problem = getattr(fit, "_problem", None)
    if problem is None:
        return None
    subjects = problem.source.subjects
    return np.asarray(subjects.dv)[np.asarray(subjects.is_obs)]


def _check_same_data(fits: Sequence[Any], names: Sequence[str]) -> None:
    reference = _data_signature(fits[0])
    observed = _observed(fits[0])
    for fit, name in zip(fits[1:], names[1:], strict=True):
        signature = _data_signature(fit)
        if signature != reference:
            raise ValueError(
                "Model comparison needs fits of the same data: "
                f"{names[0]!r} has {reference[0]} subjects and {reference[1]} observations "
                f"(+{reference[2]} censored), {name!r} has {signature[0]} subjects and "
                f"{signature[1]} observations (+{signature[2]} censored). OFV, AIC and BIC "
                "of different datasets cannot be compared; refit the models on one dataset."
            )
        other = _observed(fit)
        if observed is not None and other is not None and other.shape == observed.shape:
            if not np.allclose(observed, other, rtol=1e-12, atol=0.0, equal_nan=True):
                raise ValueError(
                    f"Model comparison needs fits of the same data: {names[0]!r} and {name!r} "
                    "have the same number of observations but different DV values."
                )


def _default_names(fits: Sequence[Any]) -> list[str]:
    base = [type(f.model).__name__ for f in fits]
    names = []
    for i, name in enumerate(base):
        k = base[:i].count(name)
        names.append(name if base.count(name) == 1 else f"{name} ({k + 1})")
    return names


def compare(*fits: Any, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Compare fits of the same data: one row per fit, in the order given.

    Args:
        *fits: :class:`~pmx_jax.estimation.FitResult` objects (at least one).
        names: a label per fit (default: the model class names).

    Returns:
        a DataFrame with columns ``model``, ``method``, ``ofv``, ``m2ll``
        (``-2 log L``), ``n_parameters``, ``aic``, ``bic``, ``delta_aic`` and
        ``delta_bic`` (difference from the lowest value in the table, 0 for the
        best model), ``condition_number`` (of the correlation matrix, when the
        covariance step ran; NaN otherwise) and ``converged``.

    Raises:
        ValueError: the fits are not of the same data (different numbers of
            subjects or observations, or different DVs).

    Example:
        >>> # pmx.diagnostics.compare(fit_full, fit_reduced, names=["full", "no eta_v"])
    """
    if not fits:
        raise ValueError("compare() needs at least one fit")
    if len(fits) == 1 and isinstance(fits[0], list | tuple):
        fits = tuple(fits[0])
    if names is None:
        names = _default_names(fits)
    names = [str(n) for n in names]
    if len(names) != len(fits):
        raise ValueError(f"names has {len(names)} entries for {len(fits)} fits")
    _check_same_data(fits, names)
    rows = []
    for fit, name in zip(fits, names, strict=True):
        cov = getattr(fit, "covariance", None)
        condition = (
            float(cov.condition_number) if cov is not None and getattr(cov, "ok", False) else np.nan
        )
        rows.append(
            dict(
                model=name,
                method=fit.method,
                ofv=float(fit.ofv),
                m2ll=float(fit.minus_two_log_likelihood),
                n_parameters=int(fit.n_parameters),
                aic=float(fit.aic),
                bic=float(fit.bic),
                condition_number=condition,
                converged=bool(fit.converged),
            )
        )
    table = pd.DataFrame(rows)
    table.insert(7, "delta_aic", table["aic"] - table["aic"].min())
    table.insert(8, "delta_bic", table["bic"] - table["bic"].min())
    return table


class LikelihoodRatioTest:
    """The result of :func:`likelihood_ratio_test`.

    Attributes:
        dofv: ``OFV(reduced) - OFV(full)`` (the likelihood-ratio statistic).
        df: degrees of freedom (parameters fixed or removed in the reduced model).
        p_value: ``P(chi-square >= dofv)``, or under the boundary mixture.
        boundary: whether the 50:50 mixture ``chi2(df-1), chi2(df)`` was used.
        critical_value: the dOFV needed for significance at ``alpha``.
        significant: ``p_value < alpha``.
        alpha: the significance level.
        note: a sentence on how to read the test (boundary, negative dOFV).
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        kind = "boundary mixture 0.5 chi2(df-1) + 0.5 chi2(df)" if self.boundary else "chi-square"
        lines = [
            f"Likelihood-ratio test: dOFV {self.dofv:.4f}, df {self.df}, p {self.p_value:.4g} "
            f"({kind}); critical dOFV {self.critical_value:.3f} at alpha {self.alpha:g}: "
            + ("significant" if self.significant else "not significant"),
        ]
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)

    __repr__ = __str__


def _mixture_sf(x: float, df: int, boundary: bool) -> float:
    if not boundary:
        return chi2_sf(x, df)
    return 0.5 * chi2_sf(x, df - 1) + 0.5 * chi2_sf(x, df)


def _critical_value(alpha: float, df: int, boundary: bool) -> float:
    """The dOFV with tail probability ``alpha``: the chi-square(``df``) upper
    quantile, or that of the boundary mixture, which lies between the
    quantiles of its two components (found by Brent's method)."""
    upper = float(stats.chi2.isf(alpha, df))
    if not boundary:
        return upper
    lower = float(stats.chi2.isf(alpha, df - 1)) if df > 1 else 0.0
    return float(
        optimize.brentq(lambda x: _mixture_sf(x, df, True) - alpha, lower, upper, xtol=1e-12)
    )


def likelihood_ratio_test(
    reduced: Any,
    full: Any,
    *,
    df: int | None = None,
    boundary: bool = False,
    alpha: float = 0.05,
    tolerance: float = 0.01,
) -> LikelihoodRatioTest:
    """Likelihood-ratio test of a reduced model nested in a full one.

    ``dOFV = OFV(reduced) - OFV(full)`` is compared with a chi-square
    distribution with ``df`` degrees of freedom (by default the difference in
    the number of estimated parameters).  When the reduced model puts a
    parameter on the boundary of its space (an OMEGA variance fixed at 0, i.e.
    an eta removed), the statistic is asymptotically the 50:50 mixture
    ``chi2(df-1)`` and ``chi2(df)`` (Self and Liang 1987; ``chi2(0)`` is the
    point mass at 0): pass ``boundary=True``.  The plain chi-square p-value is
    then conservative (twice the mixture's for ``df = 1``).

    Args:
        reduced, full: :class:`~pmx_jax.estimation.FitResult` of the same data
            and method; ``reduced`` has fewer estimated parameters.
        df: degrees of freedom, when the parameter count does not give it
            (e.g. the reduced model reparametrises rather than fixes).
        boundary: use the boundary mixture (one parameter on its boundary).
        alpha: significance level for ``critical_value`` and ``significant``
            (0.05: a dOFV of 3.84 for one parameter).
        tolerance: how far (OFV units) the reduced model's OFV may fall below the
            full model's before it is reported (a warning): a nested model cannot
            fit better, so this points at a full fit stopped short of its minimum.

    Raises:
        ValueError: the fits are of different data or methods, ``reduced``
            does not have fewer parameters than ``full`` (and no ``df`` is given),
            or ``alpha`` is not in (0, 1).

    Example:
        >>> # lrt = pmx.diagnostics.likelihood_ratio_test(fit_no_wt, fit_wt)
        >>> # lrt.p_value, lrt.dofv
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    _check_same_data([reduced, full], ["reduced", "full"])
    if reduced.method != full.method:
        raise ValueError(
            f"the likelihood-ratio test needs fits by the same method: reduced is "
            f"{reduced.method!r}, full is {full.method!r} (their OFVs approximate different "
            "likelihoods)"
        )
    n_reduced, n_full = int(reduced.n_parameters), int(full.n_parameters)
    if df is None:
        if n_reduced >= n_full:
            raise ValueError(
                f"the reduced model has {n_reduced} estimated parameters and the full model "
                f"{n_full}: a nested (reduced) model must have fewer. Pass the fits as "
                "likelihood_ratio_test(reduced, full), or give df= explicitly."
            )
        df = n_full - n_reduced
    df = int(df)
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    dofv = float(reduced.ofv) - float(full.ofv)
    notes = []
    if dofv < -tolerance:
        warnings.warn(
            f"the reduced model's OFV is lower than the full model's by {-dofv:.4g}: a nested "
            "model cannot fit better, so the models are not nested or the full fit did not reach "
            "its minimum (refit it from the reduced model's estimates)",
            UserWarning,
            stacklevel=2,
        )
        notes.append("negative dOFV: models not nested or full fit not at its minimum")
    if boundary:
        notes.append(
            "a parameter is on its boundary under the reduced model: p-value from the mixture "
            "0.5 chi2(df-1) + 0.5 chi2(df)"
        )
    elif n_reduced == n_full - df and _fixes_omega(reduced, full):
        notes.append(
            "the reduced model has fewer OMEGA elements: if an eta variance is fixed at 0 "
            "(a boundary), boundary=True gives the correct (smaller) p-value"
        )
    p_value = _mixture_sf(max(dofv, 0.0), df, boundary)
    critical = _critical_value(alpha, df, boundary)
    return LikelihoodRatioTest(
        dofv=dofv,
        df=df,
        p_value=p_value,
        boundary=bool(boundary),
        alpha=float(alpha),
        critical_value=critical,
        significant=bool(p_value < alpha),
        n_parameters_reduced=n_reduced,
        n_parameters_full=n_full,
        note="; ".join(notes),
    )


def _fixes_omega(reduced: Any, full: Any) -> bool:
    """Whether the reduced model estimates fewer OMEGA elements than the full one."""

    def n_omega(fit: Any) -> int:
        model = getattr(fit, "model", None)
        if model is None or not hasattr(model, "omega_blocks"):
            return 0
        total = 0
        for _, block in model.omega_blocks():
            if not block.fixed:
                total += block.n_unconstrained
        return total

    try:
        return n_omega(reduced) < n_omega(full)
    except Exception:  # a stand-in object without a model
        return False
