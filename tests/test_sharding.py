"""Sharding the subject axis over 4 emulated CPU devices gives the single-device
results (the flag must be set before JAX starts, hence a subprocess)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import pmx_jax as pmx
    from pmx_jax.library import Theophylline
    data = pmx.datasets.load("theophylline")
    result = pmx.simulate(Theophylline(), data, key=jax.random.PRNGKey(7), n_subjects=30,
                          chunk_size=int(sys.argv[1]))
    print(json.dumps({"devices": jax.device_count(), "dv": result.dv.tolist(),
                      "etas": result.etas.tolist()}))
    """
)


def _run(devices: int, chunk: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(chunk)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_devices_reproduce_one_device():
    one = _run(1, 16)
    four = _run(4, 12)
    assert one["devices"] == 1 and four["devices"] == 4
    # Same key, same subject indices: identical draws regardless of devices/chunks.
    np.testing.assert_allclose(four["etas"], one["etas"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(four["dv"], one["dv"], rtol=1e-10, atol=1e-10)
