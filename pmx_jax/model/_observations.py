"""Observation models that are not normal: binary, binomial, ordered
categorical, count and time-to-event data, and a user's own log-likelihood
(NONMEM's ``$ESTIMATION LIKELIHOOD``, nlmixr2's ``ll()``).

They stand where an error model stands: ``observe`` returns one (or several,
one per DVID endpoint, mixed freely with Gaussian error models) and the
likelihood kernel sums their log-likelihoods.  Their densities are exact
(log probability mass for discrete data, with every constant, e.g. the
binomial coefficient), so their part of an OFV is ``-2 log L``.  FO, FOCE
and FOCEI linearise a normal residual and refuse these models; Laplace (with
the exact eta-Hessian) and NUTS fit them.

Binary and binomial models take the linear predictor on the scale of their
``link``: ``"logit"`` (default), ``"probit"``, ``"cloglog"``, or
``"identity"`` (the probability itself).  Writing the model on the link
scale keeps the log-likelihood and its derivatives finite at probabilities
that round to 0 or 1 in floating point.

Each model has a simulation rule (:meth:`sample`) and, for discrete data, its
distribution function (:meth:`cdf`, ``P(Y <= y)``: randomized quantile
residuals), and says which DVs it can explain (:meth:`dv_problem`): the data
are checked against it before fitting, naming the subject and row.

Time to event (:class:`TimeToEvent`) follows NONMEM's TTE convention: the
model gives the hazard ``h(t)`` and the cumulative hazard ``H(t)`` at the
record's time (a closed form in ``TIME``, or a compartment of the dynamics
that integrates the hazard, ``d CHZ / dt = h``); DV is ``1`` for an event at
TIME, ``0`` for a subject known to be event-free at TIME (right censoring,
end of follow-up or dropout), ``2`` for an event somewhere after the previous
event record of the same endpoint and at or before TIME (interval
censoring).  Each such record contributes the survival over the interval
since the previous one, ``exp(-(H(t) - H(t_prev)))`` (``H(t_prev) = 0`` for
the first), times ``h(t)`` for an exact event, or the probability of an
event in the interval, ``1 - exp(-(H(t) - H(t_prev)))``, for DV 2.  Repeated
events are successive records; a reset (EVID 3/4) starts a new history
(``H`` counts from 0 again: a cumulative-hazard compartment is reset with
the others), so several independent histories can share an ID, e.g. the
patients of one centre under a centre effect.  ``H`` counts from the start
of the subject's records: start them at the origin of the hazard (TIME 0 for
a hazard written in ``TIME``).  The hazard may depend on anything the model
computes (exposure, covariates, time).  ``prediction`` (IPRED) is the
survival ``exp(-H(t))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc, gammaincc, gammaln, log_ndtr, ndtr, xlogy
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._error import AbstractErrorModel, _as_array

LINKS = ("logit", "probit", "cloglog", "identity")
# Event-record codes of a time-to-event endpoint (the DV column).
CENSORED, EVENT, INTERVAL_EVENT = 0, 1, 2


def _check_link(link: str, owner: str) -> None:
    if link not in LINKS:
        raise ValueError(f"{owner}: link must be one of {LINKS}, got {link!r}")


def _log_probabilities(x: Array, link: str) -> tuple[Array, Array]:
    """``(log p, log(1 - p))`` of the probability whose ``link`` is ``x``,
    computed on the link scale (finite where ``p`` rounds to 0 or 1)."""
    if link == "logit":
        return jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    if link == "probit":
        return log_ndtr(x), log_ndtr(-x)
    if link == "cloglog":
        # p = 1 - exp(-exp(x))
        rate = jnp.exp(x)
        return jnp.log(-jnp.expm1(-rate)), -rate
    inside = (x > 0) & (x < 1)
    p = jnp.where(inside, x, 0.5)
    log_p = jnp.where(inside, jnp.log(p), jnp.where(x >= 1, 0.0, -jnp.inf))
    log_q = jnp.where(inside, jnp.log1p(-p), jnp.where(x <= 0, 0.0, -jnp.inf))
    return log_p, log_q


def _probability(x: Array, link: str) -> Array:
    if link == "logit":
        return jax.nn.sigmoid(x)
    if link == "probit":
        return ndtr(x)
    if link == "cloglog":
        return -jnp.expm1(-jnp.exp(x))
    return jnp.clip(x, 0.0, 1.0)


def _log_cumulative(x: Array, link: str) -> tuple[Array, Array]:
    """``(log F(x), log(1 - F(x)))`` of a cumulative link (logistic or normal)."""
    if link == "logit":
        return jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)
    return log_ndtr(x), log_ndtr(-x)


def _integer_problem(dv: np.ndarray, lowest: int = 0) -> np.ndarray:
    return ~np.isfinite(dv) | (dv < lowest) | (np.floor(dv) != dv)


class AbstractLikelihood(AbstractErrorModel):
    """Base of the observation models given by their log-likelihood.

    ``prediction`` is the expected observation (the probability of a binary
    event, the mean count, the expected category, the survival at TIME):
    IPRED in tables.  :meth:`variance` is the observation's variance (for
    tables and Pearson residuals, not for estimation).
    """

    gaussian: ClassVar[bool] = False

    @property  # type: ignore[misc]
    def prediction(self) -> Float[Array, "*shape"]:  # type: ignore[override]
        return self.mean()

    def mean(self) -> Float[Array, "*shape"]:
        """The expected observation."""
        raise NotImplementedError

    def transform(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return jnp.asarray(y)

    def inverse_transform(self, z: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return jnp.asarray(z)

    def log_likelihood(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Log probability (mass or density) of the observation ``y``."""
        raise NotImplementedError

    def censored_log_likelihood(self, y, cens, limit, bound=None, kinds=()):
        # The data layer refuses CENS on these endpoints (dv_problem's checks).
        del cens, limit, bound, kinds
        return self.log_likelihood(y)

    def log_cdf(self, limit):
        return jnp.full(jnp.shape(jnp.asarray(limit)), jnp.nan)

    def log_sf(self, limit):
        return jnp.full(jnp.shape(jnp.asarray(limit)), jnp.nan)

    def cdf(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """``P(Y <= y)`` (discrete data; NaN where it is not defined)."""
        return jnp.full(jnp.shape(jnp.asarray(y)), jnp.nan)

    def dv_problem(self) -> tuple[Callable[[np.ndarray], np.ndarray], str] | None:
        """A check of observed values that needs no parameter value: a
        function giving True where a DV is impossible for this model, and
        what the possible values are.  ``None``: no check."""
        return None


# -- binary and binomial ----------------------------------------------------------------


class Bernoulli(AbstractLikelihood):
    """A binary observation (DV 0 or 1) with ``P(DV = 1) = F(predictor)``,
    ``F`` the inverse of ``link`` (logistic by default; ``"identity"``: the
    predictor is the probability).

    Example
    -------
    >>> float(Bernoulli(0.0).prediction)
    0.5
    >>> round(float(Bernoulli(0.0).log_likelihood(1.0)), 6)
    -0.693147
    """

    predictor: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    link: str = eqx.field(static=True, default="logit")

    def __check_init__(self) -> None:
        _check_link(self.link, "Bernoulli")

    def mean(self):
        return _probability(self.predictor, self.link)

    def variance(self):
        p = self.mean()
        return p * (1.0 - p)

    def log_likelihood(self, y):
        log_p, log_q = _log_probabilities(self.predictor, self.link)
        y = jnp.asarray(y)
        return jnp.where(y == 1, log_p, jnp.where(y == 0, log_q, -jnp.inf))

    def cdf(self, y):
        y = jnp.asarray(y)
        return jnp.where(y < 0, 0.0, jnp.where(y < 1, 1.0 - self.mean(), 1.0))

    def sample(self, key):
        p = self.mean()
        return (jax.random.uniform(key, jnp.shape(p), dtype=jnp.result_type(p)) < p).astype(
            jnp.result_type(p)
        )

    def dv_problem(self):
        return (lambda dv: (dv != 0) & (dv != 1)), "0 or 1"


class Binomial(AbstractLikelihood):
    """Successes out of ``trials`` (e.g. a data column passed through
    ``individual``), each with ``P = F(predictor)`` as for :class:`Bernoulli`.
    The log-likelihood includes the binomial coefficient.  A DV above
    ``trials`` has probability 0 (the subject's OFV is not finite)."""

    predictor: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    trials: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    link: str = eqx.field(static=True, default="logit")

    def __check_init__(self) -> None:
        _check_link(self.link, "Binomial")

    def probability(self) -> Array:
        return _probability(self.predictor, self.link)

    def mean(self):
        return self.trials * self.probability()

    def variance(self):
        p = self.probability()
        return self.trials * p * (1.0 - p)

    def log_likelihood(self, y):
        y = jnp.asarray(y)
        n = self.trials
        log_p, log_q = _log_probabilities(self.predictor, self.link)
        possible = (y >= 0) & (y <= n)
        y_safe, n_safe = jnp.where(possible, y, 0.0), jnp.where(possible, n, 0.0)
        choose = gammaln(n_safe + 1.0) - gammaln(y_safe + 1.0) - gammaln(n_safe - y_safe + 1.0)
        # 0 * log 0 = 0: successes (failures) are impossible only where p = 0 (1).
        value = choose + _times(y_safe, log_p) + _times(n_safe - y_safe, log_q)
        return jnp.where(possible, value, -jnp.inf)

    def cdf(self, y):
        y = jnp.floor(jnp.asarray(y))
        p = self.probability()
        n = self.trials
        inside = (y >= 0) & (y < n)
        value = betainc(
            jnp.where(inside, n - y, 1.0),
            jnp.where(inside, y + 1.0, 1.0),
            jnp.where(inside, 1 - p, 0.5),
        )
        return jnp.where(y < 0, 0.0, jnp.where(y >= n, 1.0, value))

    def sample(self, key):
        p = self.probability()
        return jax.random.binomial(key, self.trials, p, dtype=jnp.result_type(p))

    def dv_problem(self):
        return _integer_problem, "a count of successes (an integer >= 0)"


def _times(count: Array, log_p: Array) -> Array:
    """``count * log_p`` with ``0 * (-inf) = 0`` (and a finite derivative)."""
    return jnp.where(count == 0, 0.0, count * jnp.where(count == 0, 0.0, log_p))


# -- counts -------------------------------------------------------------------------------


class Poisson(AbstractLikelihood):
    """A count with mean ``rate`` (> 0; write it as ``exp(...)`` of a linear
    predictor for a log link)."""

    rate: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def mean(self):
        return self.rate

    def variance(self):
        return self.rate

    def log_likelihood(self, y):
        y = jnp.asarray(y)
        ok = (y >= 0) & (self.rate > 0)
        rate = jnp.where(ok, self.rate, 1.0)
        y_safe = jnp.where(ok, y, 0.0)
        value = xlogy(y_safe, rate) - rate - gammaln(y_safe + 1.0)
        # rate 0: all mass at 0.
        degenerate = jnp.where(y == 0, 0.0, -jnp.inf)
        return jnp.where(y >= 0, jnp.where(ok, value, degenerate), -jnp.inf)

    def cdf(self, y):
        return _poisson_cdf(jnp.asarray(y), self.rate)

    def sample(self, key):
        return _poisson_sample(key, self.rate)

    def dv_problem(self):
        return _integer_problem, "a count (an integer >= 0)"


def _poisson_cdf(y: Array, rate: Array) -> Array:
    y = jnp.floor(y)
    inside = y >= 0
    value = gammaincc(jnp.where(inside, y + 1.0, 1.0), rate)
    return jnp.where(inside, value, 0.0)


def _poisson_sample(key, rate):
    dtype = jnp.result_type(rate)
    return jax.random.poisson(key, rate, jnp.shape(rate)).astype(dtype)


class NegativeBinomial(AbstractLikelihood):
    """Overdispersed counts, NB2: mean ``mean``, variance
    ``mean + overdispersion * mean**2`` (R's ``MASS::rnegbin`` with
    ``theta = 1 / overdispersion``; glmmTMB's ``nbinom2``).  A gamma-Poisson
    mixture; ``overdispersion`` must be > 0."""

    mean_count: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    overdispersion: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def __init__(self, mean: ArrayLike, overdispersion: ArrayLike):
        self.mean_count = _as_array(mean)
        self.overdispersion = _as_array(overdispersion)

    def mean(self):
        return self.mean_count

    def variance(self):
        return self.mean_count + self.overdispersion * self.mean_count**2

    def log_likelihood(self, y):
        y = jnp.asarray(y)
        mu, alpha = self.mean_count, self.overdispersion
        ok = (y >= 0) & (mu > 0) & (alpha > 0)
        mu, alpha = jnp.where(ok, mu, 1.0), jnp.where(ok, alpha, 1.0)
        y_safe = jnp.where(ok, y, 0.0)
        size = 1.0 / alpha
        log_total = jnp.log1p(alpha * mu)  # log((size + mu) / size)
        value = (
            gammaln(y_safe + size)
            - gammaln(size)
            - gammaln(y_safe + 1.0)
            - size * log_total
            + y_safe * (jnp.log(alpha * mu) - log_total)
        )
        return jnp.where(ok, value, -jnp.inf)

    def cdf(self, y):
        y = jnp.floor(jnp.asarray(y))
        size = 1.0 / self.overdispersion
        inside = y >= 0
        p = size / (size + self.mean_count)
        value = betainc(size, jnp.where(inside, y + 1.0, 1.0), p)
        return jnp.where(inside, value, 0.0)

    def sample(self, key):
        gamma_key, poisson_key = jax.random.split(key)
        size = 1.0 / self.overdispersion
        shape = jnp.broadcast_shapes(jnp.shape(size), jnp.shape(self.mean_count))
        draw = jax.random.gamma(gamma_key, size, shape, dtype=jnp.result_type(size))
        return _poisson_sample(poisson_key, draw * self.mean_count / size)

    def dv_problem(self):
        return _integer_problem, "a count (an integer >= 0)"


class ZeroInflatedPoisson(AbstractLikelihood):
    """A count that is a structural zero with probability ``zero_probability``
    and Poisson(``rate``) otherwise."""

    rate: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    zero_probability: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def mean(self):
        return (1.0 - self.zero_probability) * self.rate

    def variance(self):
        pi = self.zero_probability
        return (1.0 - pi) * self.rate * (1.0 + pi * self.rate)

    def log_likelihood(self, y):
        y = jnp.asarray(y)
        pi = self.zero_probability
        counts = Poisson(self.rate).log_likelihood(y)
        ok = (pi >= 0) & (pi < 1)
        pi_safe = jnp.where(ok & (pi > 0), pi, 0.5)
        log_zero = jnp.where(ok & (pi > 0), jnp.log(pi_safe), -jnp.inf)
        log_keep = jnp.log1p(-jnp.where(ok, pi, 0.5))
        zero = jnp.logaddexp(log_zero, log_keep - self.rate)
        value = jnp.where(y == 0, zero, log_keep + counts)
        return jnp.where(ok, value, -jnp.inf)

    def cdf(self, y):
        y = jnp.asarray(y)
        pi = self.zero_probability
        return jnp.where(y < 0, 0.0, pi + (1.0 - pi) * _poisson_cdf(y, self.rate))

    def sample(self, key):
        zero_key, count_key = jax.random.split(key)
        counts = _poisson_sample(count_key, self.rate)
        zero = jax.random.uniform(zero_key, jnp.shape(counts), dtype=counts.dtype) < (
            self.zero_probability
        )
        return jnp.where(zero, 0.0, counts)

    def dv_problem(self):
        return _integer_problem, "a count (an integer >= 0)"


# -- ordered categories --------------------------------------------------------------------


class OrderedCategorical(AbstractLikelihood):
    """An ordered categorical observation (a score), cumulative link model
    with proportional odds: ``P(Y <= c_k) = F(cutpoints[k] - predictor)`` for
    the first ``K - 1`` categories ``c_k`` (R's ``ordinal::clm`` and
    ``MASS::polr``; NONMEM's logit models write ``P(Y >= c_k)`` with the sign
    of the predictor reversed).  ``link``: ``"logit"`` (default) or
    ``"probit"``.  ``cutpoints`` must increase (write them as a first THETA
    plus exponentiated increments); ``categories``: the DV values, ascending
    (default ``0, 1, ..., K - 1``).
    """

    predictor: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    cutpoints: Float[Array, " n_cut"]
    link: str = eqx.field(static=True)
    categories: tuple[float, ...] = eqx.field(static=True)

    def __init__(
        self,
        predictor: ArrayLike,
        cutpoints,
        *,
        link: str = "logit",
        categories=None,
    ):
        self.predictor = _as_array(predictor)
        self.cutpoints = (
            jnp.stack([jnp.asarray(c) for c in cutpoints])
            if isinstance(cutpoints, list | tuple)
            else jnp.asarray(cutpoints)
        )
        self.link = link
        n = self.cutpoints.shape[-1] + 1
        self.categories = tuple(float(c) for c in (range(n) if categories is None else categories))

    def __check_init__(self) -> None:
        if self.link not in ("logit", "probit"):
            raise ValueError(
                f"OrderedCategorical: link must be 'logit' or 'probit', got {self.link!r}"
            )
        if self.cutpoints.ndim != 1 or self.cutpoints.shape[0] < 1:
            raise ValueError(
                "OrderedCategorical: cutpoints must be a 1-D sequence of K - 1 >= 1 values"
            )
        if len(self.categories) != self.cutpoints.shape[0] + 1:
            raise ValueError(
                f"OrderedCategorical: {len(self.categories)} categories need "
                f"{len(self.categories) - 1} cutpoints, got {self.cutpoints.shape[0]}"
            )
        if list(self.categories) != sorted(set(self.categories)):
            raise ValueError(
                "OrderedCategorical: categories must be distinct and ascending, "
                f"got {self.categories}"
            )

    def probabilities(self) -> Float[Array, "*shape K"]:
        """``P(Y = c_k)`` for every category."""
        cumulative = _probability_of_link(self.cutpoints - self.predictor[..., None], self.link)
        ones = jnp.ones(cumulative.shape[:-1] + (1,), cumulative.dtype)
        upper = jnp.concatenate([cumulative, ones], axis=-1)
        lower = jnp.concatenate([jnp.zeros_like(ones), cumulative], axis=-1)
        return upper - lower

    def mean(self):
        return self.probabilities() @ jnp.asarray(self.categories, self.predictor.dtype)

    def variance(self):
        values = jnp.asarray(self.categories, self.predictor.dtype)
        p = self.probabilities()
        return p @ values**2 - (p @ values) ** 2

    def _index(self, y: Array) -> Array:
        values = jnp.asarray(self.categories, jnp.result_type(y, float))
        return jnp.sum(y[..., None] > values, axis=-1)

    def log_likelihood(self, y):
        y, predictor = jnp.broadcast_arrays(jnp.asarray(y), self.predictor)
        k = self._index(y)
        n_cut = self.cutpoints.shape[0]
        valid = jnp.any(y[..., None] == jnp.asarray(self.categories, jnp.result_type(y, float)), -1)
        shifted = self.cutpoints - predictor[..., None]
        upper = jnp.take_along_axis(shifted, jnp.minimum(k, n_cut - 1)[..., None], -1)[..., 0]
        lower = jnp.take_along_axis(shifted, jnp.maximum(k - 1, 0)[..., None], -1)[..., 0]
        first, last = k == 0, k == n_cut
        log_upper, _ = _log_cumulative(upper, self.link)
        _, log_above_lower = _log_cumulative(lower, self.link)
        # Interior category: log(F(u) - F(l)) computed in the tail where it
        # does not cancel.
        increasing = upper > lower
        u = jnp.where(increasing, upper, lower + 1.0)
        between = _log_interval(lower, u, self.link)
        interior = jnp.where(increasing, between, -jnp.inf)
        value = jnp.where(first, log_upper, jnp.where(last, log_above_lower, interior))
        return jnp.where(valid, value, -jnp.inf)

    def cdf(self, y):
        y, predictor = jnp.broadcast_arrays(jnp.asarray(y), self.predictor)
        cumulative = _probability_of_link(self.cutpoints - predictor[..., None], self.link)
        values = jnp.asarray(self.categories, jnp.result_type(y, float))
        below = jnp.sum(y[..., None] >= values, axis=-1)  # categories <= y
        padded = jnp.concatenate(
            [jnp.zeros_like(cumulative[..., :1]), cumulative, jnp.ones_like(cumulative[..., :1])],
            -1,
        )
        return jnp.take_along_axis(padded, below[..., None], -1)[..., 0]

    def sample(self, key):
        p = self.probabilities()
        k = jax.random.categorical(key, jnp.log(jnp.maximum(p, 1e-300)))
        return jnp.asarray(self.categories, p.dtype)[k]

    def dv_problem(self):
        allowed = np.asarray(self.categories)
        return (lambda dv: ~np.isin(dv, allowed)), f"one of the categories {self.categories}"


def _probability_of_link(x: Array, link: str) -> Array:
    return jax.nn.sigmoid(x) if link == "logit" else ndtr(x)


def _log_interval(lower: Array, upper: Array, link: str) -> Array:
    """``log(F(upper) - F(lower))`` for ``lower < upper``, from the two log
    tails so that it does not cancel far in either tail."""
    log_f_u, log_s_u = _log_cumulative(upper, link)
    log_f_l, log_s_l = _log_cumulative(lower, link)
    upper_tail = lower > 0
    big = jnp.where(upper_tail, log_s_l, log_f_u)
    small = jnp.where(upper_tail, log_s_u, log_f_l)
    return big + jnp.log(-jnp.expm1(jnp.minimum(small - big, -1e-300)))


# -- a user's log-likelihood ------------------------------------------------------------


class LogLikelihood(AbstractLikelihood):
    """Any observation model given by its log-likelihood: ``log_density(y)``
    returns ``log p(y)`` of one DV (a JAX function of the DV, the
    predictions and the parameters, e.g. a closure over them).  NONMEM's
    ``$ESTIMATION ... LIKELIHOOD`` with ``Y`` the likelihood, or nlmixr2's
    ``ll(...)``.  ``prediction``: what tables show as IPRED (NaN if not
    given); ``sampler(key)``: a simulated DV (simulation refuses the model
    without one).

    Example
    -------
    >>> import jax.numpy as jnp
    >>> rate = 2.0
    >>> exponential = LogLikelihood(lambda y: jnp.log(rate) - rate * y, prediction=1 / rate)
    >>> round(float(exponential.log_likelihood(0.5)), 6)
    -0.306853
    """

    log_density: Callable[[Array], Array]
    expected: Float[Array, "*shape"]
    sampler: Callable[[PRNGKeyArray], Array] | None

    def __init__(self, log_density, prediction=math.nan, sampler=None):
        self.log_density = log_density
        self.expected = _as_array(prediction)
        self.sampler = sampler

    def mean(self):
        return self.expected

    def variance(self):
        return jnp.full(jnp.shape(self.expected), jnp.nan)

    def log_likelihood(self, y):
        return jnp.asarray(self.log_density(jnp.asarray(y)))

    def sample(self, key):
        if self.sampler is None:
            return jnp.full(jnp.shape(self.expected), jnp.nan)
        return jnp.asarray(self.sampler(key))


# -- time to event ------------------------------------------------------------------------


def event_log_likelihood(code: Array, log_hazard: Array, increment: Array) -> Array:
    """Log-likelihood of one time-to-event record from its DV ``code``, the
    log hazard at its time and the cumulative hazard accrued since the
    previous record of its endpoint (see the module notes)."""
    increment = jnp.maximum(increment, 0.0)
    survival = -increment
    interval = jnp.log(-jnp.expm1(-jnp.where(increment > 0, increment, 1.0)))
    interval = jnp.where(increment > 0, interval, -jnp.inf)
    return jnp.where(
        code == EVENT,
        survival + log_hazard,
        jnp.where(
            code == CENSORED, survival, jnp.where(code == INTERVAL_EVENT, interval, -jnp.inf)
        ),
    )


class TimeToEvent(AbstractLikelihood):
    """A time-to-event endpoint: the ``hazard`` and the ``cumulative_hazard``
    (from the start of the subject's records, or the last reset) at the
    record's time.  DV codes and the likelihood: see the module notes.
    ``prediction`` is the survival ``exp(-cumulative_hazard)``.

    Example: a Weibull time to event with scale ``lam`` and shape ``k``
    (``t = cov.TIME`` passed through ``individual``)::

        def observe(self, amounts, p):
            H = (p["t"] / p["lam"]) ** p["k"]
            return pmx.TimeToEvent(hazard=p["k"] / p["t"] * H, cumulative_hazard=H)
    """

    hazard: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    cumulative_hazard: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    time_to_event: ClassVar[bool] = True

    def mean(self):
        return jnp.exp(-self.cumulative_hazard)

    def variance(self):
        s = self.mean()
        return s * (1.0 - s)

    def log_hazard(self) -> Array:
        ok = self.hazard > 0
        return jnp.where(ok, jnp.log(jnp.where(ok, self.hazard, 1.0)), -jnp.inf)

    def log_likelihood(self, y):
        return event_log_likelihood(jnp.asarray(y), self.log_hazard(), self.cumulative_hazard)

    def event_terms(self):
        return jnp.asarray(True), self.log_hazard(), self.cumulative_hazard

    def sample(self, key):
        # Event times are drawn by the simulation layer from the cumulative
        # hazard along the records (pmx.simulate), not record by record.
        return jnp.full(jnp.shape(self.cumulative_hazard), jnp.nan)

    def dv_problem(self):
        return (
            lambda dv: ~np.isin(dv, (CENSORED, EVENT, INTERVAL_EVENT)),
            "0 (event-free at TIME), 1 (event at TIME) or 2 (event since the previous record)",
        )
