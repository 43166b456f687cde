"""R-hat and ESS against draws whose answer is known: independent normal
draws (ESS = number of draws), AR(1) chains (ESS = n (1 - rho) / (1 + rho)),
anti-correlated chains (ESS positive and at most n log10 n, the bound of
ArviZ's estimator) and chains centred at different values (R-hat well above 1)."""

import numpy as np
import pytest

from pmx_jax.bayes import ess_bulk, ess_tail, rhat


def _ar1(rng, chains, n, rho):
    x = np.empty((chains, n))
    x[:, 0] = rng.normal(size=chains)
    noise = rng.normal(size=(chains, n)) * np.sqrt(1 - rho**2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


def test_independent_draws():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 1000))
    assert abs(rhat(x) - 1.0) < 0.01
    # ESS of 4000 independent draws: estimator SD is a few percent
    assert ess_bulk(x) == pytest.approx(4000, rel=0.1)
    assert ess_tail(x) == pytest.approx(4000, rel=0.15)


def test_autocorrelated_chains():
    rng = np.random.default_rng(1)
    rho = 0.8
    x = _ar1(rng, 4, 5000, rho)
    expected = 20000 * (1 - rho) / (1 + rho)  # 2222
    assert ess_bulk(x) == pytest.approx(expected, rel=0.2)
    assert rhat(x) < 1.01


def test_independent_draws_give_ess_near_the_number_of_draws():
    """4 x 2,500 independent draws: over 100 seeds ESS / n had SD 0.03, mean
    0.99 (bulk) and 0.97 (tail: the quantile indicators lose a little), so
    the 12% tolerance is about 3 SD beyond the tail ESS's mean."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 2500))
    assert ess_bulk(x) == pytest.approx(10000, rel=0.12)
    assert ess_tail(x) == pytest.approx(10000, rel=0.12)


def test_strongly_autocorrelated_chain():
    """AR(1) with rho = 0.9: ESS = n (1 - rho) / (1 + rho) = n / 19.  Over
    100 seeds of 4 x 10,000 draws, ESS / (n / 19) had mean 0.99 and SD 0.06;
    the 20% tolerance is over 3 SD."""
    rng = np.random.default_rng(4)
    rho = 0.9
    x = _ar1(rng, 4, 10000, rho)
    expected = 40000 * (1 - rho) / (1 + rho)  # 2105
    assert ess_bulk(x) == pytest.approx(expected, rel=0.2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anti_correlated_chains_give_a_positive_bounded_ess(seed):
    """Draws alternating between two values: the lag-1 autocorrelation is near
    -1, so the estimated autocorrelation time is near 0 or below it (a negative
    ESS before it was floored).  Floored at 1 / log10(n), the ESS of n draws is
    at most n log10(n)."""
    rng = np.random.default_rng(seed)
    x = np.tile([0.0, 1.0], (4, 50)) + 0.3 * rng.standard_normal((4, 100))
    bound = x.size * np.log10(x.size)  # 1041 for 400 draws
    for ess in (ess_bulk(x), ess_tail(x), ess_bulk(_ar1(rng, 4, 100, -0.9))):
        assert np.isfinite(ess)
        assert 0 < ess <= bound * (1 + 1e-12)
    # This chain is antithetic enough to reach the bound.
    assert ess_bulk(x) == pytest.approx(bound, rel=1e-12)


def test_chains_in_different_places_are_flagged():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 500))
    x[3] += 1.5  # one chain elsewhere (a trapped chain)
    assert rhat(x) > 1.1
    scale = rng.normal(size=(4, 500)) * np.array([1, 1, 1, 4])[:, None]
    assert rhat(scale) > 1.05  # same location, different spread: the folded R-hat sees it


def test_transformations_do_not_change_rank_diagnostics():
    rng = np.random.default_rng(3)
    x = _ar1(rng, 4, 1000, 0.5)
    assert rhat(np.exp(x)) == pytest.approx(rhat(x), rel=1e-12)
    assert ess_bulk(np.exp(3 * x)) == pytest.approx(ess_bulk(x), rel=1e-12)
