"""The likelihood kernel against independent computations (scipy): normal and
BLQ (M3) records, the random-effect prior, and IOV etas as extra random effects."""

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pmx_jax as pmx
from pmx_jax.estimation import ofv
from pmx_jax.likelihood import Layout, conditional_log_likelihood, log_prior, prepare

DOSE, LLOQ = 100.0, 1.0


class Bolus(pmx.Model):
    tcl: pmx.Theta = pmx.theta(math.log(2.0))
    tv: pmx.Theta = pmx.theta(math.log(10.0))
    add: pmx.Theta = pmx.theta(0.4, lower=0.0)
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.1, v=0.05)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv + eta.v))

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add, self.prop)


def blq_table():
    times = [0.5, 1.0, 2.0, 4.0, 8.0, 12.0]
    dv = [9.1, 8.4, 6.3, 4.4, 0.8, 0.2]  # the last two below the LLOQ of 1
    rows = [dict(ID=1, TIME=0.0, AMT=DOSE, DV=np.nan, LLOQ=LLOQ)]
    rows += [dict(ID=1, TIME=t, AMT=0.0, DV=y, LLOQ=LLOQ) for t, y in zip(times, dv, strict=True)]
    return pd.DataFrame(rows), np.array(times), np.array(dv)


def test_conditional_log_likelihood_with_m3_matches_scipy():
    table, times, dv = blq_table()
    model = Bolus()
    prepared = prepare(model, pmx.read_nonmem(table))
    eta = jnp.array([0.2, -0.1])
    kernel = eqx.filter_jit(conditional_log_likelihood)  # eager dispatch is slow
    total, terms = kernel(model, prepared.subject(0), eta, jnp.zeros((1, 0)))
    cl, v = 2.0 * math.exp(0.2), 10.0 * math.exp(-0.1)
    f = DOSE / v * np.exp(-cl / v * times)
    sd = np.sqrt(0.4**2 + (0.1 * f) ** 2)
    blq = dv < LLOQ
    expected = stats.norm.logpdf(dv[~blq], f[~blq], sd[~blq]).sum()
    expected += stats.norm.logcdf(LLOQ, f[blq], sd[blq]).sum()
    assert abs(float(total) - expected) < 1e-10
    assert int(terms.normal.sum()) == 4 and int(terms.censored.sum()) == 2


def test_log_prior_matches_scipy():
    omega = jnp.array([[0.3, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.4]])
    b = jnp.array([0.3, -0.2, 0.5])
    expected = stats.multivariate_normal(np.zeros(3), np.asarray(omega)).logpdf(np.asarray(b))
    assert abs(float(log_prior(b, omega)) - expected) < 1e-12


@pytest.mark.slow
def test_m3_laplace_close_to_quadrature():
    # One subject: the marginal likelihood is a 2-D integral over (eta_cl, eta_v),
    # done here by a dense grid; Laplace is an approximation, close for this
    # well-identified subject.
    table, times, dv = blq_table()
    model = Bolus()
    result = ofv(model, pmx.read_nonmem(table), "laplace")
    grid = np.linspace(-2.5, 2.5, 401)
    e_cl, e_v = np.meshgrid(grid * math.sqrt(0.1), grid * math.sqrt(0.05), indexing="ij")
    cl, v = 2.0 * np.exp(e_cl)[..., None], 10.0 * np.exp(e_v)[..., None]
    f = DOSE / v * np.exp(-cl / v * times)
    sd = np.sqrt(0.4**2 + (0.1 * f) ** 2)
    blq = dv < LLOQ
    loglik = stats.norm.logpdf(dv[~blq], f[..., ~blq], sd[..., ~blq]).sum(-1)
    loglik += stats.norm.logcdf(LLOQ, f[..., blq], sd[..., blq]).sum(-1)
    prior = stats.norm.logpdf(e_cl, 0, math.sqrt(0.1)) + stats.norm.logpdf(e_v, 0, math.sqrt(0.05))
    cell = (grid[1] - grid[0]) ** 2 * math.sqrt(0.1 * 0.05)
    log_marginal = np.log(np.sum(np.exp(loglik + prior)) * cell)
    exact_ofv = -2 * log_marginal - 4 * math.log(2 * math.pi)
    assert abs(float(result.ofv) - exact_ofv) < 0.05


class WangIOV(pmx.Model):
    tke: pmx.Theta = pmx.theta(0.5, lower=0.0)
    sd: pmx.Theta = pmx.theta(math.sqrt(0.1), lower=0.0)
    iiv: pmx.Omega = pmx.omega(ke=0.025)
    iov: pmx.Omega = pmx.omega(ke_occ=0.015, occasion=True)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=self.tke * jnp.exp(eta.ke + eta.ke_occ), v=jnp.asarray(1.0))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fo", "focei", "laplace"])
def test_iov_with_one_occasion_per_subject_equals_iiv(refdata, method):
    # Each subject visits one of two occasions: eta + eta_occ ~ N(0, 0.04), and
    # the unvisited occasion's eta must drop out exactly, so every method gives
    # Wang's additive value (R1: FO 0.026, FOCEI -2.059, Laplace -1.9361).
    obs = pd.read_csv(refdata / "Wang2007.csv").rename(columns={"Time": "TIME", "Y": "DV"})
    obs["AMT"] = 0.0
    doses = pd.DataFrame({"ID": range(1, 11), "TIME": 0.0, "DV": np.nan, "AMT": 10.0})
    table = pd.concat([doses, obs]).sort_values(
        ["ID", "TIME", "AMT"], ascending=[True, True, False]
    )
    table["OCC"] = 1 + table["ID"] % 2
    model = WangIOV()
    data = prepare(model, pmx.read_nonmem(table))
    assert Layout.of(model, data.n_occasions).size == 3
    expected = {"fo": 0.026, "focei": -2.059, "laplace": -1.9361}[method]
    assert abs(float(ofv(model, data, method).ofv) - expected) < 1e-3


def test_a_failed_event_engine_is_named_per_subject():
    # A clearance that turns negative for light subjects makes their amounts
    # grow as exp(|k| t) and overflow: the subject's status says the event
    # engine failed (not merely that no EBE was found), the others are fine.
    class SignedClearance(pmx.library.Theophylline):
        def individual(self, eta, cov):
            params = super().individual(eta, cov)
            return dict(params, cl=params["cl"] * 2000.0 * (cov.WT - 70.0))

    data = pmx.datasets.load("theophylline")
    light = data.table.groupby("ID", sort=False)["WT"].first().to_numpy() < 70.0
    with pytest.warns(pmx.estimation.NonFiniteOFVWarning, match="nonfinite amounts"):
        result = ofv(SignedClearance(), data, "focei", ebe_search="local")
    status = np.asarray(result.status)
    assert light.any() and (~light).any()
    assert np.all(status[light] == pmx.RESULTS.nonfinite_amounts)
    assert np.all(status[~light] == pmx.RESULTS.successful)
    assert pmx.RESULTS.nonfinite_amounts.message.startswith("the event engine")


def test_m4_limit_column_gives_the_interval_probability():
    # LIMIT = 0 on the BLQ records: P(0 < y < LLOQ) instead of P(y < LLOQ).
    table, times, dv = blq_table()
    table["LIMIT"] = np.where(table["DV"] < LLOQ, 0.0, np.nan)
    model = Bolus()
    data = pmx.read_nonmem(table)
    prepared = prepare(model, data)
    bound = np.asarray(prepared.subjects.bound)[0]
    assert bound[-2:].tolist() == [0.0, 0.0]
    eta = jnp.array([0.2, -0.1])
    kernel = eqx.filter_jit(conditional_log_likelihood)
    total, _ = kernel(model, prepared.subject(0), eta, jnp.zeros((1, 0)))
    cl, v = 2.0 * math.exp(0.2), 10.0 * math.exp(-0.1)
    f = DOSE / v * np.exp(-cl / v * times)
    sd = np.sqrt(0.4**2 + (0.1 * f) ** 2)
    blq = dv < LLOQ
    expected = stats.norm.logpdf(dv[~blq], f[~blq], sd[~blq]).sum()
    dist = stats.norm(f[blq], sd[blq])
    expected += np.log(dist.cdf(LLOQ) - dist.cdf(0.0)).sum()
    assert abs(float(total) - expected) < 1e-10
    # Without LIMIT the BLQ records keep the M3 bound -inf.
    m3 = np.asarray(prepare(model, pmx.read_nonmem(table.drop(columns="LIMIT"))).subjects.bound)
    assert np.all(np.isneginf(m3[0][-2:]))
