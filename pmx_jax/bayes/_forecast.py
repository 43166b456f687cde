"""Bayesian forecasting for one patient (therapeutic drug monitoring).

The population model is the prior; the patient's levels update it:

- :func:`forecast` finds the patient's maximum a posteriori (MAP) random
  effects, ``argmin_b -2 log p(y | b) + b^T OMEGA^-1 b`` (NONMEM's
  ``$ESTIMATION MAXEVAL=0 POSTHOC`` with the population values fixed: the same
  objective as the EBEs of FOCEI), with their uncertainty from the curvature
  at the mode (Laplace) or, on request, from NUTS on that one patient;
- :meth:`Forecast.predict` gives the predicted profile under a future regimen
  with a credible band;
- :meth:`Forecast.recommend_dose` finds the dose that brings a trough, a
  concentration at a time, a peak or an AUC to a target, by Newton's method on
  the log dose with the exact derivative of the prediction with respect to
  the dose (through the event engine), so it works for nonlinear models too.

The future regimen is given as a :class:`~pmx_jax.Regimen` on the patient's
own clock (its dose times continue the dataset's TIME).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd

from .._stored import stored
from ..data._dataset import Dataset
from ..data._read import read_nonmem
from ..likelihood import (
    Layout,
    Prepared,
    SubjectLikelihood,
    log_prior,
    prepare,
    subject_predictions,
)
from ..likelihood._predictions import record_parameters
from ..model._model import Model
from ..simulation import Regimen

_GRID = 241  # points of the grid on which a peak or an AUC is evaluated


@dataclasses.dataclass(frozen=True)
class Target:
    """What a dose should achieve: a ``value`` of the prediction (the model's
    DV scale, e.g. mg/L) at a time, at its maximum over a window, or of its AUC
    over a window.

    Build with :meth:`trough`, :meth:`concentration`, :meth:`peak` or :meth:`auc`.
    """

    kind: str
    value: float
    time: float | None = None
    window: tuple[float, float] | None = None

    @classmethod
    def trough(cls, value: float, at: float) -> Target:
        """Concentration just before the dose at ``at`` (or at ``at`` if no dose
        is given then): a pre-dose level."""
        return cls("trough", float(value), time=float(at))

    @classmethod
    def concentration(cls, value: float, at: float) -> Target:
        """Concentration at time ``at`` (after any dose given at ``at``)."""
        return cls("concentration", float(value), time=float(at))

    @classmethod
    def peak(cls, value: float, window: tuple[float, float]) -> Target:
        """Highest concentration in ``window`` (a fine grid of 241 points)."""
        return cls("peak", float(value), window=_window(window))

    @classmethod
    def auc(cls, value: float, window: tuple[float, float]) -> Target:
        """Area under the concentration curve over ``window`` (trapezoids on a
        grid of 241 points)."""
        return cls("auc", float(value), window=_window(window))

    def __post_init__(self) -> None:
        if self.kind not in ("trough", "concentration", "peak", "auc"):
            raise ValueError(f"unknown target kind {self.kind!r}")
        if not self.value > 0:
            raise ValueError(f"a target value must be > 0, got {self.value}")

    def times(self) -> np.ndarray:
        if self.window is None:
            return np.array([self.time])
        return np.linspace(*self.window, _GRID)

    def metric(self, prediction: jax.Array) -> jax.Array:
        if self.kind in ("trough", "concentration"):
            return prediction[0]
        if self.kind == "peak":
            return jnp.max(prediction)
        step = (self.window[1] - self.window[0]) / (_GRID - 1)
        return step * (jnp.sum(prediction) - 0.5 * (prediction[0] + prediction[-1]))


def _window(window) -> tuple[float, float]:
    t0, t1 = (float(w) for w in window)
    if not t1 > t0:
        raise ValueError(f"a target window needs end > start, got {window}")
    return (t0, t1)


# -- the patient's data with a future regimen ---------------------------------------


def _history_table(data: Dataset) -> pd.DataFrame:
    """The patient's records under standard NONMEM names, covariates included."""
    r = data.records
    table = pd.DataFrame(
        {
            "ID": r["id"].to_numpy(),
            "TIME": r["event_time"].to_numpy(),
            "EVID": r["evid"].to_numpy(),
            "MDV": r["mdv"].to_numpy(),
            "AMT": r["amt"].to_numpy(),
            "CMT": r["cmt"].to_numpy(),
            "RATE": r["rate"].to_numpy(),
            "II": r["ii"].to_numpy(),
            "ADDL": r["addl"].to_numpy(),
            "SS": r["ss"].to_numpy(),
            "DV": np.where(r["mdv"].to_numpy() == 1, 0.0, r["dv"].to_numpy()),
            "CENS": r["cens"].to_numpy(),
        }
    )
    if "occ" in r and data.occ_levels:
        table["OCC"] = np.asarray(data.occ_levels, dtype=object)[r["occ"].to_numpy()]
    covariates = data.covariates
    for name in data.covariate_names:
        table[name] = covariates[name].to_numpy()
    return table


def _combined(data: Dataset, regimen: Regimen | None, times: np.ndarray) -> tuple[Dataset, int]:
    """History + future doses + prediction records (EVID 2) at ``times``.
    Returns the dataset and the number of history rows (future rows follow)."""
    history = _history_table(data)
    n_hist = len(history)
    last = history.iloc[-1]
    future = []
    if regimen is not None:
        doses = regimen.to_table(id_value=last["ID"])
        doses = doses[doses.EVID == 1]
        future.append(doses.assign(DV=0.0, CENS=0))
    grid = pd.DataFrame(
        {
            "ID": last["ID"],
            "TIME": times,
            "EVID": 2,
            "MDV": 1,
            "AMT": 0.0,
            "CMT": 0,
            "RATE": 0.0,
            "II": 0.0,
            "ADDL": 0,
            "SS": 0,
            "DV": 0.0,
            "CENS": 0,
        }
    )
    future.append(grid)
    extra = pd.concat(future, ignore_index=True)
    # After the history: stable sort by time, doses before predictions at equal times.
    extra = extra.sort_values(["TIME", "EVID"], ascending=[True, True], kind="stable")
    if len(extra) and extra["TIME"].min() < history["TIME"].max():
        raise ValueError(
            f"the future regimen and prediction times must not start before the last "
            f"record of the patient's data (TIME {history['TIME'].max():g})"
        )
    if "CMT" in extra and (extra["CMT"] == 0).any():
        default = history.loc[history.EVID == 0, "CMT"]
        cmt = int(default.iloc[-1]) if len(default) else 0
        extra.loc[extra.CMT == 0, "CMT"] = cmt
    for name in history.columns:
        if name not in extra:
            extra[name] = last[name]  # covariates and occasion carried forward
    table = pd.concat([history, extra[history.columns]], ignore_index=True)
    if (table["CMT"] == 0).all():
        table = table.drop(columns="CMT")
    return read_nonmem(table), n_hist


# -- MAP random effects ----------------------------------------------------------------


class _Patient(eqx.Module):
    model: Model
    prepared: Prepared
    layout: Layout

    def terms(self, b):
        return SubjectLikelihood(self.model, self.prepared.subject(0), self.layout).terms(b)

    def log_posterior(self, b):
        terms = self.terms(b)
        value = jnp.sum(terms.log_likelihood) + log_prior(b, self.layout.omega(self.model))
        return jnp.where(terms.ok, value, -jnp.inf)


@stored("forecast-map")
def _map(patient: _Patient, b0: jax.Array):
    def objective(b, _):
        return -2.0 * patient.log_posterior(b)

    solver = optx.BFGS(rtol=1e-12, atol=1e-12)
    solution = optx.minimise(objective, solver, b0, max_steps=500, throw=False)
    b = solution.value
    hessian = 0.5 * jax.hessian(lambda x: objective(x, None))(b)
    return b, hessian, objective(b, None), solution.result == optx.RESULTS.successful


def _patient(model: Model, data: Dataset) -> _Patient:
    if data.n_subjects != 1:
        raise ValueError(
            f"Bayesian forecasting is for one patient; the data have {data.n_subjects} "
            "subjects (use data.subset([ID]))"
        )
    prepared = prepare(model, data)
    return _Patient(model, prepared, Layout.of(model, prepared.n_occasions))


class Forecast:
    """A patient's posterior under a population model (from :func:`forecast`).

    Attributes:
        model, data: the population model (prior) and the patient's data.
        eta: the MAP random effects (IIV etas, then IOV etas by occasion).
        covariance: their posterior covariance (inverse Hessian at the mode,
            or the sample covariance of the NUTS draws).
        draws: posterior draws of the random effects ``(n, n_b)`` (normal at
            the mode for ``uncertainty="laplace"``).
        objective: ``-2 log p(y, b)`` at the mode.
        converged: the MAP search met its tolerance.
    """

    def __init__(self, model, data, patient, eta, covariance, draws, objective, converged):
        self.model = model
        self.data = data
        self._patient = patient
        self.eta = np.asarray(eta)
        self.covariance = np.asarray(covariance)
        self.draws = np.asarray(draws)
        self.objective = float(objective)
        self.converged = bool(converged)

    @property
    def etas(self) -> pd.Series:
        """The MAP IIV etas by name."""
        n = self.model.n_eta
        return pd.Series(self.eta[:n], index=list(self.model.eta_names), name="eta")

    def individual_parameters(self) -> pd.Series:
        """The patient's parameters (the $PK block) at the MAP etas, at the last record."""
        subjects = self._patient.prepared.subjects
        eta, iov = self._patient.layout.split(jnp.asarray(self.eta))
        last = int(np.asarray(subjects.valid[0]).sum()) - 1
        patient = jax.tree_util.tree_map(lambda x: x[0], subjects)
        params = record_parameters(self.model, patient, eta, iov if self.model.n_iov_eta else None)
        return pd.Series({k: float(v[last]) for k, v in params.items()})

    # -- predictions ---------------------------------------------------------------------
    def _random_effects(self, layout: Layout) -> tuple[jax.Array, jax.Array]:
        """The MAP and the posterior draws in ``layout`` (occasions that only
        the future records have get the typical value, 0)."""
        extra = layout.size - self.eta.size
        b = jnp.concatenate([jnp.asarray(self.eta), jnp.zeros(extra)])
        draws = jnp.asarray(self.draws)
        draws = jnp.concatenate([draws, jnp.zeros((draws.shape[0], extra))], axis=1)
        return b, draws

    def _setup(self, regimen, times):
        data, n_hist = _combined(self.data, regimen, np.asarray(times, dtype=float))
        prepared = prepare(self.model, data)
        return data, prepared, n_hist

    def predict(
        self, times: Any, regimen: Regimen | None = None, *, level: float = 0.9
    ) -> pd.DataFrame:
        """Predicted concentrations at ``times`` (after the patient's data)
        under ``regimen`` (future doses, none by default): the MAP prediction
        and a ``level`` credible band from the posterior draws of the etas."""
        times = np.atleast_1d(np.asarray(times, dtype=float))
        data, prepared, n_hist = self._setup(regimen, times)
        rows = _prediction_rows(prepared, n_hist, len(times))
        layout = Layout.of(self.model, prepared.n_occasions)
        b, draws = self._random_effects(layout)
        scale = jnp.ones(())
        mask = jnp.zeros(prepared.subjects.amt.shape[1], bool)
        best = np.asarray(_predictions(self.model, prepared, layout, b, scale, mask))[rows]
        band = np.asarray(
            jax.vmap(lambda x: _predictions(self.model, prepared, layout, x, scale, mask))(draws)
        )[:, rows]
        lo, hi = np.quantile(band, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return pd.DataFrame({"TIME": times, "IPRED": best, "lower": lo, "upper": hi})

    def recommend_dose(
        self,
        regimen: Regimen,
        target: Target,
        *,
        round_to: float | None = None,
        level: float = 0.9,
    ) -> DoseRecommendation:
        """The dose amount that makes the patient's MAP prediction reach ``target``.

        ``regimen`` is the future regimen with a reference amount: every one of
        its doses is scaled by the same factor (an infusion keeps its duration).
        The factor solves ``metric(factor) = target`` by Newton's method on
        ``log factor`` with the exact derivative.  ``round_to`` rounds the
        recommended amount to a practical multiple (the achieved value is then
        reported at the rounded dose).  The ``level`` band of the metric at the
        recommended dose comes from the posterior draws of the etas.
        """
        times = target.times()
        if target.kind == "trough":
            dose_times = {
                d.time + k * d.interval for d in regimen.doses for k in range(d.additional + 1)
            }
            if target.time in dose_times:
                times = times - 1e-6 * max(1.0, abs(target.time))
        data, prepared, n_hist = self._setup(regimen, times)
        rows = _prediction_rows(prepared, n_hist, len(times))
        layout = Layout.of(self.model, prepared.n_occasions)
        subjects = prepared.subjects
        row = np.asarray(subjects.row[0])
        mask = jnp.asarray((row >= n_hist) & (np.asarray(subjects.evid[0]) % 3 == 1))
        b, draws = self._random_effects(layout)
        rows_j = jnp.asarray(rows)

        def metric(scale, eta):
            pred = _predictions(self.model, prepared, layout, eta, scale, mask)
            return target.metric(pred[rows_j])

        factor, ok = _solve_scale(metric, b, target.value)
        reference = regimen.doses[0].amount
        amount = float(factor) * reference
        if round_to:
            amount = max(round_to, round(amount / round_to) * round_to)
        achieved_scale = jnp.asarray(amount / reference)
        achieved = float(metric(achieved_scale, b))
        spread = np.asarray(jax.vmap(lambda x: metric(achieved_scale, x))(draws))
        lo, hi = np.quantile(spread, [(1 - level) / 2, (1 + level) / 2])
        return DoseRecommendation(
            amount=amount,
            unrounded=float(factor) * reference,
            target=target,
            achieved=achieved,
            interval=(float(lo), float(hi)),
            attainment=float(np.mean(spread >= target.value)),
            converged=bool(ok),
            regimen=_scaled(regimen, amount / reference),
        )


@dataclasses.dataclass(frozen=True)
class DoseRecommendation:
    """A recommended dose: ``amount`` (per dose of the regimen), the value of
    the target metric it achieves at the MAP (``achieved``), the credible
    ``interval`` of that metric over the posterior, the probability that the
    metric is at least the target (``attainment``) and the scaled regimen."""

    amount: float
    unrounded: float
    target: Target
    achieved: float
    interval: tuple[float, float]
    attainment: float
    converged: bool
    regimen: Regimen


def _scaled(regimen: Regimen, factor: float) -> Regimen:
    doses = tuple(dataclasses.replace(d, amount=d.amount * factor) for d in regimen.doses)
    return dataclasses.replace(regimen, doses=doses)


def _prediction_rows(prepared: Prepared, n_hist: int, n_times: int) -> np.ndarray:
    """Record positions (in the padded subject) of the EVID 2 prediction rows."""
    subjects = prepared.subjects
    row = np.asarray(subjects.row[0])
    evid = np.asarray(subjects.evid[0])
    positions = np.nonzero((row >= n_hist) & (evid == 2) & ~np.asarray(subjects.is_addl[0]))[0]
    order = np.argsort(row[positions], kind="stable")
    positions = positions[order]
    assert positions.size == n_times
    return positions


@stored("forecast-predictions")
def _predictions(model, prepared, layout, b, scale, mask):
    """IPRED at every record of the patient, with the doses in ``mask`` scaled."""
    data = prepared.subject(0)
    subject = data.records
    amt = jnp.where(mask, subject.amt * scale, subject.amt)
    rate = jnp.where(mask & (subject.rate > 0), subject.rate * scale, subject.rate)
    data = eqx.tree_at(lambda d: (d.records.amt, d.records.rate), data, (amt, rate))
    eta, iov = layout.split(b)
    return subject_predictions(model, data, eta, iov).prediction


def _solve_scale(metric, b, target_value, max_steps: int = 50):
    """Newton's method on ``log metric(exp(u)) = log target`` (monotone in u
    for the models of interest), steps limited to a factor of e^2."""
    log_target = jnp.log(target_value)

    def g(u):
        return jnp.log(metric(jnp.exp(u), b)) - log_target

    g_and_slope = jax.jit(jax.value_and_grad(g))
    u = jnp.zeros(())
    for _ in range(max_steps):
        value, slope = g_and_slope(u)
        if not (np.isfinite(float(value)) and float(slope) > 0):
            return jnp.exp(u), False
        step = jnp.clip(value / slope, -2.0, 2.0)
        u = u - step
        if abs(float(step)) < 1e-10:
            return jnp.exp(u), True
    return jnp.exp(u), abs(float(g(u))) < 1e-8


def forecast(
    model: Model,
    data: Dataset,
    *,
    uncertainty: str = "laplace",
    n_draws: int = 1000,
    seed: int = 0,
    nuts_warmup: int = 500,
) -> Forecast:
    """The posterior of one patient's random effects under the population ``model``.

    Args:
        model: the population model at its final estimates (e.g. ``fit.model``).
        data: the patient's dataset (one subject: doses and measured levels).
        uncertainty: ``"laplace"`` (normal at the mode with the inverse Hessian
            as covariance) or ``"nuts"`` (NumPyro NUTS on the random effects, 2
            chains, ``nuts_warmup`` warmup iterations).
        n_draws: posterior draws kept for bands and target attainment.
        seed: random seed of the draws.

    Returns a :class:`Forecast`.  Its ``eta`` is the EBE that FOCEI's
    estimation step gives this subject (the same objective at the same values).
    """
    if uncertainty not in ("laplace", "nuts"):
        raise ValueError(f"uncertainty must be 'laplace' or 'nuts', got {uncertainty!r}")
    patient = _patient(model, data)
    b0 = jnp.zeros(patient.layout.size, patient.prepared.subjects.time.dtype)
    eta, hessian, objective, ok = _map(patient, b0)
    covariance = jnp.linalg.inv(hessian)
    covariance = 0.5 * (covariance + covariance.T)
    key = jax.random.PRNGKey(seed)
    if uncertainty == "laplace":
        chol = jnp.linalg.cholesky(covariance)
        draws = eta + jax.random.normal(key, (n_draws, eta.size), eta.dtype) @ chol.T
    else:
        draws = _nuts_draws(patient, eta, covariance, key, n_draws, nuts_warmup)
        covariance = jnp.cov(draws.T).reshape(eta.size, eta.size)
    return Forecast(model, data, patient, eta, covariance, draws, objective, ok)


def _nuts_draws(patient, eta, covariance, key, n_draws, n_warmup):
    from numpyro.infer import MCMC, NUTS

    kernel = NUTS(potential_fn=lambda b: -patient.log_posterior(b), dense_mass=True)
    n_chains = 2
    mcmc = MCMC(
        kernel,
        num_warmup=n_warmup,
        num_samples=-(-n_draws // n_chains),
        num_chains=n_chains,
        chain_method="sequential",
        progress_bar=False,
    )
    chol = jnp.linalg.cholesky(covariance)
    start = eta + 0.1 * jax.random.normal(key, (n_chains, eta.size), eta.dtype) @ chol.T
    mcmc.run(jax.random.fold_in(key, 1), init_params=start)
    return mcmc.get_samples()[:n_draws]
