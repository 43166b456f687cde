"""Diagnostics of the FOCEI theophylline fit, written as PNG files.

Fits the classic theophylline model (one compartment, first-order absorption,
log-normal IIV on KA, CL and V, additive error) to the bundled data and writes
the full set of goodness-of-fit plots, with time in h and concentrations in mg/L:

* ``gof_panel.png``: DV vs PRED and IPRED, QQ plot of CWRES, CWRES vs TIME and
  PRED, IWRES vs IPRED;
* ``qq_cwres.png``: the QQ plot of CWRES on its own;
* ``individual_fits.png``: observations with IPRED and PRED curves per subject
  (``individual_fits_log.png``: the same on a log concentration axis);
* ``eta_distributions.png``: EBE histograms against N(0, omega), with shrinkage;
* ``eta_vs_covariates.png``: EBEs against body weight;
* ``vpc.png``: visual predictive check (500 simulated replicates of the study:
  observed 5th/50th/95th percentiles against the simulated ones' 95% bands);
* ``qq_npde.png``: QQ plot of the NPDE (same simulations).

    python examples/theophylline_diagnostics.py                   # runs/theophylline_diagnostics/
    python examples/theophylline_diagnostics.py --out-dir my_plots --format svg

(``pmx fit configs/theophylline.toml`` then ``pmx report runs`` makes the same
plots from the command line.)
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only

import pmx_jax as pmx  # noqa: E402
from pmx_jax.diagnostics._plots import individual_fits  # noqa: E402
from pmx_jax.diagnostics._report import write_report  # noqa: E402

UNITS = dict(time="h", conc="mg/L", WT="kg")


def main(
    out_dir: str | Path = "runs/theophylline_diagnostics",
    formats: tuple[str, ...] = ("png",),
    fit: pmx.FitResult | None = None,
) -> list[Path]:
    """Fit (unless ``fit`` is given), write every plot to ``out_dir`` and return
    the files written."""
    if fit is None:
        data = pmx.datasets.load("theophylline")
        fit = pmx.fit(pmx.library.Theophylline(), data, "focei")
        print(fit)
    out_dir = Path(out_dir)
    files = write_report(fit, out_dir, formats=formats, units=UNITS)
    for fmt in formats:
        path = out_dir / f"individual_fits_log.{fmt}"
        individual_fits(fit, units=UNITS, log_y=True, path=path)
        files.append(path)
    print(f"\nwrote {len(files)} files to {out_dir}:")
    for path in files:
        print(f"  {path.name}")
    return files


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/theophylline_diagnostics")
    parser.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg", "pdf"])
    args = parser.parse_args()
    main(args.out_dir, tuple(args.format))
