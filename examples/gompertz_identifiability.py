"""Can early tumour-size data tell growth rate from carrying capacity?

Gompertz growth, ``dT/dt = kg T log(Tmax / T)`` with ``T(0) = T0``, i.e.
``T(t) = Tmax exp(log(T0/Tmax) exp(-kg t))``.  While ``kg t << 1`` the curve
is ``T0 exp(kg log(Tmax/T0) t)`` to first order: an exponential whose rate is
the product ``kg log(Tmax/T0)``, so raising ``kg`` and lowering ``Tmax`` give
the same early curve.  The expected Fisher information of a design says so
before any data are collected: measured over the first 5 days (``kg t <=
0.5``) it is nearly singular, with its least identifiable combination made of
``kg`` and ``tmax``; adding measurements up to day 60 (the plateau) lowers its
condition number by orders of magnitude.

The growth law is written as a one-compartment ODE whose initial amount is
``T0`` (no doses), as a user would write any disease model.

    python examples/gompertz_identifiability.py
"""

import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx
from pmx_jax.estimation import fisher_information


class Gompertz(pmx.ODE):
    compartments = ("tumour",)

    def rhs(self, t, amounts, p):
        tumour = amounts[0]
        return jnp.stack([p["kg"] * tumour * jnp.log(p["tmax"] / tumour)])

    def initial_amounts(self, params):
        return jnp.stack([params["t0"]])


class TumourGrowth(pmx.Model):
    """Tumour volume (mm^3) over days, 10% proportional error, IIV on kg."""

    kg: pmx.Theta = pmx.theta(0.1, lower=0.0)  # 1/day
    tmax: pmx.Theta = pmx.theta(2000.0, lower=0.0)  # mm^3
    t0: pmx.Theta = pmx.theta(50.0, lower=0.0)  # mm^3
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega(kg=0.09)
    dynamics = Gompertz()

    def individual(self, eta, cov):
        return dict(kg=self.kg * jnp.exp(eta.kg), tmax=self.tmax, t0=self.t0)

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.tumour, self.prop)


def design(times, n_subjects: int = 1) -> pmx.Dataset:
    """Tumour measurements at ``times`` (days) in each of ``n_subjects``."""
    rows = [
        dict(ID=i + 1, TIME=float(t), AMT=0.0, EVID=0, CMT=1, DV=0.0)
        for i in range(n_subjects)
        for t in times
    ]
    return pmx.read_nonmem(pd.DataFrame(rows))


# Twelve measurements each (the same shapes: one compilation for both designs).
EARLY = np.linspace(0.0, 5.0, 12)  # kg t <= 0.5
FULL = np.concatenate([np.arange(0.0, 6.0), np.arange(10.0, 70.0, 10.0)])  # up to the plateau


def main(n_subjects: int = 20) -> tuple[float, float]:
    """Print the individual and population information of both designs and
    return the condition numbers (early, full) of the individual one."""
    model = TumourGrowth()
    numbers = []
    for label, times in (("early (days 0-5)", EARLY), ("full (days 0-60)", FULL)):
        info = fisher_information(model, design(times), individual=True)
        print(f"== {label}: one tumour, typical parameters ==\n{info}\n")
        numbers.append(info.condition_number)
    population = fisher_information(model, design(EARLY, n_subjects))
    print(f"== early design, {n_subjects} subjects, FO population information ==\n{population}")
    early, full = numbers
    print(f"\ncondition number early / full: {early / full:.3g}")
    return early, full


if __name__ == "__main__":
    main()
