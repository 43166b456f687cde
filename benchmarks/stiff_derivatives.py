"""Stiff ODE derivatives: the structured stage solve against diffrax's dense one.

``stiff=True`` integrates with ``Kvaerno5``.  When a derivative is taken, the
state carries sensitivity columns and the stage matrix grows from ``n x n`` to
``N x N`` (``N = n (1 + k)``; ``n (1 + k)(1 + k2)`` for second derivatives).
pmx_jax solves with it by block forward substitution (``pmx_jax/dynamics/
_stiff.py``); diffrax's default (``solver=diffrax.Kvaerno5()``) materialises it.
Both run the same chord iteration, so the answers agree to rounding.

The case: ``pmx.pk.MinimalPBPK`` (6 compartments, blood pools turning over in
seconds), 100 mg orally, the arterial amount after 24 h and its gradient,
Jacobian (``jax.jacfwd``) and Hessian (``jax.hessian``) with respect to the 15
parameters.  Each is jitted; *compile* is the first call minus the mean of
the next ``--repeats`` calls (*run*).

    python benchmarks/stiff_derivatives.py
    python benchmarks/stiff_derivatives.py --skip-dense   # the fast path only

Results are printed and written to ``benchmarks/results/stiff_derivatives.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine  # noqa: E402

os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PARAMS = dict(
    q_liver=90.0,
    q_kidney=70.0,
    q_rest=200.0,
    v_venous=3.5,
    v_arterial=1.5,
    v_liver=1.8,
    v_kidney=0.3,
    v_rest=60.0,
    kp_liver=2.0,
    kp_kidney=1.5,
    kp_rest=1.2,
    fu=0.3,
    clint=100.0,
    clr=10.0,
    ka=1.5,
)


def arterial_amount(dynamics):
    x0 = jnp.zeros(6).at[0].set(100.0)
    index = dynamics.compartments.index("arterial")
    return lambda p: dynamics.propagate(p, x0, 24.0)[index]


def time_call(function, repeats: int) -> tuple[float, float, object]:
    start = time.perf_counter()
    out = jax.block_until_ready(function(PARAMS))
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(function(PARAMS))
        runs.append(time.perf_counter() - start)
    run = float(np.mean(runs))
    return max(first - run, 0.0), run, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args()

    solvers = {"structured": pmx.pk.MinimalPBPK(stiff=True)}
    if not args.skip_dense:
        solvers["dense"] = pmx.pk.MinimalPBPK(solver=diffrax.Kvaerno5())
    derivatives = {
        "value": lambda f: f,
        "gradient": jax.grad,
        "jacfwd": jax.jacfwd,
        "hessian": jax.hessian,
    }
    rows, outputs = [], {}
    print(f"{'solve':<11} {'derivative':<9} {'compile s':>10} {'run s':>10}")
    for solve, dynamics in solvers.items():
        f = arterial_amount(dynamics)
        for name, transform in derivatives.items():
            compile_s, run_s, out = time_call(jax.jit(transform(f)), args.repeats)
            outputs[(solve, name)] = out
            rows.append(dict(solve=solve, derivative=name, compile_s=compile_s, run_s=run_s))
            print(f"{solve:<11} {name:<9} {compile_s:>10.3f} {run_s:>10.4f}", flush=True)

    if "dense" in solvers:
        for name in derivatives:
            a, b = outputs[("structured", name)], outputs[("dense", name)]
            diff = jax.tree_util.tree_map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)
            scale = jax.tree_util.tree_map(lambda y: float(jnp.max(jnp.abs(y))), b)
            worst = max(jax.tree_util.tree_leaves(diff)) / max(jax.tree_util.tree_leaves(scale))
            print(f"{name}: max |structured - dense| / max |dense| = {worst:.1e}")
            for row in rows:
                if row["derivative"] == name:
                    row["relative_difference"] = worst

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "stiff_derivatives.json"
    path.write_text(json.dumps(dict(machine=machine(), rows=rows), indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
