"""Simulation: reproducibility, chunk independence, and that simulated
variability matches the model (etas ~ N(0, Omega), residuals ~ N(0, sd^2))."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.library import Theophylline


def test_same_key_same_result_and_chunking_does_not_matter():
    data = pmx.datasets.load("theophylline")
    a = pmx.simulate(Theophylline(), data, key=jax.random.PRNGKey(3), n_subjects=40, chunk_size=40)
    b = pmx.simulate(Theophylline(), data, key=jax.random.PRNGKey(3), n_subjects=40, chunk_size=16)
    np.testing.assert_array_equal(a.etas, b.etas)
    np.testing.assert_allclose(a.dv, b.dv, rtol=1e-12)
    c = pmx.simulate(Theophylline(), data, key=jax.random.PRNGKey(4), n_subjects=40)
    assert not np.allclose(a.etas, c.etas)


def test_simulated_etas_and_residuals_follow_the_model():
    """4,000 virtual subjects: sample covariance of etas within 4 standard errors
    of Omega (SE of a variance estimate ~ var*sqrt(2/n)), residual SD of
    DV - IPRED within 3% of add_sd (130,000 residuals)."""
    model = Theophylline()
    regimen = pmx.Regimen.oral(320, every=24, n=3).sample(np.arange(1, 72, 2.0))
    n = 4000
    sim = pmx.simulate(model, regimen, key=jax.random.PRNGKey(11), n_subjects=n)
    omega = np.diag(np.asarray(model.omega_matrix()))
    var = sim.etas.var(axis=0)
    assert np.all(np.abs(var - omega) < 4 * omega * np.sqrt(2 / n)), (var, omega)
    frame = sim.to_frame()
    residual_sd = (frame.DV - frame.IPRED).std()
    assert abs(residual_sd / float(model.add_sd) - 1) < 0.03
    assert len(frame) == n * 36


def test_virtual_population_covariates_are_used():
    """Each virtual subject's IPRED equals a deterministic prediction of a
    dataset carrying that subject's weight, with the simulated etas."""
    from pmx_jax.library import Phenobarbital

    model = Phenobarbital()
    regimen = (
        pmx.Regimen.bolus(20.0, every=12, n=4)
        .sample([1.0, 12.0, 47.0])
        .with_covariates(WT=1.0, APGR=7)
    )
    weights = np.array([0.5, 1.0, 2.0, 4.0])
    sim = pmx.simulate(
        model, regimen, key=jax.random.PRNGKey(0), n_subjects=4, covariates={"WT": weights}
    )
    table = pd.concat(
        [regimen.to_table(id_value=i + 1).assign(WT=w) for i, w in enumerate(weights)]
    )
    expected = pmx.predict(model, pmx.read_nonmem(table), sim.etas)
    got = sim.to_frame()
    want = expected[expected.EVID == 0]
    np.testing.assert_allclose(got.IPRED.to_numpy(), want.IPRED.to_numpy(), rtol=1e-12)
    # and the weights matter: the same etas at WT 1 give other concentrations
    same_weight = pmx.predict(model, pmx.read_nonmem(table.assign(WT=1.0)), sim.etas)
    assert not np.allclose(same_weight[same_weight.EVID == 0].IPRED, want.IPRED)


def test_regimen_validation():
    with pytest.raises(ValueError, match="every"):
        pmx.Regimen.oral(100, n=3)
    with pytest.raises(ValueError, match=">= 0"):
        pmx.Regimen.oral(-5)
    with pytest.raises(ValueError, match="duration"):
        pmx.Regimen.infusion(100, duration=0)
    table = pmx.Regimen.oral(100, every=12, n=3).sample([0, 6, 12]).to_table()
    assert list(table.EVID) == [1, 0, 0, 0]
    assert table.ADDL.iloc[0] == 2 and table.II.iloc[0] == 12


def test_predict_accepts_etas_and_names_bad_shapes():
    data = pmx.datasets.load("theophylline")
    model = Theophylline()
    etas = np.zeros((data.n_subjects, 3))
    etas[:, 1] = 0.5  # larger clearance -> lower concentrations late
    out = pmx.predict(model, data, etas)
    late = out[(out.EVID == 0) & (out.TIME > 20)]
    assert np.all(late.IPRED < late.PRED)
    frame = pd.DataFrame(etas, columns=list(model.eta_names)).assign(ID=list(data.ids))
    np.testing.assert_allclose(pmx.predict(model, data, frame).IPRED, out.IPRED)
    with pytest.raises(ValueError, match="shape"):
        pmx.predict(model, data, np.zeros((3, 3)))


class TwoGaussianEndpoints(pmx.Model):
    """DVID 1: proportional error (CV 10%); DVID 2: log-normal error (SD 0.2 on
    the log scale), on predictions that need no compartments."""

    log_base: pmx.Theta = pmx.theta(np.log(5.0))
    iiv: pmx.Omega = pmx.omega(base=0.04)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(t=cov.TIME, base=jnp.exp(self.log_base + eta.base))

    def observe(self, amounts, p):
        return {
            1: pmx.Proportional(p["base"] * (1.0 + p["t"]), 0.1),
            2: pmx.Exponential(2.0 * p["base"], 0.2),
        }


def test_residuals_of_two_gaussian_endpoints_follow_each_error_model():
    """Each Gaussian endpoint draws on its own scale: relative residuals of
    DVID 1 have SD 0.1, log residuals of DVID 2 have mean 0 and SD 0.2
    (within 3% and 0.01; 20,000 residuals each), and records are independent
    (the two endpoints at the same time, and successive times: |r| < 0.05)."""
    times = np.arange(1.0, 11.0)
    design = pd.DataFrame(
        dict(ID=1, TIME=np.repeat(times, 2), DV=1.0, DVID=np.tile([1, 2], times.size))
    )
    n = 2000
    sim = pmx.simulate(
        TwoGaussianEndpoints(), pmx.read_nonmem(design), key=jax.random.PRNGKey(5), n_subjects=n
    )
    dvid = np.tile([1, 2], times.size)
    first = sim.dv[:, dvid == 1] / sim.ipred[:, dvid == 1] - 1.0
    second = np.log(sim.dv[:, dvid == 2] / sim.ipred[:, dvid == 2])
    assert abs(first.std() / 0.1 - 1.0) < 0.03 and abs(first.mean()) < 0.01
    assert abs(second.std() / 0.2 - 1.0) < 0.03 and abs(second.mean()) < 0.01
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.05
    assert abs(np.corrcoef(first[:, :-1].ravel(), first[:, 1:].ravel())[0, 1]) < 0.05
