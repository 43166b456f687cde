"""The persistent compilation cache: a second process running the same job
compiles nothing (counted with ``jax.monitoring``: every backend compilation
request that was not a cache hit), and gives the same objective."""

from __future__ import annotations

import json
import os
import subprocess
import sys

JOB = """
import json, jax
counts = {"requests": 0, "hits": 0}
def duration(name, secs, **kw):
    counts["requests"] += name == "/jax/core/compile/backend_compile_duration"
def event(name, **kw):
    counts["hits"] += name == "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_duration_secs_listener(duration)
jax.monitoring.register_event_listener(event)
import pmx_jax as pmx
result = pmx.ofv(pmx.library.Theophylline(), pmx.datasets.load("theophylline"))
print(json.dumps({"ofv": float(result.ofv), "compiled": counts["requests"] - counts["hits"],
                  "cache": jax.config.jax_compilation_cache_dir}))
"""


def run_job(cache: str) -> dict:
    env = dict(os.environ, PMX_JAX_CACHE_DIR=cache)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", JOB], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_run_compiles_nothing(tmp_path):
    folder = tmp_path / "cache"
    first = run_job(str(folder))
    second = run_job(str(folder))
    assert first["cache"] == str(folder) and first["compiled"] > 5
    assert second["compiled"] == 0
    assert second["ofv"] == first["ofv"]
    assert any(folder.iterdir())


def test_the_cache_can_be_turned_off(tmp_path):
    result = run_job("off")
    assert result["cache"] is None and result["compiled"] > 5
