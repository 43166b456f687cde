"""Inter-occasion variability fitted by FOCEI on the mavoglurant data.

``mavoglurant.csv`` (the nlmixr2data set): 120 subjects given a zero-order IV
infusion of 25, 37.5 or 50 mg; 78 of them come back for a second period (OCC 2,
TIME restarting at 0, read as reset-and-dose).  Two compartments, IIV on CL and
V, IOV on CL.  There is no published answer for this model, so the test checks
what is objectively checkable: both fits converge, the estimates are
physiologically plausible, the IOV variance is positive with a finite standard
error, and IOV lowers the OFV by more than the 5% chi-square critical value for
one extra parameter (3.84).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import pmx_jax as pmx


class MavoglurantIIV(pmx.Model):
    """Two compartments, IV infusion (mg, L, h; DV in ng/mL).  IIV on CL, V;
    combined additive (ng/mL) + proportional error."""

    tcl: pmx.Theta = pmx.theta(np.log(5.0))
    tv: pmx.Theta = pmx.theta(np.log(40.0))
    tq: pmx.Theta = pmx.theta(np.log(5.0))
    tvp: pmx.Theta = pmx.theta(np.log(20.0))
    prop_cv: pmx.Theta = pmx.theta(0.2, lower=0.0)
    add_sd: pmx.Theta = pmx.theta(10.0, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.1, v=0.1)
    dynamics = pmx.pk.TwoCompartment()

    def clearance(self, eta):
        return jnp.exp(self.tcl + eta.cl)

    def individual(self, eta, cov):
        return dict(
            cl=self.clearance(eta),
            v=jnp.exp(self.tv + eta.v),
            q=jnp.exp(self.tq),
            vp=jnp.exp(self.tvp),
        )

    def observe(self, amounts, p):
        return pmx.Combined2(1000.0 * amounts.central / p["v"], self.add_sd, self.prop_cv)


class MavoglurantIOV(MavoglurantIIV):
    """As :class:`MavoglurantIIV`, with an occasion eta on CL."""

    iov: pmx.Omega = pmx.omega(cl_occ=0.05, occasion=True)

    def clearance(self, eta):
        return jnp.exp(self.tcl + eta.cl + eta.cl_occ)


@pytest.mark.slow
def test_iov_on_clearance_improves_the_mavoglurant_fit(refdata):
    data = pmx.read_nonmem(
        refdata / "mavoglurant.csv", reset_when_time_decreases=True, covariates=["WT"]
    )
    iiv = pmx.fit(MavoglurantIIV(), data, "focei", covariance=None)
    iov = pmx.fit(MavoglurantIOV(), data, "focei", covariance="sandwich")
    assert iiv.converged, iiv.message
    assert iov.converged, iov.message

    model = iov.model
    # Plausible for a small-molecule IV drug in adults (L/h, L); observed
    # CL 28.7 L/h, V 60.7 L, Q 27.6 L/h, Vp 141 L.
    assert 5.0 < float(jnp.exp(model.tcl)) < 100.0
    assert 10.0 < float(jnp.exp(model.tv)) < 300.0
    assert 0.0 < float(model.prop_cv) < 0.5

    row = iov.estimates().set_index("parameter").loc["iov.cl_occ"]
    assert row["estimate"] > 0.0
    assert np.isfinite(row["se"]) and row["se"] > 0.0

    # One extra parameter: chi-square(1) at 5% is 3.84.
    assert iiv.ofv - iov.ofv > 3.84
