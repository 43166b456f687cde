"""Non-Gaussian observation models against scipy.stats, their simulation
rules against their moments, and their use inside models (data checks,
refusal by the linearised methods, mixed endpoints)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit

import pmx_jax as pmx
from pmx_jax.data._errors import InvalidValueError

COUNTS = np.arange(0.0, 12.0)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog", "identity"])
def test_bernoulli_and_binomial_against_scipy(link):
    x = {"logit": 0.7, "probit": -0.4, "cloglog": 0.2, "identity": 0.35}[link]
    p = {
        "logit": expit(0.7),
        "probit": stats.norm.cdf(-0.4),
        "cloglog": 1 - np.exp(-np.exp(0.2)),
        "identity": 0.35,
    }[link]
    bern = pmx.Bernoulli(x, link=link)
    assert float(bern.prediction) == pytest.approx(p, rel=1e-12)
    for y in (0.0, 1.0):
        assert float(bern.log_likelihood(y)) == pytest.approx(
            stats.bernoulli.logpmf(y, p), rel=1e-12
        )
    assert float(bern.log_likelihood(2.0)) == -np.inf
    binom = pmx.Binomial(x, 11.0, link=link)
    np.testing.assert_allclose(
        binom.log_likelihood(COUNTS), stats.binom.logpmf(COUNTS, 11, p), rtol=1e-10
    )
    np.testing.assert_allclose(binom.cdf(COUNTS), stats.binom.cdf(COUNTS, 11, p), rtol=1e-10)
    assert float(binom.log_likelihood(12.0)) == -np.inf
    assert float(binom.mean()) == pytest.approx(11 * p, rel=1e-12)


def test_binary_log_likelihood_stays_finite_where_the_probability_rounds_to_one():
    # p = 1 - 1e-22 rounds to 1: log(1 - p) from the probability would be -inf.
    grad = jax.grad(lambda x: pmx.Bernoulli(x).log_likelihood(0.0))(50.0)
    assert float(pmx.Bernoulli(50.0).log_likelihood(0.0)) == pytest.approx(-50.0, rel=1e-12)
    assert float(grad) == pytest.approx(-1.0, rel=1e-12)


def test_count_models_against_scipy():
    rate, alpha, pi = 3.7, 0.4, 0.25
    np.testing.assert_allclose(
        pmx.Poisson(rate).log_likelihood(COUNTS), stats.poisson.logpmf(COUNTS, rate), rtol=1e-12
    )
    np.testing.assert_allclose(
        pmx.Poisson(rate).cdf(COUNTS), stats.poisson.cdf(COUNTS, rate), rtol=1e-10
    )
    # NB2 with mean mu and variance mu + alpha mu^2 is scipy's nbinom(n=1/alpha, p=n/(n+mu)).
    size = 1 / alpha
    nb = pmx.NegativeBinomial(rate, alpha)
    reference = stats.nbinom(size, size / (size + rate))
    np.testing.assert_allclose(nb.log_likelihood(COUNTS), reference.logpmf(COUNTS), rtol=1e-10)
    np.testing.assert_allclose(nb.cdf(COUNTS), reference.cdf(COUNTS), rtol=1e-10)
    assert float(nb.variance()) == pytest.approx(reference.var(), rel=1e-12)
    zip_model = pmx.ZeroInflatedPoisson(rate, pi)
    expected = np.log((1 - pi) * stats.poisson.pmf(COUNTS, rate) + pi * (COUNTS == 0))
    np.testing.assert_allclose(zip_model.log_likelihood(COUNTS), expected, rtol=1e-12)
    assert float(jnp.sum(jnp.exp(zip_model.log_likelihood(jnp.arange(80.0))))) == pytest.approx(
        1.0, abs=1e-12
    )
    for model in (pmx.Poisson(rate), nb, zip_model):
        assert float(model.log_likelihood(-1.0)) == -np.inf


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_ordered_categorical_against_its_definition(link):
    cut = np.array([-1.0, 0.5, 2.0])
    x = 0.3
    cdf = expit if link == "logit" else stats.norm.cdf
    cumulative = np.concatenate([[0.0], cdf(cut - x), [1.0]])
    probabilities = np.diff(cumulative)
    model = pmx.OrderedCategorical(x, cut, link=link, categories=(1, 2, 3, 4))
    np.testing.assert_allclose(model.probabilities(), probabilities, rtol=1e-12)
    levels = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(model.log_likelihood(levels), np.log(probabilities), rtol=1e-11)
    np.testing.assert_allclose(model.cdf(levels), cumulative[1:], rtol=1e-12)
    assert float(model.mean()) == pytest.approx(probabilities @ levels, rel=1e-12)
    assert float(model.log_likelihood(2.5)) == -np.inf
    # Far in a tail the difference of cumulative probabilities cancels; the
    # log-likelihood stays accurate (the middle category at predictor 40).
    far = pmx.OrderedCategorical(40.0, cut, link=link)
    log_p = float(far.log_likelihood(1.0))
    if link == "logit":
        expected = np.log(expit(0.5 - 40.0) - expit(-1.0 - 40.0))
        assert log_p == pytest.approx(expected, rel=1e-10)
    assert np.isfinite(log_p)


def test_time_to_event_terms():
    hazard, cumulative = 0.2, 1.5
    tte = pmx.TimeToEvent(hazard=hazard, cumulative_hazard=cumulative)
    assert float(tte.log_likelihood(0.0)) == pytest.approx(-1.5)
    assert float(tte.log_likelihood(1.0)) == pytest.approx(np.log(0.2) - 1.5)
    assert float(tte.log_likelihood(2.0)) == pytest.approx(np.log(1 - np.exp(-1.5)))
    assert float(tte.prediction) == pytest.approx(np.exp(-1.5))


def test_user_log_likelihood():
    # An exponential observation written by hand.
    model = pmx.LogLikelihood(lambda y: jnp.log(2.0) - 2.0 * y, prediction=0.5)
    assert float(model.log_likelihood(0.3)) == pytest.approx(stats.expon(scale=0.5).logpdf(0.3))
    assert float(model.prediction) == 0.5


@pytest.mark.parametrize(
    "model, mean, variance",
    [
        (pmx.Bernoulli(0.4), expit(0.4), expit(0.4) * (1 - expit(0.4))),
        (pmx.Binomial(-0.2, 8.0), 8 * expit(-0.2), 8 * expit(-0.2) * expit(0.2)),
        (pmx.Poisson(4.0), 4.0, 4.0),
        (pmx.NegativeBinomial(4.0, 0.5), 4.0, 4.0 + 0.5 * 16.0),
        (pmx.ZeroInflatedPoisson(4.0, 0.3), 0.7 * 4.0, 0.7 * 4.0 * (1 + 0.3 * 4.0)),
        (pmx.OrderedCategorical(0.3, [-1.0, 0.5, 2.0]), None, None),
    ],
    ids=["bernoulli", "binomial", "poisson", "negbin", "zip", "ordinal"],
)
def test_simulation_rules_have_the_models_moments(model, mean, variance):
    n = 200_000
    keys = jax.random.split(jax.random.PRNGKey(7), n)
    draws = np.asarray(jax.vmap(model.sample)(keys))
    mean = float(model.mean()) if mean is None else mean
    variance = float(model.variance()) if variance is None else variance
    assert float(model.mean()) == pytest.approx(mean, rel=1e-12)
    assert float(model.variance()) == pytest.approx(variance, rel=1e-12)
    # 5 Monte Carlo standard errors of the mean and of the variance (normal
    # approximation; the kurtosis bound 10 covers these distributions).
    assert abs(draws.mean() - mean) < 5 * np.sqrt(variance / n)
    assert abs(draws.var() - variance) < 5 * variance * np.sqrt(10 / n)
    # Every draw is a value the model can explain.
    assert np.all(np.isfinite(np.asarray(jax.vmap(model.log_likelihood)(draws[:1000]))))


class CountModel(pmx.Model):
    b0: pmx.Theta = pmx.theta(1.0)
    iiv: pmx.Omega = pmx.omega(b=0.2)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(log_rate=self.b0 + eta.b)

    def observe(self, amounts, p):
        return pmx.Poisson(jnp.exp(p["log_rate"]))


def _table(dv, **extra):
    n = len(dv)
    return pd.DataFrame(
        dict(ID=np.repeat([1, 2], n // 2), TIME=np.tile(np.arange(n // 2.0), 2), DV=dv, **extra)
    )


def test_impossible_values_are_named_before_fitting():
    data = pmx.read_nonmem(_table([0, 3, 1, 2.5]))
    with pytest.raises(
        InvalidValueError, match=r"DV\) is 2.5 on row 4 \(ID 2\).*Poisson.*integer >= 0"
    ):
        pmx.ofv(CountModel(), data, "laplace")
    data = pmx.read_nonmem(_table([0, -1, 1, 2]))
    with pytest.raises(InvalidValueError, match=r"is -1 on row 2 \(ID 1\)"):
        pmx.fit(CountModel(), data, "laplace")


def test_linearised_methods_refuse_non_gaussian_endpoints():
    data = pmx.read_nonmem(_table([0, 3, 1, 2]))
    for method in ("fo", "foce", "focei"):
        with pytest.raises(
            ValueError, match=r"CountModel observes endpoint with a non-Gaussian.*method='laplace'"
        ):
            pmx.ofv(CountModel(), data, method)


class Score(pmx.Model):
    shift: pmx.Theta = pmx.theta(0.0)
    cut1: pmx.Theta = pmx.theta(-0.5)
    gap: pmx.Theta = pmx.theta(0.0)
    iiv: pmx.Omega = pmx.omega(s=0.3)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(x=self.shift + eta.s)

    def observe(self, amounts, p):
        return pmx.OrderedCategorical(
            p["x"], [self.cut1, self.cut1 + jnp.exp(self.gap)], categories=(1, 2, 3)
        )


def test_category_outside_the_declared_set_is_named():
    data = pmx.read_nonmem(_table([1, 2, 3, 0]))
    with pytest.raises(
        InvalidValueError, match=r"is 0 on row 4 \(ID 2\).*categories \(1.0, 2.0, 3.0\)"
    ):
        pmx.ofv(Score(), data, "laplace")


def test_censoring_flag_on_a_count_endpoint_is_refused():
    data = pmx.read_nonmem(_table([0, 3, 1, 2], CENS=[0, 1, 0, 0]))
    with pytest.raises(InvalidValueError, match=r"row 2 \(ID 1\) is censored"):
        pmx.ofv(CountModel(), data, "laplace")


def test_nuts_samples_a_count_model_near_its_laplace_fit():
    # 20 subjects x 8 Poisson counts, log rate 1.0 + b, b ~ N(0, 0.25).
    rng = np.random.default_rng(0)
    b = rng.normal(0.0, 0.5, 20)
    rows = [
        (i + 1, float(j), float(rng.poisson(np.exp(1.0 + b[i]))))
        for i in range(20)
        for j in range(8)
    ]
    data = pmx.read_nonmem(pd.DataFrame(rows, columns=["ID", "TIME", "DV"]))
    fit = pmx.fit(CountModel(), data, "laplace")
    draws = pmx.sample(
        CountModel(), data, n_warmup=300, n_samples=300, n_chains=2, seed=1, init=fit
    )
    summary = draws.summary()
    # With flat-ish priors the posterior mean of the fixed effect is within a
    # posterior SD of the marginal maximum likelihood estimate (the posterior
    # of a location parameter is nearly normal here: 160 counts).
    assert summary.loc["b0", "mean"] == pytest.approx(
        float(fit.model.b0), abs=summary.loc["b0", "sd"]
    )
    assert summary["rhat"].max() < 1.05


class GammaObservation(pmx.Model):
    """A user's log-likelihood that is not finite at DV 0 (a gamma density)."""

    log_shape: pmx.Theta = pmx.theta(np.log(2.0))
    iiv: pmx.Omega = pmx.omega(b=0.1)
    dynamics = pmx.pk.Pred()
    guard = False

    def individual(self, eta, cov):
        return dict(shape=jnp.exp(self.log_shape + eta.b))

    def observe(self, amounts, p):
        shape = p["shape"]

        def log_density(y):
            if self.guard:
                y = jnp.where(y > 0, y, 1.0)
            return -jax.scipy.special.gammaln(shape) + (shape - 1.0) * jnp.log(y) - y

        return pmx.LogLikelihood(log_density, prediction=shape)


class GuardedGammaObservation(GammaObservation):
    guard = True


def test_user_log_likelihood_is_not_evaluated_at_the_zeros_of_records_without_data():
    # 4 records per subject are padded to 8 (and an MDV 1 record has DV 0):
    # the density at DV 0 is -inf there, masked, but its derivative would
    # make every subject's OFV infinite.  The kernel evaluates such records at
    # an observed value instead; a density guarded by hand gives the same OFV.
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        dict(
            ID=np.repeat(np.arange(1, 21), 4),
            TIME=np.tile(np.arange(4.0), 20),
            DV=rng.gamma(2.0, 1.0, 80),
        )
    )
    table.loc[table["TIME"] == 0, ["DV", "MDV"]] = [0.0, 1]
    data = pmx.read_nonmem(table)
    value = float(pmx.ofv(GammaObservation(), data, "laplace").ofv)
    assert np.isfinite(value)
    assert value == pytest.approx(
        float(pmx.ofv(GuardedGammaObservation(), data, "laplace").ofv), abs=1e-9
    )


def test_every_dvid_level_is_checked_against_its_endpoint():
    # A single endpoint serves every DVID level of the data: the count on the
    # second level is checked too (it was not, and the fit's per-level flags
    # assumed one level per endpoint).
    table = _table([1, 2.5, 3, 4], DVID=[1, 2, 1, 2])
    with pytest.raises(InvalidValueError, match=r"is 2.5 on row 2 \(ID 1\) \(DVID 2\)"):
        pmx.ofv(CountModel(), pmx.read_nonmem(table), "laplace")
    fit = pmx.fit(CountModel(), pmx.read_nonmem(_table([1, 2, 3, 4], DVID=[1, 2, 1, 2])), "laplace")
    assert fit.n_general == 4 and fit.n_observations == 0


def test_fewer_endpoints_than_dvid_levels_is_an_error():
    class TwoEndpoints(CountModel):
        def observe(self, amounts, p):
            return {1: pmx.Poisson(jnp.exp(p["log_rate"])), 2: pmx.Bernoulli(p["log_rate"])}

    table = _table([1, 0, 3, 1, 2, 1], DVID=[1, 2, 3, 1, 2, 3])
    with pytest.raises(pmx.ObservationError, match=r"3 DVID levels.*returns 2 endpoints"):
        pmx.ofv(TwoEndpoints(), pmx.read_nonmem(table), "laplace")
