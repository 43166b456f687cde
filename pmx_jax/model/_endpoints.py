"""Several endpoints (DVID) in one model: pick the record's error model.

A model whose ``observe`` block returns several error models (e.g. a PK
concentration and a PD effect) gives one record's observation model as a
:class:`SelectedEndpoint`: an error model that evaluates every endpoint and
selects, elementwise, the one named by the record's DVID index.

Under ``vmap`` any branch selection evaluates all branches, so the endpoints
that are not selected are evaluated at harmless inputs (prediction,
observation and limit set to 1, not censored).  That keeps their values finite
and, above all, their gradients: a ``-inf`` or NaN in a discarded branch
would otherwise turn the gradient of the whole objective into NaN (e.g. a
log-scale PD endpoint whose prediction is 0 at a PK record).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._error import CENSORING_KINDS, AbstractErrorModel, censored_log_likelihood
from ._errors import ObservationError


def _neutral(endpoint: AbstractErrorModel, selected: Array) -> AbstractErrorModel:
    """The endpoint with its prediction replaced by 1 where it is not selected."""
    prediction = jnp.asarray(endpoint.prediction)
    try:
        return eqx.tree_at(lambda e: e.prediction, endpoint, jnp.where(selected, prediction, 1.0))
    except (TypeError, ValueError):
        # ``prediction`` is a property of a user-defined error model: nothing
        # to replace, so evaluate it as it is.
        return endpoint


class SelectedEndpoint(AbstractErrorModel):
    """The error model of the record's endpoint, chosen among ``endpoints`` by
    ``index`` (the 0-based DVID level index).

    An index outside ``0 .. len(endpoints) - 1`` gives NaN (the data layer
    checks DVID levels against the model before fitting).
    """

    endpoints: tuple[AbstractErrorModel, ...]
    index: Int[Array, "*shape"] = eqx.field(converter=jnp.asarray)

    def __check_init__(self) -> None:
        if len(self.endpoints) == 0:
            raise ValueError("SelectedEndpoint needs at least one endpoint")
        for e in self.endpoints:
            if not isinstance(e, AbstractErrorModel) or isinstance(e, SelectedEndpoint):
                raise TypeError(f"endpoints must be error models, got {type(e).__name__}")

    def _select(self, per_endpoint: Callable[[int, AbstractErrorModel, Array], Array]) -> Array:
        result = None
        for k, endpoint in enumerate(self.endpoints):
            selected = self.index == k
            value = jnp.asarray(per_endpoint(k, _neutral(endpoint, selected), selected))
            if result is None:
                result = jnp.full(
                    jnp.broadcast_shapes(value.shape, selected.shape), jnp.nan, dtype=value.dtype
                )
            result = jnp.where(selected, value, result)
        assert result is not None
        return result

    @property  # type: ignore[misc]
    def prediction(self) -> Float[Array, "*shape"]:  # type: ignore[override]
        return self._select(lambda k, e, s: e.prediction)

    def variance(self) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.variance())

    def mean(self) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.mean())

    def transform(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.transform(jnp.where(s, y, 1.0)))

    def inverse_transform(self, z: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.inverse_transform(jnp.where(s, z, 0.0)))

    def log_likelihood(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.log_likelihood(jnp.where(s, y, 1.0)))

    def log_cdf(self, limit: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.log_cdf(jnp.where(s, limit, 1.0)))

    def log_sf(self, limit: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.log_sf(jnp.where(s, limit, 1.0)))

    def censored_log_likelihood(
        self,
        y: Float[ArrayLike, "*shape"],
        cens: Int[ArrayLike, "*shape"],
        limit: Float[ArrayLike, "*shape"],
        bound: Float[ArrayLike, "*shape"] | None = None,
        kinds: Collection[str] = CENSORING_KINDS,
    ) -> Float[Array, "*shape"]:
        return self._select(
            lambda k, e, s: censored_log_likelihood(
                e,
                jnp.where(s, y, 1.0),
                jnp.where(s, cens, 0),
                jnp.where(s, limit, 1.0),
                None if bound is None else jnp.where(s, bound, -jnp.inf),
                kinds,
            )
        )

    def is_gaussian(self) -> Array:
        return self._select(lambda k, e, s: e.is_gaussian())

    def event_terms(self) -> tuple[Array, Array, Array]:
        return (
            self._select(lambda k, e, s: e.event_terms()[0]),
            self._select(lambda k, e, s: e.event_terms()[1]),
            self._select(lambda k, e, s: e.event_terms()[2]),
        )

    def cdf(self, y: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        return self._select(lambda k, e, s: e.cdf(jnp.where(s, y, 1.0)))

    def sample(self, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        # One key for all endpoints: only one of them is kept per record.
        return self._select(lambda k, e, s: e.sample(key))


def normalise_endpoints(
    observed: object, where: str
) -> tuple[tuple[object, ...], tuple[AbstractErrorModel, ...]]:
    """(keys, error models) from what an ``observe`` block returned.

    One error model: key ``0``.  A tuple or list: keys ``0, 1, ...`` (DVID level
    indices).  A dict: if every key is an integer, the keys are sorted (they are
    DVID values; their rank is the DVID level index, as the data layer sorts
    DVID levels); otherwise insertion order gives the DVID level index and the
    keys name the endpoints in reports.
    """
    if isinstance(observed, AbstractErrorModel):
        pairs: Sequence[tuple[object, object]] = [(0, observed)]
    elif isinstance(observed, dict):
        keys = list(observed)
        if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            keys = sorted(keys)
        pairs = [(k, observed[k]) for k in keys]
    elif isinstance(observed, tuple | list):
        pairs = list(enumerate(observed))
    else:
        raise _observation_error(where, f"returned {type(observed).__name__}")
    if not pairs:
        raise _observation_error(where, "returned no endpoint")
    for key, value in pairs:
        if not isinstance(value, AbstractErrorModel):
            raise _observation_error(where, f"returned {type(value).__name__} for endpoint {key!r}")
    return tuple(k for k, _ in pairs), tuple(v for _, v in pairs)  # type: ignore[misc]


def _observation_error(where: str, what: str) -> Exception:
    return ObservationError(
        f"{where} {what}; it must return an error model such as "
        "pmx.Additive(prediction, sd), or a tuple/dict of them (one per DVID endpoint)"
    )
