"""Residual error models against independent scipy computations."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

import pmx_jax.model as pmx  # noqa: E402

F, Y = 2.5, 3.1


@pytest.mark.parametrize(
    "model, sd",
    [
        (pmx.Additive(F, 0.4), 0.4),
        (pmx.Normal(F, 0.4), 0.4),
        (pmx.Proportional(F, 0.2), 0.2 * F),
        (pmx.Combined1(F, 0.3, 0.2), 0.3 + 0.2 * F),
        (pmx.Combined2(F, 0.3, 0.2), np.sqrt(0.3**2 + (0.2 * F) ** 2)),
    ],
)
def test_normal_scale_models_vs_scipy(model, sd):
    assert float(model.prediction) == F and float(model.mean()) == F
    assert float(model.variance()) == pytest.approx(sd**2, rel=1e-14)
    assert float(model.standard_deviation()) == pytest.approx(sd, rel=1e-14)
    assert float(model.log_likelihood(Y)) == pytest.approx(stats.norm.logpdf(Y, F, sd), rel=1e-13)
    assert float(model.log_cdf(2.0)) == pytest.approx(stats.norm.logcdf(2.0, F, sd), rel=1e-12)
    assert float(model.log_sf(2.0)) == pytest.approx(stats.norm.logsf(2.0, F, sd), rel=1e-12)


def test_exponential_is_normal_on_log_scale():
    err = pmx.Exponential(F, 0.3)
    assert pmx.LogNormal is pmx.Exponential
    assert float(err.mean()) == pytest.approx(np.log(F))
    # LTBS: density of log(y), no Jacobian
    expected = stats.norm.logpdf(np.log(Y), np.log(F), 0.3)
    assert float(err.log_likelihood(Y)) == pytest.approx(expected, rel=1e-13)
    expected = stats.norm.logcdf(np.log(0.5), np.log(F), 0.3)
    assert float(err.log_cdf(0.5)) == pytest.approx(expected, rel=1e-12)
    assert float(err.log_likelihood(0.0)) == -np.inf
    assert float(err.log_cdf(0.0)) == -np.inf and float(err.log_sf(0.0)) == 0.0


def test_combined1_and_combined2_differ_as_defined():
    f, add, prop = 10.0, 0.5, 0.1
    c1 = pmx.Combined1(f, add, prop).variance()
    c2 = pmx.Combined2(f, add, prop).variance()
    assert float(c1) == pytest.approx((add + prop * f) ** 2)  # SDs add
    assert float(c2) == pytest.approx(add**2 + (prop * f) ** 2)  # variances add
    assert float(c1) > float(c2)


def test_censored_log_likelihood_m3():
    err = pmx.Combined2(jnp.array([2.0, 0.05, 0.05, 8.0]), 0.1, 0.2)
    y = jnp.array([2.2, 0.0, 0.0, 0.0])
    cens = jnp.array([0, 1, 1, -1])
    limit = jnp.array([0.0, 0.1, 0.01, 7.0])
    ll = jax.jit(type(err).censored_log_likelihood)(err, y, cens, limit)
    sd = np.sqrt(0.1**2 + (0.2 * np.array([2.0, 0.05, 0.05, 8.0])) ** 2)
    expected = [
        stats.norm.logpdf(2.2, 2.0, sd[0]),
        stats.norm.logcdf(0.1, 0.05, sd[1]),
        stats.norm.logcdf(0.01, 0.05, sd[2]),
        stats.norm.logsf(7.0, 8.0, sd[3]),
    ]
    np.testing.assert_allclose(ll, expected, rtol=1e-12)


def test_censoring_kinds_of_the_data_select_the_same_values():
    """A likelihood told which kinds of censored record exist (as the fit
    does from the data) gives the scipy values on those records, and the
    kinds are read from the data as stated."""
    from pmx_jax.model._error import censoring_kinds

    f = jnp.array([2.0, 0.05, 8.0, 1.0])
    err = pmx.Combined2(f, 0.1, 0.2)
    sd = np.sqrt(0.1**2 + (0.2 * np.asarray(f)) ** 2)
    y = jnp.array([2.2, 0.0, 0.0, 0.0])
    cens = jnp.array([0, 1, -1, 1])
    limit = jnp.array([0.0, 0.1, 7.0, 0.5])
    bound = jnp.array([0.0, -jnp.inf, jnp.inf, 0.2])
    expected = np.array([
        stats.norm.logpdf(2.2, 2.0, sd[0]),
        stats.norm.logcdf(0.1, 0.05, sd[1]),
        stats.norm.logsf(7.0, 8.0, sd[2]),
        np.log(stats.norm.cdf(0.5, 1.0, sd[3]) - stats.norm.cdf(0.2, 1.0, sd[3])),
    ])  # fmt: skip
    is_obs = np.ones(4, dtype=bool)
    for rows, kinds in [
        ([0, 1], ("below",)),
        ([0, 2], ("above",)),
        ([0, 1, 2], ("below", "above")),
        ([0, 1, 3], ("below", "interval")),
        ([0, 1, 2, 3], ("below", "above", "interval")),
    ]:
        keep = np.isin(np.arange(4), rows)
        assert censoring_kinds(np.where(keep, cens, 0), bound, is_obs) == kinds
        ll = err.censored_log_likelihood(y, cens, limit, bound, kinds)
        np.testing.assert_allclose(np.asarray(ll)[rows], expected[rows], rtol=1e-10)
    assert censoring_kinds(np.zeros(4, int), bound, is_obs) == ()
    assert censoring_kinds(cens, bound, np.zeros(4, bool)) == ()  # not observations


def test_an_error_model_overriding_the_older_signature_still_works():
    """A user's error model whose ``censored_log_likelihood`` predates the
    ``kinds`` argument is called without it."""
    from pmx_jax.model._error import censored_log_likelihood

    class Older(pmx.Additive):
        def censored_log_likelihood(self, y, cens, limit, bound=None):
            return super().censored_log_likelihood(y, cens, limit, bound) + 1.0

    err = Older(jnp.array([1.0, 1.0]), 0.5)
    args = (jnp.array([1.2, 0.0]), jnp.array([0, 1]), jnp.array([0.0, 0.4]), None)
    value = censored_log_likelihood(err, *args, ("below",))
    expected = [stats.norm.logpdf(1.2, 1.0, 0.5) + 1.0, stats.norm.logcdf(0.4, 1.0, 0.5) + 1.0]
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_degenerate_cases_are_finite_in_gradient():
    # Proportional error at f = 0 (pre-dose): zero variance.
    @jax.jit
    @jax.value_and_grad
    def proportional(f, y, cens, limit):
        return pmx.Proportional(f, 0.2).censored_log_likelihood(y, cens, limit)

    assert float(proportional(0.0, 0.3, 0, 0.0)[0]) == -np.inf  # zero-variance density
    assert float(proportional(0.0, 0.0, 1, 0.1)[0]) == 0.0  # BLQ pre-dose: probability 1
    for args in [(0.0, 0.3, 0, 0.0), (0.0, 0.0, 1, 0.1), (1.0, 0.0, 1, 0.1), (1.0, 1.1, 0, 0.0)]:
        assert np.isfinite(float(proportional(*args)[1])), args

    # Log-scale model with y = 0 on a BLQ record and LIMIT = 0 on an observed one.
    @jax.jit
    @jax.grad
    def log_scale(f, y, cens, limit):
        return pmx.Exponential(f, 0.3).censored_log_likelihood(y, cens, limit)

    for args in [(1.0, 0.0, 1, 0.1), (1.0, 1.2, 0, 0.0), (0.0, 1.2, 0, 0.0)]:
        assert np.isfinite(float(log_scale(*args))), args
    # Additive at f = 0 is regular.
    g = jax.grad(lambda f: pmx.Additive(f, 0.5).log_likelihood(0.2))(0.0)
    assert float(g) == pytest.approx(0.2 / 0.25)


def test_gradient_with_respect_to_sd_matches_closed_form():
    g = jax.grad(lambda s: pmx.Additive(F, s).log_likelihood(Y))(0.4)
    assert float(g) == pytest.approx(-1 / 0.4 + (Y - F) ** 2 / 0.4**3)


def test_sample_moments():
    keys = jax.random.split(jax.random.key(0), 20_000)
    add = jax.vmap(lambda k: pmx.Additive(F, 0.4).sample(k))(keys)
    assert float(add.mean()) == pytest.approx(F, abs=4 * 0.4 / np.sqrt(20_000))
    assert float(add.std()) == pytest.approx(0.4, rel=0.03)
    ln = jax.vmap(lambda k: pmx.Exponential(F, 0.3).sample(k))(keys)
    assert bool(jnp.all(ln > 0))
    assert float(jnp.log(ln).std()) == pytest.approx(0.3, rel=0.03)


def test_error_model_takes_theta_and_is_pytree():
    sd = pmx.theta(0.4, lower=0.0)
    err = pmx.Additive(F, sd)
    assert isinstance(err.sd, jax.Array)
    out = jax.jit(lambda e: e.log_likelihood(Y))(err)
    assert float(out) == pytest.approx(stats.norm.logpdf(Y, F, 0.4))


# -- interval censoring (LIMIT column; M4 with LIMIT = 0) --------------------------------


@pytest.mark.parametrize(
    "lower, upper",
    [(-1.0, 2.0), (0.0, 1.0), (2.4, 2.6), (4.0, 5.0), (-3.0, -2.9), (8.0, 9.0)],
)
def test_interval_probability_vs_scipy(lower, upper):
    # Including both far tails (z of +14 to +16, and -14), where the plain
    # difference of CDFs loses every digit.
    err = pmx.Additive(F, 0.4)
    dist = stats.norm(F, 0.4)
    if lower > F:
        expected = np.log(dist.sf(lower) - dist.sf(upper))
    else:
        expected = np.log(dist.cdf(upper) - dist.cdf(lower))
    assert float(err.log_between(lower, upper)) == pytest.approx(expected, rel=1e-9)


def test_m4_on_a_log_scale_is_m3_and_on_a_normal_scale_excludes_negative_values():
    # LIMIT = 0 (Beal's M4 as nlmixr2 writes it): P(0 < y < LLOQ).
    lloq = 1.0
    log_scale = pmx.Exponential(F, 0.3)
    assert float(log_scale.log_between(0.0, lloq)) == pytest.approx(
        float(log_scale.log_cdf(lloq)), rel=1e-12
    )
    err = pmx.Additive(0.8, 0.6)
    m4 = err.censored_log_likelihood(0.0, 1, lloq, 0.0)
    m3 = err.censored_log_likelihood(0.0, 1, lloq, -jnp.inf)
    dist = stats.norm(0.8, 0.6)
    assert float(m4) == pytest.approx(np.log(dist.cdf(lloq) - dist.cdf(0.0)), rel=1e-12)
    assert float(m3) == pytest.approx(dist.logcdf(lloq), rel=1e-12)
    # Above a ULOQ with a finite LIMIT: P(limit < y < bound).
    upper = err.censored_log_likelihood(0.0, -1, 1.0, 2.0)
    assert float(upper) == pytest.approx(np.log(dist.cdf(2.0) - dist.cdf(1.0)), rel=1e-12)


def test_interval_censoring_has_finite_gradients_everywhere():
    # With and without a finite LIMIT, censored or observed: no NaN reaches the
    # derivative through the branch a record does not use.
    def total(f):
        err = pmx.Combined2(f, 0.2, 0.1)
        y = jnp.array([3.0, 0.0, 0.0, 0.0])
        cens = jnp.array([0, 1, 1, -1])
        limit = jnp.array([0.0, 1.0, 1.0, 5.0])
        bound = jnp.array([0.0, 0.0, -jnp.inf, jnp.inf])
        return jnp.sum(err.censored_log_likelihood(y, cens, limit, bound))

    for f in (0.0, 0.5, 3.0, 40.0):
        grad = jax.grad(total)(jnp.asarray(f))
        assert np.isfinite(float(grad)), f
    h = 1e-6
    fd = (float(total(2.0 + h)) - float(total(2.0 - h))) / (2 * h)
    assert float(jax.grad(total)(2.0)) == pytest.approx(fd, rel=1e-6)
