"""The joint log posterior of population parameters and random effects.

``log p(u, latent | y) = log p(u) + sum_i [log p(y_i | b_i, u) + log p(latent_i | u)]``

with ``u`` the population vector of :mod:`._priors` and, per subject, a
latent vector from which the random effects ``b_i`` (IIV etas, then IOV etas
by occasion: the layout of the likelihood kernel) are recovered:

``"noncentered"``
    ``latent_i = z_i ~ N(0, I)`` and ``b_i = L z_i`` with ``L`` the Cholesky
    factor of OMEGA.  Best when the data say little about each subject (sparse
    sampling, high shrinkage): the prior geometry is then the posterior's.
``"centered"``
    ``latent_i = b_i + m`` ~ ``N(m, OMEGA)``, where ``m`` holds, for each IIV
    eta that is *mu-referenced* (it enters the model only through ``THETA_j +
    eta``, as in ``exp(tcl + eta.cl)``), that THETA, and 0 otherwise.  The
    latent vector is then the individual's own log parameter, which rich data
    pin down independently of the population values: no funnel and no
    correlation between 100 etas and one THETA, which is what slows the
    non-centred form on data-rich subjects.

The conditional likelihood is the kernel every estimation method uses
(:func:`pmx_jax.likelihood.record_terms`, M3 for censored records), so
the sampler and FOCEI/Laplace cannot disagree about the model.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..likelihood import (
    LOG_2PI,
    Layout,
    Problem,
    SubjectLikelihood,
    map_subjects,
)
from ..likelihood import mu_referenced_thetas as mu_referenced_thetas
from ..model._model import Model
from ._priors import PopulationPrior

PARAMETERIZATIONS = ("noncentered", "centered")


class Posterior(eqx.Module):
    """The log posterior density of one population model on one dataset."""

    template: Model
    prior: PopulationPrior
    problem: Problem
    parameterization: str = eqx.field(static=True)
    mu_thetas: tuple[str | None, ...] = eqx.field(static=True)  # per IIV eta

    @property
    def layout(self) -> Layout:
        return self.problem.layout

    def model(self, pop: Array) -> Model:
        return self.prior.model(self.template, pop)

    def shift(self, model: Model) -> Array:
        """``m``: the mu-referencing THETA of each random effect (0 if none)."""
        thetas = model.thetas()
        values = [
            jnp.asarray(thetas[name].value) if name else jnp.zeros(()) for name in self.mu_thetas
        ]
        n_rest = self.layout.size - len(values)
        dtype = self.problem.dtype
        parts = [jnp.stack(values).astype(dtype)] if values else []
        return jnp.concatenate(parts + [jnp.zeros(n_rest, dtype)])

    def random_effects(self, model: Model, latent: Array) -> Array:
        """``b`` of every subject (``(n, n_b)``) from the latent vectors."""
        if self.parameterization == "centered":
            return latent - self.shift(model)
        chol = jnp.linalg.cholesky(self.layout.omega(model).astype(latent.dtype))
        return latent @ chol.T

    def latent(self, model: Model, b: Array) -> Array:
        """Inverse of :meth:`random_effects` (starting values from EBEs)."""
        b = jnp.asarray(b, self.problem.dtype)
        if self.parameterization == "centered":
            return b + self.shift(model)
        chol = jnp.linalg.cholesky(self.layout.omega(model).astype(b.dtype))
        return jax.scipy.linalg.solve_triangular(chol, b.T, lower=True).T

    def _latent_log_prior(self, model: Model, latent: Array, b: Array) -> Array:
        n_b = latent.shape[-1]
        if self.parameterization == "noncentered":
            return -0.5 * jnp.sum(latent**2, axis=-1) - 0.5 * n_b * LOG_2PI
        omega = self.layout.omega(model).astype(b.dtype)
        chol = jnp.linalg.cholesky(omega)
        z = jax.scipy.linalg.solve_triangular(chol, b.T, lower=True).T
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        return -0.5 * (jnp.sum(z**2, axis=-1) + logdet + n_b * LOG_2PI)

    def subject_log_likelihood(self, model: Model, b: Array) -> Array:
        """``log p(y_i | b_i)`` per subject (``-inf`` where the event engine failed)."""
        problem = self.problem
        layout = problem.layout

        def one(data, b_i):
            terms = SubjectLikelihood(model, data, layout, problem.has_censoring).terms(b_i)
            value = jnp.sum(terms.log_likelihood)
            return jnp.where(terms.ok & jnp.isfinite(value), value, -jnp.inf)

        per_subject = map_subjects(problem, one, problem.place(b))
        return problem.take(per_subject)

    def log_density(self, params: dict[str, Array]) -> Array:
        """``log p(pop, latent | y)`` up to a constant."""
        pop, latent = params["pop"], params["eta"]
        model = self.model(pop)
        b = self.random_effects(model, latent)
        loglik = self.subject_log_likelihood(model, b)
        total = self.prior.log_prior(pop) + jnp.sum(loglik)
        total = total + jnp.sum(self._latent_log_prior(model, latent, b))
        return jnp.where(jnp.isnan(total), -jnp.inf, total)

    def potential(self, params: dict[str, Array]) -> Array:
        """NumPyro's potential energy: ``-log_density``."""
        return -self.log_density(params)
