"""The persistent compilation cache: a second process running the same job
compiles nothing (counted with ``jax.monitoring``: every backend compilation
request that was not a cache hit) and gives the same result; nor does a
process fitting another dataset of the same shape bucket.  Neither traces the
fit's objective again: it reads the stored program (:mod:`pmx_jax._stored`).  Also: importing
pmx_jax loads neither JAX nor the optional layers, and the CPU compiler options
leave a user's own settings alone."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from pmx_jax import _cache

JOB = """
import json, jax
counts = {"requests": 0, "hits": 0}
def duration(name, secs, **kw):
    counts["requests"] += name == "/jax/core/compile/backend_compile_duration"
def event(name, **kw):
    counts["hits"] += name == "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_duration_secs_listener(duration)
jax.monitoring.register_event_listener(event)
import sys
import pmx_jax as pmx
data = pmx.datasets.load("theophylline")
first, last = (int(x) for x in sys.argv[1:3])
result = pmx.fit(pmx.library.Theophylline(), data.subset(data.ids[first:last]), "focei")
from pmx_jax.estimation._engine import _evaluate, _search
# Each stored program of the fit compiled once (the objective first at
# placeholder modes, beside the search: the placeholders must match).
sizes = [p.call._cache_size() for f in (_search, _evaluate) for p in f.programs.values() if p]
print(json.dumps({"ofv": result.ofv, "se": list(result.covariance.se),
                  "compiled": counts["requests"] - counts["hits"],
                  "objective": [_evaluate.exports, _evaluate.hits],
                  "search": [_search.exports, _search.hits], "sizes": sizes,
                  "cache": jax.config.jax_compilation_cache_dir}))
"""


def run_job(cache: str, subjects=(0, 10)) -> dict:
    env = dict(os.environ, PMX_JAX_CACHE_DIR=cache)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", JOB, *map(str, subjects)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_run_compiles_nothing(tmp_path):
    # A fit with its covariance step, in three processes sharing one cache.
    folder = tmp_path / "cache"
    first = run_job(str(folder))
    second = run_job(str(folder))
    assert first["cache"] == str(folder) and first["compiled"] > 5
    assert second["compiled"] == 0
    assert first["objective"] == [1, 0] and second["objective"] == [0, 1]
    assert first["search"] == [1, 0] and second["search"] == [0, 1]
    assert first["sizes"] == [1, 1] and second["sizes"] == [1, 1]
    assert second["ofv"] == first["ofv"] and second["se"] == first["se"]
    assert any((folder / "programs").iterdir())
    # Other subjects, as many: the same bucket, so the same programs.
    other = run_job(str(folder), subjects=(2, 12))
    assert other["compiled"] == 0 and other["ofv"] != first["ofv"]
    assert other["objective"] == [0, 1] and other["search"] == [0, 1]


def test_the_cache_can_be_turned_off(tmp_path):
    result = run_job("off")
    assert result["cache"] is None and result["compiled"] > 5
    assert result["objective"] == [0, 0] and result["search"] == [0, 0]


def test_importing_loads_only_what_is_used():
    code = (
        "import sys, json, pmx_jax as pmx\n"
        "before = 'jax' in sys.modules\n"
        "pmx.fit, pmx.read_nonmem, pmx.library.Theophylline\n"
        "print(json.dumps([before, 'jax' in sys.modules, "
        "[m for m in ('numpyro', 'matplotlib') if m in sys.modules]]))\n"
        "pmx.sample\n"
        "assert 'numpyro' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [False, True, []]


def test_compiler_options_leave_a_users_settings_alone(monkeypatch):
    from pmx_jax import _cache

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert not _cache.faster_cpu_compilation()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=true"
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/nowhere")
    monkeypatch.setenv("PMX_JAX_XLA_FLAGS", "off")
    assert not _cache.faster_cpu_compilation()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/nowhere"
    monkeypatch.delenv("PMX_JAX_XLA_FLAGS")
    added = _cache.faster_cpu_compilation()
    assert added == (_cache._jaxlib_version() >= _cache._XLA_FLAGS_SINCE)
    if added:
        assert os.environ["XLA_FLAGS"] == (
            "--xla_dump_to=/tmp/nowhere --xla_cpu_use_fusion_emitters=false"
        )


def test_cache_reads_are_not_logged_as_errors_on_a_cpu_install(tmp_path):
    # XLA logs every program read back from the cache as an error on a CPU-only
    # install (openxla/xla#44565); pmx_jax limits XLA's C++ log to fatal messages
    # there, unless the user set the level or turned the cache off.
    code = "import os, pmx_jax; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def level(**env):
        done = subprocess.run(
            [sys.executable, "-c", code], env=dict(base, **env),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    accelerator = any(importlib.util.find_spec(name) for name in _cache._ACCELERATOR_PLUGINS)
    assert level(PMX_JAX_CACHE_DIR=str(tmp_path)) == ("None" if accelerator else "3")
    assert level(PMX_JAX_CACHE_DIR=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="1") == "1"
    assert level(PMX_JAX_CACHE_DIR="off") == "None"
