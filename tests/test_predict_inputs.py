"""Model-and-data checks at prediction time, and occasion (IOV) effects."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.data import MissingCovariateError, UnknownCompartmentError


class WeightModel(pmx.Model):
    tcl: pmx.Theta = pmx.theta(0.0)
    sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.1)
    iov: pmx.Omega = pmx.omega(cl_occ=0.05, occasion=True)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl + eta.cl_occ) * cov.WT / 70.0, v=jnp.asarray(10.0))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def _table(**extra):
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 1, 1, 1],
            "TIME": [0.0, 2.0, 4.0, 24.0, 26.0, 28.0],
            "AMT": [100.0, 0, 0, 100.0, 0, 0],
            "EVID": [1, 0, 0, 1, 0, 0],
            "DV": [np.nan, 1.0, 1.0, np.nan, 1.0, 1.0],
            "OCC": [1, 1, 1, 2, 2, 2],
        }
    )
    return table.assign(**extra)


def test_missing_covariate_names_it():
    with pytest.raises(MissingCovariateError, match="WT"):
        pmx.predict(WeightModel(), pmx.read_nonmem(_table()))


def test_compartment_outside_the_model_names_the_row():
    table = _table(WT=70.0)
    table.loc[3, "CMT"] = 3
    table["CMT"] = table["CMT"].fillna(1)
    with pytest.raises(UnknownCompartmentError, match="row 4"):
        pmx.predict(WeightModel(), pmx.read_nonmem(table))


def test_occasion_etas_act_only_on_their_occasion():
    """IOV eta on occasion 2 raises clearance only from the second dose on:
    the first occasion's predictions are untouched."""
    data = pmx.read_nonmem(_table(WT=70.0))
    model = WeightModel()
    base = pmx.predict(model, data)
    iov = np.zeros((1, 2, 1))
    iov[0, 1, 0] = 0.5
    shifted = pmx.predict(model, data, iov_etas=iov)
    first, second = base.TIME < 24, base.TIME > 24
    np.testing.assert_allclose(shifted.IPRED[first], base.IPRED[first], rtol=1e-14)
    assert np.all(shifted.IPRED[second].to_numpy() < base.IPRED[second].to_numpy())
    # PRED ignores all etas
    np.testing.assert_allclose(shifted.PRED, base.PRED, rtol=1e-14)
