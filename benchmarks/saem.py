"""SAEM benchmark: SAEM and FOCEI on the same simulated populations.

The design and model are those of ``benchmarks/fit.py`` (one-compartment
oral, 10 samples per subject, log-normal IIV on ka, CL and V, proportional
error; fits start 20-100% off the truth).  Per population size:

- *SAEM*: ``pmx.fit(..., "saem")`` with its defaults (300 exploration + 200
  smoothing iterations, chains so that there are at least 50 in all,
  kernels (2, 2, 2)), split into its parts as the fit reports them: the
  iterations (``saem_s``, the first iteration's compilation counted
  separately as ``compile_s``), Louis' information and the Monte-Carlo score
  at the end (``louis_s``) and the OFV by importance sampling
  (``imp_s``, 1000 draws per subject); ``total_s`` is the whole call.
- *FOCEI*: ``pmx.fit(..., "focei")`` with its covariance step, timed the
  same way in the same process (``focei_s``; its compile time is the first
  fit's extra time over a second one on the same data, ``focei_compile_s``).

Both are reported with their estimates: SAEM's maximum of the exact
likelihood and FOCEI's of its approximation differ by much less than the SEs
on this design.

    python benchmarks/saem.py                   # 1,000 subjects
    python benchmarks/saem.py --sizes 1000 10000

Results are printed as a table and written to ``benchmarks/results/saem.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from fit import initial_model, simulate_population  # noqa: E402

import pmx_jax as pmx  # noqa: E402
from pmx_jax.estimation import _saem  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class _Timer:
    """Wall time of the Louis draws and of the importance sampling inside one
    SAEM call (wrapping the module's functions; the fit itself is unchanged)."""

    def __init__(self) -> None:
        self.louis = 0.0
        self.imp = 0.0

    def __enter__(self):
        self._louis, self._imp = _saem._louis_draws, _saem.importance_ofv

        def louis(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._louis(*args, **kwargs)
            finally:
                self.louis += time.perf_counter() - start

        def imp(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._imp(*args, **kwargs)
            finally:
                self.imp += time.perf_counter() - start

        _saem._louis_draws, _saem.importance_ofv = louis, imp
        return self

    def __exit__(self, *exc):
        _saem._louis_draws, _saem.importance_ofv = self._louis, self._imp


def _named(fit) -> dict:
    table = fit.estimates()
    return dict(zip(table["parameter"], table["estimate"].astype(float), strict=True))


def run(n_subjects: int, seed: int) -> dict:
    data = pmx.read_nonmem(simulate_population(n_subjects, seed))
    row: dict = dict(n_subjects=n_subjects)
    start = time.perf_counter()
    with _Timer() as timer:
        fit = pmx.fit(initial_model(), data, "saem", seed=seed, progress=False)
    total = time.perf_counter() - start
    row.update(
        saem_total_s=total,
        saem_compile_s=fit.compile_seconds,
        saem_louis_s=timer.louis,
        saem_imp_s=timer.imp,
        saem_iterations_s=total - timer.louis - timer.imp,
        saem_status=fit.status.label,
        saem_ofv=fit.ofv,
        saem_ofv_se=fit.stochastic.ofv_se,
        saem_estimates=_named(fit),
    )
    start = time.perf_counter()
    focei = pmx.fit(initial_model(), data, "focei", progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    focei = pmx.fit(initial_model(), data, "focei", progress=False)
    second = time.perf_counter() - start
    imp_at_focei = pmx.importance_ofv(focei, seed=seed)
    row.update(
        focei_s=second,
        focei_compile_s=max(first - second, 0.0),
        focei_status=focei.status.label,
        focei_ofv=focei.ofv,
        focei_iterations=focei.iterations,
        imp_at_focei=imp_at_focei.ofv,
        imp_at_focei_se=imp_at_focei.se,
        focei_estimates=_named(focei),
    )
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rows = []
    header = (
        f"{'subjects':>9} {'SAEM total':>11} {'compile':>8} {'iter':>7} {'Louis':>7} "
        f"{'IMP':>7} {'FOCEI':>7} {'compile':>8}  {'IMP OFV at SAEM':>20}  {'IMP OFV at FOCEI':>20}"
    )
    print(header)
    for n in args.sizes:
        row = run(n, args.seed)
        rows.append(row)
        print(
            f"{n:>9} {row['saem_total_s']:>10.1f}s {row['saem_compile_s']:>7.1f}s "
            f"{row['saem_iterations_s']:>6.1f}s {row['saem_louis_s']:>6.1f}s "
            f"{row['saem_imp_s']:>6.1f}s {row['focei_s']:>6.1f}s {row['focei_compile_s']:>7.1f}s"
            f"  {row['saem_ofv']:>12.2f} +- {row['saem_ofv_se']:.2f}"
            f"  {row['imp_at_focei']:>12.2f} +- {row['imp_at_focei_se']:.2f}"
        )
        RESULTS.mkdir(exist_ok=True)
        out = dict(machine=machine(), rows=rows)
        (RESULTS / "saem.json").write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
