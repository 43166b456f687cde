"""Visual predictive checks: VPC and prediction-corrected VPC (pcVPC).

The dataset's design is simulated ``n_sim`` times under the model (etas and
residual errors) in one batched :func:`pmx_jax.simulate` call.  Observations
are grouped into bins of time (per stratum); in each bin the percentiles of
the observed DV are compared with the distribution, over replicates, of the
same percentiles of the simulated DV: its median and a ``ci`` interval (the
shaded bands of the plot).

Binning (``bins``):

* ``"auto"``: one bin per distinct observation time when a stratum has at
  most 12 (a nominal-time design; edges half-way between the times);
  otherwise the times are split at their largest *relative* gaps (gap over
  the later time, so that 0.25 vs 0.5 h separates as clearly as 12 vs 24 h):
  at most 12 bins, at gaps of at least 15%, each bin with at least 5% of the
  observations (actual times scattered around nominal ones fall into one bin
  each).  Without such gaps: 8 bins of (nearly) equal numbers of observations
  (edges at quantiles; tied edges merged);
* an integer ``n``: ``n`` equal-count bins as above;
* a sequence of edges: bins ``[e0, e1), [e1, e2), ..., [e_{n-1}, e_n]``;
  observations outside ``[e0, e_n]`` are left out (and counted in ``notes``).

The bin's position on the time axis is the median time of its observations.
Percentiles are numpy's (R's type 7) linear interpolation.

Prediction correction (Bergstrand et al. 2011, AAPS J 13:143), observed and
simulated alike: ``DV_pc = DV * median_bin(PRED) / PRED`` with PRED the
population prediction (all etas 0), the median taken over the bin's
observations of the stratum (lower bound 0; no variability correction).
Observations with ``PRED <= 0`` cannot be corrected and are left out.

Censoring (BLQ): an observation is below the limit when CENS = 1 or when
``DV < lloq``.  Such observations rank below every quantified value of their
bin; an observed percentile that falls among them is unknown and reported as
NaN.  Simulated percentiles use every simulated value (the model's prediction
below the limit is part of the check).  Where a limit is known, the fraction
of observations below it is compared with the fraction of simulated values
below it (per replicate: median and ``ci`` interval).  Right-censored (CENS =
-1) observations rank above every quantified value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data._dataset import Dataset
from ..likelihood import prepare, record_frame_index
from ..simulation import predict
from ._npde import model_and_dataset, simulate_replicates

AUTO_MAX_TIMES = 12  # at most this many distinct times: one bin per time
AUTO_BINS = 8  # otherwise this many equal-count bins
AUTO_MIN_GAP = 0.15  # smallest relative gap between time clusters
AUTO_MIN_FRACTION = 0.05  # smallest share of the observations in an automatic bin
MAX_STRATA = 12
# Stand-ins for censored values when ranking: far below/above any DV, finite so
# that interpolation between a censored and a measured value stays ordered.
_BELOW, _ABOVE = -1e300, 1e300


@dataclass(frozen=True)
class VPCResult:
    """A (pc)VPC: per stratum and bin, observed percentiles against the
    distribution of simulated percentiles.

    Attributes:
        percentiles: one row per stratum, bin and quantile: STRATUM, BIN (0-based),
            TIME_LOW, TIME_HIGH (edges), TIME (median observation time), N_OBS,
            QUANTILE, OBSERVED, SIM_MEDIAN, SIM_LOWER, SIM_UPPER (the ``ci``
            interval of the simulated percentile over replicates).
        blq: fraction below the limit, one row per stratum and bin (STRATUM, BIN,
            TIME_LOW, TIME_HIGH, TIME, N_OBS, OBSERVED, SIM_MEDIAN, SIM_LOWER,
            SIM_UPPER); None when no limit of quantification is known.
        observations: the observations used: ID, TIME, DV (prediction-corrected
            for a pcVPC), BLQ, LLOQ (NaN: none), STRATUM, BIN, row (0-based table row).
        edges: bin edges per stratum.
        quantiles, ci, n_sim, seed, pred_corrected, stratify: the settings.
        notes: what was left out or assumed, in words.
    """

    percentiles: pd.DataFrame
    blq: pd.DataFrame | None
    observations: pd.DataFrame
    edges: dict[Any, np.ndarray]
    quantiles: tuple[float, ...]
    ci: float
    n_sim: int
    seed: int
    pred_corrected: bool
    stratify: str | None
    notes: tuple[str, ...] = field(default=())

    @property
    def strata(self) -> list:
        """Stratum levels in panel order (``[None]`` without stratification)."""
        return list(self.edges)

    def to_frame(self) -> pd.DataFrame:
        """The percentile table (a copy of :attr:`percentiles`)."""
        return self.percentiles.copy()

    def plot(
        self,
        ax: Any = None,
        *,
        log_y: bool = False,
        show_observations: bool = True,
        units: dict[str, str] | None = None,
        dv_label: str | None = None,
    ):
        """Draw the VPC with matplotlib and return the Figure.

        One column per stratum; a second row shows the fraction below the limit
        of quantification when there is one.  Lines: observed percentiles
        (median solid red, outer percentiles dashed blue); shaded bands: the
        ``ci`` intervals of the simulated percentiles.

        Args:
            ax: an Axes, or an array of Axes with one per panel (rows: percentiles,
                then BLQ fraction; columns: strata); default: a new figure.
            log_y: logarithmic DV axis.
            show_observations: draw the observations as grey points.
            units: axis units, e.g. ``{"time": "h", "conc": "mg/L"}``.
            dv_label: name of the DV axis (default "Concentration", or
                "Prediction-corrected concentration" for a pcVPC).
        """
        return _plot(
            self,
            ax,
            log_y=log_y,
            show_observations=show_observations,
            units=units or {},
            dv_label=dv_label,
        )


def vpc(
    fit_or_model: Any,
    data: Dataset | pd.DataFrame | None = None,
    *,
    n_sim: int = 500,
    seed: int = 0,
    bins: str | int | Sequence[float] = "auto",
    stratify: str | None = None,
    pred_corrected: bool = False,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    ci: float = 0.95,
    lloq: float | str | None = None,
    chunk_size: int | None = None,
) -> VPCResult:
    """Visual predictive check of a model against a dataset.

    Args:
        fit_or_model: a :class:`~pmx_jax.FitResult` (its fitted model and data)
            or a :class:`~pmx_jax.Model` at the parameter values to check.
        data: the dataset (required with a Model; with a FitResult it replaces
            the fit's data).
        n_sim: replicates of the dataset simulated (one batched simulation of
            ``n_sim * n_subjects`` virtual subjects).
        seed: seed of the simulation.
        bins: ``"auto"``, a number of equal-count bins, or a sequence of time
            edges (see the module documentation).
        stratify: a column of the dataset (case-insensitive; e.g. a categorical
            covariate), or ``"DVID"`` for one panel per endpoint.
        pred_corrected: a prediction-corrected VPC (Bergstrand et al. 2011).
        quantiles: the percentiles compared, as fractions.
        ci: coverage of the simulated percentile intervals.
        lloq: lower limit of quantification: a number, the name of a column
            holding it, or None to take it from the data's censoring (the limit
            of the CENS = 1 records, per endpoint).
        chunk_size: passed to :func:`pmx_jax.simulate`.
    """
    quantiles = tuple(float(q) for q in quantiles)
    if not quantiles or not all(0.0 < q < 1.0 for q in quantiles):
        raise ValueError(f"quantiles must be fractions strictly between 0 and 1, got {quantiles}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.95), got {ci}")
    if int(n_sim) < 2:
        raise ValueError(
            f"n_sim must be at least 2 replicates (100 or more in practice), got {n_sim}"
        )
    model, dataset = model_and_dataset(fit_or_model, data)
    notes: list[str] = []
    obs, where = _observation_table(model, dataset, stratify, lloq, notes)

    edges: dict[Any, np.ndarray] = {}
    obs["BIN"] = -1
    for level in _levels(obs.STRATUM):
        in_stratum = _is_level(obs.STRATUM, level)
        level_edges = _bin_edges(obs.TIME[in_stratum].to_numpy(), bins, level)
        edges[level] = level_edges
        obs.loc[in_stratum, "BIN"] = _assign(obs.TIME[in_stratum].to_numpy(), level_edges)
    outside = int((obs.BIN < 0).sum())
    if outside:
        notes.append(f"{outside} observations outside the given bin edges are left out")

    sims = simulate_replicates(model, dataset, int(n_sim), seed, chunk_size)
    simulated = sims[:, where[0], where[1]]  # (K, n_obs)

    raw_simulated = simulated  # the limit of quantification applies to uncorrected values
    if pred_corrected:
        obs, simulated = _prediction_correct(model, dataset, obs, simulated, notes)

    percentile_rows, blq_rows = [], []
    low, high = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    for level, level_edges in edges.items():
        for b in range(len(level_edges) - 1):
            in_bin = (_is_level(obs.STRATUM, level) & (obs.BIN == b)).to_numpy()
            if not in_bin.any():
                continue
            info = dict(
                STRATUM=level,
                BIN=b,
                TIME_LOW=level_edges[b],
                TIME_HIGH=level_edges[b + 1],
                TIME=float(np.median(obs.TIME[in_bin])),
                N_OBS=int(in_bin.sum()),
            )
            ranked = np.where(obs.CENS[in_bin] == 1, _BELOW, obs.DV[in_bin])
            ranked = np.where(obs.CENS[in_bin] == -1, _ABOVE, ranked)
            observed = np.quantile(ranked, quantiles)
            observed = np.where(np.abs(observed) >= 1e299, np.nan, observed)
            per_replicate = np.quantile(simulated[:, in_bin], quantiles, axis=1)  # (n_q, K)
            summary = np.quantile(per_replicate, (0.5, low, high), axis=1)  # (3, n_q)
            for j, q in enumerate(quantiles):
                percentile_rows.append(
                    dict(
                        info,
                        QUANTILE=q,
                        OBSERVED=observed[j],
                        SIM_MEDIAN=summary[0, j],
                        SIM_LOWER=summary[1, j],
                        SIM_UPPER=summary[2, j],
                    )
                )
            limit = obs.LLOQ.to_numpy()[in_bin]
            if np.isfinite(limit).any():
                has = np.isfinite(limit)
                below = raw_simulated[:, in_bin][:, has] < limit[has]
                fraction = below.sum(axis=1) / in_bin.sum()
                blq_rows.append(
                    dict(
                        info,
                        OBSERVED=float(obs.BLQ[in_bin].mean()),
                        SIM_MEDIAN=float(np.quantile(fraction, 0.5)),
                        SIM_LOWER=float(np.quantile(fraction, low)),
                        SIM_UPPER=float(np.quantile(fraction, high)),
                    )
                )
    percentiles = pd.DataFrame(percentile_rows)
    blq = pd.DataFrame(blq_rows) if blq_rows else None
    observations = obs.loc[
        obs.BIN >= 0, ["ID", "TIME", "DV", "BLQ", "LLOQ", "STRATUM", "BIN", "row"]
    ].reset_index(drop=True)
    return VPCResult(
        percentiles=percentiles,
        blq=blq,
        observations=observations,
        edges=edges,
        quantiles=quantiles,
        ci=float(ci),
        n_sim=int(n_sim),
        seed=int(seed),
        pred_corrected=bool(pred_corrected),
        stratify=stratify,
        notes=tuple(notes),
    )


# -- observations, strata and limits ------------------------------------------------
def _observation_table(model, dataset: Dataset, stratify, lloq, notes):
    """Observations (EVID 0, MDV 0) in table order, and their (subject, record)
    positions in the padded arrays of ``prepare``."""
    subjects = prepare(model, dataset).subjects
    sub, rec = record_frame_index(subjects)
    keep = np.asarray(subjects.is_obs)[sub, rec]
    sub, rec = sub[keep], rec[keep]
    rows = np.asarray(subjects.row)[sub, rec]
    positions = dataset.record_positions(rows)  # a subset keeps the rows' numbers
    records = dataset.records
    obs = pd.DataFrame(
        {
            "ID": records["id"].to_numpy()[positions],
            "TIME": records["time"].to_numpy()[positions],
            "DV": records["dv"].to_numpy()[positions].astype(float),
            "CENS": records["cens"].to_numpy()[positions],
            "DVID": records["dvid"].to_numpy()[positions],
            "row": rows,
        }
    )
    obs["STRATUM"] = _strata(dataset, stratify, positions)
    obs["LLOQ"] = _limits(dataset, obs, lloq, positions)
    obs["BLQ"] = (obs.CENS == 1) | (obs.DV < obs.LLOQ)
    measured_below = int(((obs.CENS == 0) & (obs.DV < obs.LLOQ)).sum())
    if measured_below:
        obs.loc[(obs.CENS == 0) & (obs.DV < obs.LLOQ), "CENS"] = 1
        notes.append(f"{measured_below} measured observations below the LLOQ are treated as BLQ")
    return obs, (sub, rec)


def _column(dataset: Dataset, name: str, what: str) -> str:
    by_upper = {str(c).upper(): c for c in dataset.table.columns}
    if name.upper() not in by_upper:
        raise KeyError(
            f"{what} column {name!r} is not in the dataset; its columns are "
            f"{', '.join(map(str, dataset.table.columns))}"
        )
    return by_upper[name.upper()]


def _strata(dataset: Dataset, stratify, positions) -> np.ndarray:
    if stratify is None:
        return np.full(len(positions), None, dtype=object)
    if not isinstance(stratify, str):
        raise TypeError(f"stratify must be a column name or 'DVID', got {stratify!r}")
    if stratify.upper() == "DVID":
        levels = np.asarray(dataset.dvid_levels, dtype=object)
        values = levels[dataset.records["dvid"].to_numpy()[positions]]
    else:
        column = _column(dataset, stratify, "stratify")
        values = dataset.table[column].to_numpy()[positions]
    distinct = pd.unique(values)
    if len(distinct) > MAX_STRATA:
        raise ValueError(
            f"stratify column {stratify!r} has {len(distinct)} distinct values among the "
            f"observations; stratify by a categorical column (at most {MAX_STRATA} levels), "
            "e.g. a binned copy of a continuous covariate"
        )
    if pd.isna(values).any():
        raise ValueError(f"stratify column {stratify!r} is missing on some observation records")
    return values


def _limits(dataset: Dataset, obs: pd.DataFrame, lloq, positions) -> np.ndarray:
    """The lower limit of quantification of every observation (NaN: none)."""
    n = len(obs)
    if lloq is None:
        censored = obs.CENS == 1
        if not censored.any():
            return np.full(n, np.nan)
        limits = np.full(n, np.nan)
        record_limit = dataset.records["limit"].to_numpy()[positions]
        for endpoint in np.unique(obs.DVID[censored]):
            values = np.unique(record_limit[censored & (obs.DVID == endpoint)])
            if len(values) > 1:
                raise ValueError(
                    f"censored observations of endpoint {dataset.dvid_levels[endpoint]!r} have "
                    f"{len(values)} different limits ({', '.join(f'{v:g}' for v in values[:5])}): "
                    "pass lloq= as a number or the name of a column holding each record's LLOQ"
                )
            limits[(obs.DVID == endpoint).to_numpy()] = values[0]
        return limits
    if isinstance(lloq, str):
        column = _column(dataset, lloq, "lloq")
        return pd.to_numeric(dataset.table[column], errors="coerce").to_numpy(float)[positions]
    value = float(lloq)
    if not np.isfinite(value):
        raise ValueError(f"lloq must be a finite number or a column name, got {lloq!r}")
    return np.full(n, value)


def _levels(strata: pd.Series) -> list:
    values = strata.to_numpy()
    if len(values) and values[0] is None:
        return [None]
    try:
        return sorted(pd.unique(values))
    except TypeError:
        return list(pd.unique(values))


def _is_level(strata: pd.Series, level) -> pd.Series:
    return strata.isna() if level is None else strata == level


# -- binning ------------------------------------------------------------------------
def _bin_edges(times: np.ndarray, bins, level) -> np.ndarray:
    where = "" if level is None else f" (stratum {level!r})"
    if isinstance(bins, str):
        if bins != "auto":
            raise ValueError(
                f"bins must be 'auto', a number of bins or a sequence of edges, got {bins!r}"
            )
        distinct = np.unique(times)
        if len(distinct) <= AUTO_MAX_TIMES:
            middle = (distinct[1:] + distinct[:-1]) / 2.0
            return np.concatenate([[distinct[0]], middle, [distinct[-1]]])
        edges = _gap_edges(times, distinct)
        return edges if edges is not None else _equal_count_edges(times, AUTO_BINS)
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise ValueError(f"bins must be a positive number of bins, got {bins}")
        return _equal_count_edges(times, int(bins))
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(
            f"bin edges must be an increasing sequence of at least two times{where}, got {bins!r}"
        )
    return edges


def _gap_edges(times: np.ndarray, distinct: np.ndarray) -> np.ndarray | None:
    """Edges at the largest relative gaps between distinct times (see the module
    notes), or None when the times have no clusters."""

    def edges_at(cuts: list[int]) -> np.ndarray:
        middle = [(distinct[j] + distinct[j + 1]) / 2.0 for j in sorted(cuts)]
        return np.concatenate([[distinct[0]], middle, [distinct[-1]]])

    relative = np.diff(distinct) / np.maximum(np.abs(distinct[1:]), 1e-12)
    min_count = max(1, int(np.ceil(AUTO_MIN_FRACTION * len(times))))
    cuts: list[int] = []
    for i in np.argsort(-relative):
        if relative[i] < AUTO_MIN_GAP or len(cuts) == AUTO_MAX_TIMES - 1:
            break
        edges = edges_at([*cuts, int(i)])
        if np.bincount(_assign(times, edges), minlength=len(edges) - 1).min() >= min_count:
            cuts.append(int(i))
    return edges_at(cuts) if len(cuts) >= 2 else None


def _equal_count_edges(times: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.unique(np.quantile(times, np.linspace(0.0, 1.0, n_bins + 1)))
    if len(edges) == 1:  # every observation at one time
        edges = np.array([edges[0], edges[0]])
    return edges


def _assign(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time (-1 outside the edges); the last bin is closed."""
    index = np.searchsorted(edges, times, side="right") - 1
    index = np.where(times == edges[-1], len(edges) - 2, index)
    return np.where((times < edges[0]) | (times > edges[-1]), -1, index)


# -- prediction correction -------------------------------------------------------------
def _prediction_correct(model, dataset, obs: pd.DataFrame, simulated: np.ndarray, notes):
    pred = predict(model, dataset).set_index("row").PRED.reindex(obs.row).to_numpy()
    bad = ~(pred > 0) & (obs.BIN >= 0).to_numpy()
    if bad.any():
        notes.append(
            f"{int(bad.sum())} observations with PRED <= 0 cannot be prediction-corrected "
            "and are left out"
        )
        obs.loc[bad, "BIN"] = -1
    factor = np.full(len(obs), np.nan)
    for level in _levels(obs.STRATUM):
        for b in np.unique(obs.BIN[_is_level(obs.STRATUM, level) & (obs.BIN >= 0)]):
            in_bin = (_is_level(obs.STRATUM, level) & (obs.BIN == b)).to_numpy()
            factor[in_bin] = np.median(pred[in_bin]) / pred[in_bin]
    obs = obs.assign(PRED=pred, DV=obs.DV * factor)
    return obs, simulated * factor


# -- plot -----------------------------------------------------------------------------
_COLOURS = {"median": "#c0392b", "outer": "#2c6fbb"}


def _quantile_label(q: float) -> str:
    if q == 0.5:
        return "median"
    percent = f"{100 * q:g}"
    suffix = "th"
    if percent.endswith("1") and not percent.endswith("11"):
        suffix = "st"
    elif percent.endswith("2") and not percent.endswith("12"):
        suffix = "nd"
    elif percent.endswith("3") and not percent.endswith("13"):
        suffix = "rd"
    return f"{percent}{suffix} percentile"


def _with_unit(name: str, unit: str | None) -> str:
    return f"{name} ({unit})" if unit else name


def _plot(result: VPCResult, ax, *, log_y, show_observations, units, dv_label):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    strata = result.strata
    n_rows = 1 + (result.blq is not None)
    if ax is None:
        fig, axes = plt.subplots(
            n_rows,
            len(strata),
            figsize=(5.0 * len(strata) + 1.0, 4.2 if n_rows == 1 else 6.5),
            squeeze=False,
            sharex="col",
            gridspec_kw={"height_ratios": [3, 1.2][:n_rows]},
        )
    else:
        axes = np.asarray(ax, dtype=object).reshape(-1)
        if axes.size != n_rows * len(strata):
            raise ValueError(
                f"this VPC has {n_rows * len(strata)} panels ({n_rows} row(s) x {len(strata)} "
                f"strata): pass that many Axes, or ax=None"
            )
        axes = axes.reshape(n_rows, len(strata))
        fig = axes[0, 0].figure
    time_label = _with_unit("Time", units.get("time"))
    if dv_label is None:
        dv_label = (
            "Prediction-corrected concentration" if result.pred_corrected else "Concentration"
        )
    dv_label = _with_unit(dv_label, units.get("conc"))
    ci = f"{100 * result.ci:g}%"
    table = result.percentiles
    for column, level in enumerate(strata):
        panel = axes[0, column]
        rows = table[table.STRATUM.isna()] if level is None else table[table.STRATUM == level]
        observed = result.observations
        observed = (
            observed[observed.STRATUM.isna()]
            if level is None
            else observed[observed.STRATUM == level]
        )
        if show_observations:
            quantified = observed[~observed.BLQ]
            panel.plot(
                quantified.TIME, quantified.DV, "o", ms=2.5, color="0.55", alpha=0.45, zorder=1
            )
        for q in result.quantiles:
            line = rows[rows.QUANTILE == q].sort_values("TIME")
            colour = _COLOURS["median" if q == 0.5 else "outer"]
            panel.fill_between(
                line.TIME,
                line.SIM_LOWER,
                line.SIM_UPPER,
                color=colour,
                alpha=0.22 if q == 0.5 else 0.16,
                lw=0,
                zorder=0,
            )
            panel.plot(
                line.TIME,
                line.OBSERVED,
                color=colour,
                lw=1.8,
                ls="-" if q == 0.5 else "--",
                marker="o",
                ms=3,
                zorder=3,
            )
        limits = np.unique(observed.LLOQ[np.isfinite(observed.LLOQ)])
        if len(limits) == 1 and not result.pred_corrected:  # the limit is on the DV scale
            panel.axhline(limits[0], color="0.3", ls=":", lw=1.2, zorder=2)
        if log_y:
            panel.set_yscale("log")
            # 1-2-5 ticks with plain numbers: a pharmacometrician reads 0.5, 2, 5.
            panel.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            panel.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            panel.yaxis.set_minor_formatter(NullFormatter())
        panel.set_ylabel(dv_label if column == 0 else "")
        if level is not None:
            panel.set_title(f"{result.stratify} = {level}")
        panel.grid(alpha=0.3)
        if n_rows == 1:
            panel.set_xlabel(time_label)
        else:
            fractions = result.blq
            fractions = (
                fractions[fractions.STRATUM.isna()]
                if level is None
                else fractions[fractions.STRATUM == level]
            )
            fractions = fractions.sort_values("TIME")
            lower = axes[1, column]
            lower.fill_between(
                fractions.TIME,
                fractions.SIM_LOWER,
                fractions.SIM_UPPER,
                color=_COLOURS["outer"],
                alpha=0.2,
                lw=0,
            )
            lower.plot(
                fractions.TIME,
                fractions.OBSERVED,
                color=_COLOURS["median"],
                marker="o",
                ms=3,
                lw=1.8,
            )
            lower.set_ylim(-0.02, 1.02)
            lower.set_xlabel(time_label)
            lower.set_ylabel("Fraction BLQ" if column == 0 else "")
            lower.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=_COLOURS["median"], lw=1.8, marker="o", ms=3, label="Observed median"),
        Line2D(
            [],
            [],
            color=_COLOURS["outer"],
            lw=1.8,
            ls="--",
            marker="o",
            ms=3,
            label="Observed "
            + " / ".join(_quantile_label(q) for q in result.quantiles if q != 0.5),
        ),
        Patch(color=_COLOURS["median"], alpha=0.3, label=f"Simulated median: {ci} CI"),
        Patch(color=_COLOURS["outer"], alpha=0.25, label=f"Simulated outer percentiles: {ci} CI"),
    ]
    if show_observations:
        handles.insert(
            0, Line2D([], [], ls="", marker="o", ms=3, color="0.55", label="Observations")
        )
    if np.isfinite(result.observations.LLOQ).any() and not result.pred_corrected:
        handles.append(Line2D([], [], color="0.3", ls=":", lw=1.2, label="LLOQ"))
    kind = "Prediction-corrected VPC" if result.pred_corrected else "VPC"
    fig.suptitle(f"{kind}: {result.n_sim} simulated replicates", fontsize=10)
    if ax is None:
        # The legend goes under the panels, in as many columns as fit the width.
        width, height = fig.get_size_inches()
        ncol = 3 if width >= 10 else 2
        legend_rows = -(-len(handles) // ncol)
        bottom = (0.22 * legend_rows + 0.15) / height
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, bottom, 1, 0.97))
    else:
        axes[0, 0].legend(handles=handles, fontsize=7, frameon=False)
    return fig
