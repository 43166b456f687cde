"""FOCEI fit of the phenobarbital data, with standard errors, EBEs and a report.

The data are 59 neonates with IV doses and sparse sampling; the model is
NONMEM's ``pheno``: clearance and volume proportional to body weight, a larger
volume when the Apgar score is below 5, proportional residual error; fitted by
FOCEI with the covariance step (sandwich, NONMEM's default).

Prints the report, the estimates table, and the EBEs with each neonate's
clearance and volume.

    python examples/phenobarbital_fit.py
    python examples/phenobarbital_fit.py --no-covariance
"""

import argparse

import numpy as np
import pandas as pd

import pmx_jax as pmx


def individual_parameters(result: pmx.estimation.FitResult, data: pmx.Dataset) -> pd.DataFrame:
    """CL (L/h) and V (L) of each neonate at its EBEs, from its weight and Apgar score
    (both constant within a subject in this dataset)."""
    model = result.model
    covariates = data.table.groupby(data.roles["ID"])[["WT", "APGR"]].first()
    ebes = result.ebes.set_index("ID")
    covariates = covariates.loc[ebes.index]
    low_apgar = (covariates["APGR"] < 5).to_numpy()
    weight = covariates["WT"].to_numpy()
    cl = float(model.th_cl) * weight * np.exp(ebes["cl"].to_numpy())
    v = (
        float(model.th_v)
        * weight
        * (1.0 + float(model.th_apgar) * low_apgar)
        * np.exp(ebes["v"].to_numpy())
    )
    apgar = covariates["APGR"].to_numpy()
    return pd.DataFrame({"ID": ebes.index, "WT": weight, "APGR": apgar, "cl": cl, "v": v})


def main(method: str = "focei", covariance: str | None = "sandwich"):
    """Fit, print the report, and return the :class:`FitResult`."""
    data = pmx.datasets.load("phenobarbital")
    print(f"{data.n_subjects} subjects, {data.n_observations} observations\n")
    result = pmx.fit(pmx.library.Phenobarbital(), data, method, covariance=covariance)
    print(result)
    with pd.option_context("display.width", 120, "display.precision", 4):
        print("\nEstimates:")
        print(result.estimates().to_string(index=False))
        print("\nEBEs (etas) and individual parameters (first 10 neonates):")
        table = result.ebes.merge(
            individual_parameters(result, data), on="ID", suffixes=("_eta", "")
        )
        print(table.head(10).to_string(index=False))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="focei", choices=["fo", "foce", "focei", "laplace"])
    parser.add_argument("--no-covariance", action="store_true", help="skip the covariance step")
    args = parser.parse_args()
    main(args.method, None if args.no_covariance else "sandwich")
