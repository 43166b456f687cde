"""SAEM: the stochastic approximation EM algorithm (Monolix's default
method, NONMEM's ``METHOD=SAEM``, nlmixr2's ``"saem"``), every subject's
Markov chains one row of a batch.

Each iteration ``k`` has three steps:

1. **Simulation (E-step)**: every subject's chains (several per subject when
   there are few subjects) move under the conditional law of its random
   effects ``p(b_i | y_i; theta_k)`` by Metropolis-Hastings kernels, all
   subjects and chains at once: ``m1`` draws from the prior ``N(0, Omega)``
   (an independence sampler: its acceptance ratio is the likelihood ratio),
   ``m2`` random-walk moves of the whole vector with proposal
   ``N(b, s^2 Omega)``, and ``m3`` sweeps of one-component random-walk moves
   (``kernels=(m1, m2, m3)``, default ``(2, 2, 2)`` as Monolix and saemix).
   The random-walk scales adapt during the exploration phase towards an
   acceptance rate of 0.4 (``s <- s (1 + 0.4 (rate - 0.4))``, as saemix).
2. **Stochastic approximation** of the complete-data sufficient statistics,
   ``S <- S + gamma_k (S(b^(k)) - S)``, with ``gamma_k = 1`` during the
   exploration phase (``iterations[0]`` iterations) and ``1 / (k - K1)`` in the
   smoothing phase (``iterations[1]``), which averages the draws.
3. **Maximisation**.  For a random effect that is *mu-referenced* (it enters
   the model only through ``THETA_j + eta``, on THETA's estimation scale, so
   ``THETA * exp(eta)`` with ``THETA > 0`` counts, through ``log THETA``:
   :func:`pmx_jax.likelihood.mu_referenced_thetas`), the chain's state is the
   individual value ``phi = THETA_j + b``, and THETA_j and OMEGA have closed
   forms in ``S``: the (generalised least squares) mean of ``phi`` and the
   covariance of ``phi`` about it, kept to the declared block structure
   (diagonal blocks stay diagonal, fixed blocks fixed).  IOV OMEGAs come from
   the occasions each subject has records in.  Every other free THETA (the
   residual error, covariate effects, THETAs without a random effect) moves
   by a stochastic-approximation Newton step on the complete-data
   log-likelihood ``Q(psi) = sum_i mean_chains log p(y_i | b_i; psi)``:
   ``psi <- psi + gamma_k Hbar^-1 grad Q`` with ``Hbar`` the stochastic
   approximation of ``-d2Q/dpsi2`` (made positive definite; steps limited to 1
   on the estimation scale).  Its fixed point is ``E[grad log p(y, b)] = 0``,
   which is the likelihood equation (Fisher's identity), so both kinds of
   parameters converge to the maximum likelihood estimates.
   During exploration OMEGA may shrink by at most 5% per iteration
   (Monolix's simulated annealing), which keeps the chains exploring.

After the iterations, at the final estimates:

- **Louis' principle** gives the observed information from more chain draws
  (``louis_iterations``): ``I = sum_i (-E[H_i] - Cov[s_i])`` with ``s_i`` and
  ``H_i`` the gradient and Hessian of the complete-data log-likelihood ``log
  p(y_i, phi_i; u)`` over the estimation-scale parameters ``u`` (expectations
  over each subject's conditional law; the chains' states ``phi`` as the
  missing data, see :func:`_make_louis`).  Its inverse is the covariance
  matrix of the estimates (``FitResult.covariance``: kind ``"r"``, since ``I``
  is NONMEM's R matrix, the Hessian of ``-log L``).  The same draws give ``g =
  sum_i E[s_i]``, the Monte-Carlo estimate of the gradient of the
  log-likelihood itself, with a batch-means standard error: the Newton step
  ``I^-1 g`` to the maximum is compared with the standard errors, and the fit
  is called converged only when no parameter is further than ``tolerance``
  (default 0.1) standard errors from its maximum-likelihood value, or when the
  step is within Monte-Carlo noise (three of its standard errors) and under
  half a standard error.  SAEM's own estimates carry Monte-Carlo error of a
  few tenths of a standard error with the default iterations; when the test
  fails, up to ``polish`` Monte-Carlo Newton-Raphson steps (``u <- u + I^-1
  g``, fresh draws after each) move the estimates to where the score vanishes.
  The conditional means and covariances of the random effects come from the
  same draws.
- **The OFV** is NONMEM's, by importance sampling (:mod:`._importance`) at
  the final estimates with ``seed``: ``pmx.estimation.importance_ofv(result.model,
  data, seed=result.stochastic.seed, ...)`` gives the same number.  The
  SAEM objective itself (the complete-data ``-2 log p(y, b)`` along the
  iterations, in ``trace``) is not an OFV.
- **EBEs** are the conditional modes (NONMEM's EBE), searched from the
  conditional means.

Everything is a function of ``seed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from .._progress import _Progress
from .._results import RESULTS
from ..data._dataset import Dataset
from ..likelihood import (
    LOG_2PI,
    Prepared,
    Problem,
    make_problem,
    map_subjects,
    mu_referenced_thetas,
    positive_definite,
    record_terms,
)
from ..likelihood._mu import checked_subjects
from ..model import natural_names, natural_vector
from ..model._model import Model
from ..model._parameters import Omega, Theta
from ._covariance import CovarianceResult, natural_scale_result
from ._importance import ImportanceResult, importance_ofv, subject_log_likelihoods
from ._result import FitResult

# Metropolis-Hastings kernels per iteration: prior draws, block random walk,
# componentwise sweeps.
KERNELS = (2, 2, 2)
# Random-walk scales adapt towards this acceptance rate, by this step.
_TARGET_ACCEPTANCE, _ADAPT = 0.4, 0.4
# Simulated annealing: during exploration an OMEGA variance may shrink by at
# most this factor per iteration.
_ANNEALING = 0.95
# Monolix's rule for the number of chains: at least this many subject-chains.
_MIN_CHAINS_TOTAL = 50
# Batches of the Louis draws for the Monte-Carlo error of the score.
_BATCHES = 10
# Louis' E[H] from every 5th draw (the Hessians cost 2p gradients each; the
# scores, whose covariance is the noisier term, come from every draw).
_HESSIAN_EVERY = 5
# The convergence test never accepts a Newton step to the maximum longer than
# this many standard errors, however noisy the Monte-Carlo score.
_RESOLUTION = 0.5


@dataclass(frozen=True)
class SAEMDetails:
    """The Monte-Carlo side of a SAEM fit (``FitResult.stochastic``).

    Attributes:
        ofv_se: Monte-Carlo standard error of the OFV (importance sampling).
        importance: the :class:`ImportanceResult` the OFV comes from.
        trajectories: one row per iteration: ``iteration``, ``phase``
            (``exploration``/``smoothing``), ``gamma``, the complete-data
            ``-2 log p(y, b)`` (``saem_objective``, not an OFV), the acceptance
            rates of the kernels, and every free parameter on NONMEM's scale
            (columns as ``FitResult.estimates()``).
        conditional_mean, conditional_sd: per subject ``(n, n_b)``, from the
            draws at the final estimates.
        score, score_se: the Monte-Carlo gradient of the log-likelihood at the
            final estimates (estimation scale) and its standard error.
        newton_step_se: ``I^-1 g`` in units of the standard errors, per
            parameter (estimation scale): how far the maximum is.
        chains, kernels, iterations, seed, louis_iterations: the settings.
        mu_referenced: for each IIV eta, its THETA when the closed-form
            M-step applies (None otherwise).
    """

    ofv_se: float
    importance: ImportanceResult
    trajectories: pd.DataFrame
    conditional_mean: np.ndarray
    conditional_sd: np.ndarray
    score: np.ndarray
    score_se: np.ndarray
    newton_step_se: np.ndarray
    chains: int
    kernels: tuple[int, int, int]
    iterations: tuple[int, int]
    seed: int
    louis_iterations: int
    mu_referenced: tuple[str | None, ...]
    names: tuple[str, ...] = field(default=())

    def plot(self, path: str | None = None):
        """Parameter trajectories, one panel per parameter (the smoothing
        phase shaded); saved to ``path`` when given."""
        import matplotlib.pyplot as plt

        columns = list(self.names) + ["saem_objective"]
        n = len(columns)
        n_cols = min(4, n)
        n_rows = -(-n // n_cols)
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.4 * n_rows))
        axes = np.atleast_1d(axes).ravel()
        frame = self.trajectories
        start = self.iterations[0]
        for ax, column in zip(axes, columns, strict=False):
            ax.plot(frame["iteration"], frame[column], lw=0.8)
            ax.axvspan(start, frame["iteration"].max(), color="0.9", zorder=0)
            ax.set_title(column, fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in axes[n:]:
            ax.set_visible(False)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


class _Structure:
    """What stays fixed during a SAEM run: the parameters' roles and the
    random-effect layout (Python values, closed over by the compiled step)."""

    def __init__(self, model: Model, problem: Problem, chains: int, kernels, mu) -> None:
        layout = problem.layout
        self.n_eta = model.n_eta
        self.n_iov = layout.n_iov_eta
        self.n_occasions = layout.n_occasions
        self.n_b = layout.size
        self.chains = chains
        thetas = model.thetas()
        self.mu = tuple((k, name) for k, name in enumerate(mu) if name is not None)
        mu_names = {name for _, name in self.mu}
        self.psi = tuple(n for n, t in thetas.items() if not t.fixed and n not in mu_names)
        self.iiv_blocks, self.iov_blocks = [], []
        start_iiv = start_iov = 0
        for name, block in model.omega_blocks():
            if block.occasion:
                self.iov_blocks.append((name, start_iov, block.n_eta))
                start_iov += block.n_eta
            else:
                self.iiv_blocks.append((name, start_iiv, block.n_eta))
                start_iiv += block.n_eta
        m1, m2, m3 = kernels
        moves = [0] * m1 + [1] * m2 + [2 + k for _ in range(m3) for k in range(self.n_b)]
        self.moves = np.asarray(moves, dtype=np.int32)
        # Which moves' acceptance rates adapt which scale.
        self.block_moves = np.flatnonzero(self.moves == 1)
        self.component_moves = [np.flatnonzero(self.moves == 2 + k) for k in range(self.n_b)]
        self.prior_moves = np.flatnonzero(self.moves == 0)
        selection = np.zeros((self.n_eta, len(self.mu)))
        for j, (k, _) in enumerate(self.mu):
            selection[k, j] = 1.0
        self.selection = selection
        # Everything the compiled steps close over (with the model's class
        # and parameter structure, which jit sees in its arguments).
        self.key = (
            type(model), self.mu, self.psi, tuple(self.iiv_blocks), tuple(self.iov_blocks),
            self.n_b, self.n_occasions, chains, tuple(self.moves.tolist()),
        )  # fmt: skip

    def shift(self, model: Model, dtype) -> jax.Array:
        """``m``: each random effect's mu-referencing THETA (estimation scale; 0 if none)."""
        m = jnp.zeros(self.n_b, dtype)
        thetas = model.thetas()
        for k, name in self.mu:
            m = m.at[k].set(thetas[name].to_unconstrained())
        return m

    def with_psi(self, model: Model, psi: jax.Array) -> Model:
        thetas = model.thetas()
        values = {n: thetas[n].from_unconstrained(psi[j]) for j, n in enumerate(self.psi)}
        return model._replace(values, allowed=(Theta,), validate=False)

    def psi_of(self, model: Model, dtype) -> jax.Array:
        thetas = model.thetas()
        return jnp.asarray([thetas[n].to_unconstrained() for n in self.psi], dtype)


def _visited_occasions(problem: Problem) -> np.ndarray:
    """``(n_subjects, n_occasions)``: occasions a subject has an observation or
    a dose in (only their IOV etas are informative for the IOV OMEGA)."""
    subjects = problem.source.subjects
    occ = np.asarray(subjects.occ)
    used = np.asarray(subjects.is_obs) | (np.asarray(subjects.amt) != 0)
    n_occ = problem.layout.n_occasions
    return np.stack([np.any(used & (occ == k), axis=1) for k in range(n_occ)], axis=1)


def _real_weights(program: Problem, chains: int, dtype) -> jax.Array:
    """``(n_chunks, chunk, chains)``: 1 / chains on the real subjects' chains."""
    real = program.real.astype(dtype)
    return jnp.broadcast_to(real[..., None] / chains, real.shape + (chains,))


def _log_prior(b, inverse):
    return -0.5 * jnp.einsum("...i,ij,...j->...", b, inverse, b)


def _e_step(s: _Structure, model, program, phi, scales, key):
    """The Metropolis-Hastings moves of one iteration, all subjects and chains
    at once.  Returns the new chain states ``phi``, ``b``, ``log p(y | b)`` and
    the acceptance rate of every move, with ``Omega^-1`` and ``log det Omega``."""
    dtype = phi.dtype
    m = s.shift(model, dtype)
    omega = program.layout.omega(model).astype(dtype)
    chol = jnp.linalg.cholesky(omega)
    inverse = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(s.n_b, dtype=dtype))
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    sd = jnp.sqrt(jnp.diagonal(omega))
    weights = _real_weights(program, s.chains, dtype)
    total = jnp.sum(weights)
    b = phi - m
    log_lik = subject_log_likelihoods(model, program, b)
    block_scale, component_scale = scales

    def move(carry, inputs):
        b, log_lik = carry
        kind, key = inputs
        k_normal, k_uniform = jax.random.split(key)
        z = jax.random.normal(k_normal, b.shape, dtype)
        log_u = jnp.log(jax.random.uniform(k_uniform, log_lik.shape, dtype))
        correlated = z @ chol.T
        component = jnp.clip(kind - 2, 0, s.n_b - 1)
        single = jax.nn.one_hot(component, s.n_b, dtype=dtype) * (
            component_scale[component] * sd[component] * z
        )
        proposal = jnp.where(
            kind == 0, correlated, jnp.where(kind == 1, b + block_scale * correlated, b + single)
        )
        proposed = subject_log_likelihoods(model, program, proposal)
        prior_ratio = _log_prior(proposal, inverse) - _log_prior(b, inverse)
        log_ratio = proposed - log_lik + jnp.where(kind == 0, 0.0, prior_ratio)
        accept = (log_u < log_ratio) & jnp.isfinite(proposed)
        b = jnp.where(accept[..., None], proposal, b)
        log_lik = jnp.where(accept, proposed, log_lik)
        return (b, log_lik), jnp.sum(weights * accept) / total

    keys = jax.random.split(key, len(s.moves))
    (b, log_lik), rates = jax.lax.scan(move, (b, log_lik), (jnp.asarray(s.moves), keys))
    return b + m, b, log_lik, rates, inverse, logdet


def _adapt(s: _Structure, scales, rates):
    block, component = scales
    if s.block_moves.size:
        rate = jnp.mean(rates[s.block_moves])
        block = block * (1.0 + _ADAPT * (rate - _TARGET_ACCEPTANCE))
    for k, moves in enumerate(s.component_moves):
        if moves.size:
            rate = jnp.mean(rates[moves])
            component = component.at[k].multiply(1.0 + _ADAPT * (rate - _TARGET_ACCEPTANCE))
    return block, component


def _statistics(s: _Structure, program, phi, b, visited):
    """Complete-data sufficient statistics of one draw: the mean of ``phi``
    and of ``phi phi^T`` over subjects and chains (IIV), and the mean of
    ``b b^T`` over the occasions subjects visit (IOV)."""
    dtype = phi.dtype
    weights = _real_weights(program, s.chains, dtype)
    n_real = jnp.sum(weights)
    phi_iiv = phi[..., : s.n_eta]
    s1 = jnp.einsum("abc,abci->i", weights, phi_iiv) / n_real
    s2 = jnp.einsum("abc,abci,abcj->ij", weights, phi_iiv, phi_iiv) / n_real
    if not s.n_iov:
        return s1, s2, jnp.zeros((0, 0), dtype)
    iov = b[..., s.n_eta :].reshape(b.shape[:-1] + (s.n_occasions, s.n_iov))
    w_occ = weights[..., None] * visited[:, :, None, :].astype(dtype)
    s3 = jnp.einsum("abco,abcoi,abcoj->ij", w_occ, iov, iov) / jnp.maximum(jnp.sum(w_occ), 1.0)
    return s1, s2, s3


def _closed_form(s: _Structure, model: Model, stats, explore) -> Model:
    """THETAs of mu-referenced etas and OMEGA from the approximated statistics."""
    s1, s2, s3 = stats
    dtype = s1.dtype
    omega_old = jnp.asarray(model.omega_matrix(), dtype)
    values: dict[str, Any] = {}
    m = jnp.zeros(s.n_eta, dtype)
    if s.mu:
        a = jnp.asarray(s.selection, dtype)
        precision = jnp.linalg.inv(omega_old)
        mu = jnp.linalg.solve(a.T @ precision @ a, a.T @ precision @ s1)
        m = a @ mu
        thetas = model.thetas()
        for j, (_, name) in enumerate(s.mu):
            values[name] = thetas[name].from_unconstrained(mu[j])
    covariance = s2 - jnp.outer(s1, m) - jnp.outer(m, s1) + jnp.outer(m, m)
    blocks = dict(model.omega_blocks())

    def update(name, start, size, source):
        block: Omega = blocks[name]
        if block.fixed:
            return
        new = source[start : start + size, start : start + size]
        new = 0.5 * (new + new.T)
        old = jnp.asarray(block.matrix, dtype)
        if block.diagonal:
            new = jnp.diag(jnp.diagonal(new))
        # Simulated annealing: variances shrink by at most 5% per iteration.
        floor = jnp.maximum(_ANNEALING * jnp.diagonal(old) - jnp.diagonal(new), 0.0)
        new = new + jnp.where(explore, 1.0, 0.0) * jnp.diag(floor)
        values[name] = new

    for name, start, size in s.iiv_blocks:
        update(name, start, size, covariance)
    for name, start, size in s.iov_blocks:
        update(name, start, size, s3)
    return model._replace(values, allowed=(Theta, Omega), validate=False)


def _newton_step(s: _Structure, model, program, b, hbar, gamma):
    """The stochastic-approximation Newton step of the THETAs without a
    closed form (see the module notes)."""
    dtype = b.dtype
    psi0 = s.psi_of(model, dtype)
    weights = _real_weights(program, s.chains, dtype)

    def q(psi):
        log_lik = subject_log_likelihoods(s.with_psi(model, psi), program, b)
        finite = jnp.isfinite(log_lik)
        return jnp.sum(jnp.where(finite, weights * log_lik, 0.0))

    gradient = jax.grad(q)(psi0)
    hessian = jax.jacfwd(jax.grad(q))(psi0)
    ok = jnp.all(jnp.isfinite(gradient)) & jnp.all(jnp.isfinite(hessian))
    hbar_new = jnp.where(ok, hbar + gamma * (-hessian - hbar), hbar)
    step = gamma * jnp.linalg.solve(positive_definite(hbar_new), gradient)
    step = step / jnp.maximum(1.0, jnp.max(jnp.abs(step)))
    step = jnp.where(ok, step, 0.0)
    return s.with_psi(model, psi0 + step), hbar_new


def _from_vector(base: Model, u: jax.Array) -> Model:
    """``base`` at the estimation-scale vector ``u`` (raveled as
    :func:`jax.flatten_util.ravel_pytree` ravels ``base.to_unconstrained()``)."""
    _, unravel = ravel_pytree(base.to_unconstrained())
    return base.from_unconstrained(unravel(u))


# The compiled steps, by structure: a second SAEM run of the same model and
# design in one process compiles nothing.
_COMPILED: dict[tuple, Any] = {}


def _compiled(kind: str, s: _Structure, make):
    key = (kind, *s.key)
    if key not in _COMPILED:
        _COMPILED[key] = make(s)
    return _COMPILED[key]


def _make_iteration(s: _Structure):
    @eqx.filter_jit
    def iteration(model, program, phi, scales, stats, hbar, visited, key, gamma, explore):
        phi, b, log_lik, rates, inverse, logdet = _e_step(s, model, program, phi, scales, key)
        scales = jax.tree_util.tree_map(
            lambda new, old: jnp.where(explore, new, old), _adapt(s, scales, rates), scales
        )
        draw = _statistics(s, program, phi, b, visited)
        stats = jax.tree_util.tree_map(lambda old, new: old + gamma * (new - old), stats, draw)
        new_model = _closed_form(s, model, stats, explore)
        # phi is the chains' state: mu-referenced THETAs moving do not move
        # the individual parameters; b follows.
        b = phi - s.shift(new_model, phi.dtype)
        if s.psi:
            new_model, hbar = _newton_step(s, new_model, program, b, hbar, gamma)
        weights = _real_weights(program, s.chains, phi.dtype)
        complete = log_lik + _log_prior(b, inverse) - 0.5 * (logdet + s.n_b * LOG_2PI)
        objective = -2.0 * jnp.sum(weights * complete)
        natural = natural_vector(new_model)
        return new_model, phi, scales, stats, hbar, rates, objective, natural

    return iteration


def _make_louis(s: _Structure):
    """One E-step at fixed parameters and, per subject (averaged over its
    chains), the gradient and Hessian of the complete-data log-likelihood
    ``log p(y_i, phi_i; u)`` and the first two moments of ``b_i``.

    The missing data are the chains' states ``phi = b + m(u)`` (``m``: the
    mu-referencing THETAs), not ``b``: Louis' identity holds for either, but
    with ``phi`` held fixed the likelihood of the data does not depend on the
    mu-referenced THETAs, whose scores then come from the prior alone (a
    smooth function of ``phi``), which makes the Monte-Carlo information far
    less noisy.  The prior part ``log N(phi - m; 0, Omega)`` is a linear
    function of ``phi`` and ``phi phi^T`` whose coefficients (in ``u``) are
    differentiated once, not once per subject."""

    @eqx.filter_jit
    def louis(u, base, program, phi, scales, key, with_hessian):
        def to_model(u_):
            return _from_vector(base, u_)

        model = to_model(u)
        phi, b, _, rates, _, _ = _e_step(s, model, program, phi, scales, key)
        layout = program.layout

        def prior_parts(u_):
            m_ = to_model(u_)
            omega = layout.omega(m_).astype(u_.dtype)
            inverse = jnp.linalg.inv(omega)
            shift = s.shift(m_, u_.dtype)
            constant = -0.5 * jnp.linalg.slogdet(omega)[1] - 0.5 * shift @ inverse @ shift
            return constant, inverse @ shift, -0.5 * inverse

        d_prior = jax.jacfwd(prior_parts)(u)
        h_prior = jax.jacfwd(jax.jacfwd(prior_parts))(u)

        def prior_terms(parts, phi_i):
            constant, linear, quadratic = parts
            return (
                constant
                + jnp.einsum("k...,k->...", linear, phi_i)
                + jnp.einsum("kl...,k,l->...", quadratic, phi_i, phi_i)
            )

        def likelihood(u_, data, phi_i):
            m_ = to_model(u_)
            eta, iov = layout.split(phi_i - s.shift(m_, phi_i.dtype))
            terms = record_terms(m_, data, eta, iov, program.has_censoring)
            return jnp.sum(terms.log_likelihood)

        def one(data, states):
            def chain(phi_i):
                score = jax.grad(likelihood)(u, data, phi_i) + prior_terms(d_prior, phi_i)
                return score, jnp.outer(score, score)

            def hessians(states):
                def at(phi_i):
                    return jax.hessian(likelihood)(u, data, phi_i) + prior_terms(h_prior, phi_i)

                return jax.vmap(at)(states).mean(0)

            score, outer = jax.vmap(chain)(states)
            zero = jnp.zeros((u.size, u.size), u.dtype)
            hessian = jax.lax.cond(with_hessian, hessians, lambda _: zero, states)
            return score.mean(0), outer.mean(0), hessian

        moments = map_subjects(program, one, phi)
        b_moments = (b.mean(axis=2), (b[..., :, None] * b[..., None, :]).mean(axis=2))
        return phi, moments + b_moments, rates

    return louis


@dataclass
class _LouisDraws:
    """Averages over the draws at fixed parameters (see :func:`_make_louis`)."""

    phi: Any
    information: np.ndarray
    score: np.ndarray
    score_se: np.ndarray
    batch_scores: np.ndarray
    b_mean: np.ndarray
    b_var: np.ndarray
    used: int


def _louis_draws(louis, u0, base, program, problem, phi, scales, key, iterations) -> _LouisDraws:
    n, p = problem.n_subjects, u0.size
    n_b = problem.layout.size
    sums = [np.zeros((n, p)), np.zeros((n, p, p)), np.zeros((n, p, p))]
    b_mean, b_outer = np.zeros((n, n_b)), np.zeros((n, n_b, n_b))
    batch_scores = np.zeros((_BATCHES, p))
    per_batch = iterations // _BATCHES
    used = per_batch * _BATCHES
    n_hessians = 0
    for j in range(used):
        key, sub = jax.random.split(key)
        with_hessian = j % _HESSIAN_EVERY == 0
        phi, moments, _ = louis(u0, base, program, phi, scales, sub, jnp.asarray(with_hessian))
        score, outer, hessian, mean, second = (np.asarray(problem.take(x)) for x in moments)
        sums[0] += score
        sums[1] += outer
        sums[2] += hessian
        n_hessians += with_hessian
        b_mean += mean
        b_outer += second
        batch_scores[j // per_batch] += score.sum(axis=0) / per_batch
    e_score, e_outer = sums[0] / used, sums[1] / used
    e_hessian = sums[2] / n_hessians
    b_mean /= used
    conditional_cov = e_outer - e_score[:, :, None] * e_score[:, None, :]
    information = -e_hessian.sum(axis=0) - conditional_cov.sum(axis=0)
    return _LouisDraws(
        phi=phi,
        information=0.5 * (information + information.T),
        score=e_score.sum(axis=0),
        score_se=batch_scores.std(axis=0, ddof=1) / math.sqrt(_BATCHES),
        batch_scores=batch_scores,
        b_mean=b_mean,
        b_var=np.diagonal(b_outer / used, axis1=1, axis2=2) - b_mean**2,
        used=used,
    )


def saem(
    model: Model,
    data: Dataset | Prepared | Problem,
    *,
    iterations: tuple[int, int] = (300, 200),
    chains: int | None = None,
    kernels: tuple[int, int, int] = KERNELS,
    seed: int = 0,
    louis_iterations: int = 200,
    tolerance: float = 0.1,
    polish: int = 3,
    imp_samples: int = 1000,
    imp_df: float | None = 4.0,
    progress: bool | None = None,
    chunk_size: int | None = None,
) -> FitResult:
    """Fit ``model`` to ``data`` by SAEM (see the module notes), then compute
    the standard errors by Louis' principle and the OFV by importance
    sampling.  ``pmx.fit(model, data, "saem", **options)`` calls this.

    Args:
        model: the population model at its initial estimates (fixed
            parameters stay fixed).
        data: a Dataset or prepared data.
        iterations: ``(K1, K2)``: exploration iterations (step 1) and
            smoothing iterations (step ``1/k``); default ``(300, 200)``.
        chains: Markov chains per subject (default: enough for 50 chains in
            all, as Monolix).
        kernels: ``(m1, m2, m3)``: prior draws, block random-walk moves and
            componentwise sweeps per iteration (default ``(2, 2, 2)``).
        seed: everything random derives from it.
        louis_iterations: E-steps at the final estimates for the standard
            errors, the Monte-Carlo score and the conditional means.
        tolerance: converged when the Newton step to the maximum implied by
            the Monte-Carlo score is below this many standard errors for every
            parameter (or within 3 of its Monte-Carlo standard errors, where
            those are below 1/6 of the standard error: a step over half a
            standard error is never called converged).
        polish: when it is not, at most this many Monte-Carlo Newton-Raphson
            steps (``u + I^-1 g``, fresh draws after each) move the estimates
            to where the score vanishes.
        imp_samples, imp_df: the importance sampling of the OFV
            (:func:`importance_ofv`).
        progress: a progress bar of the iterations on stderr, and the outcome
            (``None``: only when the run takes more than 10 s).
        chunk_size: subjects evaluated at once.
    """
    started = time.perf_counter()
    k1, k2 = (int(i) for i in iterations)
    if k1 < 1 or k2 < 1:
        raise ValueError(f"iterations must be two positive counts (K1, K2), got {iterations}")
    if len(kernels) != 3 or min(kernels) < 0 or sum(kernels) < 1:
        raise ValueError(f"kernels must be three counts (m1, m2, m3), not all 0, got {kernels}")
    if louis_iterations < 2 * _BATCHES:
        raise ValueError(f"louis_iterations must be >= {2 * _BATCHES}, got {louis_iterations}")
    dataset = data if isinstance(data, Dataset) else None
    problem = make_problem(model, data, "laplace", chunk_size=chunk_size)
    program = problem.program()
    n = problem.n_subjects
    if chains is None:
        chains = max(1, math.ceil(_MIN_CHAINS_TOTAL / n))
    if chains < 1:
        raise ValueError(f"chains must be >= 1, got {chains}")
    dtype = problem.dtype
    mu = _checked_mu(model, problem)
    s = _Structure(model, problem, chains, tuple(kernels), mu)
    names = natural_names(model)

    visited = problem.place(_visited_occasions(problem))
    phi = jnp.broadcast_to(
        s.shift(model, dtype), (problem.n_chunks, problem.chunk, chains, s.n_b)
    ).astype(dtype)
    scales = (jnp.asarray(1.0, dtype), jnp.ones(s.n_b, dtype))
    stats = (
        jnp.zeros(s.n_eta, dtype),
        jnp.zeros((s.n_eta, s.n_eta), dtype),
        jnp.zeros((s.n_iov, s.n_iov), dtype),
    )
    hbar = jnp.zeros((len(s.psi), len(s.psi)), dtype)
    iteration = _compiled("iteration", s, _make_iteration)
    key = jax.random.PRNGKey(seed)
    rows = []
    current = model
    compile_seconds = 0.0
    say = print if progress else None
    bar = None
    for k in range(1, k1 + k2 + 1):
        explore = k <= k1
        gamma = 1.0 if explore else 1.0 / (k - k1)
        key, sub = jax.random.split(key)
        tick = time.perf_counter()
        current, phi, scales, stats, hbar, rates, objective, values = iteration(
            current, program, phi, scales, stats, hbar, visited, sub,
            jnp.asarray(gamma, dtype), jnp.asarray(explore),
        )  # fmt: skip
        values = np.asarray(values, dtype=float)
        if k == 1:
            compile_seconds = time.perf_counter() - tick
        rates = np.asarray(rates)
        row = dict(
            iteration=k,
            phase="exploration" if explore else "smoothing",
            gamma=gamma,
            saem_objective=float(objective),
            acceptance_prior=_mean(rates, s.prior_moves),
            acceptance_block=_mean(rates, s.block_moves),
            acceptance_component=_mean(rates, np.concatenate(s.component_moves)),
        )
        row.update(zip(names, values, strict=True))
        rows.append(row)
        if not np.all(np.isfinite(values)):
            raise FloatingPointError(
                f"SAEM iteration {k}: a parameter became non-finite "
                f"({_finite_report(names, values)}); check the model at the initial "
                "estimates (pmx.ofv) or start closer"
            )
        if progress is None and time.perf_counter() - started > 10.0:
            say = print
            progress = True
        if progress and bar is None:
            bar = _Progress("pmx fit (saem)", k1 + k2, True)
        if bar is not None:
            bar.update(k, f"{row['phase']}, -2 log p(y, b) {row['saem_objective']:.2f}")
    if bar is not None:
        bar.close()
    trajectories = pd.DataFrame(rows)

    # Louis' principle, the Monte-Carlo score and the conditional moments.
    unconstrained = current.to_unconstrained()
    u0, unravel = ravel_pytree(unconstrained)

    base = current

    def to_model(u):
        return base.from_unconstrained(unravel(u))

    louis = _compiled("louis", s, _make_louis)
    polished = 0
    while True:
        key, sub = jax.random.split(key)
        draws = _louis_draws(louis, u0, base, program, problem, phi, scales, sub, louis_iterations)
        phi = draws.phi
        covariance = _louis_covariance(draws.information, to_model, u0, names)
        if covariance.ok:
            # The Newton step to the maximum, on NONMEM's scale, in SEs; its
            # Monte-Carlo noise from the batches.
            to_step = covariance.jacobian @ covariance.covariance_unconstrained
            step = to_step @ draws.score
            noise = np.std(draws.batch_scores @ to_step.T, axis=0, ddof=1) / math.sqrt(_BATCHES)
            newton_se = step / covariance.se
            # Within the tolerance, or within 3 Monte-Carlo SEs of zero as long
            # as those resolve half a standard error.
            resolved = np.minimum(3.0 * noise, _RESOLUTION * covariance.se)
            far = np.abs(step) > np.maximum(tolerance * covariance.se, resolved)
        else:
            newton_se = np.full(len(names), np.nan)
            far = np.zeros(len(names), bool)
        if not np.any(far) or polished >= polish:
            break
        # Monte-Carlo Newton-Raphson: one step to the maximum the draws point
        # at, then fresh draws there.
        u0 = u0 + covariance.covariance_unconstrained @ draws.score
        polished += 1
        if say:
            say(f"pmx fit (saem): Newton step {polished} from the Monte-Carlo score")
    current = to_model(u0)
    score, score_se, used = draws.score, draws.score_se, draws.used
    b_mean, b_var = draws.b_mean, draws.b_var

    ids = dataset.ids if dataset is not None else tuple(range(1, n + 1))
    imp = importance_ofv(
        current, problem, samples=imp_samples, df=imp_df, seed=seed, start=b_mean, ids=ids
    )
    modes = imp.modes
    status, message, suspect = _assess(covariance, far, newton_se, names, imp)
    details = SAEMDetails(
        ofv_se=imp.se,
        importance=imp,
        trajectories=trajectories,
        conditional_mean=b_mean,
        conditional_sd=np.sqrt(np.maximum(b_var, 0.0)),
        score=score,
        score_se=score_se,
        newton_step_se=newton_se,
        chains=chains,
        kernels=tuple(kernels),
        iterations=(k1, k2),
        seed=seed,
        louis_iterations=used,
        mu_referenced=mu,
        names=names,
    )
    subjects = problem.source.subjects
    is_obs = np.asarray(subjects.is_obs)
    cens = np.asarray(subjects.cens)
    gaussian = problem.source.gaussian_records()
    # NONMEM's ext-file iterations: every THETA and OMEGA element, fixed ones
    # (constant) included, as the quasi-Newton fits write them.
    from ._fit import parameter_values

    constant = {k: v for k, v in parameter_values(model).items() if k not in names}
    estimates = trajectories[["iteration", "saem_objective", *names]].rename(
        columns=dict(saem_objective="ofv")
    )
    estimates = estimates.assign(**constant)[["iteration", "ofv", *parameter_values(model).keys()]]
    notes = [
        f"OFV by importance sampling at the final estimates: {imp.ofv:.4f} "
        f"(Monte-Carlo SE {imp.se:.4f}); the SAEM objective is not an OFV",
        f"SAEM: {k1} exploration + {k2} smoothing iterations, {chains} chain(s) per "
        f"subject, kernels {tuple(kernels)}, seed {seed}; {polished} Monte-Carlo "
        "Newton step(s) after the iterations",
    ]
    if not s.mu and s.n_eta:
        notes.append(
            "no eta is mu-referenced (THETA + eta on THETA's estimation scale): every "
            "THETA moves by stochastic Newton steps, which converge more slowly"
        )
    result = FitResult(
        model=current,
        method="saem",
        ofv=imp.ofv,
        n_subjects=n,
        n_observations=imp.n_observations,
        n_censored=int(np.sum(is_obs & (cens != 0) & gaussian)),
        n_general=int(np.sum(is_obs & ~gaussian)),
        iterations=k1 + k2,
        n_evaluations=(k1 + k2) * (len(s.moves) + 1),
        status=status,
        message=message,
        suspect=suspect,
        ebe_matrix=modes,
        ebe_status=np.zeros(n, np.int32),
        ids=ids,
        gradient_max=float(np.max(np.abs(2.0 * score))) if score.size else 0.0,
        elapsed_seconds=time.perf_counter() - started,
        compile_seconds=compile_seconds,
        trace=trajectories,
        iteration_estimates=estimates,
        dataset=dataset,
        problem=problem,
        covariance=covariance,
        covariance_note="Louis' principle at the final estimates",
        notes=tuple(notes),
        stochastic=details,
    )
    if say:
        say(f"pmx fit (saem): {message}; OFV {imp.ofv:.4f} (MC SE {imp.se:.4f})")
    return result


def _mean(rates: np.ndarray, index: np.ndarray) -> float:
    return float(np.mean(rates[index])) if index.size else float("nan")


def _finite_report(names, values) -> str:
    return ", ".join(f"{n}={v:g}" for n, v in zip(names, values, strict=True) if not np.isfinite(v))


def _checked_mu(model: Model, problem: Problem) -> tuple[str | None, ...]:
    """The mu-referencing THETA of each IIV eta (estimation scale), kept only
    where the whole record log-likelihood (not only the individual
    parameters) depends on THETA and eta through their sum."""
    mu = list(mu_referenced_thetas(model, problem, unconstrained=True))
    pairs = [(k, name) for k, name in enumerate(mu) if name is not None]
    if not pairs:
        return tuple(mu)
    chosen = checked_subjects(problem.source.subjects.n_subjects)
    data = jax.tree_util.tree_map(lambda x: x[chosen], problem.source.subject_data())
    rng = np.random.default_rng(1)
    b = jnp.asarray(rng.normal(scale=0.1, size=(chosen.size, problem.layout.size)), problem.dtype)
    d_theta, d_eta = _mu_derivatives(model, data, b, problem, tuple(n for _, n in pairs))
    d_theta, d_eta = np.asarray(d_theta), np.asarray(d_eta)
    for j, (k, _) in enumerate(pairs):
        column = d_eta[:, :, k].sum(axis=1)  # each record depends on its own subject only
        scale = max(float(np.max(np.abs(column))), 1e-300)
        if not np.allclose(d_theta[:, j], column, rtol=1e-7, atol=1e-9 * scale):
            mu[k] = None
    return tuple(mu)


@eqx.filter_jit
def _mu_derivatives(model, data, b, problem, names):
    """Derivatives of every record's log-likelihood (a few subjects) with
    respect to the THETAs ``names`` (estimation scale) and to ``b``."""
    layout = problem.layout
    thetas = model.thetas()

    def loglik(u, b):
        values = {n: thetas[n].from_unconstrained(u[j]) for j, n in enumerate(names)}
        m = model._replace(values, allowed=(Theta,), validate=False)

        def one(d, b_i):
            eta, iov = layout.split(b_i)
            return record_terms(m, d, eta, iov, problem.has_censoring).log_likelihood

        return jax.vmap(one)(data, b).ravel()

    u = jnp.stack([thetas[n].to_unconstrained() for n in names]).astype(b.dtype)
    return jax.jacfwd(loglik, argnums=0)(u, b), jax.jacfwd(loglik, argnums=1)(u, b)


def _louis_covariance(information, to_model, u0, names) -> CovarianceResult:
    """A :class:`CovarianceResult` from the observed information (estimation scale)."""
    n = u0.size

    def to_natural(u):
        return natural_vector(to_model(u))

    jacobian = np.asarray(jax.jacfwd(to_natural)(u0))
    estimate = np.asarray(to_natural(u0))
    ok, message, outcome = True, "ok", RESULTS.successful
    if not np.all(np.isfinite(information)):
        ok, message, outcome = False, "non-finite information", RESULTS.nonfinite_gradient
    else:
        values = np.linalg.eigvalsh(information)
        if values[0] <= 1e-12 * max(1.0, abs(values[-1])):
            ok, outcome = False, RESULTS.r_not_positive_definite
            message = (
                f"the information matrix (Louis) is not positive definite (smallest "
                f"eigenvalue {values[0]:.3g})"
            )
    cov_u = np.linalg.inv(information) if ok else np.full((n, n), np.nan)
    return natural_scale_result(
        "r", names, estimate, jacobian, 0.5 * (cov_u + cov_u.T),
        0.5 * (information + information.T), np.full((n, n), np.nan),
        ok=ok, status=outcome, message=message, elapsed_seconds=0.0,
    )  # fmt: skip


def _assess(covariance, far, newton_se, names, imp):
    """Status, message and suspicions of the end point."""
    suspect = []
    if not np.isfinite(imp.ofv):
        return RESULTS.nonfinite_ofv, "the importance-sampling OFV is not finite", ()
    if not covariance.ok:
        return (
            RESULTS.suspect_point,
            f"SAEM finished, but {covariance.message}: convergence cannot be checked",
            (covariance.message,),
        )
    if np.any(far):
        worst = ", ".join(f"{names[j]}: {newton_se[j]:+.2f} SE" for j in np.flatnonzero(far))
        suspect.append(
            "the Monte-Carlo score says the maximum is further than the tolerance "
            f"({worst}); run more iterations"
        )
        return RESULTS.suspect_point, "SAEM finished away from the maximum", tuple(suspect)
    low = imp.per_subject["ess"] < 20
    if np.any(low):
        suspect.append(
            f"importance sampling: effective sample size below 20 for subject(s) "
            f"{list(imp.per_subject['ID'][low])[:10]}: the OFV's Monte-Carlo SE is unreliable"
        )
        return RESULTS.suspect_point, "SAEM converged; the OFV is uncertain", tuple(suspect)
    return (
        RESULTS.successful,
        "SAEM converged (the Newton step the Monte-Carlo score points to is at most "
        f"{np.nanmax(np.abs(newton_se)):.2f} SE, within the tolerance or its Monte-Carlo noise)",
        (),
    )
