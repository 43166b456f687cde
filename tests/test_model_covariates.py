"""Covariate-effect helpers, and the doctest examples of the model package."""

import jax

jax.config.update("jax_enable_x64", True)

import doctest  # noqa: E402
import importlib  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pmx_jax.model as pmx  # noqa: E402


def test_continuous_effects():
    assert float(pmx.allometric(70.0)) == 1.0
    assert float(pmx.allometric(140.0, 70.0, 0.75)) == pytest.approx(2**0.75)
    assert float(pmx.power(value=20.0, reference=40.0, exponent=-0.5)) == pytest.approx(2**0.5)
    assert float(pmx.linear(50.0, 40.0, -0.01)) == pytest.approx(0.9)
    assert float(pmx.exponential(50.0, 40.0, 0.1)) == pytest.approx(np.e)


def test_categorical_effects_traced():
    effects = [1.0, pmx.theta(0.8)]

    @jax.jit
    def f(code):
        return pmx.categorical(code, effects)

    np.testing.assert_allclose(jax.vmap(f)(jnp.array([0.0, 1.0, 1.0])), [1.0, 0.8, 0.8])
    assert np.isnan(float(f(2.0)))  # miscoded category shows as NaN
    mapped = jax.vmap(lambda c: pmx.categorical(c, {2: 1.3, 3: 0.5}))(jnp.array([1, 2, 3]))
    np.testing.assert_allclose(mapped, [1.0, 1.3, 0.5])


def test_effects_are_differentiable_in_thetas():
    g = jax.grad(lambda e: pmx.allometric(35.0, 70.0, e))(0.75)
    assert float(g) == pytest.approx(0.5**0.75 * np.log(0.5))
    g = jax.grad(lambda e: pmx.categorical(1, [1.0, e]))(0.8)
    assert float(g) == 1.0


@pytest.mark.parametrize("module", ["_covariates", "_parameters", "_error", "_model"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"pmx_jax.model.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
