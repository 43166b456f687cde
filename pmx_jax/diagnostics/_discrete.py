"""Diagnostics of non-Gaussian endpoints: randomized quantile residuals, the
categorical (and count) VPC and the Kaplan-Meier VPC.

**Randomized quantile residuals** (Dunn & Smyth 1996, J Comput Graph Stat
5:236): for an observation ``y`` whose distribution function under the model
is ``F``, draw ``u`` uniformly on ``(F(y-), F(y))`` and report
``r = Phi^-1(u)``.  If the model is right, ``u`` is uniform and ``r``
standard normal, whatever the endpoint: the same QQ plot, histogram and
residual-versus-time plots read for binary, count, categorical and
time-to-event data as for concentrations.

* discrete data (binary, binomial, counts, ordered categories):
  ``F(y-) = P(Y < y)`` is ``F`` at the previous possible value (``y - 1``
  for counts, the previous declared category for an ordered score);
* time to event: with ``dH`` the cumulative hazard accrued since the
  previous record of the endpoint (after the last reset), as in the
  likelihood, ``F = 1 - exp(-dH)`` is the probability of an event by the
  record's time.  DV 1 (an event at TIME): ``u = F``; DV 0 (event-free at
  TIME): ``u ~ U(F, 1)``; DV 2 (an event since the previous record):
  ``u ~ U(0, F)``;
* Gaussian endpoints (error models): ``r = (T(y) - T(f)) / sd`` on the
  error model's scale (``T`` = log for :class:`~pmx_jax.Exponential`), which
  is ``Phi^-1(F(y))`` of a continuous observation (IWRES at the EBEs);
  a censored record (CENS = 1 / -1, with an interval LIMIT where there is
  one) has ``u`` uniform over the censoring interval's probability;
* :class:`~pmx_jax.LogLikelihood` endpoints have no distribution function:
  NaN (and a note).

Given a fit, the distribution is the subject's at its EBEs (conditional
residuals: with few observations per subject the EBEs shrink towards 0 and
the residuals are somewhat less dispersed than N(0, 1)); given a model, it
is the typical subject's (all etas 0), which is the population distribution
only when the random effects are negligible.

**Categorical VPC**: the proportion of each category of an endpoint per time
bin, observed against the median and a ``ci`` interval over ``n_sim``
simulated replicates of the dataset's design.  Categories: those declared by
:class:`~pmx_jax.OrderedCategorical`, 0/1 of :class:`~pmx_jax.Bernoulli`,
and for counts (Poisson, negative binomial, zero-inflated Poisson, binomial)
the classes ``0, 1, ..., k - 1`` and ``>= k`` (a *count VPC*).  Bins as in
:func:`pmx_jax.diagnostics.vpc`.

**Kaplan-Meier VPC** of a time-to-event endpoint: the product-limit
estimate of the time to each subject's first event, observed against the
median and ``ci`` interval of the Kaplan-Meier curves of ``n_sim`` simulated
replicates, on a common time grid.  Observed: the first record of the
endpoint with DV 1 or 2 is the event, at its TIME; a subject without one is
censored at its last record of the endpoint.  Simulated (virtual subject
``i`` follows the records of dataset subject ``i mod n``): the first record
with a simulated event gives the event's exact simulated time; otherwise the
subject is censored at its last record.  When the data report events as
DV 2 (an event since the previous record: visits), simulated events are
reported at the TIME of the record that follows them, as the data are
(``exact_times``).  Subjects without a record of the endpoint are left out.
A subject's records often stop at its observed event: its virtual copies
are then censored there, which leaves the simulated curves unbiased but
their band wider at late times; records up to the planned end of follow-up
(DV 0 after the event, for a first-event analysis) simulate the full study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.special import ndtri

from ..data._dataset import Dataset
from ..likelihood import Layout, prepare, record_frame_index, subject_predictions
from ..likelihood._prepare import level_endpoints
from ..model._model import Model
from ..model._observations import (
    CENSORED,
    EVENT,
    INTERVAL_EVENT,
    Bernoulli,
    Binomial,
    LogLikelihood,
    NegativeBinomial,
    OrderedCategorical,
    Poisson,
    ZeroInflatedPoisson,
)
from ..simulation import simulate
from ._npde import model_and_dataset, simulate_replicates
from ._vpc import _assign, _bin_edges

COUNT_MODELS = (Poisson, NegativeBinomial, ZeroInflatedPoisson, Binomial)
KM_GRID_POINTS = 201  # default grid of the simulated Kaplan-Meier band
_PNG_DPI = 120
_COLOURS = {"observed": "#c0392b", "simulated": "#2c6fbb"}


# -- endpoints -------------------------------------------------------------------------
def _endpoint_models(model: Model, dataset: Dataset) -> tuple:
    """The observation model of every DVID level (classes and static settings)."""
    return level_endpoints(model, dataset)


def _describe(endpoints: tuple, dataset: Dataset) -> str:
    return ", ".join(
        f"{dataset.dvid_levels[k]} ({type(e).__name__})"
        for k, e in enumerate(endpoints)
        if k < len(dataset.dvid_levels)
    )


def _level_of(dataset: Dataset, dvid: Any, endpoints: tuple) -> int:
    for k, value in enumerate(dataset.dvid_levels):
        if value == dvid or str(value) == str(dvid):
            return k
    raise ValueError(
        f"DVID {dvid!r} is not an endpoint of the dataset; its endpoints (DVID and "
        f"observation model) are {_describe(endpoints, dataset)}"
    )


def _select_endpoint(model, dataset, dvid, *, what: str, accepts, advice) -> tuple[int, Any]:
    """(DVID level index, observation model) of the endpoint a diagnostic
    checks: the one named by ``dvid``, or the only one it ``accepts``."""
    endpoints = _endpoint_models(model, dataset)
    observed = dataset._is_obs
    levels = dataset.records["dvid"].to_numpy()
    with_data = [
        k
        for k in range(min(len(endpoints), len(dataset.dvid_levels)))
        if (observed & (levels == k)).any()
    ]
    if dvid is None:
        usable = [k for k in with_data if accepts(endpoints[k])]
        if len(usable) == 1:
            return usable[0], endpoints[usable[0]]
        if not usable:
            raise ValueError(
                f"{what} needs an endpoint observed with {advice['kind']}; this model's "
                f"endpoints (DVID and observation model) are {_describe(endpoints, dataset)}"
            )
        raise ValueError(
            f"{what}: the model has several such endpoints (DVID "
            f"{', '.join(str(dataset.dvid_levels[k]) for k in usable)}): pass dvid= one of them"
        )
    level = _level_of(dataset, dvid, endpoints)
    if level >= len(endpoints):
        raise ValueError(
            f"DVID {dvid!r} has no endpoint in {type(model).__name__}.observe; its endpoints "
            f"are {_describe(endpoints, dataset)}"
        )
    endpoint = endpoints[level]
    if not accepts(endpoint):
        raise TypeError(
            f"DVID {dvid!r} is observed with {type(endpoint).__name__}: {what} is for "
            f"{advice['kind']}; {advice['instead'](endpoint)}"
        )
    if level not in with_data:
        raise ValueError(f"DVID {dvid!r} has no observation records in the dataset")
    return level, endpoint


def _elsewhere(endpoint) -> str:
    if getattr(endpoint, "gaussian", True):
        return "check a Gaussian endpoint with pmx_jax.diagnostics.vpc"
    if getattr(endpoint, "time_to_event", False):
        return "check a time-to-event endpoint with pmx_jax.diagnostics.kaplan_meier_vpc"
    if isinstance(endpoint, LogLikelihood):
        return "a LogLikelihood endpoint has no categories: check it with quantile_residuals"
    return "check it with pmx_jax.diagnostics.quantile_residuals"


def _is_categorical(endpoint) -> bool:
    return isinstance(endpoint, (OrderedCategorical, Bernoulli, *COUNT_MODELS))


def _check_settings(n_sim: int, ci: float) -> None:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.9), got {ci}")
    if int(n_sim) != n_sim or int(n_sim) < 2:
        raise ValueError(
            f"n_sim must be at least 2 replicates (100 or more in practice), got {n_sim}"
        )


def _observations(model: Model, dataset: Dataset):
    """Prepared subjects and, in table order, the (subject, record) positions
    and table positions of the observation records."""
    subjects = prepare(model, dataset).subjects
    sub, rec = record_frame_index(subjects)
    keep = np.asarray(subjects.is_obs)[sub, rec]
    sub, rec = sub[keep], rec[keep]
    positions = dataset.record_positions(np.asarray(subjects.row)[sub, rec])
    return subjects, sub, rec, positions


# -- randomized quantile residuals -----------------------------------------------------
@eqx.filter_jit
def _record_distributions(model: Model, data, b, previous, layout: Layout):
    """Per record of every subject: ``F(y)``, ``F`` at the previous possible
    value, the cumulative hazard, the Gaussian standardised residual and the
    log probabilities below/above LIMIT and the LIMIT column's bound."""

    def one(data, b, previous):
        eta, iov = layout.split(b)
        result = subject_predictions(model, data, eta, iov)
        records = data.records

        def observe(amounts, params, dvid, dv, below, cens, limit, bound):
            endpoint = model.observation(amounts, params, dvid)
            measured = cens == 0
            y = jnp.where(measured, dv, endpoint.prediction)
            z = (endpoint.transform(y) - endpoint.mean()) / jnp.sqrt(endpoint.variance())
            finite_bound = jnp.where(jnp.isfinite(bound), bound, limit)
            _, _, cumulative = endpoint.event_terms()
            return dict(
                upper=endpoint.cdf(dv),
                lower=endpoint.cdf(below),
                cumulative=cumulative,
                z=z,
                limit_below=endpoint.log_cdf(limit),
                limit_above=endpoint.log_sf(limit),
                bound_below=endpoint.log_cdf(finite_bound),
                bound_above=endpoint.log_sf(finite_bound),
            )

        values = jax.vmap(observe)(
            result.amounts,
            result.params,
            records.dvid,
            records.dv,
            previous,
            records.cens,
            records.limit,
            records.bound,
        )
        return values, result.ok

    return jax.vmap(one)(data, b, previous)


def _random_effects(fit_or_model, dataset: Dataset, layout: Layout) -> np.ndarray:
    """The EBEs of a fit for the dataset's subjects (by ID), or zeros."""
    from ..estimation import FitResult

    if isinstance(fit_or_model, Model):
        return np.zeros((dataset.n_subjects, layout.size))
    if isinstance(fit_or_model, FitResult):
        ebes = fit_or_model.ebe_matrix
    else:
        # A run read back from disk keeps the IIV etas by name.
        ebes = fit_or_model.ebes[list(fit_or_model.model.eta_names)].to_numpy(dtype=float)
    if ebes.shape[1] != layout.size:
        raise ValueError(
            f"the fit has {ebes.shape[1]} random effects per subject, but the model on this "
            f"dataset needs {layout.size} (its occasions differ from the fit's data): pass "
            "the fit's own data, or the fitted model (fit.model) for population residuals"
        )
    index = {str(i): k for k, i in enumerate(fit_or_model.ebes["ID"])}
    missing = [i for i in dataset.ids if str(i) not in index]
    if missing:
        raise ValueError(
            f"subjects ID {', '.join(map(str, missing[:10]))} are not in the fit, so they "
            "have no EBEs: pass the fit's own data, or the fitted model (fit.model) for "
            "population residuals"
        )
    return ebes[[index[str(i)] for i in dataset.ids]]


def _previous_values(subjects, endpoints: tuple) -> np.ndarray:
    """The possible value just below each record's DV: the previous declared
    category of an ordered score, ``DV - 1`` otherwise (``F`` there is
    ``P(Y < DV)`` of a discrete endpoint)."""
    dv = np.asarray(subjects.dv, dtype=float)
    dvid = np.asarray(subjects.dvid)
    previous = dv - 1.0
    for level, endpoint in enumerate(endpoints):
        if isinstance(endpoint, OrderedCategorical):
            values = np.asarray(endpoint.categories, dtype=float)
            rank = np.searchsorted(values, dv)  # index of DV among the categories
            below = np.where(rank > 0, values[np.maximum(rank - 1, 0)], values[0] - 1.0)
            previous = np.where(dvid == level, below, previous)
    return previous


def _hazard_increments(subjects, cumulative: np.ndarray, event_levels) -> np.ndarray:
    """The cumulative hazard accrued at each record since the previous
    observed record of its time-to-event endpoint after the last reset
    (the convention of the likelihood kernel)."""
    is_obs = np.asarray(subjects.is_obs)
    dvid = np.asarray(subjects.dvid)
    evid = np.asarray(subjects.evid)
    n_sub, n_rec = is_obs.shape
    index = np.broadcast_to(np.arange(n_rec), (n_sub, n_rec))
    reset = (evid == 3) | (evid == 4)
    last_reset = np.maximum.accumulate(np.where(reset, index, -1), axis=1)
    start = np.zeros_like(cumulative)
    for level, is_event in enumerate(event_levels):
        if not is_event:
            continue
        on = is_obs & (dvid == level)
        upto = np.maximum.accumulate(np.where(on, index, -1), axis=1)
        previous = np.concatenate([np.full((n_sub, 1), -1), upto[:, :-1]], axis=1)
        previous = np.where(previous > last_reset, previous, -1)
        value = np.take_along_axis(cumulative, np.maximum(previous, 0), axis=1)
        start = np.where(on & (previous >= 0), value, start)
    return cumulative - start


def quantile_residuals(
    fit_or_model: Any, data: Dataset | pd.DataFrame | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """Randomized quantile residuals of every observation (see the module
    notes): standard normal, independent, when the model is right.

    Args:
        fit_or_model: a :class:`~pmx_jax.FitResult` (residuals at each
            subject's EBEs) or a :class:`~pmx_jax.Model` (the typical subject,
            all etas 0).
        data: the dataset (required with a Model; with a FitResult it replaces
            the fit's data, whose subjects must be among the fit's).
        seed: seed of the uniform draws that spread a discrete observation
            over its probability (same seed, same residuals).

    Returns:
        One row per observation record, in table order: ID, TIME, DVID, DV,
        ENDPOINT (the observation model's class), RESIDUAL and ``row``
        (0-based table row).  ``frame.attrs["etas"]`` is ``"EBE"`` or
        ``"population"`` (which distribution the residuals are from);
        ``frame.attrs["notes"]`` says what has no residual, and why.

    Example: a QQ plot of the residuals of a count model against N(0, 1),
    ``scipy.stats.probplot(quantile_residuals(fit).RESIDUAL, plot=ax)``.
    """
    model, dataset = model_and_dataset(fit_or_model, data)
    prepared = prepare(model, dataset)
    subjects = prepared.subjects
    endpoints = _endpoint_models(model, dataset)
    layout = Layout.of(model, prepared.n_occasions)
    b = _random_effects(fit_or_model, dataset, layout)
    conditional = not isinstance(fit_or_model, Model)  # a FitResult: at its EBEs
    dtype = subjects.time.dtype
    previous = _previous_values(subjects, endpoints)
    values, ok = jax.device_get(
        _record_distributions(
            model,
            prepared.subject_data(),
            jnp.asarray(b, dtype),
            jnp.asarray(previous, dtype),
            layout,
        )
    )
    bad = np.flatnonzero(~np.asarray(ok))
    if bad.size:
        ids = ", ".join(str(dataset.ids[i]) for i in bad[:10])
        where = "EBEs" if conditional else "typical values (etas 0)"
        raise FloatingPointError(
            f"predictions are not finite at the {where} of subject(s) ID {ids}: check their "
            "individual parameters (e.g. a non-positive volume or clearance) and doses"
        )
    values = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    increments = _hazard_increments(subjects, values["cumulative"], prepared.event_levels)

    sub, rec = record_frame_index(subjects)
    keep = np.asarray(subjects.is_obs)[sub, rec]
    sub, rec = sub[keep], rec[keep]
    positions = dataset.record_positions(np.asarray(subjects.row)[sub, rec])

    def at(name):
        return values[name][sub, rec]

    level = np.asarray(subjects.dvid)[sub, rec]
    dv = np.asarray(subjects.dv, dtype=float)[sub, rec]
    cens = np.asarray(subjects.cens)[sub, rec]
    bound = np.asarray(subjects.bound, dtype=float)[sub, rec]
    kinds = np.array([type(e).__name__ for e in endpoints], dtype=object)[level]
    gaussian = np.asarray(prepared.gaussian_levels)[level]
    event = np.asarray(prepared.event_levels)[level]
    no_cdf = np.array([isinstance(e, LogLikelihood) for e in endpoints])[level]
    discrete = ~gaussian & ~event & ~no_cdf

    # Each record's residual is Phi^-1(u), u uniform on [u_low, u_high]; the
    # complement q = 1 - u on [q_low, q_high] is kept too, so that the upper
    # tail is as accurate as the lower one (a long event-free follow-up).
    nan = np.full(len(dv), np.nan)
    u_low, u_high, q_low, q_high = nan.copy(), nan.copy(), nan.copy(), nan.copy()

    def put(where, low, high, q_lo, q_hi):
        for array, value in ((u_low, low), (u_high, high), (q_low, q_lo), (q_high, q_hi)):
            array[where] = np.broadcast_to(value, array.shape)[where]

    put(discrete, at("lower"), at("upper"), 1.0 - at("upper"), 1.0 - at("lower"))
    dh = np.maximum(increments[sub, rec], 0.0)
    hit, survive = -np.expm1(-dh), np.exp(-dh)
    put(event & (dv == EVENT), hit, hit, survive, survive)
    put(event & (dv == CENSORED), hit, 1.0, 0.0, survive)
    put(event & (dv == INTERVAL_EVENT), 0.0, hit, survive, 1.0)
    has_bound = np.isfinite(bound)
    below_limit, above_limit = np.exp(at("limit_below")), np.exp(at("limit_above"))
    below_bound, above_bound = np.exp(at("bound_below")), np.exp(at("bound_above"))
    put(
        gaussian & (cens > 0),
        np.where(has_bound, below_bound, 0.0),
        below_limit,
        above_limit,
        np.where(has_bound, above_bound, 1.0),
    )
    put(
        gaussian & (cens < 0),
        below_limit,
        np.where(has_bound, below_bound, 1.0),
        np.where(has_bound, above_bound, 0.0),
        above_limit,
    )
    draw = np.random.default_rng(seed).uniform(size=len(dv))
    u = u_low + draw * (u_high - u_low)
    q = q_high - draw * (q_high - q_low)
    with np.errstate(invalid="ignore", divide="ignore"):
        residual = np.where(u < 0.5, ndtri(u), -ndtri(q))
    residual = np.where(gaussian & (cens == 0), at("z"), residual)

    notes = []
    if no_cdf.any():
        notes.append(
            f"{int(no_cdf.sum())} observations of LogLikelihood endpoints have no distribution "
            "function: RESIDUAL is NaN there"
        )
    if (gaussian & (cens == 0)).any():
        notes.append(
            "Gaussian endpoints: RESIDUAL = (T(DV) - T(IPRED)) / SD on the error model's scale"
        )
    records = dataset.records
    frame = pd.DataFrame(
        {
            "ID": records["id"].to_numpy()[positions],
            "TIME": records["time"].to_numpy()[positions],
            "DVID": np.asarray(dataset.dvid_levels, dtype=object)[level],
            "DV": dv,
            "ENDPOINT": kinds,
            "RESIDUAL": residual,
            "row": records["row"].to_numpy()[positions],
        }
    )
    frame.attrs["etas"] = "EBE" if conditional else "population"
    frame.attrs["notes"] = tuple(notes)
    return frame


# -- categorical and count VPC ---------------------------------------------------------
@dataclass(frozen=True)
class CategoricalVPCResult:
    """A categorical (or count) VPC: per time bin and category, the observed
    proportion against the distribution of simulated proportions.

    Attributes:
        proportions: one row per bin and category: BIN (0-based), TIME_LOW,
            TIME_HIGH (edges), TIME (median observation time), N_OBS, CATEGORY
            (its label, e.g. ``"2"`` or ``">= 3"``), OBSERVED, SIM_MEDIAN,
            SIM_LOWER, SIM_UPPER (the ``ci`` interval over replicates) and
            SIM_MEAN (these sum to 1 over the categories, as OBSERVED does).
        observations: the observations used: ID, TIME, DV, CATEGORY, BIN, row.
        categories: the category labels, in order.
        edges: the bin edges.
        dvid, endpoint: the endpoint's DVID and its observation model's class.
        ci, n_sim, seed: the settings.
        notes: what was left out or assumed, in words.
    """

    proportions: pd.DataFrame
    observations: pd.DataFrame
    categories: tuple[str, ...]
    edges: np.ndarray
    dvid: Any
    endpoint: str
    ci: float
    n_sim: int
    seed: int
    notes: tuple[str, ...] = field(default=())

    def plot(self, path: str | Path | None = None, *, units: dict[str, str] | None = None):
        """Draw the VPC (one panel per category: observed proportion, line
        with points; simulated median, dashed; its ``ci`` interval, shaded)
        and return the matplotlib Figure; ``path`` also saves it."""
        return _plot_categorical(self, path, units or {})


def _classes(endpoint, k: int) -> tuple[tuple[str, ...], Any]:
    """Category labels and the function giving each value's category index."""
    if isinstance(endpoint, OrderedCategorical):
        values = np.asarray(endpoint.categories, dtype=float)
        labels = tuple(f"{v:g}" for v in values)
        return labels, lambda dv: np.searchsorted(values, dv)
    if isinstance(endpoint, Bernoulli):
        return ("0", "1"), lambda dv: (dv >= 0.5).astype(int)
    labels = (*(str(c) for c in range(k)), f">= {k}")
    return labels, lambda dv: np.clip(np.floor(dv), 0, k).astype(int)


def categorical_vpc(
    fit_or_model: Any,
    data: Dataset | pd.DataFrame | None = None,
    *,
    n_sim: int = 200,
    bins: str | int | Sequence[float] = "auto",
    ci: float = 0.9,
    dvid: Any = None,
    k: int = 3,
    seed: int = 0,
    chunk_size: int | None = None,
) -> CategoricalVPCResult:
    """Categorical VPC of a binary, ordered categorical or count endpoint.

    Per time bin, the observed proportion of each category is compared with
    the median and ``ci`` interval of the same proportion over ``n_sim``
    replicates of the dataset's design simulated under the model (etas and
    observation draws; one batched :func:`pmx_jax.simulate` of
    ``n_sim * n_subjects`` virtual subjects).  Applied to a count endpoint
    (Poisson, negative binomial, zero-inflated Poisson, binomial) this is a
    **count VPC**: the classes are the counts ``0, 1, ..., k - 1`` and
    ``>= k`` (see also :func:`count_vpc`).

    Args:
        fit_or_model: a :class:`~pmx_jax.FitResult` (its fitted model and data)
            or a :class:`~pmx_jax.Model` at the parameter values to check.
        data: the dataset (required with a Model; with a FitResult it replaces
            the fit's data).
        n_sim: replicates simulated (100 or more for a smooth band).
        bins: ``"auto"``, a number of equal-count bins, or a sequence of time
            edges, as in :func:`pmx_jax.diagnostics.vpc`.
        ci: coverage of the simulated intervals.
        dvid: the endpoint's DVID value (needed when the model has several
            binary, categorical or count endpoints).
        k: counts of ``k`` or more form one class (count endpoints only).
        seed: seed of the simulation.
        chunk_size: passed to :func:`pmx_jax.simulate`.
    """
    return _proportions_vpc(
        fit_or_model,
        data,
        (n_sim, bins, ci, dvid, k, seed, chunk_size),
        what="categorical_vpc",
        accepts=_is_categorical,
        advice=dict(
            kind="binary, ordered categorical or count data (Bernoulli, OrderedCategorical, "
            "Poisson, NegativeBinomial, ZeroInflatedPoisson, Binomial)",
            instead=_elsewhere,
        ),
    )


def count_vpc(
    fit_or_model: Any,
    data: Dataset | pd.DataFrame | None = None,
    *,
    n_sim: int = 200,
    bins: str | int | Sequence[float] = "auto",
    ci: float = 0.9,
    dvid: Any = None,
    k: int = 3,
    seed: int = 0,
    chunk_size: int | None = None,
) -> CategoricalVPCResult:
    """Count VPC: :func:`categorical_vpc` of a count endpoint (Poisson,
    negative binomial, zero-inflated Poisson, binomial), whose classes are
    the counts ``0, 1, ..., k - 1`` and ``>= k``.  Arguments as for
    :func:`categorical_vpc`; without ``dvid`` the model's one count
    endpoint is checked."""
    return _proportions_vpc(
        fit_or_model,
        data,
        (n_sim, bins, ci, dvid, k, seed, chunk_size),
        what="count_vpc",
        accepts=lambda e: isinstance(e, COUNT_MODELS),
        advice=dict(
            kind="count data (Poisson, NegativeBinomial, ZeroInflatedPoisson, Binomial)",
            instead=lambda e: (
                "check binary and categorical data with categorical_vpc"
                if _is_categorical(e)
                else _elsewhere(e)
            ),
        ),
    )


def _proportions_vpc(fit_or_model, data, settings, *, what, accepts, advice):
    """:func:`categorical_vpc` and :func:`count_vpc` on the endpoint that
    ``accepts`` selects; ``settings``: their keyword arguments, in order."""
    n_sim, bins, ci, dvid, k, seed, chunk_size = settings
    _check_settings(n_sim, ci)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer (counts >= k form one class), got {k}")
    model, dataset = model_and_dataset(fit_or_model, data)
    level, endpoint = _select_endpoint(
        model, dataset, dvid, what=what, accepts=accepts, advice=advice
    )
    labels, category_of = _classes(endpoint, int(k))
    n_classes = len(labels)
    subjects, sub, rec, positions = _observations(model, dataset)
    on = np.asarray(subjects.dvid)[sub, rec] == level
    sub, rec, positions = sub[on], rec[on], positions[on]
    records = dataset.records
    time = records["time"].to_numpy(dtype=float)[positions]
    dv = records["dv"].to_numpy(dtype=float)[positions]
    observed_class = category_of(dv)

    notes: list[str] = []
    edges = _bin_edges(time, bins, None)
    bin_index = _assign(time, edges)
    outside = int((bin_index < 0).sum())
    if outside:
        notes.append(f"{outside} observations outside the given bin edges are left out")

    simulated = simulate_replicates(model, dataset, int(n_sim), seed, chunk_size)[:, sub, rec]
    simulated_class = category_of(simulated)  # (n_sim, n_obs)

    low, high = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    rows = []
    for b in range(len(edges) - 1):
        in_bin = bin_index == b
        n_obs = int(in_bin.sum())
        if not n_obs:
            continue
        observed = np.bincount(observed_class[in_bin], minlength=n_classes) / n_obs
        one_hot = simulated_class[:, in_bin, None] == np.arange(n_classes)
        fractions = one_hot.sum(axis=1) / n_obs  # (n_sim, n_classes)
        summary = np.quantile(fractions, (0.5, low, high), axis=0)
        mean = fractions.mean(axis=0)
        for c, label in enumerate(labels):
            rows.append(
                dict(
                    BIN=b,
                    TIME_LOW=edges[b],
                    TIME_HIGH=edges[b + 1],
                    TIME=float(np.median(time[in_bin])),
                    N_OBS=n_obs,
                    CATEGORY=label,
                    OBSERVED=observed[c],
                    SIM_MEDIAN=summary[0, c],
                    SIM_LOWER=summary[1, c],
                    SIM_UPPER=summary[2, c],
                    SIM_MEAN=mean[c],
                )
            )
    observations = pd.DataFrame(
        {
            "ID": records["id"].to_numpy()[positions],
            "TIME": time,
            "DV": dv,
            "CATEGORY": np.asarray(labels, dtype=object)[observed_class],
            "BIN": bin_index,
            "row": records["row"].to_numpy()[positions],
        }
    )
    return CategoricalVPCResult(
        proportions=pd.DataFrame(rows),
        observations=observations[observations.BIN >= 0].reset_index(drop=True),
        categories=labels,
        edges=edges,
        dvid=dataset.dvid_levels[level],
        endpoint=type(endpoint).__name__,
        ci=float(ci),
        n_sim=int(n_sim),
        seed=int(seed),
        notes=tuple(notes),
    )


# -- Kaplan-Meier ----------------------------------------------------------------------
def kaplan_meier(time: Any, event: Any) -> pd.DataFrame:
    """Kaplan-Meier (product-limit) estimate of the survival function from
    right-censored times: ``S(t) = prod_{t_j <= t} (1 - d_j / n_j)`` with
    ``d_j`` events among the ``n_j`` subjects at risk (time ``>= t_j``) at
    each distinct time ``t_j``.

    Args:
        time: the time of each subject's event or censoring.
        event: True (or 1) for an event, False (0) for a censored time.

    Returns:
        One row per distinct time: TIME, SURVIVAL (just after TIME), N_RISK,
        N_EVENT, N_CENSOR.

    Example
    -------
    >>> kaplan_meier([1.0, 2.0, 2.0, 3.0], [1, 0, 1, 1]).SURVIVAL.round(3).tolist()
    [0.75, 0.5, 0.0]
    """
    time = np.asarray(time, dtype=float).ravel()
    event = np.asarray(event).ravel().astype(bool)
    if time.shape != event.shape:
        raise ValueError(f"time and event have different lengths ({time.size}, {event.size})")
    if not np.all(np.isfinite(time)):
        raise ValueError("every time must be finite")
    distinct, index = np.unique(time, return_inverse=True)
    n_event = np.bincount(index, weights=event, minlength=distinct.size)
    n_total = np.bincount(index, minlength=distinct.size)
    n_risk = n_total[::-1].cumsum()[::-1]
    survival = np.cumprod(1.0 - n_event / np.maximum(n_risk, 1))
    return pd.DataFrame(
        {
            "TIME": distinct,
            "SURVIVAL": survival,
            "N_RISK": n_risk,
            "N_EVENT": n_event.astype(int),
            "N_CENSOR": (n_total - n_event).astype(int),
        }
    )


def _survival_on(grid: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """The Kaplan-Meier step function evaluated on ``grid`` (right-continuous:
    events at a grid time count there)."""
    table = kaplan_meier(time, event)
    where = np.searchsorted(table.TIME.to_numpy(), grid, side="right") - 1
    values = table.SURVIVAL.to_numpy()
    return np.where(where >= 0, values[np.maximum(where, 0)], 1.0)


def _first_events(on: np.ndarray, events: np.ndarray, time: np.ndarray, when: np.ndarray):
    """Per subject (row): (has records of the endpoint, time, event): the
    first record with an event gives ``when`` there; otherwise censored at the
    last record of the endpoint."""
    n_rec = on.shape[1]
    has = on.any(axis=1)
    hit = on & events
    any_event = hit.any(axis=1)
    first = np.argmax(hit, axis=1)
    last = n_rec - 1 - np.argmax(on[:, ::-1], axis=1)
    rows = np.arange(on.shape[0])
    times = np.where(any_event, when[rows, first], time[rows, last])
    return has, times, any_event


@dataclass(frozen=True)
class KaplanMeierVPCResult:
    """A Kaplan-Meier VPC of a time-to-event endpoint.

    Attributes:
        observed: the observed Kaplan-Meier table: TIME, SURVIVAL, N_RISK,
            N_EVENT, N_CENSOR (one row per distinct time, see
            :func:`kaplan_meier`).
        simulated: the simulated curves on the grid: TIME, MEDIAN, LOWER, UPPER
            (the ``ci`` interval of the survival over replicates).
        subjects: per subject: ID, TIME (first event or censoring), EVENT.
        dvid, ci, n_sim, seed, exact_times: the endpoint and the settings.
        notes: what was left out or assumed, in words.
    """

    observed: pd.DataFrame
    simulated: pd.DataFrame
    subjects: pd.DataFrame
    dvid: Any
    ci: float
    n_sim: int
    seed: int
    exact_times: bool
    notes: tuple[str, ...] = field(default=())

    def plot(
        self,
        path: str | Path | None = None,
        *,
        ax: Any = None,
        units: dict[str, str] | None = None,
    ):
        """Draw the VPC and return the matplotlib Figure: the observed curve
        (step, with a tick at each censored time), the simulated median
        (dashed) and its ``ci`` interval (shaded); ``path`` also saves it."""
        return _plot_kaplan_meier(self, path, ax, units or {})


def kaplan_meier_vpc(
    fit_or_model: Any,
    data: Dataset | pd.DataFrame | None = None,
    *,
    n_sim: int = 200,
    ci: float = 0.9,
    dvid: Any = None,
    seed: int = 0,
    grid: Sequence[float] | None = None,
    exact_times: bool | None = None,
    chunk_size: int | None = None,
) -> KaplanMeierVPCResult:
    """Kaplan-Meier VPC of the time to the first event of a time-to-event
    endpoint (see the module notes for how events and censoring are read).

    Args:
        fit_or_model: a :class:`~pmx_jax.FitResult` (its fitted model and data)
            or a :class:`~pmx_jax.Model` at the parameter values to check.
        data: the dataset (required with a Model; with a FitResult it replaces
            the fit's data).
        n_sim: replicates of the dataset's design simulated (one batched
            :func:`pmx_jax.simulate` of ``n_sim * n_subjects`` subjects).
        ci: coverage of the simulated interval.
        dvid: the endpoint's DVID value (needed when the model has several
            time-to-event endpoints).
        seed: seed of the simulation.
        grid: times at which the simulated curves are summarised (default:
            201 equally spaced times from 0 to the end of follow-up).
        exact_times: simulated events at their exact simulated times (True)
            or at the TIME of the record that reports them (False, for events
            ascertained at visits); default: False when the endpoint's data
            have DV 2 records, else True.
        chunk_size: passed to :func:`pmx_jax.simulate`.
    """
    _check_settings(n_sim, ci)
    n_sim = int(n_sim)
    model, dataset = model_and_dataset(fit_or_model, data)
    level, _ = _select_endpoint(
        model,
        dataset,
        dvid,
        what="kaplan_meier_vpc",
        accepts=lambda e: bool(getattr(e, "time_to_event", False)),
        advice=dict(
            kind="time-to-event data (TimeToEvent)",
            instead=_elsewhere,
        ),
    )
    subjects = prepare(model, dataset).subjects
    on = np.asarray(subjects.is_obs) & (np.asarray(subjects.dvid) == level)
    dv = np.asarray(subjects.dv, dtype=float)
    time = np.asarray(subjects.time, dtype=float)
    has, observed_time, observed_event = _first_events(
        on, (dv == EVENT) | (dv == INTERVAL_EVENT), time, time
    )
    notes: list[str] = []
    if not has.all():
        notes.append(
            f"{int((~has).sum())} subjects have no record of the endpoint and are left out"
        )
    if grid is None:
        grid_times = np.linspace(0.0, float(time[on].max()), KM_GRID_POINTS)
    else:
        grid_times = np.asarray(grid, dtype=float).ravel()
        if grid_times.size < 1 or np.any(np.diff(grid_times) <= 0):
            raise ValueError(f"grid must be an increasing sequence of times, got {grid!r}")

    n_sub = dataset.n_subjects
    sim_time = np.empty(n_sim * n_sub)
    sim_event = np.empty(n_sim * n_sub, dtype=bool)
    failed: list[int] = []
    if exact_times is None:
        exact_times = not (on & (dv == INTERVAL_EVENT)).any()
        if not exact_times:
            notes.append(
                "the data report events as DV 2 (since the previous record): simulated "
                "events are reported at the TIME of the record that follows them"
            )

    def keep(first: int, chunk: tuple[np.ndarray, ...]) -> None:
        _, chunk_dv, _, ok, event_time = chunk[:5]
        template = (first + np.arange(len(chunk_dv))) % n_sub
        when = event_time if exact_times else time[template]
        _, t, e = _first_events(on[template], chunk_dv == EVENT, time[template], when)
        sim_time[first : first + len(t)] = t
        sim_event[first : first + len(t)] = e
        failed.extend(first + np.flatnonzero(~np.asarray(ok)))

    if chunk_size is None and jax.default_backend() == "cpu":
        # As pmx_jax.diagnostics.vpc: larger chunks than simulate's CPU default
        # suit the short designs of most diagnostics.
        chunk_size = int(np.clip(2**14 // max(time.shape[1], 1), 128, 2048))
    simulate(
        model,
        dataset,
        key=jax.random.PRNGKey(seed),
        n_subjects=n_sim * n_sub,
        chunk_size=chunk_size,
        on_chunk=keep,
    )
    if failed:
        ids = sorted({dataset.ids[i % n_sub] for i in failed}, key=str)[:10]
        raise FloatingPointError(
            f"{len(failed)} simulated subjects have non-finite predictions (designs of ID "
            f"{', '.join(map(str, ids))}): check the individual parameters the model gives "
            "under its OMEGA"
        )
    sim_time = sim_time.reshape(n_sim, n_sub)[:, has]
    sim_event = sim_event.reshape(n_sim, n_sub)[:, has]
    curves = np.stack([_survival_on(grid_times, sim_time[r], sim_event[r]) for r in range(n_sim)])
    low, high = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    summary = np.quantile(curves, (0.5, low, high), axis=0)
    simulated = pd.DataFrame(
        {"TIME": grid_times, "MEDIAN": summary[0], "LOWER": summary[1], "UPPER": summary[2]}
    )
    per_subject = pd.DataFrame(
        {
            "ID": np.asarray(dataset.ids, dtype=object)[has],
            "TIME": observed_time[has],
            "EVENT": observed_event[has],
        }
    )
    return KaplanMeierVPCResult(
        observed=kaplan_meier(observed_time[has], observed_event[has]),
        simulated=simulated,
        subjects=per_subject,
        dvid=dataset.dvid_levels[level],
        ci=float(ci),
        n_sim=n_sim,
        seed=int(seed),
        exact_times=bool(exact_times),
        notes=tuple(notes),
    )


# -- plots -----------------------------------------------------------------------------
def _with_unit(name: str, unit: str | None) -> str:
    return f"{name} ({unit})" if unit else name


def _save(figure, path):
    if path is not None:
        path = Path(path)
        figure.savefig(path, dpi=_PNG_DPI if path.suffix.lower() == ".png" else None)
    return figure


def _plot_categorical(result: CategoricalVPCResult, path, units):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(result.categories)
    # One row of up to 5 panels; more categories wrap into rows of at most 4.
    n_rows = 1 if n <= 5 else -(-n // 4)
    n_cols = -(-n // n_rows)
    figure = Figure(figsize=(3.4 * n_cols + 0.6, 2.9 * n_rows + 1.0))
    axes = np.atleast_1d(figure.subplots(n_rows, n_cols, sharex=True, squeeze=False)).ravel()
    table = result.proportions
    name = "Count" if result.endpoint in {m.__name__ for m in COUNT_MODELS} else "DV"
    for panel, label in zip(axes, result.categories, strict=False):
        rows = table[table.CATEGORY == label].sort_values("TIME")
        colour = _COLOURS["simulated"]
        if len(rows) > 1:
            panel.fill_between(
                rows.TIME, rows.SIM_LOWER, rows.SIM_UPPER, color=colour, alpha=0.22, lw=0
            )
        else:
            panel.errorbar(
                rows.TIME,
                rows.SIM_MEDIAN,
                yerr=[rows.SIM_MEDIAN - rows.SIM_LOWER, rows.SIM_UPPER - rows.SIM_MEDIAN],
                color=colour,
                alpha=0.5,
                lw=6,
                capsize=0,
            )
        panel.plot(rows.TIME, rows.SIM_MEDIAN, color=colour, lw=1.5, ls="--")
        panel.plot(rows.TIME, rows.OBSERVED, color=_COLOURS["observed"], lw=1.8, marker="o", ms=3.5)
        top = float(np.nanmax(np.r_[rows.SIM_UPPER, rows.OBSERVED, 0.05]))
        panel.set_ylim(0.0, min(1.0, 1.15 * top) if top < 0.87 else 1.02)
        title = f"{name} \u2265 {label[3:]}" if label.startswith(">=") else f"{name} = {label}"
        panel.set_title(title, fontsize=10)
        panel.grid(alpha=0.3)
    for panel in axes[n:]:
        panel.set_visible(False)
    for row in range(n_rows):
        axes[row * n_cols].set_ylabel("Proportion")
    for index, panel in enumerate(axes[:n]):
        if index + n_cols >= n:  # no panel below it
            panel.set_xlabel(_with_unit("Time", units.get("time")))
            panel.xaxis.set_tick_params(labelbottom=True)
    ci = f"{100 * result.ci:g}%"
    handles = [
        Line2D([], [], color=_COLOURS["observed"], lw=1.8, marker="o", ms=3.5, label="Observed"),
        Line2D([], [], color=_COLOURS["simulated"], lw=1.5, ls="--", label="Simulated median"),
        Patch(color=_COLOURS["simulated"], alpha=0.3, label=f"Simulated {ci} interval"),
    ]
    kind = "Count VPC" if name == "Count" else "Categorical VPC"
    where = "" if result.dvid is None else f", DVID {result.dvid}"
    figure.suptitle(
        f"{kind} ({result.endpoint}{where}): {result.n_sim} simulated replicates", fontsize=11
    )
    figure.legend(handles=handles, loc="lower center", ncol=3, fontsize=8.5, frameon=False)
    height = figure.get_size_inches()[1]
    figure.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.35 / height))
    return _save(figure, path)


def _plot_kaplan_meier(result: KaplanMeierVPCResult, path, ax, units):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if ax is None:
        figure = Figure(figsize=(6.4, 4.6))
        ax = figure.subplots()
    else:
        figure = ax.figure
    band = result.simulated
    colour = _COLOURS["simulated"]
    ax.fill_between(band.TIME, band.LOWER, band.UPPER, step="post", color=colour, alpha=0.22, lw=0)
    ax.step(band.TIME, band.MEDIAN, where="post", color=colour, lw=1.5, ls="--")
    table = result.observed
    start = 0.0 if table.TIME.iloc[0] > 0 else table.TIME.iloc[0]
    times = np.r_[start, table.TIME.to_numpy()]
    survival = np.r_[1.0, table.SURVIVAL.to_numpy()]
    ax.step(times, survival, where="post", color=_COLOURS["observed"], lw=1.8)
    censored = table[table.N_CENSOR > 0]
    ax.plot(
        censored.TIME,
        censored.SURVIVAL,
        ls="",
        marker="|",
        ms=8,
        mew=1.3,
        color=_COLOURS["observed"],
    )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=min(0.0, float(band.TIME.iloc[0])))
    ax.set_xlabel(_with_unit("Time", units.get("time")))
    ax.set_ylabel("Event-free fraction")
    ax.grid(alpha=0.3)
    ci = f"{100 * result.ci:g}%"
    handles = [
        Line2D([], [], color=_COLOURS["observed"], lw=1.8, label="Observed (Kaplan-Meier)"),
        Line2D(
            [], [], ls="", marker="|", ms=8, mew=1.3, color=_COLOURS["observed"], label="Censored"
        ),
        Line2D([], [], color=colour, lw=1.5, ls="--", label="Simulated median"),
        Patch(color=colour, alpha=0.3, label=f"Simulated {ci} interval"),
    ]
    ax.legend(handles=handles, fontsize=8.5, frameon=False, loc="best")
    n = len(result.subjects)
    ax.set_title(
        f"Kaplan-Meier VPC (DVID {result.dvid}): {n} subjects, {result.n_sim} replicates",
        fontsize=10.5,
    )
    figure.tight_layout()
    return _save(figure, path)
