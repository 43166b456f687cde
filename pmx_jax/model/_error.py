"""Residual error models: the distribution of an observation given its
individual prediction (NONMEM's $ERROR block, nlmixr2's ``~ add(...)``).

Every error model says that ``T(y)`` is normal with mean ``T(f)`` and a
variance that may depend on ``f``, where ``f`` is the individual prediction
(IPRED) and ``T`` is the identity or, for :class:`Exponential`, the log
(NONMEM's "transform both sides", LTBS).  Densities are on the transformed
scale, without the Jacobian of ``T``, as NONMEM reports OFVs for LTBS models.

Degenerate cases are returned as data, never as NaN, so that one bad record
can be traced to its subject:

- a variance of exactly zero (a proportional error with ``f = 0``, e.g. a
  pre-dose observation): the density is undefined and ``log_likelihood`` is
  ``-inf`` (NONMEM stops with an error here; use :class:`Combined2` or drop
  the record); censored probabilities use the limit of the normal
  distribution (a point mass at ``T(f)``), so a BLQ pre-dose record has
  probability 1;
- a log-scale model with ``y <= 0`` or ``f <= 0``: ``-inf`` likewise.

In these cases gradients are finite (zero through the degenerate branch):
each ``jnp.where`` is fed a safe value in the branch it discards.
"""

import abc
import functools
import inspect
import math
from collections.abc import Collection
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from jax.scipy.stats import norm
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

_LOG_2PI = math.log(2.0 * math.pi)

#: Kinds of censored record: below a limit (CENS 1, BLQ: M3), above one
#: (CENS -1) and within an interval (a finite LIMIT: M4 and the like).
CENSORING_KINDS = ("below", "above", "interval")


def censored_log_likelihood(error_model, y, cens, limit, bound, kinds: tuple[str, ...]):
    """``error_model.censored_log_likelihood`` told which censoring kinds the
    data have, where its signature takes them (``kinds``); an error model of
    a user's own that overrides the method without it gets the older call."""
    if _takes_kinds(type(error_model).censored_log_likelihood):
        return error_model.censored_log_likelihood(y, cens, limit, bound, kinds=kinds)
    return error_model.censored_log_likelihood(y, cens, limit, bound)


@functools.cache
def _takes_kinds(method) -> bool:
    parameters = inspect.signature(method).parameters.values()
    return any(p.name == "kinds" or p.kind is p.VAR_KEYWORD for p in parameters)


def censoring_kinds(cens: np.ndarray, bound: np.ndarray, is_obs: np.ndarray) -> tuple[str, ...]:
    """The kinds of censored observation (:data:`CENSORING_KINDS`) present in
    concrete data arrays (``Subjects.cens``, ``.bound``, ``.is_obs``); empty
    when nothing is censored, so it reads as "has censoring" too."""
    cens, bound, is_obs = np.asarray(cens), np.asarray(bound), np.asarray(is_obs)
    censored = is_obs & (cens != 0)
    present = dict(
        below=np.any(censored & (cens > 0)),
        above=np.any(censored & (cens < 0)),
        interval=np.any(censored & np.isfinite(bound)),
    )
    return tuple(kind for kind in CENSORING_KINDS if present[kind])


def _as_array(x: ArrayLike) -> Array:
    # ``jnp.asarray`` also unwraps a Theta (through ``__jax_array__``), so
    # ``Additive(f, self.add_sd)`` stores a plain array.
    return jnp.asarray(x)


class AbstractErrorModel(eqx.Module):
    """Interface of a residual error model for one observation (or an array
    of observations, elementwise).

    Concrete models set ``prediction`` and implement :meth:`variance`; the
    likelihood, censoring (M3) and sampling are shared here.
    """

    prediction: eqx.AbstractVar[Float[Array, "*shape"]]
    # True for models whose residual is normal on the log scale.
    log_scale: ClassVar[bool] = False
    # False for the observation models of pmx_jax.model._observations (binary,
    # counts, categories, time to event): no normal residual to linearise.
    gaussian: ClassVar[bool] = True
    time_to_event: ClassVar[bool] = False

    @abc.abstractmethod
    def variance(self) -> Float[Array, "*shape"]:
        """Residual variance on the transformed scale (``SD**2``, NONMEM's ``W**2``)."""

    def transform(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """The scale on which the residual is normal (identity, or log)."""
        y = jnp.asarray(y)
        return jnp.log(y) if self.log_scale else y

    def inverse_transform(self, z: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        z = jnp.asarray(z)
        return jnp.exp(z) if self.log_scale else z

    def mean(self) -> Float[Array, "*shape"]:
        """Mean of ``transform(y)``: ``transform(prediction)``."""
        return self.transform(self.prediction)

    def is_gaussian(self) -> Array:
        """Whether the observation is normal on the transformed scale (an
        array: per record for :class:`SelectedEndpoint`)."""
        return jnp.asarray(self.gaussian)

    def event_terms(self) -> tuple[Array, Array, Array]:
        """(is a time-to-event record, log hazard, cumulative hazard) at the
        record's time; ``(False, 0, 0)`` for other endpoints."""
        zero = jnp.zeros(jnp.shape(jnp.asarray(self.prediction)))
        return jnp.asarray(False), zero, zero

    def standard_deviation(self) -> Float[Array, "*shape"]:
        """Residual standard deviation on the transformed scale."""
        return jnp.sqrt(self.variance())

    # -- shared numerics -------------------------------------------------
    def _in_domain(self, x: Array) -> Array:
        return x > 0 if self.log_scale else jnp.ones(jnp.shape(x), dtype=bool)

    def _safe(self, x: Array) -> tuple[Array, Array]:
        """(ok, x made harmless where not ok) for the transform's domain."""
        ok = self._in_domain(x)
        return ok, jnp.where(ok, x, 1.0)

    def _standardised(self, y: Array) -> tuple[Array, Array, Array]:
        """(ok, z, variance): ``z = (T(y) - T(f)) / sd`` computed safely; ``ok``
        is False where the value is undefined (domain or zero variance)."""
        y = jnp.asarray(y)
        f = jnp.asarray(self.prediction)
        ok_y, y_safe = self._safe(y)
        ok_f, f_safe = self._safe(f)
        var = self.variance()
        ok_var = var > 0
        var_safe = jnp.where(ok_var, var, 1.0)
        z = (self.transform(y_safe) - self.transform(f_safe)) / jnp.sqrt(var_safe)
        return ok_y & ok_f & ok_var, z, var_safe

    def log_likelihood(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """Normal log density of ``transform(y)`` (with the ``-log(2 pi)/2``
        constant; no Jacobian for log-scale models, as NONMEM's LTBS)."""
        ok, z, var = self._standardised(jnp.asarray(y))
        return jnp.where(ok, -0.5 * (_LOG_2PI + jnp.log(var) + z**2), -jnp.inf)

    def _log_probability(self, limit: Array, *, below: bool) -> Array:
        ok, z, _ = self._standardised(limit)
        # Where the normal is degenerate (zero variance: a point mass at T(f);
        # log scale with f <= 0: a point mass at 0) or the limit is outside the
        # transform's domain (log scale: P(Y < limit <= 0) = 0), the
        # probability is 0 or 1 depending on which side of the mass the limit is.
        ok_limit, limit_safe = self._safe(jnp.asarray(limit))
        ok_f, f_safe = self._safe(jnp.asarray(self.prediction))
        mass_below_limit = ok_limit & jnp.where(
            ok_f, self.transform(limit_safe) > self.transform(f_safe), True
        )
        if below:
            return jnp.where(ok, norm.logcdf(z), jnp.where(mass_below_limit, 0.0, -jnp.inf))
        return jnp.where(ok, norm.logcdf(-z), jnp.where(mass_below_limit, -jnp.inf, 0.0))

    def log_cdf(self, limit: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """``log P(Y < limit)``: the M3 likelihood of a record below the LLOQ."""
        return self._log_probability(jnp.asarray(limit), below=True)

    def log_sf(self, limit: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """``log P(Y > limit)``: the likelihood of a record above the ULOQ."""
        return self._log_probability(jnp.asarray(limit), below=False)

    def cdf(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """``P(Y <= y)``."""
        return jnp.exp(self.log_cdf(y))

    def log_between(
        self, lower: Float[ArrayLike, "*shape"], upper: Float[ArrayLike, "*shape"]
    ) -> Float[Array, "*shape"]:
        """``log P(lower < Y < upper)`` for ``lower < upper`` (interval
        censoring; on a log scale a ``lower <= 0`` is the whole lower tail).
        Computed from ``log Phi`` of the two ends as a log-difference, in the
        tail where it does not cancel: accurate far into either tail."""
        lower, upper = jnp.asarray(lower), jnp.asarray(upper)
        ok_u, z_u, _ = self._standardised(upper)
        # An end outside the transform's domain (log scale, lower <= 0) is the
        # whole lower tail: z = -40 (Phi(-40) < 1e-300; finite, so that no
        # infinity reaches a derivative).
        ok_l, z_l, _ = self._standardised(jnp.where(self._in_domain(lower), lower, upper))
        z_l = jnp.where(self._in_domain(lower), z_l, -40.0)
        z_l = jnp.minimum(z_l, z_u)
        # Both ends above the mean: difference of survival functions.
        upper_tail = z_l > 0
        big = jnp.where(upper_tail, log_ndtr(-z_l), log_ndtr(z_u))
        small = jnp.where(upper_tail, log_ndtr(-z_u), log_ndtr(z_l))
        value = big + jnp.log1p(-jnp.exp(jnp.minimum(small - big, 0.0)))
        # Degenerate normal (zero variance): a point mass at T(f).
        degenerate = self._log_probability(upper, below=True)
        return jnp.where(ok_u & ok_l, value, degenerate)

    def censored_log_likelihood(
        self,
        y: Float[ArrayLike, "*shape"],
        cens: Int[ArrayLike, "*shape"],
        limit: Float[ArrayLike, "*shape"],
        bound: Float[ArrayLike, "*shape"] | None = None,
        kinds: Collection[str] = CENSORING_KINDS,
    ) -> Float[Array, "*shape"]:
        """Log-likelihood of one record with the CENS/LIMIT convention of
        Monolix and nlmixr2: ``cens == 0`` an observed ``y``; ``cens == 1``
        below ``limit`` (BLQ, Beal's M3); ``cens == -1`` above ``limit``.
        ``bound`` (the LIMIT column) closes the interval where it is finite:
        ``P(bound < Y < limit)`` for ``cens == 1`` (``bound = 0``: Beal's M4 as
        nlmixr2 and Monolix write it), ``P(limit < Y < bound)`` for ``cens == -1``.

        ``kinds``: the kinds of censored record that can occur (a subset of
        :data:`CENSORING_KINDS`, known from the data: :func:`censoring_kinds`);
        the probabilities of the others are left out of the computation (each
        is a ``log Phi`` per record, the bulk of the work of a censored fit)."""
        y, cens, limit = jnp.asarray(y), jnp.asarray(cens), jnp.asarray(limit)
        f = jax.lax.stop_gradient(jnp.asarray(self.prediction))
        # Feed each branch a harmless value where it is not selected (the data
        # put 0 in LIMIT of uncensored records and often in DV of BLQ records).
        y_used = jnp.where(cens == 0, y, f)
        limit_used = jnp.where(cens == 0, f, limit)
        observed = self.log_likelihood(y_used)
        if "below" in kinds and "above" in kinds:
            one_sided = jnp.where(cens > 0, self.log_cdf(limit_used), self.log_sf(limit_used))
        elif "below" in kinds:
            one_sided = self.log_cdf(limit_used)
        elif "above" in kinds:
            one_sided = self.log_sf(limit_used)
        else:
            one_sided = jnp.full(jnp.shape(observed), -jnp.inf, dtype=observed.dtype)
        if bound is not None and "interval" in kinds:
            bound = jnp.asarray(bound)
            interval = (cens != 0) & jnp.isfinite(bound)
            # A harmless finite interval where there is none (the gradient of
            # log Phi at an infinite end would be NaN times zero).
            lower = jnp.where(interval, jnp.where(cens > 0, bound, limit_used), f - 1.0)
            upper = jnp.where(interval, jnp.where(cens > 0, limit_used, bound), f + 1.0)
            one_sided = jnp.where(interval, self.log_between(lower, upper), one_sided)
        return jnp.where(cens == 0, observed, one_sided)

    def sample(self, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        """One simulated observation on the natural scale (``exp`` of the
        normal draw for log-scale models)."""
        mean = self.mean()
        z = jax.random.normal(key, jnp.shape(mean), dtype=jnp.result_type(mean))
        return self.inverse_transform(mean + self.standard_deviation() * z)


class Additive(AbstractErrorModel):
    """``y = f + sd * eps``: constant SD (nlmixr2 ``add(sd)``).

    Example
    -------
    >>> err = Additive(2.0, 0.5)
    >>> float(err.variance())
    0.25
    """

    prediction: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    sd: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def variance(self) -> Float[Array, "*shape"]:
        return self.sd**2


class Proportional(AbstractErrorModel):
    """``y = f * (1 + cv * eps)``: SD proportional to the prediction
    (nlmixr2 ``prop(cv)``).  The variance is zero where ``f = 0`` (see the
    module notes)."""

    prediction: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    cv: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def variance(self) -> Float[Array, "*shape"]:
        return (self.cv * self.prediction) ** 2


class Combined1(AbstractErrorModel):
    """Combined error with SDs added: ``SD = add + prop * |f|`` (nlmixr2's
    ``combined1``; NONMEM ``W = THETA(a) + THETA(b) * IPRED``)."""

    prediction: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    add: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    prop: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def variance(self) -> Float[Array, "*shape"]:
        return (self.add + self.prop * jnp.abs(self.prediction)) ** 2


class Combined2(AbstractErrorModel):
    """Combined error with variances added: ``Var = add**2 + (prop * f)**2``
    (nlmixr2's default ``combined2``; NONMEM ``W = SQRT(THETA(a)**2 +
    THETA(b)**2 * IPRED**2)``)."""

    prediction: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    add: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    prop: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def variance(self) -> Float[Array, "*shape"]:
        return self.add**2 + (self.prop * self.prediction) ** 2


class Exponential(AbstractErrorModel):
    """Log-normal residual, transform both sides: ``log y = log f + sd * eps``.

    ``sd`` is on the log scale (about the CV for small values).  Densities are
    those of ``log y`` (NONMEM LTBS convention, no Jacobian).
    """

    prediction: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    sd: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    log_scale: ClassVar[bool] = True

    def variance(self) -> Float[Array, "*shape"]:
        return self.sd**2


LogNormal = Exponential


class Normal(AbstractErrorModel):
    """Normal residual with a user-computed SD: NONMEM's ``Y = IPRED + W * EPS(1)``
    for any ``W`` (e.g. a power-of-prediction error)."""

    prediction: Float[Array, "*shape"] = eqx.field(converter=_as_array)
    sd: Float[Array, "*shape"] = eqx.field(converter=_as_array)

    def variance(self) -> Float[Array, "*shape"]:
        return self.sd**2
