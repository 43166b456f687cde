"""The log-normal (Exponential) residual error under every estimation method.

NONMEM's transform-both-sides convention: ``log y = log f + eps``, densities of
``log y`` without the Jacobian.  So the OFV of an Exponential model on DV must
equal, to rounding, the OFV of the same model with an additive error on the
log-transformed data (``log DV`` against ``log f``), an independent route
through the kernel.  Dose records where nothing has been absorbed yet
(prediction 0, log -inf) used to make FO/FOCE/FOCEI infinite: the data below
have them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx


class OralLogNormal(pmx.Model):
    tka: pmx.Theta = pmx.theta(0.2)
    tcl: pmx.Theta = pmx.theta(1.3)
    tv: pmx.Theta = pmx.theta(3.6)
    sd: pmx.Theta = pmx.theta(0.2, lower=0.0)
    iiv: pmx.Omega = pmx.omega_block(("cl", "v"), [0.1, 0.03, 0.08])
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(ka=jnp.exp(self.tka), cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv + eta.v))

    def observe(self, amounts, p):
        return pmx.Exponential(amounts.central / p["v"], self.sd)


class OralAdditiveOnLog(OralLogNormal):
    def observe(self, amounts, p):
        # log of the concentration, guarded where it is 0 (dose records at t = 0)
        conc = amounts.central / p["v"]
        return pmx.Additive(jnp.log(jnp.where(conc > 0, conc, 1.0)), self.sd)


def _tables():
    rng = np.random.default_rng(4)
    rows = []
    for i in range(1, 5):
        for day in range(3):
            rows.append(dict(ID=i, TIME=24.0 * day, AMT=100.0, EVID=1, MDV=1, DV=0.0))
            for dt in (1.0, 3.0, 8.0, 20.0):
                rows.append(
                    dict(
                        ID=i,
                        TIME=24.0 * day + dt,
                        AMT=0.0,
                        EVID=0,
                        MDV=0,
                        DV=float(np.exp(rng.normal(0.5, 0.4))),
                    )
                )
    table = pd.DataFrame(rows)
    dv = table.DV.to_numpy()
    logged = table.assign(DV=np.where(table.EVID == 0, np.log(np.where(dv > 0, dv, 1.0)), 0.0))
    return pmx.read_nonmem(table), pmx.read_nonmem(logged)


@pytest.mark.parametrize("method", ["fo", "focei"])
def test_exponential_error_equals_additive_on_log_data(method):
    data, logged = _tables()
    expo = pmx.ofv(OralLogNormal(), data, method)
    additive = pmx.ofv(OralAdditiveOnLog(), logged, method)
    assert np.isfinite(float(expo.ofv))
    assert float(expo.ofv) == pytest.approx(float(additive.ofv), rel=1e-9, abs=1e-8)
    np.testing.assert_allclose(expo.ebes, additive.ebes, atol=1e-7)


@pytest.mark.slow  # 25 s; the OFV values above catch the infinite-OFV bug
def test_exponential_error_gradient_is_finite_and_matches():
    data, logged = _tables()

    def grad(model, d):
        u, unravel = jax.flatten_util.ravel_pytree(model.to_unconstrained())
        f = lambda x: pmx.ofv(model.from_unconstrained(unravel(x)), d, "focei").ofv
        return np.asarray(jax.grad(f)(u))

    g = grad(OralLogNormal(), data)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, grad(OralAdditiveOnLog(), logged), rtol=1e-6, atol=1e-6)
