"""R-hat and ESS against draws whose answer is known: independent normal
draws (ESS = number of draws), AR(1) chains (ESS = n (1 - rho) / (1 + rho)),
and chains centred at different values (R-hat well above 1)."""

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
