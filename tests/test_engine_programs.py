"""The fit's evaluation as two programs (:mod:`pmx_jax.estimation._engine`):
every subject's EBE search (:func:`population_modes`), then the OFV and its
gradient at the modes (:func:`population_ofv_at`).  Together they give the
value and the total derivative of the one-program :func:`population_ofv`
(which ``pmx.ofv`` runs; that a fit's OFV is ``pmx.ofv``'s, global
search included, is checked with every fit); the first evaluation compiles
each program once, one in a thread while the other traces (for FOCEI the
search in the thread), and a later engine on the same shapes (the covariance
step's) compiles nothing.  The stored programs' path (a persistent cache) is
checked in ``tests/test_compilation_cache.py``."""

from __future__ import annotations

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pmx_jax as pmx
from pmx_jax.estimation import _engine
from pmx_jax.likelihood import make_problem, population_ofv
from pmx_jax.likelihood._objective import population_modes, population_ofv_at

OPTIONS = (jnp.asarray(100, jnp.int32), jnp.asarray(1e-12))


@pytest.fixture(scope="module")
def theophylline():
    return pmx.library.Theophylline(), pmx.datasets.load("theophylline")


@pytest.mark.parametrize(
    "method",
    ["focei", "foce", *(pytest.param(m, marks=pytest.mark.slow) for m in ("laplace", "fo"))],
)
def test_search_then_objective_equals_the_one_program(theophylline, method):
    model, data = theophylline
    # Two chunks of 7 subjects (two padded): the chunked layout, laid out as
    # the fit lays it out.
    problem = make_problem(model, data, method, chunk_size=7).program()
    # A start off zero, so that each search compares it with b = 0 first.
    offset = np.random.default_rng(0).normal(0.0, 0.1, problem.real.shape + (problem.layout.size,))
    start = jnp.asarray(offset)

    @eqx.filter_jit
    @eqx.filter_value_and_grad(has_aux=True)
    def combined(model):
        result = population_ofv(model, problem, start, *OPTIONS)
        return result.ofv, result

    @eqx.filter_jit
    @eqx.filter_value_and_grad(has_aux=True)
    def split(model):
        modes = population_modes(model, problem, start, *OPTIONS)
        result = population_ofv_at(model, problem, modes)
        return result.ofv, result

    (value, result), grad = combined(model)
    (value2, result2), grad2 = split(model)
    assert np.isfinite(value) and value2 == pytest.approx(float(value), rel=1e-13)
    for name in ("per_subject", "ebes", "status", "n_steps", "ebe_objective", "n_vanishing"):
        np.testing.assert_allclose(
            getattr(result2, name), getattr(result, name), rtol=1e-12, atol=1e-12, err_msg=name
        )
    leaves = jax.tree.leaves(eqx.filter(grad, eqx.is_inexact_array))
    leaves2 = jax.tree.leaves(eqx.filter(grad2, eqx.is_inexact_array))
    assert len(leaves) == len(leaves2) > 0
    assert any(np.any(np.asarray(g) != 0) for g in leaves)
    for g, g2 in zip(leaves, leaves2, strict=True):
        np.testing.assert_allclose(g2, g, rtol=1e-10, atol=1e-10)


class _Compilations(logging.Handler):
    """The XLA compilations JAX logs (``jax_log_compiles``), with the thread
    that ran each."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Finished XLA compilation of "):
            name = message.removeprefix("Finished XLA compilation of ").split(" in ")[0]
            self.seen.append((name, record.threadName))


def test_the_first_evaluation_compiles_each_program_once_side_by_side(theophylline):
    model, data = theophylline
    # Chunks of 7: shapes no other test compiles.
    problem = make_problem(model, data, "focei", chunk_size=7)
    handler = _Compilations()
    logger = logging.getLogger("jax")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            engine = _engine.Engine(model, problem, 100, 1e-12)
            first = engine.at(engine.y0, engine.zeros())
            objective = [s for s in handler.seen if s[0] in ("jit(_search)", "jit(_evaluate)")]
            # Another engine on the same shapes, as the covariance step makes.
            handler.seen.clear()
            other = _engine.Engine(model, problem, 100, 1e-12)
            again = other.at(other.y0, other.zeros())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert sorted(objective) == [
        ("jit(_evaluate)", "MainThread"),
        ("jit(_search)", "pmx_jax-compile"),
    ]
    assert not [s for s in handler.seen if s[0] in ("jit(_search)", "jit(_evaluate)")]
    assert again.ofv == first.ofv and np.isfinite(first.ofv)
    np.testing.assert_array_equal(again.grad, first.grad)
