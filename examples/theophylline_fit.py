"""FOCEI fit of the theophylline data, with standard errors, EBEs and a report.

The classic data (12 subjects, single oral dose) and model: one compartment,
first-order absorption, log-normal IIV on KA, CL and V, additive error; fitted
by FOCEI, with the covariance step (sandwich, as nlmixr2's default).

Prints the NONMEM-style report (OFV, estimates with standard errors, OMEGA as
variances with CV% and shrinkage), the estimates table and the empirical Bayes
estimates (EBEs) with the individual parameters they imply.

    python examples/theophylline_fit.py               # FOCEI, sandwich SEs
    python examples/theophylline_fit.py --method foce
"""

import argparse

import numpy as np
import pandas as pd

import pmx_jax as pmx


def individual_parameters(result: pmx.estimation.FitResult) -> pd.DataFrame:
    """KA (1/h), CL (L/h) and V (L) of each subject at its EBEs."""
    model = result.model
    ebes = result.ebes
    return pd.DataFrame(
        {
            "ID": ebes["ID"],
            "ka": np.exp(float(model.tka) + ebes["ka"]),
            "cl": np.exp(float(model.tcl) + ebes["cl"]),
            "v": np.exp(float(model.tv) + ebes["v"]),
        }
    )


def main(method: str = "focei", covariance: str | None = "sandwich"):
    """Fit, print the report, and return the :class:`FitResult`."""
    data = pmx.datasets.load("theophylline")
    print(f"{data.n_subjects} subjects, {data.n_observations} observations\n")
    result = pmx.fit(pmx.library.Theophylline(), data, method, covariance=covariance)
    print(result)
    with pd.option_context("display.width", 120, "display.precision", 4):
        print("\nEstimates:")
        print(result.estimates().to_string(index=False))
        print("\nEBEs (etas) and individual parameters:")
        table = result.ebes.merge(individual_parameters(result), on="ID", suffixes=("_eta", ""))
        print(table.to_string(index=False))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="focei", choices=["fo", "foce", "focei", "laplace"])
    parser.add_argument("--no-covariance", action="store_true", help="skip the covariance step")
    args = parser.parse_args()
    main(args.method, None if args.no_covariance else "sandwich")
