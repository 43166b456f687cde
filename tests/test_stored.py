"""Stored programs (:mod:`pmx_jax._stored`): a program exported by one
``Stored`` is read back by a fresh one (as in a new process) and gives the
traced function's result; a changed source file, a static value without a
stable text, a class that is not pmx_jax's (a user's model, a class made at
run time), a damaged file or a trace all fall back to tracing; the folder is
trimmed oldest first.  The test classes below count as pmx_jax's where the
``store`` fixture says so."""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pmx_jax import _stored


class Scaled(eqx.Module):
    weights: jax.Array
    power: int = eqx.field(static=True)

    def __call__(self, x):
        return jnp.sum(self.weights * x**self.power)


def objective(module: Scaled, x, shift: float):
    value = module(x) + shift
    return value, jnp.linalg.cholesky(jnp.outer(x, x) + jnp.eye(x.size))


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(_stored, "folder", lambda: tmp_path)
    monkeypatch.setattr(_stored, "_hashed_files", {})
    monkeypatch.setattr(_stored, "TRUSTED", _stored.TRUSTED | {__name__.split(".")[0]})
    return tmp_path


def fresh(fn=objective, name="test-objective"):
    """A new wrapper, as a new process would have (nothing in memory)."""
    return _stored.Stored(fn, name)


def test_a_fresh_wrapper_reads_the_stored_program(store):
    module, x = Scaled(jnp.arange(3.0), 2), jnp.array([0.5, -1.0, 2.0])
    expected = eqx.filter_jit(objective)(module, x, 1.5)
    first = fresh()
    value, chol = first(module, x, 1.5)
    assert (first.exports, first.hits) == (1, 0)
    assert len(list(store.glob("*.jaxexport"))) == 1
    second = fresh()
    again = second(module, x, 1.5)
    assert (second.exports, second.hits) == (1 - 1, 1)
    for got in ((value, chol), again):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    # New values of the arrays: the same program; a new static value: another.
    second(Scaled(jnp.ones(3), 2), 2.0 * x, 1.5)
    assert len(second.programs) == 1
    value3, _ = second(Scaled(jnp.ones(3), 3), x, 1.5)
    assert len(second.programs) == 2 and second.exports == 1
    np.testing.assert_allclose(value3, np.sum(np.asarray(x) ** 3) + 1.5)
    other_shift = second(module, x, 0.5)[0]
    np.testing.assert_allclose(other_shift, expected[0] - 1.0)
    assert len(list(store.glob("*.jaxexport"))) == 3


def test_editing_a_model_file_makes_a_new_program(store, tmp_path, monkeypatch):
    source = tmp_path / "user_model_for_stored.py"
    source.write_text("def power():\n    return 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    user = importlib.import_module("user_model_for_stored")
    before = _stored._code_fingerprint()
    source.write_text("def power():\n    return 3\n")
    monkeypatch.setattr(_stored, "_hashed_files", {})
    assert _stored._code_fingerprint() != before
    del sys.modules[user.__name__]


def test_what_cannot_be_keyed_is_traced(store, monkeypatch):
    x = jnp.array([1.0, 2.0])

    def apply(fn, x):
        return fn(x)

    wrapper = fresh(apply, "test-apply")
    np.testing.assert_allclose(wrapper(lambda v: jnp.sum(v**2), x), 5.0)  # printed "at 0x..."
    assert wrapper.exports == 0 and not list(store.iterdir())

    # A class from an interactive session: its module has no source file.
    interactive = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", interactive)
    Local = type("Local", (Scaled,), {"__module__": "__main__"})
    wrapper = fresh()
    value, _ = wrapper(Local(jnp.ones(2), 1), x, 0.0)
    np.testing.assert_allclose(value, 3.0)
    assert wrapper.exports == 0 and not list(store.iterdir())


class Factored(eqx.Module):
    weights: jax.Array
    factor: ClassVar[float] = 1.0

    def __call__(self, x):
        return self.factor * jnp.sum(self.weights * x)


def made(factor) -> type:
    """A class made at run time (as a model read from a control stream): the
    same name every time, its behaviour in a class-level value."""
    return type(Factored)("Made", (Factored,), {"__module__": __name__, "factor": factor})


def test_classes_made_at_run_time_or_by_a_user_are_traced(store, monkeypatch):
    # A class made by type(...) (as a model read from a control stream) keeps
    # its behaviour in class-level values that no source file shows.
    x = jnp.array([1.0, 2.0])
    wrapper = fresh()
    values = [wrapper(made(f)(jnp.ones(2)), x, 0.0)[0] for f in (2.0, 3.0)]
    np.testing.assert_allclose(values, [6.0, 9.0])
    assert wrapper.exports == 0 and not list(store.iterdir())
    # A user's class (not pmx_jax's): its class-level values, closures or
    # module globals may change what it computes.
    monkeypatch.setattr(_stored, "TRUSTED", _stored.TRUSTED - {__name__.split(".")[0]})
    user = fresh()
    np.testing.assert_allclose(user(Scaled(jnp.ones(2), 2), x, 0.0)[0], 5.0)
    assert user.exports == 0 and not list(store.iterdir())


def test_under_a_trace_the_function_is_traced(store):
    module = Scaled(jnp.arange(3.0), 2)
    wrapper = fresh()
    grad = jax.grad(lambda x: wrapper(module, x, 0.0)[0])(jnp.ones(3))
    np.testing.assert_allclose(grad, 2.0 * np.arange(3.0))
    assert wrapper.exports == 0


def test_a_damaged_file_is_exported_again(store):
    module, x = Scaled(jnp.arange(3.0), 2), jnp.ones(3)
    fresh()(module, x, 0.0)
    (path,) = store.glob("*.jaxexport")
    path.write_bytes(b"not a program")
    wrapper = fresh()
    np.testing.assert_allclose(wrapper(module, x, 0.0)[0], 3.0)
    assert (wrapper.exports, wrapper.hits) == (1, 0)


def test_turned_off_by_the_environment(tmp_path, monkeypatch):
    given = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    try:  # nothing is compiled before the setting is restored
        assert _stored.folder() == tmp_path / "programs"
        monkeypatch.setenv(_stored.ENVIRONMENT_VARIABLE, "off")
        assert _stored.folder() is None
    finally:
        jax.config.update("jax_compilation_cache_dir", given)


def test_the_folder_is_trimmed_least_recently_used_first(tmp_path):
    for k, name in enumerate(("old", "middle", "new")):
        path = tmp_path / f"{name}{_stored.SUFFIX}"
        path.write_bytes(b"x" * 100)
        path.with_suffix(".structure").write_bytes(b"y" * 10)
        os.utime(path, (1000 + k, 1000 + k))
    _stored._trim(tmp_path, limit=230)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["middle.jaxexport", "middle.structure", "new.jaxexport", "new.structure"]
