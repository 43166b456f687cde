"""Bayesian estimation and therapeutic drug monitoring with the theophylline model.

1. Population: the FOCEI fit of the bundled theophylline data, then NUTS on
   the same model (chains start at the fit with a little jitter), and the
   posterior next to the maximum-likelihood estimates.
2. One new patient: two measured levels after a first 320 mg dose.  The
   population model is the prior; the MAP (Bayesian) estimates of the
   patient's parameters, the forecast of a 320 mg q24h regimen with a 90%
   credible band, and the dose that brings the predicted trough at the end of
   the week to 3 mg/L (rounded to 25 mg), with the probability that the trough
   reaches it.

    python examples/bayesian_tdm.py                 # 4 chains x (500 + 1000)
    python examples/bayesian_tdm.py --quick         # 2 chains x (200 + 300)
"""

import argparse

import numpy as np
import pandas as pd

import pmx_jax as pmx
from pmx_jax.bayes import Target


def population(n_chains=4, n_warmup=500, n_samples=1000, seed=0):
    """FOCEI fit and NUTS posterior of the theophylline model."""
    data = pmx.datasets.load("theophylline")
    model = pmx.library.Theophylline()
    fit = pmx.fit(model, data, "focei", progress=False)
    posterior = pmx.sample(
        model,
        data,
        init=fit,
        n_chains=n_chains,
        n_warmup=n_warmup,
        n_samples=n_samples,
        seed=seed,
        progress=False,
    )
    print(posterior)
    table = fit.estimates().set_index("parameter")[["estimate", "se"]]
    table = table.join(posterior.summary()[["mean", "sd", "q5", "q95", "rhat"]])
    with pd.option_context("display.width", 120, "display.precision", 4):
        print("\nFOCEI estimate (SE) next to the posterior:\n", table)
    return fit, posterior


def new_patient() -> pmx.Dataset:
    """A patient of 70 kg with levels at 2 h and 10 h after a first 320 mg dose."""
    table = pd.DataFrame(
        dict(
            ID=101,
            TIME=[0.0, 2.0, 10.0],
            AMT=[320.0, 0.0, 0.0],
            DV=[0.0, 8.9, 7.6],
            EVID=[1, 0, 0],
            MDV=[1, 0, 0],
            CMT=[1, 2, 2],
        )
    )
    return pmx.read_nonmem(table)


def monitoring(model, target_trough=3.0, uncertainty="laplace"):
    """MAP estimates, forecast and dose recommendation for :func:`new_patient`."""
    patient = new_patient()
    forecast = pmx.bayes.forecast(model, patient, uncertainty=uncertainty)
    print("\nPatient MAP etas:", forecast.etas.round(3).to_dict())
    print("Individual parameters:", forecast.individual_parameters().round(3).to_dict())
    regimen = pmx.Regimen.oral(320.0, every=24.0, n=7, start=24.0)  # days 2-8
    times = np.arange(24.0, 192.1, 12.0)
    profile = forecast.predict(times, regimen)
    with pd.option_context("display.precision", 3):
        print("\nForecast of 320 mg q24h (90% credible band):\n", profile.to_string(index=False))
    target = Target.trough(target_trough, at=192.0)  # 24 h after the last dose
    recommendation = forecast.recommend_dose(regimen, target, round_to=25.0)
    lo, hi = recommendation.interval
    print(
        f"\nDose for a trough of {target_trough} mg/L at 192 h: {recommendation.amount:g} mg "
        f"q24h (exact {recommendation.unrounded:.1f} mg); predicted trough "
        f"{recommendation.achieved:.2f} mg/L (90% CrI {lo:.2f}-{hi:.2f}), "
        f"P(trough >= target) = {recommendation.attainment:.2f}"
    )
    return forecast, recommendation


def main(quick=False, population_nuts=True):
    if population_nuts:
        settings = dict(n_chains=2, n_warmup=200, n_samples=300) if quick else {}
        fit, posterior = population(**settings)
        model = fit.model
    else:
        fit = pmx.fit(
            pmx.library.Theophylline(),
            pmx.datasets.load("theophylline"),
            "focei",
            progress=False,
            covariance=None,
        )
        model, posterior = fit.model, None
    forecast, recommendation = monitoring(model)
    return dict(fit=fit, posterior=posterior, forecast=forecast, recommendation=recommendation)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short chains")
    parser.add_argument("--no-population", action="store_true", help="skip population NUTS")
    args = parser.parse_args()
    main(quick=args.quick, population_nuts=not args.no_population)
