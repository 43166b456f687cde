"""Goodness-of-fit plots (Xpose's basic set) with matplotlib.

Every function takes a fit -- a :class:`~pmx_jax.estimation.FitResult`, or a
finished ``pmx fit`` run read back by :func:`pmx_jax.diagnostics._report.load_run`
-- and returns a :class:`matplotlib.figure.Figure` (a list of them for the pages
of individual fits); ``path=`` also saves it (the format follows the suffix:
``.png``, ``.svg``, ``.pdf``).  Figures are made without pyplot's global state,
so they work under the Agg backend, in scripts and in notebooks alike.

Axis units come from ``units=``, a mapping with ``time`` (the TIME unit, e.g.
``"h"``), ``conc`` (the unit of DV, PRED and IPRED, e.g. ``"mg/L"``) and any
covariate name (``WT="kg"``); a NONMEM dataset does not carry units itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

_OBS_STYLE = dict(color="tab:blue", s=14, alpha=0.7, edgecolors="none")
_LINE_REFERENCE = dict(color="black", lw=1.0, ls="--")
_SMOOTH_STYLE = dict(color="tab:red", lw=1.8)
_PNG_DPI = 120
_LOWESS_MAX_POINTS = 20_000


# -------------------------------------------------------------------- helpers
def dataset_of(fit: Any):
    """The :class:`~pmx_jax.Dataset` a fit was made on."""
    data = getattr(fit, "dataset", None)
    if data is None:
        data = getattr(fit, "_dataset", None)
    if data is None:
        raise ValueError(
            "this fit keeps no dataset (it was given prepared data): refit with a "
            "pmx_jax.Dataset to plot it"
        )
    return data


def _label(text: str, unit: str | None) -> str:
    return f"{text} ({unit})" if unit else text


def _check_units(units: Mapping[str, str] | None) -> dict[str, str]:
    if units is None:
        return {}
    if not isinstance(units, Mapping):
        raise TypeError(
            f"units must be a mapping such as dict(time='h', conc='mg/L'), got {units!r}"
        )
    return {str(k): str(v) for k, v in units.items()}


def _save(figure: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        figure.savefig(path, dpi=_PNG_DPI if path.suffix.lower() == ".png" else None)
    return figure


class _PlainLogFormatter(ticker.LogFormatter):
    """Matplotlib's choice of which log ticks to label, written as plain
    numbers (0.6, 2, 10) rather than 6e-01 or powers of ten."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _log_axis(axis) -> None:
    axis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def normal_quantiles(n: int) -> np.ndarray:
    """Standard normal quantiles at the plotting positions ``(i - 0.5) / n``,
    ``i = 1..n`` (Hazen), the x-axis of :func:`qq_plot`."""
    dist = NormalDist()
    return np.array([dist.inv_cdf((i - 0.5) / n) for i in range(1, n + 1)])


def lowess(
    x: Sequence[float],
    y: Sequence[float],
    *,
    span: float = 2.0 / 3.0,
    n_points: int = 80,
    iterations: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """A LOWESS trend line (Cleveland 1979, as R's ``lowess``): at up to
    ``n_points`` positions over the range of ``x``, a straight line fitted by
    weighted least squares to the ``span`` fraction of points nearest in ``x``
    (tricube weights), with ``iterations`` robustness passes (bisquare weights
    on the residuals, the fitted line read off by interpolation between the
    positions; none below 30 points).  Returns ``(x, trend)``; empty arrays
    with fewer than 5 points.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    if n < 5:
        return np.empty(0), np.empty(0)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if n > _LOWESS_MAX_POINTS:  # thin large data evenly in x rank: memory ~ n_points * n
        thin = np.linspace(0, n - 1, _LOWESS_MAX_POINTS).round().astype(int)
        x, y, n = x[thin], y[thin], _LOWESS_MAX_POINTS
    grid = np.unique(np.linspace(x[0], x[-1], n_points))
    k = min(n, max(3, int(math.ceil(span * n))))
    distance = np.abs(grid[:, None] - x[None, :])
    reach = np.partition(distance, k - 1, axis=1)[:, k - 1 : k]
    reach = np.maximum(reach, 1e-12 * max(1.0, abs(x[-1] - x[0])))
    local = np.clip(1.0 - (distance / reach) ** 3, 0.0, None) ** 3
    robust = np.ones(n)
    if n < 30:  # too few points to tell outliers from trend: robustness passes only wiggle
        iterations = 0
    for step in range(iterations + 1):
        w = local * robust
        sw = w.sum(axis=1)
        mx = (w * x).sum(axis=1) / sw
        my = (w * y).sum(axis=1) / sw
        sxx = (w * (x - mx[:, None]) ** 2).sum(axis=1)
        sxy = (w * (x - mx[:, None]) * (y - my[:, None])).sum(axis=1)
        # a window of tied x has no slope: its weighted mean is the trend
        flat = sxx <= 1e-12 * sw * max(1.0, (x[-1] - x[0]) ** 2)
        slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=~flat)
        trend = my + slope * (grid - mx)
        if step == iterations:
            break
        residual = y - np.interp(x, grid, trend)
        scale = 6.0 * np.median(np.abs(residual))
        if scale <= 0:
            break
        robust = np.clip(1.0 - (residual / scale) ** 2, 0.0, None) ** 2
    return grid, trend


def _observations(fit: Any) -> pd.DataFrame:
    """The residual table restricted to observations in the likelihood that are
    not censored (BLQ records carry the limit, not a measurement)."""
    table = fit.table()
    records = dataset_of(fit).records
    rows = table["row"].to_numpy()
    lookup = records.set_index("row")
    observed = (
        (lookup.loc[rows, "evid"].to_numpy() == 0)
        & (lookup.loc[rows, "mdv"].to_numpy() == 0)
        & (lookup.loc[rows, "cens"].to_numpy() == 0)
    )
    return table.loc[observed].reset_index(drop=True)


def _positive(*columns: np.ndarray) -> np.ndarray:
    keep = np.ones(len(columns[0]), dtype=bool)
    for c in columns:
        keep &= np.asarray(c, dtype=float) > 0
    return keep


# ------------------------------------------------------------------ GOF panel
def _observed_vs_predicted(ax, observed, predicted, name: str, unit: str | None, log: bool):
    if log:
        keep = _positive(observed, predicted)
        observed, predicted = observed[keep], predicted[keep]
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.xaxis)
        _log_axis(ax.yaxis)
    ax.scatter(predicted, observed, label="observations", **_OBS_STYLE)
    both = np.concatenate([observed, predicted])
    both = both[np.isfinite(both)]
    if both.size:
        low, high = (both.min(), both.max()) if log else (min(0.0, both.min()), both.max())
        ax.plot([low, high], [low, high], label="identity (y = x)", **_LINE_REFERENCE)
    if log:  # a trend in log space: straight where log DV is linear in log PRED
        trend_x, trend = lowess(np.log(predicted), np.log(observed))
        trend_x, trend = np.exp(trend_x), np.exp(trend)
    else:
        trend_x, trend = lowess(predicted, observed)
    if trend.size:
        ax.plot(trend_x, trend, label="LOWESS trend", **_SMOOTH_STYLE)
    ax.set_xlabel(_label(name, unit))
    ax.set_ylabel(_label("Observed (DV)", unit))
    ax.legend(loc="upper left", fontsize="small")


def _residual_vs(ax, x, residual, xlabel: str, ylabel: str):
    ax.scatter(x, residual, label="observations", **_OBS_STYLE)
    ax.axhline(0.0, **_LINE_REFERENCE, label="zero")
    for bound in (-2.0, 2.0):
        ax.axhline(bound, color="grey", lw=0.8, ls=":")
    trend_x, trend = lowess(x, residual)
    if trend.size:
        ax.plot(trend_x, trend, label="LOWESS trend", **_SMOOTH_STYLE)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper right", fontsize="small")


def _qq(ax, values, label: str):
    values = np.asarray(values, dtype=float)
    values = np.sort(values[np.isfinite(values)])
    if values.size == 0:
        raise ValueError(f"qq_plot: {label} has no finite values")
    theoretical = normal_quantiles(values.size)
    ax.scatter(theoretical, values, label=label, **_OBS_STYLE)
    low = min(theoretical[0], values[0])
    high = max(theoretical[-1], values[-1])
    ax.plot([low, high], [low, high], label="N(0, 1) (y = x)", **_LINE_REFERENCE)
    ax.set_xlabel("Standard normal quantiles")
    ax.set_ylabel(f"Sample quantiles of {label}")
    ax.set_title(f"QQ plot of {label} (n = {values.size})")
    ax.legend(loc="upper left", fontsize="small")


def gof_panel(
    fit: Any,
    *,
    units: Mapping[str, str] | None = None,
    log: bool = False,
    path: str | Path | None = None,
) -> Figure:
    """The basic goodness-of-fit panel (2 x 3): observed DV vs PRED and vs
    IPRED (identity line), QQ plot of CWRES, CWRES vs TIME and vs PRED, and
    IWRES vs IPRED (zero line, +-2 lines, a LOWESS trend).

    Args:
        fit: a FitResult (or a run read back by ``load_run``).
        units: axis units, e.g. ``dict(time="h", conc="mg/L")``.
        log: log axes for DV vs PRED/IPRED (non-positive values are left out).
        path: also save the figure there.
    """
    units = _check_units(units)
    conc, time_unit = units.get("conc"), units.get("time")
    obs = _observations(fit)
    dv, pred, ipred = (obs[c].to_numpy(dtype=float) for c in ("DV", "PRED", "IPRED"))
    figure = Figure(figsize=(15, 9.5), layout="constrained")
    axes = figure.subplots(2, 3)
    _observed_vs_predicted(axes[0, 0], dv, pred, "Population prediction (PRED)", conc, log)
    axes[0, 0].set_title("DV vs PRED")
    _observed_vs_predicted(axes[0, 1], dv, ipred, "Individual prediction (IPRED)", conc, log)
    axes[0, 1].set_title("DV vs IPRED")
    _qq(axes[0, 2], obs["CWRES"], "CWRES")
    cwres = obs["CWRES"].to_numpy(dtype=float)
    _residual_vs(
        axes[1, 0],
        obs["TIME"].to_numpy(dtype=float),
        cwres,
        _label("Time", time_unit),
        "Conditional weighted residual (CWRES)",
    )
    axes[1, 0].set_title("CWRES vs TIME")
    _residual_vs(
        axes[1, 1],
        pred,
        cwres,
        _label("Population prediction (PRED)", conc),
        "Conditional weighted residual (CWRES)",
    )
    axes[1, 1].set_title("CWRES vs PRED")
    _residual_vs(
        axes[1, 2],
        ipred,
        obs["IWRES"].to_numpy(dtype=float),
        _label("Individual prediction (IPRED)", conc),
        "Individual weighted residual (IWRES)",
    )
    axes[1, 2].set_title("IWRES vs IPRED")
    method = getattr(fit, "method", "")
    figure.suptitle(
        f"Goodness of fit: {type(fit.model).__name__}"
        + (f", {method.upper()}" if method else "")
        + f" ({len(obs)} observations)",
        fontsize="x-large",
    )
    return _save(figure, path)


def qq_plot(values: Any, label: str = "CWRES", *, path: str | Path | None = None) -> Figure:
    """Normal QQ plot of residuals (CWRES, NPDE, IWRES...): sorted values
    against standard normal quantiles at ``(i - 0.5) / n``, with the identity
    line (a standard normal sample falls on it).  NaNs (dose records) are
    dropped."""
    figure = Figure(figsize=(5.5, 5.5), layout="constrained")
    _qq(figure.subplots(), values, label)
    return _save(figure, path)


# ------------------------------------------------------------ individual fits
def _dense_design(data, ids: Sequence[Any], times: dict, n_grid: int) -> pd.DataFrame:
    """Each subject's non-observation records (doses, EVID 2) plus EVID 2
    records on a fine time grid, as a NONMEM table with the coded covariates."""
    records = data.records
    covariates = data.covariates
    frames = []
    for subject_id in ids:
        mine = (records["id"] == subject_id).to_numpy()
        rec = records.loc[mine]
        obs = rec[(rec["evid"] == 0) & (rec["mdv"] == 0)]
        cmt = int(obs["cmt"].iloc[0]) if len(obs) else 0
        start, stop = float(rec["time"].min()), float(rec["time"].max())
        grid = np.union1d(np.linspace(start, stop, n_grid), times[subject_id])
        events = rec[rec["evid"] != 0]
        design = pd.DataFrame(
            {
                "ID": subject_id,
                "TIME": np.r_[events["time"].to_numpy(), grid],
                "EVID": np.r_[events["evid"].to_numpy(), np.full(grid.size, 2)],
                "MDV": 1,
                "AMT": np.r_[events["amt"].to_numpy(), np.zeros(grid.size)],
                "CMT": np.r_[events["cmt"].to_numpy(), np.full(grid.size, cmt)],
                "RATE": np.r_[events["rate"].to_numpy(), np.zeros(grid.size)],
                "II": np.r_[events["ii"].to_numpy(), np.zeros(grid.size)],
                "ADDL": np.r_[events["addl"].to_numpy(), np.zeros(grid.size)],
                "SS": np.r_[events["ss"].to_numpy(), np.zeros(grid.size)],
                "order": np.r_[np.zeros(len(events)), np.ones(grid.size)],
            }
        )
        # covariates at each grid time: the last record at or before it (as NONMEM)
        cov = covariates.loc[mine].assign(TIME=rec["time"].to_numpy())
        design = design.sort_values(["TIME", "order"], kind="stable")
        design = pd.merge_asof(design, cov.drop_duplicates("TIME", keep="last"), on="TIME")
        design[list(covariates.columns)] = design[list(covariates.columns)].bfill()
        frames.append(design)
    table = pd.concat(frames, ignore_index=True).drop(columns="order")
    table["DV"] = np.nan
    return table


def _curves(fit: Any, ids: Sequence[Any], n_grid: int) -> tuple[pd.DataFrame, bool]:
    """PRED and IPRED per subject on a dense grid (``pmx.predict`` on a design
    of the subject's doses and a time grid), or at the observation records when
    the model or data cannot be laid on a grid (IOV, several endpoints, resets);
    the flag says which."""
    from ..simulation import predict

    data = dataset_of(fit)
    records = data.records
    selected = records["id"].isin(ids)
    tricky = (
        fit.model.n_iov_eta > 0
        or len(data.dvid_levels) > 1
        or records.loc[selected, "evid"].isin((3, 4)).any()
    )
    if tricky or n_grid <= 0:
        obs = _observations(fit)
        return obs.loc[obs["ID"].isin(ids), ["ID", "TIME", "PRED", "IPRED"]], False
    obs_times = {
        i: records.loc[(records["id"] == i) & (records["evid"] == 0), "time"].to_numpy()
        for i in ids
    }
    design = _dense_design(data, ids, obs_times, n_grid)
    ebes = fit.ebes
    etas = ebes.loc[ebes["ID"].isin(ids)]
    curves = predict(fit.model, design, etas)
    return curves.loc[curves["EVID"] == 2, ["ID", "TIME", "PRED", "IPRED"]], True


def individual_fits(
    fit: Any,
    subjects: Sequence[Any] | None = None,
    *,
    per_page: int = 12,
    units: Mapping[str, str] | None = None,
    log_y: bool = False,
    n_grid: int = 200,
    path: str | Path | None = None,
) -> list[Figure]:
    """Observed concentrations with individual (IPRED) and population (PRED)
    curves per subject, ``per_page`` subjects a page.

    The curves are predictions on a dense time grid (``n_grid`` points per
    subject plus the sampling times) at the subject's EBEs, so they show the
    model's shape between samples; with IOV, several endpoints or EVID 3/4
    resets they join the predictions at the observations instead.

    Args:
        fit: a FitResult (or a run read back by ``load_run``).
        subjects: IDs to show (default all, in dataset order).
        per_page: subjects per figure.
        units: ``dict(time="h", conc="mg/L")``.
        log_y: log concentration axis (non-positive values are left out).
        n_grid: grid points per subject (0: join the observation-time predictions).
        path: save page ``k`` to ``{stem}_{k:02d}{suffix}`` (just ``path`` for one page).

    Returns one figure per page.
    """
    units = _check_units(units)
    if per_page < 1:
        raise ValueError(f"per_page must be at least 1, got {per_page}")
    data = dataset_of(fit)
    all_ids = list(data.ids)
    if subjects is None:
        ids = all_ids
    else:
        ids = list(subjects)
        unknown = [i for i in ids if i not in all_ids]
        if unknown:
            raise ValueError(f"no subject with ID {', '.join(map(str, unknown))} in the fit's data")
    curves, dense = _curves(fit, ids, n_grid)
    obs = _observations(fit)
    ncols = min(4, per_page)
    pages = []
    for start in range(0, len(ids), per_page):
        page_ids = ids[start : start + per_page]
        rows_here = math.ceil(len(page_ids) / ncols)
        figure = Figure(figsize=(3.6 * ncols, 2.9 * max(rows_here, 1) + 0.9), layout="constrained")
        axes = np.atleast_2d(figure.subplots(max(rows_here, 1), ncols, squeeze=False))
        for k, ax in enumerate(axes.flat):
            if k >= len(page_ids):
                ax.set_visible(False)
                continue
            subject_id = page_ids[k]
            mine = obs[obs["ID"] == subject_id]
            line = curves[curves["ID"] == subject_id].sort_values("TIME", kind="stable")
            t, dv = mine["TIME"].to_numpy(float), mine["DV"].to_numpy(float)
            ct, pred, ipred = (line[c].to_numpy(float) for c in ("TIME", "PRED", "IPRED"))
            if log_y:
                keep = dv > 0
                t, dv = t[keep], dv[keep]
                pred = np.where(pred > 0, pred, np.nan)
                ipred = np.where(ipred > 0, ipred, np.nan)
                ax.set_yscale("log")
                _log_axis(ax.yaxis)
            ax.plot(ct, ipred, color="tab:red", lw=1.6, label="individual prediction (IPRED)")
            ax.plot(ct, pred, color="black", lw=1.2, ls="--", label="population prediction (PRED)")
            ax.scatter(t, dv, color="tab:blue", s=18, zorder=3, label="observed (DV)")
            ax.set_title(f"ID {subject_id}", fontsize="medium")
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel(_label("Concentration", units.get("conc")))
        # an x label under every panel with no panel below it
        for k, ax in enumerate(axes.flat):
            if ax.get_visible() and (k + ncols >= len(page_ids)):
                ax.set_xlabel(_label("Time", units.get("time")))
        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
        page_no = start // per_page + 1
        n_pages = math.ceil(len(ids) / per_page)
        kind = "" if dense else " (predictions joined at observation times)"
        figure.suptitle(f"Individual fits{kind}, page {page_no} of {n_pages}", fontsize="large")
        pages.append(figure)
    if path is not None:
        path = Path(path)
        for page_no, figure in enumerate(pages, start=1):
            target = (
                path
                if len(pages) == 1
                else path.with_name(f"{path.stem}_{page_no:02d}{path.suffix}")
            )
            _save(figure, target)
    return pages


# ----------------------------------------------------------------------- etas
def eta_distributions(
    fit: Any, *, bins: int | str = "auto", path: str | Path | None = None
) -> Figure:
    """Histograms of the EBEs of each IIV eta, with the model's N(0, omega)
    density overlaid and the eta shrinkage (SD, as NONMEM) in the title."""
    names = list(fit.model.eta_names)
    if not names:
        raise ValueError(f"{type(fit.model).__name__} has no between-subject etas to plot")
    omega = np.diagonal(np.asarray(fit.model.omega_matrix()))
    shrinkage = fit.eta_shrinkage
    ebes = fit.ebes
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    figure = Figure(figsize=(4.6 * ncols, 3.8 * nrows + 0.4), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        name, variance = names[k], float(omega[k])
        values = ebes[name].to_numpy(dtype=float)
        sd = math.sqrt(variance)
        ax.hist(
            values,
            bins=bins,
            density=True,
            color="tab:blue",
            alpha=0.55,
            edgecolor="white",
            label=f"EBEs (n = {values.size})",
        )
        reach = max(4.0 * sd, float(np.max(np.abs(values))) * 1.1)
        grid = np.linspace(-reach, reach, 200)
        density = np.exp(-0.5 * (grid / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))
        ax.plot(
            grid, density, color="tab:red", lw=1.8, label=f"N(0, \u03c9\u00b2 = {variance:.3g})"
        )
        ax.axvline(0.0, **_LINE_REFERENCE)
        ax.set_xlabel(f"EBE of eta {name}")
        ax.set_ylabel("Density")
        ax.set_title(f"eta {name}: shrinkage {100.0 * float(shrinkage[name]):.1f}%")
        ax.legend(loc="upper right", fontsize="small")
    figure.suptitle("Distributions of the empirical Bayes estimates (EBEs)", fontsize="large")
    return _save(figure, path)


def subject_covariates(fit: Any, covariates: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per subject (``ID`` and the covariates, categorical ones as
    their levels): each subject's first value (baseline) of each covariate.

    Raises ValueError naming a covariate the data does not have."""
    data = dataset_of(fit)
    available = list(data.covariate_names)
    if covariates is None:
        names = available
    else:
        by_upper = {n.upper(): n for n in available}
        unknown = [c for c in covariates if str(c).upper() not in by_upper]
        if unknown:
            raise ValueError(
                f"unknown covariate(s) {', '.join(map(repr, unknown))}; the data has "
                f"{', '.join(available) or 'no covariates'}"
            )
        names = [by_upper[str(c).upper()] for c in covariates]
    frame = data.covariates[names].copy()
    frame.insert(0, "ID", data.records["id"].to_numpy())
    first = frame.groupby("ID", sort=False).first().reindex(list(data.ids))
    for name in names:
        if name in data.categories:
            levels = np.asarray(data.categories[name], dtype=object)
            codes = first[name].to_numpy()
            first[name] = [levels[int(c)] if np.isfinite(c) else None for c in codes]
    return first.reset_index()


def _is_categorical(data, name: str, values: pd.Series) -> bool:
    return name in data.categories or values.dropna().nunique() <= 4


def eta_vs_covariates(
    fit: Any,
    covariates: Sequence[str] | None = None,
    *,
    units: Mapping[str, str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """EBEs against subject covariates: one row per covariate, one column per
    eta; scatter with a LOWESS trend for continuous covariates, box
    plots per level for categorical ones (text covariates, or numbers with at
    most 4 distinct values).  Each subject contributes its first (baseline)
    covariate value; the column title says when a covariate varies in time.

    Args:
        fit: a FitResult (or a run read back by ``load_run``).
        covariates: names (default: every covariate of the data); case-insensitive.
        units: covariate units, e.g. ``dict(WT="kg")``.
        path: also save the figure there.
    """
    units = _check_units(units)
    data = dataset_of(fit)
    table = subject_covariates(fit, covariates)
    names = [c for c in table.columns if c != "ID"]
    if not names:
        raise ValueError("the fit's data has no covariates to plot the EBEs against")
    etas = list(fit.model.eta_names)
    ebes = fit.ebes.reset_index(drop=True)
    varying = {
        n: bool((data.covariates[n].groupby(data.records["id"].to_numpy()).nunique() > 1).any())
        for n in names
    }
    figure = Figure(figsize=(4.3 * len(etas) + 0.3, 3.4 * len(names) + 0.6), layout="constrained")
    axes = figure.subplots(len(names), len(etas), squeeze=False)
    for i, name in enumerate(names):
        values = table[name]
        categorical = _is_categorical(data, name, values)
        note = " (first value)" if varying[name] else ""
        for j, eta in enumerate(etas):
            ax = axes[i, j]
            y = ebes[eta].to_numpy(dtype=float)
            if categorical:
                levels = sorted(values.dropna().unique(), key=str)
                groups = [y[(values == level).to_numpy()] for level in levels]
                ax.boxplot(groups, tick_labels=[str(v) for v in levels])
                for k, group in enumerate(groups, start=1):
                    ax.scatter(np.full(group.size, k), group, color="tab:blue", s=12, alpha=0.6)
            else:
                x = values.to_numpy(dtype=float)
                ax.scatter(x, y, label="subjects", **_OBS_STYLE)
                trend_x, trend = lowess(x, y)
                if trend.size:
                    ax.plot(trend_x, trend, label="LOWESS trend", **_SMOOTH_STYLE)
                    ax.legend(loc="best", fontsize="x-small")
            ax.axhline(0.0, **_LINE_REFERENCE)
            ax.set_xlabel(_label(name, units.get(name)) + note)
            ax.set_ylabel(f"EBE of eta {eta}")
            ax.set_title(f"eta {eta} vs {name}")
    figure.suptitle("EBEs vs covariates", fontsize="large")
    return _save(figure, path)
