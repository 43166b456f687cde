"""Memory of one FOCEI objective + gradient evaluation as the population grows.

Each size runs in a fresh subprocess (peak resident memory is per process): a
one-compartment oral population (1 dose, 10 samples, the design of ``fit.py``)
is generated as a NONMEM table, laid out with ``chunk_size`` subjects per chunk,
and the OFV and its gradient with respect to the unconstrained parameters are
evaluated once (EBEs from zero) and once more (EBEs warm).  Reported: wall
times, the peak RSS of the process, the RSS once the data are read and laid
out (the dataset's tables and arrays necessarily grow with the number of
subjects), their difference (what the evaluation itself needs: compilation
and the chunk's intermediates, which should not grow once the population has
more than one chunk), and the size of the batched input arrays.

    python benchmarks/fit_memory.py                       # 10^4, 10^5 subjects, chunks of 10^4
    python benchmarks/fit_memory.py --sizes 10000 100000 1000000 --chunk-size 20000

Results: a table and ``benchmarks/results/fit_memory.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "fit_memory.json"
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
import jax, jax.numpy as jnp, numpy as np, pandas as pd
jax.config.update("jax_enable_x64", True)
os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")  # compile times are measured cold
import pmx_jax as pmx
from jax.flatten_util import ravel_pytree
from pmx_jax.likelihood import make_problem, population_ofv

n, chunk = int(sys.argv[1]), int(sys.argv[2])
times = np.array([0.25, 0.5, 1, 2, 3.5, 5, 7, 9, 12, 24])
rng = np.random.default_rng(0)
ids = np.repeat(np.arange(1, n + 1), 11)
time_ = np.tile(np.concatenate([[0.0], times]), n)
evid = np.tile(np.r_[1, np.zeros(10, int)], n)
typical = ((1.5, 0.5), (2.7, 0.3), (32, 0.2))
ka, cl, v = (np.exp(np.log(m) + rng.normal(0, s, n)) for m, s in typical)
k = cl / v
conc = (320 * ka[:, None] / (v[:, None] * (ka[:, None] - k[:, None]))
        * (np.exp(-k[:, None] * times) - np.exp(-ka[:, None] * times)))
dv = conc * (1 + 0.15 * rng.normal(size=conc.shape))
table = pd.DataFrame(dict(ID=ids, TIME=time_, EVID=evid, AMT=np.where(evid == 1, 320.0, 0.0),
                          CMT=np.where(evid == 1, 1, 2),
                          DV=np.column_stack([np.zeros(n), dv]).ravel()))
data = pmx.read_nonmem(table)


class Oral(pmx.Model):
    tka: pmx.Theta = pmx.theta(0.4)
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.4)
    prop: pmx.Theta = pmx.theta(0.2, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.2, cl=0.1, v=0.05)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(ka=jnp.exp(self.tka + eta.ka), cl=jnp.exp(self.tcl + eta.cl),
                    v=jnp.exp(self.tv + eta.v))

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


def rss_mb():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024


model = Oral()
problem = make_problem(model, data, "focei", chunk_size=chunk)
setup_mb = rss_mb()  # the dataset (pandas tables and batched arrays) is in memory
input_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(problem.prepared))
y0, unravel = ravel_pytree(model.to_unconstrained())
options = (jnp.asarray(100, jnp.int32), jnp.asarray(1e-12))


@jax.jit
def value_and_grad(y, ebes):
    def f(y):
        r = population_ofv(model.from_unconstrained(unravel(y)), problem, ebes, *options)
        return r.ofv, r.ebes
    return jax.value_and_grad(f, has_aux=True)(y)


ebes = problem.place(jnp.zeros((n, 3)))
start = time.perf_counter()
(ofv, ebes), grad = value_and_grad(y0, ebes)
jax.block_until_ready(grad)
first = time.perf_counter() - start
start = time.perf_counter()
(ofv, ebes), grad = value_and_grad(y0, ebes)
jax.block_until_ready(grad)
second = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(n_subjects=n, chunk_size=problem.chunk, n_chunks=problem.n_chunks,
                      first_s=first, warm_s=second, ofv=float(ofv),
                      peak_rss_mb=peak / 2**20, setup_rss_mb=setup_mb,
                      evaluation_mb=peak / 2**20 - setup_mb, input_mb=input_bytes / 2**20)))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=10_000)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    print(
        f"{'subjects':>10} {'chunks':>7} {'first':>9} {'warm':>9} {'peak RSS':>10} "
        f"{'after setup':>12} {'evaluation':>11} {'inputs':>9}"
    )
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(args.chunk_size)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"size {n} failed")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{n:>10,} {row['n_chunks']:>7} {row['first_s']:>8.1f}s {row['warm_s']:>8.1f}s "
            f"{row['peak_rss_mb']:>8.0f}MB {row['setup_rss_mb']:>10.0f}MB "
            f"{row['evaluation_mb']:>9.0f}MB {row['input_mb']:>7.0f}MB"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            dict(
                benchmark="FOCEI objective + gradient memory vs number of subjects",
                machine=dict(
                    platform=platform.platform(),
                    cpu_count=os.cpu_count(),
                    load_average=os.getloadavg(),
                    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                ),
                results=rows,
            ),
            indent=2,
        )
    )
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
