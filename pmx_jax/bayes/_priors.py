"""Priors of the population parameters, and the sampler's unconstrained vector.

The population parameters are sampled on an unconstrained vector ``u`` (the
``"pop"`` site of the sampler), block by block:

- a free THETA: the estimation scale of :class:`~pmx_jax.Theta` (identity,
  log of the distance to one bound, logit between two bounds);
- a free OMEGA block: the log standard deviations of its etas, then, for a full
  block, the unconstrained vector of the Cholesky factor of its correlation
  matrix (NumPyro's ``CorrCholeskyTransform``).

Priors are densities on the natural scale (a THETA value, an eta SD, a
correlation matrix), so the log posterior adds the log Jacobian of each
transform.  Fixed parameters are not in ``u`` and keep their values.

Defaults (weakly informative; override them next to the parameter, e.g.
``tcl: pmx.Theta = pmx.theta(1.0, prior=dist.Normal(1.0, 0.5))``, or per call
with ``sample(..., priors={"tcl": ...})``):

- THETA: normal on the estimation scale, centred on the initial estimate with
  SD ``10 max(1, |u0|)``: a factor of ``e^10`` either way for log-scale typical
  values, which the data always overrule;
- OMEGA: half-normal on each eta SD with scale ``max(1, 2 sd0)`` (SD 1 on a
  log-normal parameter is a 130% CV), and LKJ(2) on the correlation matrix of
  a full block (NumPyro's ``LKJCholesky``: mild shrinkage toward independence).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions.transforms import CorrCholeskyTransform

from ..model._model import Model
from ..model._parameters import Omega, PriorSpec, Theta


@dataclasses.dataclass(frozen=True)
class OmegaPrior:
    """Prior of an OMEGA block: SD scale family and LKJ concentration.

    ``family``: ``"halfnormal"`` or ``"halfcauchy"`` for every eta SD of the
    block, with ``scale`` (a number, or one per eta; default: ``max(1, 2 sd0)``
    from the initial variance).  ``concentration``: the LKJ shape of the
    correlation matrix of a full block (1 is uniform over correlation
    matrices, larger values shrink toward independence).

    >>> OmegaPrior(scale=0.5, family="halfcauchy")
    OmegaPrior(scale=0.5, family='halfcauchy', concentration=2.0)
    """

    scale: Any = None
    family: str = "halfnormal"
    concentration: float = 2.0

    def __post_init__(self) -> None:
        if self.family not in ("halfnormal", "halfcauchy"):
            raise ValueError(
                f"OmegaPrior family must be 'halfnormal' or 'halfcauchy', got {self.family!r}"
            )
        if not self.concentration > 0:
            raise ValueError(f"LKJ concentration must be > 0, got {self.concentration}")


def _theta_log_jacobian(theta: Theta, u: jax.Array) -> jax.Array:
    """``log |d value / d u|`` of :meth:`Theta.from_unconstrained`."""
    kind = theta.transform_kind
    if kind == "logit":
        return math.log(theta.upper - theta.lower) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
    if kind == "log":
        return u
    return jnp.zeros_like(u)


class _ThetaPart(eqx.Module):
    name: str = eqx.field(static=True)
    theta: Theta
    prior: PriorSpec | None = eqx.field(static=True)  # natural-scale distribution
    center: float = eqx.field(static=True)  # default prior on u: Normal(center, width)
    width: float = eqx.field(static=True)
    size: int = eqx.field(static=True, default=1)

    def natural(self, u: jax.Array) -> jax.Array:
        return self.theta.from_unconstrained(u[0])

    def log_prior(self, u: jax.Array) -> jax.Array:
        u = u[0]
        if self.prior is None:
            return dist.Normal(self.center, self.width).log_prob(u)
        value = self.theta.from_unconstrained(u)
        return self.prior.distribution.log_prob(value) + _theta_log_jacobian(self.theta, u)

    def initial(self, value: Any) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.theta.to_unconstrained(value)))


class _OmegaPart(eqx.Module):
    name: str = eqx.field(static=True)
    block: Omega
    prior: OmegaPrior = eqx.field(static=True)
    scales: tuple[float, ...] = eqx.field(static=True)

    @property
    def n(self) -> int:
        return self.block.n_eta

    @property
    def size(self) -> int:
        n = self.n
        return n if self.block.diagonal else n + n * (n - 1) // 2

    def _corr_cholesky(self, u: jax.Array) -> jax.Array:
        return CorrCholeskyTransform()(u[self.n :])

    def cholesky(self, u: jax.Array) -> jax.Array:
        """Cholesky factor of the block's covariance matrix."""
        sd = jnp.exp(u[: self.n])
        if self.block.diagonal:
            return jnp.diag(sd)
        return sd[:, None] * self._corr_cholesky(u)

    def natural(self, u: jax.Array) -> jax.Array:
        chol = self.cholesky(u)
        return chol @ chol.T

    def log_prior(self, u: jax.Array) -> jax.Array:
        log_sd = u[: self.n]
        sd = jnp.exp(log_sd)
        scale = jnp.asarray(self.scales)
        family = dist.HalfNormal if self.prior.family == "halfnormal" else dist.HalfCauchy
        total = jnp.sum(family(scale).log_prob(sd) + log_sd)
        if not self.block.diagonal:
            v = u[self.n :]
            transform = CorrCholeskyTransform()
            corr = transform(v)
            lkj = dist.LKJCholesky(self.n, concentration=self.prior.concentration)
            total = total + lkj.log_prob(corr) + transform.log_abs_det_jacobian(v, corr)
        return total

    def initial(self, matrix: Any) -> np.ndarray:
        m = np.asarray(matrix, dtype=float)
        sd = np.sqrt(np.diagonal(m))
        if self.block.diagonal:
            return np.log(sd)
        corr = m / np.outer(sd, sd)
        chol = np.linalg.cholesky(corr)
        v = np.asarray(CorrCholeskyTransform().inv(jnp.asarray(chol)))
        return np.concatenate([np.log(sd), v])


class PopulationPrior(eqx.Module):
    """The map from the sampler's ``pop`` vector to the model, with its log prior.

    Built by :func:`population_prior` from a model (whose current values are the
    initial estimates) and optional prior overrides.
    """

    parts: tuple[Any, ...]
    offsets: tuple[int, ...] = eqx.field(static=True)
    size: int = eqx.field(static=True)

    def _slices(self, u: jax.Array):
        for part, start in zip(self.parts, self.offsets, strict=True):
            yield part, u[start : start + part.size]

    def model(self, template: Model, u: jax.Array) -> Model:
        """``template`` with the parameters of ``u`` (inside jit: no checks)."""
        values = {part.name: part.natural(piece) for part, piece in self._slices(u)}
        return template._replace(values, allowed=(Theta, Omega), validate=False)

    def log_prior(self, u: jax.Array) -> jax.Array:
        """Log prior density of the natural-scale parameters at ``u``, plus the
        log Jacobian of the transform: the density of ``u``."""
        total = jnp.zeros((), u.dtype)
        for part, piece in self._slices(u):
            total = total + part.log_prior(piece)
        return total

    def initial(self, model: Model) -> np.ndarray:
        """``u`` at the parameter values of ``model``."""
        params = dict(model.thetas()) | dict(model.omega_blocks())
        pieces = []
        for part in self.parts:
            p = params[part.name]
            pieces.append(part.initial(p.value if isinstance(p, Theta) else p.matrix))
        if not pieces:
            return np.zeros(0)
        return np.concatenate(pieces).astype(float)

    def names(self) -> list[str]:
        """Name of each element of ``u`` (for error messages and mass matrices)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, _ThetaPart):
                out.append(part.name)
            else:
                out += [f"log_sd({part.name}.{eta})" for eta in part.block.names]
                out += [f"corr({part.name})[{k}]" for k in range(part.size - part.n)]
        return out


def _unwrap_prior(prior: Any) -> Any:
    return prior.distribution if isinstance(prior, PriorSpec) else prior


def population_prior(model: Model, priors: Mapping[str, Any] | None = None) -> PopulationPrior:
    """Priors of the free THETAs and OMEGA blocks of ``model`` (see the module
    notes for the defaults).  ``priors`` maps a parameter's field name to a
    NumPyro distribution (THETA, natural scale) or an :class:`OmegaPrior`, and
    takes precedence over the ``prior=`` of the declaration."""
    priors = dict(priors or {})
    known = set(model.theta_names) | {name for name, _ in model.omega_blocks()}
    unknown = sorted(set(priors) - known)
    if unknown:
        raise KeyError(
            f"priors given for {unknown}, which are not parameters of {type(model).__name__} "
            f"(its parameters: {sorted(known)})"
        )
    parts: list[Any] = []
    for name, theta in model.thetas().items():
        if theta.fixed:
            continue
        prior = _unwrap_prior(priors.get(name, theta.prior))
        if prior is not None and not hasattr(prior, "log_prob"):
            raise TypeError(
                f"prior of THETA {name!r} must be a NumPyro distribution on the natural "
                f"scale (e.g. numpyro.distributions.Normal(1.0, 0.5)), got {prior!r}"
            )
        u0 = float(theta.to_unconstrained())
        spec = None if prior is None else PriorSpec(prior)
        parts.append(_ThetaPart(name, theta, spec, u0, 10.0 * max(1.0, abs(u0))))
    for name, block in model.omega_blocks():
        if block.fixed:
            continue
        prior = _unwrap_prior(priors.get(name, block.prior)) or OmegaPrior()
        if not isinstance(prior, OmegaPrior):
            raise TypeError(
                f"prior of OMEGA block {name!r} must be a pmx_jax.bayes.OmegaPrior, got {prior!r}"
            )
        sd0 = np.sqrt(np.diagonal(np.asarray(block.matrix, dtype=float)))
        if prior.scale is None:
            scales = np.maximum(1.0, 2.0 * sd0)
        else:
            scales = np.broadcast_to(np.asarray(prior.scale, dtype=float), sd0.shape)
            if np.any(scales <= 0):
                raise ValueError(f"OmegaPrior scale of block {name!r} must be > 0")
        parts.append(_OmegaPart(name, block, prior, tuple(float(s) for s in scales)))
    offsets, start = [], 0
    for part in parts:
        offsets.append(start)
        start += part.size
    return PopulationPrior(tuple(parts), tuple(offsets), start)
