"""Writing an ODE model: one compartment with Michaelis-Menten elimination.

The right-hand side is a method of a ``pmx.ODE`` subclass; the same NONMEM
event handling as the closed forms applies (here: a loading infusion followed
by oral maintenance doses).  At low concentrations (C << KM) the model must
behave like linear elimination with CL = VM/KM, which this script checks
against the closed-form one-compartment model.

    python examples/custom_ode_model.py
"""

import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx


class MichaelisMenten(pmx.ODE):
    compartments = ("depot", "central")

    def rhs(self, t, amounts, p):
        depot, central = amounts[0], amounts[1]
        conc = central / p["v"]
        elimination = p["vm"] * conc / (p["km"] + conc)
        return jnp.stack([-p["ka"] * depot, p["ka"] * depot - elimination])


class PhenytoinLike(pmx.Model):
    lvm: pmx.Theta = pmx.theta(np.log(20.0))  # mg/h
    lkm: pmx.Theta = pmx.theta(np.log(4.0))  # mg/L
    lv: pmx.Theta = pmx.theta(np.log(50.0))  # L
    lka: pmx.Theta = pmx.theta(np.log(1.0))  # 1/h
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    dynamics = MichaelisMenten()

    def individual(self, eta, cov):
        return dict(
            vm=jnp.exp(self.lvm), km=jnp.exp(self.lkm), v=jnp.exp(self.lv), ka=jnp.exp(self.lka)
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


class LinearEquivalent(pmx.Model):
    """Closed form with CL = VM/KM: the low-concentration limit."""

    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(cl=jnp.asarray(20.0 / 4.0), v=jnp.asarray(50.0), ka=jnp.asarray(1.0))

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


def design(amount: float) -> pd.DataFrame:
    rows = [
        dict(ID=1, TIME=0.0, AMT=amount, EVID=1, CMT=2, RATE=amount / 2.0, II=0, ADDL=0),
        dict(ID=1, TIME=12.0, AMT=amount / 2, EVID=1, CMT=1, RATE=0.0, II=12, ADDL=5),
    ]
    rows += [
        dict(ID=1, TIME=t, AMT=0.0, EVID=0, CMT=2, RATE=0.0, II=0, ADDL=0)
        for t in np.arange(1.0, 96.0, 4.0)
    ]
    table = pd.DataFrame(rows).sort_values(["TIME", "EVID"], ascending=[True, False])
    table["DV"] = 0.0
    return table


def main() -> float:
    high = pmx.predict(PhenytoinLike(), pmx.read_nonmem(design(600.0)))
    print("Michaelis-Menten, 600 mg loading infusion then 300 mg every 12 h:")
    print(high[high.EVID == 0][["TIME", "IPRED"]].head(8).to_string(index=False))
    tiny = pmx.read_nonmem(design(0.5))
    mm = pmx.predict(PhenytoinLike(), tiny)
    linear = pmx.predict(LinearEquivalent(), tiny)
    obs = mm.EVID == 0
    deviation = float(np.max(np.abs(mm.IPRED[obs] / linear.IPRED[obs] - 1)))
    print(f"\nat 0.5 mg doses (C << KM) the MM model is within {deviation:.2%} of linear CL=VM/KM")
    return deviation


if __name__ == "__main__":
    main()
