"""The two dynamics families give the same predictions for the same linear model.

One dataset exercises every event type: bolus, zero-order infusion, modelled
rate (RATE=-1) and duration (RATE=-2), lag time and bioavailability, ADDL/II,
SS=1 and SS=2 (bolus and infusion, including an infusion longer than the
interval), EVID 3 reset and EVID 4 reset-and-dose.  The ODE solver runs at
rtol 1e-10 here, so 1e-6 relative agreement (the design target) leaves margin.
"""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax import pk

PARAMS = dict(ka=1.2, cl=2.0, v=15.0, q=3.0, vp=30.0, q2=0.7, vp2=60.0)


def _events_table(dose_cmt: int, obs_cmt: int) -> pd.DataFrame:
    d, o = dose_cmt, obs_cmt
    rows = [
        # ID 1: bolus with ADDL, a lagged bolus, an infusion, then SS=2 on top.
        (1, 0.0, 100, 1, d, 0, 12, 2, 0),
        (1, 30.0, 50, 1, d, 20, 0, 0, 0),
        (1, 40.0, 80, 1, d, 0, 12, 0, 2),
        # ID 2: SS=1 infusion longer than the interval, modelled rate and duration.
        (2, 0.0, 200, 1, d, 10, 12, 1, 1),
        (2, 24.0, 60, 1, d, -1, 0, 0, 0),
        (2, 36.0, 60, 1, d, -2, 0, 0, 0),
        # ID 3: steady-state bolus, reset, reset-and-dose.
        (3, 0.0, 100, 1, d, 0, 8, 0, 1),
        (3, 20.0, 0, 3, d, 0, 0, 0, 0),
        (3, 22.0, 70, 4, d, 0, 0, 0, 0),
    ]
    doses = pd.DataFrame(
        rows, columns=["ID", "TIME", "AMT", "EVID", "CMT", "RATE", "II", "ADDL", "SS"]
    )
    samples = []
    for subject in (1, 2, 3):
        for t in [
            0.0,
            0.5,
            1.5,
            3.0,
            7.0,
            11.0,
            13.0,
            20.0,
            21.0,
            25.0,
            31.0,
            37.0,
            41.5,
            48.0,
            60.0,
        ]:
            samples.append((subject, t, 0, 0, o, 0, 0, 0, 0))
    obs = pd.DataFrame(samples, columns=doses.columns)
    table = pd.concat([doses, obs]).sort_values(["ID", "TIME"], kind="stable")
    table["DV"] = np.where(table["EVID"] == 0, 1.0, np.nan)
    return table.reset_index(drop=True)


def _model(dynamics, dose_cmt):
    class Linear(pmx.Model):
        sd: pmx.Theta = pmx.theta(1.0, lower=0.0)

        def individual(self, eta, cov):
            p = {k: jnp.asarray(v) for k, v in PARAMS.items()}
            p[f"F{dose_cmt}"] = jnp.asarray(0.8)
            p[f"ALAG{dose_cmt}"] = jnp.asarray(0.75)
            p[f"R{dose_cmt}"] = jnp.asarray(25.0)
            p[f"D{dose_cmt}"] = jnp.asarray(3.0)
            return p

        def observe(self, amounts, p):
            return pmx.Additive(amounts.central / p["v"], self.sd)

    Linear.dynamics = dynamics
    return Linear()


# Compiling an ODE model through steady state takes ~15 s on 2 cores: the default
# run checks the one-compartment oral model, the others run with -m slow (IV
# closed forms against textbook formulas are in test_events.py).
_slow = pytest.mark.slow
PAIRS = [
    pytest.param(pk.OneCompartment(), pk.OneCompartmentODE, 1, marks=_slow, id="1cmt-iv"),
    pytest.param(pk.OneCompartmentOral(), pk.OneCompartmentOralODE, 1, id="1cmt-oral"),
    pytest.param(pk.TwoCompartment(), pk.TwoCompartmentODE, 1, marks=_slow, id="2cmt-iv"),
    pytest.param(pk.TwoCompartmentOral(), pk.TwoCompartmentOralODE, 1, marks=_slow, id="2cmt-oral"),
    pytest.param(pk.ThreeCompartment(), pk.ThreeCompartmentODE, 1, marks=_slow, id="3cmt-iv"),
    pytest.param(
        pk.ThreeCompartmentOral(), pk.ThreeCompartmentOralODE, 1, marks=_slow, id="3cmt-oral"
    ),
]


@pytest.mark.parametrize("closed, ode_class, dose_cmt", PAIRS)
def test_closed_form_and_ode_agree_on_every_event_type(closed, ode_class, dose_cmt):
    ode = ode_class(rtol=1e-10, atol=1e-12)
    central = closed.compartments.index("central") + 1
    table = _events_table(dose_cmt, central)
    data = pmx.read_nonmem(table)
    exact = pmx.predict(_model(closed, dose_cmt), data)
    numeric = pmx.predict(_model(ode, dose_cmt), data)
    a, b = exact["IPRED"].to_numpy(), numeric["IPRED"].to_numpy()
    assert np.all(np.isfinite(a)) and a.max() > 1.0
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9 * a.max())
