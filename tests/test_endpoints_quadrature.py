"""Laplace's marginal likelihood of the non-Gaussian endpoints against an
independent adaptive Gauss-Hermite quadrature (AGHQ).

Every model here has one random effect, a random intercept ``b ~ N(0, omega)``
on the linear predictor ``eta_ij = x_ij + b`` of subject ``i`` (for the
Weibull time-to-event model, on the log scale of the hazard).  The reference
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


def _ordinal_terms(y, eta, cut):
    """For categories ``y`` in 0..K-1 with ``P(Y <= k) = F(cut_k - eta)``
    (logistic ``F``): ``P(Y = y) = F(u) - F(l)`` with ``u = cut_y - eta``,
    ``l = cut_{y-1} - eta`` (``+-inf`` beyond the outer categories), and the
    differences ``f(u) - f(l)`` and ``f'(u) - f'(l)`` of the density ``f``."""
    cuts = np.concatenate([[-np.inf], cut, [np.inf]])
    y = np.asarray(y, int)
    upper, lower = cuts[y + 1] - eta, cuts[y] - eta
    f_u, f_l = stats.logistic.cdf(upper), stats.logistic.cdf(lower)
    d_u, d_l = stats.logistic.pdf(upper), stats.logistic.pdf(lower)
    # The logistic density's derivative: f' = f (1 - 2F).
    return f_u - f_l, d_u - d_l, d_u * (1 - 2 * f_u) - d_l * (1 - 2 * f_l)


def _ordinal_logpmf(y, eta, cut):
    return np.log(_ordinal_terms(y, eta, cut)[0])


def _ordinal_d1(y, eta, cut):
    prob, dens, _ = _ordinal_terms(y, eta, cut)
    return -dens / prob


def _ordinal_d2(y, eta, cut):
    prob, dens, slope = _ordinal_terms(y, eta, cut)
    return slope / prob - (dens / prob) ** 2


def _probit_d1(y, eta, aux):
    return y * _mills(eta) - (1 - y) * _mills(-eta)


def _probit_d2(y, eta, aux):
    # (log Phi)'' = -m (x + m) with m = phi / Phi
    return -y * _mills(eta) * (eta + _mills(eta)) - (1 - y) * _mills(-eta) * (-eta + _mills(-eta))


def _negbin_logpmf(y, eta, alpha):
    # NB2 with mean mu, variance mu + alpha mu^2: scipy's nbinom(size, size / (size + mu)).
    size = 1.0 / alpha
    return stats.nbinom.logpmf(y, size, size / (size + np.exp(eta)))


def _negbin_d1(y, eta, alpha):
    mu, size = np.exp(eta), 1.0 / alpha
    return size * (y - mu) / (size + mu)


def _negbin_d2(y, eta, alpha):
    mu, size = np.exp(eta), 1.0 / alpha
    return -size * mu * (size + y) / (size + mu) ** 2


def _weibull_logpmf(y, eta, aux):
    """A time-to-event record (DV 1: event at t, 0: event-free at t) of a
    Weibull process with scale ``exp(eta)`` and shape ``k``: the hazard at
    ``t`` for an event, times the survival since the previous record at
    ``t_prev``, from scipy's Weibull log density and log survival
    (``log h = log f - log S``)."""
    t, t_prev, k = aux
    weibull = stats.weibull_min(k, scale=np.exp(eta))
    log_h = weibull.logpdf(t) - weibull.logsf(t)
    return y * log_h + weibull.logsf(t) - weibull.logsf(t_prev)


def _weibull_increment(eta, aux):
    t, t_prev, k = aux
    return (t * np.exp(-eta)) ** k - (t_prev * np.exp(-eta)) ** k


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
        d2=lambda y, eta, n: -n * special.expit(eta) * special.expit(-eta) + 0 * y,
    ),
    "bernoulli_probit": Family(
        "bernoulli_probit",
        logpmf=lambda y, eta, aux: stats.bernoulli.logpmf(y, stats.norm.cdf(eta)),
        d1=_probit_d1,
        d2=_probit_d2,
    ),
    "ordinal": Family("ordinal", logpmf=_ordinal_logpmf, d1=_ordinal_d1, d2=_ordinal_d2),
    "negbin": Family("negbin", logpmf=_negbin_logpmf, d1=_negbin_d1, d2=_negbin_d2),
    # log h = log k - log t + k (log t - eta), so d/d eta: -k y + k (H(t) - H(t_prev)).
    "weibull_tte": Family(
        "weibull_tte",
        logpmf=_weibull_logpmf,
        d1=lambda y, eta, aux: -aux[2] * y + aux[2] * _weibull_increment(eta, aux),
        d2=lambda y, eta, aux: -(aux[2] ** 2) * _weibull_increment(eta, aux),
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


def _simulate(name, seed, a=0.5, slope=0.6, omega=0.4, alpha=0.5, cut=(-0.8, 0.7)):
    """Records of six subjects: ``x_ij = a + slope X_ij`` (``X`` uniform on
    [-1, 1]) plus the subject's ``b``; DVs drawn with numpy."""
    rng = np.random.default_rng(seed)
    if name == "weibull_tte":
        return _simulate_events(rng, omega)
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
            dv = rng.poisson(rng.gamma(1 / alpha, alpha * np.exp(eta)))
        rows.append(
            pd.DataFrame(
                dict(ID=i, TIME=np.arange(n, dtype=float), DV=dv.astype(float), X=covariate)
            )
        )
    return pd.concat(rows, ignore_index=True)


def _simulate_events(rng, omega, scale=4.0, shape=1.5):
    """Six subjects followed to FOLLOW_UP: records at their exact event times
    (DV 1, a Weibull process: ``H(t_k) = E_1 + ... + E_k``, ``E ~ Exp(1)``,
    inverted) and one event-free record (DV 0) at the end of follow-up;
    subjects 1-3 until their first event only (no record after it)."""
    rows = []
    for i in range(1, 7):
        lam = scale * np.exp(rng.normal(0.0, np.sqrt(omega)))
        times = lam * np.cumsum(rng.exponential(size=40)) ** (1.0 / shape)
        assert times[-1] > FOLLOW_UP  # enough events drawn to pass the follow-up
        times = times[times < FOLLOW_UP]
        if i <= 3 and times.size:
            time, dv = times[:1], np.ones(1)
        else:
            time, dv = np.append(times, FOLLOW_UP), np.append(np.ones(times.size), 0.0)
        rows.append(pd.DataFrame(dict(ID=i, TIME=time, DV=dv)))
    return pd.concat(rows, ignore_index=True)


FOLLOW_UP = 10.0


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


class WeibullModel(pmx.Model):
    """Weibull hazard ``h(t) = k/t (t/lam)^k``, ``lam = exp(log_scale + b)``."""

    log_scale: pmx.Theta = pmx.theta(float(np.log(4.0)))
    log_shape: pmx.Theta = pmx.theta(float(np.log(1.5)))
    iiv: pmx.Omega = pmx.omega(b=0.4)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(log_lam=self.log_scale + eta.b, t=cov.TIME)

    def observe(self, amounts, p):
        shape = jnp.exp(self.log_shape)
        cumulative = (p["t"] * jnp.exp(-p["log_lam"])) ** shape
        return pmx.TimeToEvent(hazard=shape / p["t"] * cumulative, cumulative_hazard=cumulative)


MODELS = {
    "poisson": PoissonModel,
    "binomial": BinomialModel,
    "bernoulli_probit": ProbitModel,
    "ordinal": OrdinalModel,
    "negbin": NegBinModel,
    "weibull_tte": WeibullModel,
}
SEEDS = dict(poisson=11, binomial=12, bernoulli_probit=13, ordinal=14, negbin=15, weibull_tte=16)


def _reference_subjects(name, table, model):
    """The reference's subjects at the model's parameter values."""
    omega = float(model.iiv.matrix[0, 0])
    family = FAMILIES[name]
    groups = [group for _, group in table.groupby("ID", sort=True)]
    if name == "weibull_tte":
        shape = np.exp(float(model.log_shape))
        subjects = []
        for group in groups:
            t = group["TIME"].to_numpy()
            t_prev = np.concatenate([[0.0], t[:-1]])
            offset = np.full(t.shape, float(model.log_scale))
            aux = (t, t_prev, shape)
            subjects.append(Subject(family, group["DV"].to_numpy(), offset, aux, omega))
        return subjects
    intercept, aux = (0.0, None) if name == "ordinal" else (float(model.a), None)
    if name == "ordinal":
        cut1 = float(model.cut1)
        aux = np.array([cut1, cut1 + np.exp(float(model.log_gap))])
    elif name == "binomial":
        aux = TRIALS
    elif name == "negbin":
        aux = np.exp(float(model.log_alpha))
    return [
        Subject(
            family,
            y=group["DV"].to_numpy(),
            offset=intercept + float(model.slope) * group["X"].to_numpy(),
            aux=aux,
            omega=omega,
        )
        for group in groups
    ]


def _case(name, **simulation):
    table = _simulate(name, SEEDS[name], **simulation)
    model = MODELS[name]()
    return table, model, _reference_subjects(name, table, model)


# -- the reference checked against itself ----------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_reference_derivatives_match_finite_differences(name):
    _, _, subjects = _case(name)
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
        # 40 and 60 nodes agree to 1e-10 (measured: 4e-12 at most, from the
        # one-record time-to-event subjects, whose posterior of b is skewed;
        # 30 and 40 nodes differ by 2e-10 there, by < 1e-14 elsewhere).
        l40, l60 = subject.log_aghq(40), subject.log_aghq(60)
        assert -2 * l40 == pytest.approx(-2 * l60, abs=1e-10)
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
        assert -2 * (top + np.log(value)) == pytest.approx(-2 * l60, abs=1e-9)


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


# -- Laplace against the exact marginal likelihood ------------------------------------------
#
# AGHQ with 40 nodes is the exact marginal likelihood to ~1e-14 here (30 and
# 40 nodes agree to that, and so does QUADPACK).  Laplace's error in a
# subject's -2 log L is O(1/n_i) in the subject's information: for this
# Poisson intercept ``g'' = -(M + 1/omega)``, ``g''' = g'''' = -M`` with
# ``M = sum_j mu_ij(b*)`` (about the subject's total count Y_i), and the
# next term of the Laplace expansion,
#     log L_i - log Laplace_i = g''''/(8 g''^2) + 5 g'''^2/(24 |g''|^3) + O(1/M^2),
# is 1/(12 Y_i) as Stirling's series of Gamma(Y_i) says; the -2 log L error is
# about 1/(6 Y_i).  Measured on the less informative data of the tests above
# (5-20 records, rates ~1-3, 3-10 successes of 10, binary, 3 categories,
# NB2 with alpha = 0.5), Laplace's -2 log L exceeds the exact one by
# 0.002-0.015 per subject: 0.024 (Poisson), 0.026 (binomial), 0.033 (probit),
# 0.051 (ordinal) and 0.045 (negative binomial) over six subjects; for the
# Weibull time-to-event subjects it is -0.014 to -0.004 for those with one
# record (Laplace's -2 log L below the exact one) and +0.007 to +0.011 for
# those with 3-9 records.


def _poisson_counts(log_rate, seed, n_subjects=6, n_records=20, omega=0.4, slope=0.6):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n_subjects + 1):
        b = rng.normal(0.0, np.sqrt(omega))
        covariate = rng.uniform(-1.0, 1.0, n_records)
        counts = rng.poisson(np.exp(log_rate + slope * covariate + b))
        rows.append(
            pd.DataFrame(
                dict(
                    ID=i,
                    TIME=np.arange(n_records, dtype=float),
                    DV=counts.astype(float),
                    X=covariate,
                )
            )
        )
    return pd.concat(rows, ignore_index=True)


def _laplace_and_exact(log_rate, seed):
    table = _poisson_counts(log_rate, seed)
    model = PoissonModel().with_values(a=log_rate)
    subjects = _reference_subjects("poisson", table, model)
    laplace = np.asarray(pmx.ofv(model, pmx.read_nonmem(table), "laplace").per_subject)
    exact = np.array([-2 * s.log_aghq(40) for s in subjects])
    for subject in subjects:
        assert subject.log_aghq(30) == pytest.approx(subject.log_aghq(40), abs=1e-10)
    second_order = []
    for subject in subjects:
        b_hat = subject.mode()
        total = np.sum(np.exp(subject.offset + b_hat))  # -g''' = -g'''' = M
        g2 = subject.d2g(b_hat)
        second_order.append(-total / (8 * g2**2) + 5 * total**2 / (24 * (-g2) ** 3))
    return laplace, exact, 2 * np.array(second_order)


def test_laplace_error_is_the_second_order_term_of_its_expansion():
    # Rates ~30 and 20 records a subject (totals Y_i 390-1060): Laplace's
    # -2 log L is 1.6e-4 to 4.2e-4 above the exact one per subject (1.6e-3
    # over six subjects, so not within 1e-4 of it), and that difference is
    # the expansion's O(1/Y_i) term to 2.5e-5 relative (the O(1/Y_i^2) rest).
    laplace, exact, expansion = _laplace_and_exact(np.log(30.0), seed=21)
    np.testing.assert_allclose(laplace - exact, expansion, rtol=1e-3)
    assert np.all(laplace - exact > 1e-4)


def test_laplace_ofv_is_the_exact_marginal_where_the_data_are_informative():
    # Rates ~1100 and 20 records a subject (totals Y_i 5,900-31,000): the
    # error ~sum_i 1/(6 Y_i) is 8.1e-5 over the six subjects (measured), so
    # the whole OFV is within 1e-4 of the exact marginal -2 log L.
    laplace, exact, expansion = _laplace_and_exact(7.0, seed=21)
    assert abs(laplace.sum() - exact.sum()) < 1e-4
    np.testing.assert_allclose(laplace - exact, expansion, rtol=1e-4)
