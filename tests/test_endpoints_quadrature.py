"""Laplace's marginal likelihood of the non-Gaussian endpoints against an
independent adaptive Gauss-Hermite quadrature (AGHQ).

Every model here has one random effect, a random intercept ``b ~ N(0, omega)``
on the linear predictor ``eta_ij = x_ij + b`` of subject ``i``.  The reference
is written in numpy/scipy only: log-likelihoods from ``scipy.stats``, the
derivatives of the log-likelihood in ``eta`` from their closed forms (checked
here against central differences of the scipy log-likelihoods), the mode of
``g(b) = log p(y_i | b) + log N(b; 0, omega)`` by Brent's method polished by
Newton steps on the analytic derivatives, and the nodes of
``numpy.polynomial.hermite.hermgauss``::

    L_i = integral exp(g(b)) db
        ~ sqrt(2) s sum_k w_k exp(g(b* + sqrt(2) s x_k) + x_k^2),  s = (-g''(b*))^-1/2.

With one node (``x = 0``, ``w = sqrt(pi)``) AGHQ is the Laplace approximation
``sqrt(2 pi) s exp(g(b*))``; with many it converges to the exact marginal
likelihood.  pmx's ``OFVResult.per_subject`` is ``-2 log`` of the Laplace
marginal (no ``log 2 pi`` constant: there are no normal observations).
"""

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from numpy.polynomial.hermite import hermgauss
from scipy import integrate, optimize, special, stats

import pmx_jax as pmx

# -- the reference: one family per observation model ------------------------------------
#
# ``logpmf(y, eta, aux)``: scipy's log probability of each record at linear
# predictor ``eta``; ``d1``/``d2``: its first and second derivative in ``eta``.
# ``eta`` may carry a leading axis of quadrature nodes.


@dataclass(frozen=True)
class Family:
    name: str
    logpmf: Any
    d1: Any
    d2: Any


def _mills(x):
    """``phi(x) / Phi(x)`` (the derivative of ``log Phi``)."""
    return np.exp(stats.norm.logpdf(x) - special.log_ndtr(x))


def _ordinal_bounds(y, eta, cut):
    """``F(c_y - eta)`` and ``F(c_{y-1} - eta)`` (logistic ``F``; 1 and 0 beyond
    the outer categories) and the two densities, for categories 0..K-1."""
    cuts = np.concatenate([[-np.inf], cut, [np.inf]])
    y = np.asarray(y, int)
    upper, lower = cuts[y + 1] - eta, cuts[y] - eta
    f_u, f_l = stats.logistic.cdf(upper), stats.logistic.cdf(lower)
    d_u, d_l = stats.logistic.pdf(upper), stats.logistic.pdf(lower)
    # derivative of the logistic density: f' = f (1 - 2F)
    e_u, e_l = d_u * (1 - 2 * f_u), d_l * (1 - 2 * f_l)
    return f_u - f_l, d_u - d_l, e_u - e_l


def _ordinal_d1(y, eta, cut):
    prob, dens, _ = _ordinal_bounds(y, eta, cut)
    return -dens / prob


def _ordinal_d2(y, eta, cut):
    prob, dens, slope = _ordinal_bounds(y, eta, cut)
    return slope / prob - (dens / prob) ** 2


def _nb(eta, alpha):
    mu, size = np.exp(eta), 1.0 / alpha
    return mu, size


FAMILIES = {
    "poisson": Family(
        "poisson",
        logpmf=lambda y, eta, aux: stats.poisson.logpmf(y, np.exp(eta)),
        d1=lambda y, eta, aux: y - np.exp(eta),
        d2=lambda y, eta, aux: -np.exp(eta) + 0 * y,
    ),
    "binomial": Family(
        "binomial",
        logpmf=lambda y, eta, n: stats.binom.logpmf(y, n, special.expit(eta)),
        d1=lambda y, eta, n: y - n * special.expit(eta),
        d2=lambda y, eta, n: -n * special.expit(eta) * special.expit(-eta),
    ),
    "bernoulli_probit": Family(
        "bernoulli_probit",
        logpmf=lambda y, eta, aux: stats.bernoulli.logpmf(y, stats.norm.cdf(eta)),
        d1=lambda y, eta, aux: y * _mills(eta) - (1 - y) * _mills(-eta),
        d2=lambda y, eta, aux: (
            -y * _mills(eta) * (eta + _mills(eta))
            - (1 - y) * _mills(-eta) * (-eta + _mills(-eta))
        ),
    ),
    "ordinal": Family(
        "ordinal",
        logpmf=lambda y, eta, cut: np.log(_ordinal_bounds(y, eta, cut)[0]),
        d1=lambda y, eta, cut: _ordinal_d1(y, eta, cut),
        d2=lambda y, eta, cut: _ordinal_d2(y, eta, cut),
    ),
    "negbin": Family(
        "negbin",
        # NB2 with mean mu, variance mu + alpha mu^2: scipy's nbinom(1/alpha, size/(size + mu)).
        logpmf=lambda y, eta, alpha: stats.nbinom.logpmf(
            y, 1 / alpha, (1 / alpha) / (1 / alpha + np.exp(eta))
        ),
        d1=lambda y, eta, alpha: (lambda mu, s: s * (y - mu) / (s + mu))(*_nb(eta, alpha)),
        d2=lambda y, eta, alpha: (lambda mu, s: -s * mu * (s + y) / (s + mu) ** 2)(
            *_nb(eta, alpha)
        ),
    ),
}


@dataclass(frozen=True)
class Subject:
    """One subject's records: the DVs, the fixed part of the linear predictor,
    and what the family needs besides (trials, cutpoints, overdispersion)."""

    family: Family
    y: np.ndarray
    offset: np.ndarray
    aux: Any
    omega: float

    def g(self, b):
        """``log p(y | b) + log N(b; 0, omega)`` at ``b`` (a scalar or a vector of nodes)."""
        b = np.asarray(b, float)
        eta = self.offset + b[..., None]
        loglik = np.sum(self.family.logpmf(self.y, eta, self.aux), axis=-1)
        return loglik + stats.norm.logpdf(b, 0.0, np.sqrt(self.omega))

    def dg(self, b):
        return np.sum(self.family.d1(self.y, self.offset + b, self.aux)) - b / self.omega

    def d2g(self, b):
        return np.sum(self.family.d2(self.y, self.offset + b, self.aux)) - 1.0 / self.omega

    def mode(self):
        """The mode of ``g``: Brent's method, then Newton steps on the analytic
        derivatives until the step is at rounding level."""
        b = optimize.minimize_scalar(lambda b: -self.g(b), bracket=(-1.0, 1.0), tol=1e-12).x
        for _ in range(50):
            step = self.dg(b) / self.d2g(b)
            b -= step
            if abs(step) < 1e-14 * max(1.0, abs(b)):
                break
        assert abs(self.dg(b)) < 1e-9
        return float(b)

    def log_aghq(self, n_nodes):
        """log of the AGHQ marginal likelihood with ``n_nodes`` nodes."""
        b_hat = self.mode()
        scale = 1.0 / np.sqrt(-self.d2g(b_hat))
        x, w = hermgauss(n_nodes)
        nodes = b_hat + np.sqrt(2.0) * scale * x
        terms = self.g(nodes) + x**2 + np.log(w)
        return np.log(np.sqrt(2.0) * scale) + special.logsumexp(terms)


# -- simulated data and the pmx models ----------------------------------------------------

N_OBS = (5, 8, 10, 12, 16, 20)  # records of the six subjects
TRIALS = 10.0


def _simulate(name, seed, a=0.5, slope=0.6, omega=0.4, log_alpha=np.log(0.5), cut=(-0.8, 0.7)):
    """Records of six subjects: ``x_ij = a + slope X_ij`` (``X`` uniform on
    [-1, 1]) plus the subject's ``b``; DVs drawn with numpy."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(N_OBS, start=1):
        b = rng.normal(0.0, np.sqrt(omega))
        covariate = rng.uniform(-1.0, 1.0, n)
        eta = (0.0 if name == "ordinal" else a) + slope * covariate + b
        if name == "poisson":
            dv = rng.poisson(np.exp(eta))
        elif name == "binomial":
            dv = rng.binomial(int(TRIALS), special.expit(eta))
        elif name == "bernoulli_probit":
            dv = (rng.uniform(size=n) < stats.norm.cdf(eta)).astype(float)
        elif name == "ordinal":
            u = rng.logistic(size=n)  # latent eta + u, categories cut at the cutpoints
            dv = np.searchsorted(np.asarray(cut), eta + u)
        else:
            alpha = np.exp(log_alpha)
            dv = rng.poisson(rng.gamma(1 / alpha, alpha * np.exp(eta)))
        rows.append(
            pd.DataFrame(
                dict(ID=i, TIME=np.arange(n, dtype=float), DV=dv.astype(float), X=covariate)
            )
        )
    return pd.concat(rows, ignore_index=True)


class PoissonModel(pmx.Model):
    a: pmx.Theta = pmx.theta(0.5)
    slope: pmx.Theta = pmx.theta(0.6)
    iiv: pmx.Omega = pmx.omega(b=0.4)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(x=self.a + self.slope * cov.X + eta.b)

    def observe(self, amounts, p):
        return pmx.Poisson(jnp.exp(p["x"]))


class BinomialModel(PoissonModel):
    def observe(self, amounts, p):
        return pmx.Binomial(p["x"], TRIALS)


class ProbitModel(PoissonModel):
    def observe(self, amounts, p):
        return pmx.Bernoulli(p["x"], link="probit")


class NegBinModel(PoissonModel):
    log_alpha: pmx.Theta = pmx.theta(float(np.log(0.5)))

    def observe(self, amounts, p):
        return pmx.NegativeBinomial(jnp.exp(p["x"]), jnp.exp(self.log_alpha))


class OrdinalModel(pmx.Model):
    slope: pmx.Theta = pmx.theta(0.6)
    cut1: pmx.Theta = pmx.theta(-0.8)
    log_gap: pmx.Theta = pmx.theta(float(np.log(1.5)))
    iiv: pmx.Omega = pmx.omega(b=0.4)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(x=self.slope * cov.X + eta.b)

    def observe(self, amounts, p):
        return pmx.OrderedCategorical(p["x"], [self.cut1, self.cut1 + jnp.exp(self.log_gap)])


MODELS = {
    "poisson": PoissonModel,
    "binomial": BinomialModel,
    "bernoulli_probit": ProbitModel,
    "ordinal": OrdinalModel,
    "negbin": NegBinModel,
}
SEEDS = dict(poisson=11, binomial=12, bernoulli_probit=13, ordinal=14, negbin=15)


def _reference_subjects(name, table, model):
    """The reference's subjects at the model's parameter values."""
    omega = float(model.iiv.matrix[0, 0])
    if name == "ordinal":
        cut1 = float(model.cut1)
        aux = np.array([cut1, cut1 + np.exp(float(model.log_gap))])
        intercept = 0.0
    else:
        intercept = float(model.a)
        aux = None
        if name == "binomial":
            aux = TRIALS
        elif name == "negbin":
            aux = np.exp(float(model.log_alpha))
    family = FAMILIES[name]
    return [
        Subject(
            family,
            y=group["DV"].to_numpy(),
            offset=intercept + float(model.slope) * group["X"].to_numpy(),
            aux=aux,
            omega=omega,
        )
        for _, group in table.groupby("ID", sort=True)
    ]


def _case(name, **simulation):
    table = _simulate(name, SEEDS[name], **simulation)
    model = MODELS[name]()
    return table, model, _reference_subjects(name, table, model)


# -- the reference checked against itself ----------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_reference_derivatives_match_finite_differences(name):
    table, _, subjects = _case(name)
    h = 1e-4
    for subject in subjects:
        for b in (-0.7, 0.0, 0.9):
            g1 = (subject.g(b + h) - subject.g(b - h)) / (2 * h)
            g2 = (subject.g(b + h) - 2 * subject.g(b) + subject.g(b - h)) / h**2
            assert subject.dg(b) == pytest.approx(g1, rel=1e-7, abs=1e-7)
            assert subject.d2g(b) == pytest.approx(g2, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_aghq_converges_to_the_integral(name):
    _, _, subjects = _case(name)
    for subject in subjects:
        l30, l40 = subject.log_aghq(30), subject.log_aghq(40)
        assert -2 * l30 == pytest.approx(-2 * l40, abs=1e-10)
        # Adaptive quadrature of scipy (QUADPACK) on the integrand scaled at the mode.
        b_hat = subject.mode()
        scale = 1.0 / np.sqrt(-subject.d2g(b_hat))
        top = subject.g(b_hat)
        value, _ = integrate.quad(
            lambda b, s=subject, t=top: np.exp(s.g(b) - t),
            b_hat - 30 * scale,
            b_hat + 30 * scale,
            epsabs=0.0,
            epsrel=1e-13,
            limit=200,
        )
        assert -2 * (top + np.log(value)) == pytest.approx(-2 * l40, abs=1e-9)


# -- Laplace is one-node AGHQ ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_laplace_per_subject_is_one_node_aghq(name):
    table, model, subjects = _case(name)
    result = pmx.ofv(model, pmx.read_nonmem(table), "laplace")
    laplace = np.asarray(result.per_subject)
    reference = np.array([-2 * s.log_aghq(1) for s in subjects])
    np.testing.assert_allclose(laplace, reference, rtol=0, atol=1e-8)
    # The EBEs are the reference's modes; the curvature floor did not act
    # (log-concave likelihoods: exact and expected curvature agree).
    np.testing.assert_allclose(
        np.asarray(result.eta)[:, 0], [s.mode() for s in subjects], rtol=0, atol=1e-8
    )
    np.testing.assert_allclose(np.asarray(result.relative_curvature), 1.0, atol=1e-12)
    assert float(result.ofv) == pytest.approx(reference.sum(), abs=1e-7)
