"""The stochastic-gradient phase over subjects (``pmx.fit(..., minibatch=...)``):
minibatch gradients add up to the full gradient, the fit after the phase
reaches the full-batch fit's minimum, and its options are checked."""

import jax
import numpy as np
import pytest
from test_fit_recovery import START, OneCptOral, simulate_population

import pmx_jax as pmx
from pmx_jax.estimation._engine import Engine
from pmx_jax.likelihood._problem import make_problem


@pytest.fixture(scope="module")
def data() -> pmx.Dataset:
    return simulate_population(64, seed=7)


def test_minibatch_gradients_over_a_partition_add_up_to_the_full_gradient(data):
    model = OneCptOral().with_values(**START)
    whole = make_problem(model, data, "focei")
    engine = Engine(model, whole, 100, 1e-12)
    full = engine.at(engine.y0, engine.zeros())
    source = jax.tree_util.tree_map(np.asarray, whole.source)
    order = np.random.default_rng(0).permutation(data.n_subjects)
    total_ofv, total_grad = 0.0, np.zeros_like(full.grad)
    for part in np.split(order, 4):
        batch = make_problem(model, jax.tree_util.tree_map(lambda x, p=part: x[p], source), "focei")
        on_batch = engine.on(batch)
        done = on_batch.at(engine.y0, on_batch.zeros())
        total_ofv += done.ofv
        total_grad += done.grad
    assert total_ofv == pytest.approx(full.ofv, rel=1e-12)
    np.testing.assert_allclose(total_grad, full.grad, rtol=1e-8, atol=1e-8)


def test_fit_after_the_phase_reaches_the_full_batch_minimum(data):
    model = OneCptOral().with_values(**START)
    plain = pmx.fit(model, data, "focei", covariance=None)
    staged = pmx.fit(
        model, data, "focei", covariance=None,
        minibatch=dict(batch_size=16, epochs=4, learning_rate=0.05),
    )  # fmt: skip
    assert plain.converged and staged.converged
    steps = staged.minibatch
    assert len(steps) == 16 and steps["usable"].all()
    # The phase made progress: its last epoch's OFV estimates are well below
    # the OFV at the initial estimates.
    initial = plain.trace["ofv"].iloc[0]
    assert steps["ofv_estimate"].tail(4).mean() < initial - 0.5 * (initial - plain.ofv)
    assert staged.ofv == pytest.approx(plain.ofv, abs=1e-4)
    a = plain.estimates().set_index("parameter")["estimate"]
    b = staged.estimates().set_index("parameter")["estimate"]
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=2e-3, atol=1e-4)
    assert plain.minibatch is None


def test_minibatch_options_are_checked(data):
    model = OneCptOral()
    with pytest.raises(ValueError, match="unknown option.*'batch'"):
        pmx.fit(model, data, "focei", minibatch=dict(batch=8))
    for wrong in (0, dict(batch_size="big")):
        with pytest.raises(ValueError, match="batch_size must be 'auto' or an integer >= 1"):
            pmx.fit(model, data, "focei", minibatch=wrong)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        pmx.fit(model, data, "focei", minibatch=dict(epochs=0))
    with pytest.raises(ValueError, match="cannot be combined"):
        pmx.fit(model, data, "focei", minibatch=True, starts=2)
