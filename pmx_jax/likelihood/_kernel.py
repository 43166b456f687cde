"""The likelihood kernel: log p(y_i | eta_i, theta) and log p(eta_i | Omega) for
ONE subject.  Every estimation method (FO to Laplace), the Bayesian backend and
forecasting evaluate their likelihood here, so error models, BLQ (M3) and IOV
cannot disagree between methods.

Random effects of a subject are one vector ``b``: the IIV etas (order of
``model.eta_names``) followed by the IOV etas of every occasion of the dataset,
occasion by occasion (order of ``model.iov_eta_names`` within an occasion).  An
occasion the subject never visits leaves its likelihood unchanged, so its etas
stay at 0 and their prior terms cancel in every approximation (the prior's
log-determinant against the Hessian's); no per-subject mask is needed.

OFV convention (NONMEM): ``-2 log L`` without the ``N log(2 pi)`` constant,
where ``N`` counts the normally distributed (not censored) observations only.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._results import RESULTS
from ..data._subjects import Subjects
from ..model._error import CENSORING_KINDS, censored_log_likelihood
from ..model._model import Model
from ..model._observations import event_log_likelihood
from ._predictions import subject_predictions
from ._prepare import SubjectData

LOG_2PI = math.log(2.0 * math.pi)


class Layout(eqx.Module):
    """Static layout of a subject's random-effect vector ``b``.

    ``n_eta`` IIV etas, then ``n_occasions`` blocks of ``n_iov_eta`` IOV etas.
    """

    n_eta: int = eqx.field(static=True)
    n_iov_eta: int = eqx.field(static=True)
    n_occasions: int = eqx.field(static=True)

    @classmethod
    def of(cls, model: Model, n_occasions: int) -> Layout:
        # Without IOV etas the occasion axis only costs shape noise: keep one.
        n_occ = n_occasions if model.n_iov_eta else 1
        return cls(model.n_eta, model.n_iov_eta, n_occ)

    @property
    def size(self) -> int:
        return self.n_eta + self.n_occasions * self.n_iov_eta

    def split(self, b: Float[Array, " n_b"]) -> tuple[Array, Array]:
        """(IIV etas ``(n_eta,)``, IOV etas ``(n_occasions, n_iov_eta)``)."""
        eta = b[: self.n_eta]
        iov = b[self.n_eta :].reshape(self.n_occasions, self.n_iov_eta)
        return eta, iov

    def omega(self, model: Model) -> Float[Array, "n_b n_b"]:
        """Prior covariance of ``b``: OMEGA (IIV), then one IOV OMEGA per occasion."""
        omega = jnp.asarray(model.omega_matrix())
        if not self.n_iov_eta:
            return omega
        iov = jnp.kron(jnp.eye(self.n_occasions), jnp.asarray(model.iov_omega_matrix()))
        return jax.scipy.linalg.block_diag(omega, iov)


class RecordTerms(eqx.Module):
    """Per-record quantities of one subject at given random effects.

    ``mean`` and ``variance`` are on the error model's scale (log scale for
    :class:`~pmx_jax.Exponential`, where the linearisations of FO/FOCE/FOCEI
    apply); ``prediction`` is the model's prediction on the DV's scale;
    ``observed`` is the transformed DV on normal records (the mean
    elsewhere, so that residuals vanish there).  ``log_likelihood`` is the
    record's log density (with the ``log 2 pi`` constant) or, for BLQ records,
    its M3 log probability, or the log-likelihood of a non-Gaussian endpoint
    (its probability mass, or its time-to-event term); 0 on records that are
    not observations.  ``mean``/``variance``/``observed`` are those of the
    normal records only (0, 1 and 0 elsewhere).
    """

    mean: Float[Array, " n_rec"]
    variance: Float[Array, " n_rec"]
    prediction: Float[Array, " n_rec"]  # on the DV's own scale (IPRED; PRED at b = 0)
    observed: Float[Array, " n_rec"]
    log_likelihood: Float[Array, " n_rec"]
    log_scale: Bool[Array, " n_rec"]  # ``mean`` is log(prediction) (a log-scale error model)
    normal: Bool[Array, " n_rec"]  # Gaussian observation, not censored
    censored: Bool[Array, " n_rec"]  # Gaussian observation, M3 (below or above a limit)
    general: Bool[Array, " n_rec"]  # observation of a non-Gaussian endpoint (counts, TTE...)
    status: Int[Array, ""]  # the event engine's RESULTS code

    @property
    def ok(self) -> Bool[Array, ""]:
        """The event engine succeeded."""
        return self.status == RESULTS.successful


def record_terms(
    model: Model,
    data: SubjectData,
    eta: Float[Array, " n_eta"],
    iov_eta: Float[Array, "n_occ n_iov"],
    censoring: bool | tuple[str, ...] = True,
) -> RecordTerms:
    """Evaluate the $PK, event and $ERROR blocks of one subject at ``eta``.
    ``censoring``: the kinds of censored record the data have
    (:func:`pmx_jax.model._error.censoring_kinds`; ``True``: any kind).
    False or empty (no censored record) leaves the M3 likelihood of censored
    records out of the program: the log-likelihood of every observation is
    then its normal density."""
    censored_kinds = CENSORING_KINDS if censoring is True else tuple(censoring or ())
    # With the censored observations listed, the M3 probabilities are
    # evaluated at those records only (``_censored_log_likelihood``); every
    # record then takes the uncensored branch here.
    compact = bool(censoring) and data.censored_record is not None
    pred = subject_predictions(model, data, eta, iov_eta)
    subject = data.records
    uncensored = subject.is_obs & (subject.cens == 0)
    dv = _stand_in_values(model, pred, subject)
    kinds = {"events": False}

    def observe(amounts, params, dvid, dv, cens, limit, bound, is_uncensored, is_obs):
        error_model = model.observation(amounts, params, dvid)
        endpoints = getattr(error_model, "endpoints", (error_model,))
        kinds["events"] = any(e.time_to_event for e in endpoints)
        gaussian = error_model.is_gaussian()
        is_normal = is_uncensored & gaussian
        # The mean on the error model's scale, where the record is a normal
        # observation (0 elsewhere).  On a log scale, a dose record's prediction
        # is often 0 (nothing absorbed yet): log 0 would put NaN into every
        # derivative of the linearised methods, masked or not.
        safe = jnp.where(is_normal, error_model.prediction, 1.0)
        mean = jnp.where(is_normal, error_model.transform(safe), 0.0)
        # Transform the DV only where it is a normal observation: the table puts
        # 0 in DV of dose and BLQ records, which a log scale would turn to -inf.
        observed = jnp.where(is_normal, error_model.transform(jnp.where(is_normal, dv, 1.0)), mean)
        if censoring:
            kinds_here = () if compact else censored_kinds
            loglik = censored_log_likelihood(error_model, dv, cens, limit, bound, kinds_here)
        else:
            loglik = error_model.log_likelihood(dv)
        log_scale = jnp.asarray(error_model.log_scale)
        variance = jnp.where(gaussian, error_model.variance(), 1.0)
        events = error_model.event_terms() if kinds["events"] else None
        loglik = jnp.where(is_obs, loglik, 0.0)
        return mean, variance, observed, loglik, log_scale, gaussian, events

    mean, variance, observed, loglik, log_scale, gaussian, events = jax.vmap(observe)(
        pred.amounts,
        pred.params,
        subject.dvid,
        dv,
        subject.cens,
        subject.limit,
        subject.bound,
        uncensored,
        subject.is_obs,
    )
    if compact:
        loglik = _censored_log_likelihood(model, data, pred, dv, loglik, censored_kinds)
    if events is not None:
        loglik = _event_log_likelihood(subject, loglik, *events)
    normal = uncensored & gaussian
    censored = subject.is_obs & (subject.cens != 0) & gaussian
    general = subject.is_obs & ~gaussian
    return RecordTerms(
        mean, variance, pred.prediction, observed, loglik, log_scale, normal, censored, general,
        pred.status,
    )  # fmt: skip


def _censored_log_likelihood(
    model: Model, data: SubjectData, pred, dv: Array, loglik: Array, kinds: tuple[str, ...]
) -> Array:
    """``loglik`` with the M3 log probability of each censored observation
    (``data.censored_record``) in place of its entry.

    Only these records are evaluated: with 281 of 4,680 observations below
    the LLOQ (``benchmarks/nuts.py``), the ``log Phi`` of every record slot
    was half of a NUTS gradient's time.  The amounts and parameters, which
    carry derivatives, are picked by a masked sum over the records rather
    than gathered by index: the derivative of a gather is a scatter-add,
    a loop on CPU."""
    subject = data.records
    n_rec = subject.time.shape[0]
    index, valid = data.censored_record, data.censored_valid
    # A padding entry (``valid`` False) points at record 0 and is evaluated
    # there, at real amounts and parameters, then left out.  With zeros
    # instead, its prediction would be 0/0 (a zero volume), and the NaN
    # derivative times its zero weight would reach the residual error's
    # THETAs, which enter every entry directly.
    at = index[:, None] == jnp.arange(n_rec)[None, :]
    pick = at & valid[:, None]

    def gathered(x):
        mask = at.reshape(at.shape + (1,) * (x.ndim - 1))
        return jnp.sum(jnp.where(mask, x[None], 0.0), axis=1)

    def one(amounts, params, dvid, dv, cens, limit, bound):
        error_model = model.observation(amounts, params, dvid)
        return censored_log_likelihood(error_model, dv, cens, limit, bound, kinds)

    values = jax.vmap(one)(
        gathered(pred.amounts),
        jax.tree_util.tree_map(gathered, pred.params),
        subject.dvid[index],
        dv[index],
        subject.cens[index],
        subject.limit[index],
        subject.bound[index],
    )
    placed = jnp.sum(jnp.where(pick, values[:, None], 0.0), axis=0)
    return jnp.where(jnp.any(pick, axis=0), placed, loglik)


def _stand_in_values(model: Model, pred, subject: Subjects) -> Array:
    """The DVs the $ERROR block's log-likelihoods are evaluated at: the data's
    on observation records, and elsewhere (doses, MDV 1, padding: DV 0) an
    observed value of the same endpoint, for models with a non-Gaussian
    endpoint.  Their log-likelihood is masked there, but a density that is
    not finite at 0 (a user's log-likelihood of a positive quantity, a
    category that is not 0) would put NaN into every derivative.  Gaussian
    error models guard their domain themselves: no change for them."""
    first = jax.tree_util.tree_map(lambda v: v[0], pred.params)
    _, endpoints = model._observe(pred.amounts[0], first)
    if all(e.gaussian for e in endpoints):
        return subject.dv
    dv = subject.dv
    for level in range(len(endpoints)):
        observed = subject.is_obs & (subject.dvid == level)
        value = dv[jnp.argmax(observed)]
        stand_in = jnp.where(jnp.any(observed), value, dv)
        dv = jnp.where(~subject.is_obs & (subject.dvid == level), stand_in, dv)
    return dv


def _event_log_likelihood(
    subject: Subjects, loglik: Array, is_event: Array, log_hazard: Array, cumulative: Array
) -> Array:
    """The log-likelihood of every time-to-event record from the cumulative
    hazard accrued since the previous observed record of the same endpoint
    after the last reset (see :mod:`pmx_jax.model._observations`)."""
    records = jnp.arange(loglik.shape[0])
    event_obs = is_event & subject.is_obs
    # A reset (EVID 3/4) starts a new history: the dynamics restart there
    # (a cumulative-hazard compartment returns to 0), and so does the chain.
    reset = (subject.evid == 3) | (subject.evid == 4)
    last_reset = jax.lax.cummax(jnp.where(reset, records, -1))
    earlier = (
        event_obs[None, :]
        & (subject.dvid[None, :] == subject.dvid[:, None])
        & (records[None, :] < records[:, None])
        & (records[None, :] > last_reset[:, None])
    )
    previous = jnp.max(jnp.where(earlier, records[None, :], -1), axis=1)
    start = jnp.where(previous >= 0, cumulative[jnp.maximum(previous, 0)], 0.0)
    value = event_log_likelihood(subject.dv, log_hazard, cumulative - start)
    return jnp.where(event_obs, value, loglik)


# The individual model traced once per program: the EBE search, the implicit
# derivative and the OFV formulas call it with the same shapes, and JAX's trace
# cache hands every later call the same jaxpr (transformed by vmap/jvp rules
# instead of tracing the model's Python again).
_record_terms_once = eqx.filter_jit(record_terms)


def conditional_log_likelihood(
    model: Model,
    data: SubjectData,
    eta: Float[Array, " n_eta"],
    iov_eta: Float[Array, "n_occ n_iov"],
) -> tuple[Float[Array, ""], RecordTerms]:
    """``log p(y_i | eta_i, theta)`` of one subject (with the ``log 2 pi``
    constants; BLQ records by M3) and the per-record terms it was built from."""
    terms = record_terms(model, data, eta, iov_eta)
    return jnp.sum(terms.log_likelihood), terms


class SubjectLikelihood(eqx.Module):
    """One subject made ready for the kernel: the model, the subject's data
    and the layout of its random effects (everything but their values), so
    that individual objectives are plain functions of ``b``."""

    model: Model
    data: SubjectData
    layout: Layout
    # The kinds of censored record in the data (True: any; () / False: none).
    censoring: bool | tuple[str, ...] = eqx.field(static=True, default=True)
    # Some endpoint is not Gaussian (see RecordTerms.general).
    general: bool = eqx.field(static=True, default=False)

    def terms(self, b: Float[Array, " n_b"]) -> RecordTerms:
        eta, iov = self.layout.split(b)
        return _record_terms_once(self.model, self.data, eta, iov, self.censoring)


def moments_and_jacobian(
    subject: SubjectLikelihood, b: Float[Array, " n_b"]
) -> tuple[RecordTerms, Float[Array, "n_rec n_b"], Float[Array, "n_rec n_b"]]:
    """The record terms at ``b`` and the Jacobians ``G = d mean / db`` and
    ``G_v = d variance / db`` of the residual moments (forward mode, one
    tangent per random effect): what the FO/FOCE linearisations, the weighted
    residuals and the Fisher information are built from."""

    def moments(b):
        terms = subject.terms(b)
        return (terms.mean, terms.variance), terms

    (d_mean, d_var), terms = jax.jacfwd(moments, has_aux=True)(b)
    return terms, d_mean, d_var


class Prior(eqx.Module):
    """OMEGA of the random-effect vector, factorised once for all subjects:
    ``b ~ N(0, Omega)`` with ``inverse = Omega^-1`` and ``logdet = log det Omega``."""

    inverse: Float[Array, "n_b n_b"]
    logdet: Float[Array, ""]

    @classmethod
    def of(cls, omega: Array) -> Prior:
        if omega.shape[0] == 0:
            return cls(omega, jnp.zeros((), omega.dtype))
        chol = jnp.linalg.cholesky(omega)
        inverse = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(omega.shape[0]))
        return cls(inverse, 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))))

    def quadratic(self, b: Array) -> Array:
        """``b^T Omega^-1 b``."""
        return b @ self.inverse @ b


def log_prior(b: Float[Array, " n_b"], omega: Float[Array, "n_b n_b"]) -> Float[Array, ""]:
    """Multivariate normal log density of the random effects, N(0, OMEGA)."""
    n = b.shape[0]
    if n == 0:
        return jnp.zeros((), dtype=b.dtype)
    quad, logdet = quadratic_and_logdet(omega, b)
    return -0.5 * (n * LOG_2PI + logdet + quad)


def quadratic_and_logdet(
    matrix: Float[Array, "n n"], x: Float[Array, " n"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """``x^T M^{-1} x`` and ``log det M`` of a positive definite ``M`` by Cholesky
    (NaN when ``M`` is not positive definite: callers turn that into a status)."""
    chol = jnp.linalg.cholesky(matrix)
    z = jax.scipy.linalg.solve_triangular(chol, x, lower=True)
    return jnp.sum(z**2), 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def logdet(matrix: Float[Array, "n n"]) -> Float[Array, ""]:
    """``log det`` of a positive definite matrix (NaN if it is not)."""
    if matrix.shape[0] == 0:
        return jnp.zeros((), dtype=matrix.dtype)
    chol = jnp.linalg.cholesky(matrix)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
