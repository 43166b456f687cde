"""SAEM and the OFV by importance sampling, against independent answers.

- Importance sampling: an exact marginal likelihood (a linear Gaussian model,
  whose marginal is a multivariate normal) and one-dimensional quadrature of
  a one-eta theophylline model computed here in numpy/scipy.
- SAEM: the FOCEI estimates of nlmixr2 (theophylline, REFERENCE_CASES R2),
  within 2 standard errors; the OFV it reports is a fresh evaluation.
Further reference fits (pheno, warfarin, Bolus_2CPT, cbpp, simulation
recovery) are in ``test_saem_reference.py`` (slow).
"""

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import pmx_jax as pmx
from pmx_jax.likelihood import LOG_2PI


class LinearRandomIntercept(pmx.Model):
    """``y = a + b TIME + eta + eps``: its marginal is a multivariate normal."""

    a: pmx.Theta = pmx.theta(1.0)
    b: pmx.Theta = pmx.theta(0.5)
    sd: pmx.Theta = pmx.theta(0.4, lower=0.0)
    iiv: pmx.Omega = pmx.omega(level=0.3)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(mean=self.a + self.b * cov.TIME + eta.level)

    def observe(self, amounts, p):
        return pmx.Additive(p["mean"], self.sd)


def _linear_data(n=30, k=5, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        level = rng.normal(0.0, math.sqrt(0.3))
        for t in range(k):
            rows.append(dict(ID=i, TIME=float(t), DV=1.0 + 0.5 * t + level + rng.normal(0, 0.4)))
    return pd.DataFrame(rows)


def _exact_linear_ofv(table, a, b, omega, sd):
    total = 0.0
    for _, group in table.groupby("ID"):
        y = group["DV"].to_numpy()
        mean = a + b * group["TIME"].to_numpy()
        cov = omega * np.ones((y.size, y.size)) + sd**2 * np.eye(y.size)
        sign, logdet = np.linalg.slogdet(cov)
        r = y - mean
        total += logdet + r @ np.linalg.solve(cov, r)  # -2 log L without N log 2 pi
    return total


def test_importance_sampling_is_exact_for_a_linear_gaussian_model():
    table = _linear_data()
    data = pmx.read_nonmem(table)
    model = LinearRandomIntercept().with_values(a=1.1, b=0.45, sd=0.35, iiv=[0.25])
    exact = _exact_linear_ofv(table, 1.1, 0.45, 0.25, 0.35)
    # The conditional law of b is normal: a normal proposal at the Laplace
    # approximation is that law, every weight is the marginal itself.
    normal = pmx.importance_ofv(model, data, df=None, samples=200)
    assert normal.ofv == pytest.approx(exact, abs=1e-7)
    assert normal.se < 1e-6
    # A t proposal is not: Monte-Carlo error, within 3 of its standard errors.
    heavy = pmx.importance_ofv(model, data, samples=500, seed=1)
    assert 0 < heavy.se < 0.5
    assert abs(heavy.ofv - exact) < 3 * heavy.se
    # The same seed gives the same OFV; another seed another draw.
    again = pmx.importance_ofv(model, data, samples=500, seed=1)
    assert again.ofv == heavy.ofv
    assert pmx.importance_ofv(model, data, samples=500, seed=2).ofv != heavy.ofv


class TheophyllineClearanceEta(pmx.Model):
    """Theophylline with one random effect (on CL): the marginal likelihood is
    a one-dimensional integral per subject."""

    tka: pmx.Theta = pmx.theta(0.46)
    tcl: pmx.Theta = pmx.theta(1.01)
    tv: pmx.Theta = pmx.theta(3.46)
    add_sd: pmx.Theta = pmx.theta(0.75, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.09)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(ka=jnp.exp(self.tka), cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.add_sd)


def _quadrature_ofv(table, tka, tcl, tv, sd, omega, lloq=-np.inf):
    """-2 log L - N log 2 pi by adaptive quadrature over eta (numpy closed
    form); observations below ``lloq`` by Beal's M3 (``P(y < LLOQ)``)."""
    ka, v = math.exp(tka), math.exp(tv)
    total, n_obs = 0.0, 0
    for _, group in table.groupby("ID"):
        dose = float(group.loc[group["EVID"] == 1, "AMT"].iloc[0])
        obs = group[group["EVID"] == 0]
        t = obs["TIME"].to_numpy(float)
        y = obs["DV"].to_numpy(float)
        below = y < lloq
        n_obs += int(np.sum(~below))

        def log_joint(eta, t=t, y=y, dose=dose, below=below):
            k = math.exp(tcl + eta) / v
            conc = dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
            z = (y - conc) / sd
            log_lik = np.sum(-0.5 * z[~below] ** 2 - math.log(sd) - 0.5 * LOG_2PI)
            log_lik += np.sum(stats.norm.logcdf((lloq - conc[below]) / sd))
            return log_lik - 0.5 * eta**2 / omega - 0.5 * math.log(2 * math.pi * omega)

        grid = np.linspace(-8, 8, 4001) * math.sqrt(omega)
        peak = max(log_joint(e) for e in grid)
        value, _ = integrate.quad(
            lambda e, f=log_joint, c=peak: math.exp(f(e) - c),
            grid[0],
            grid[-1],
            points=[grid[int(np.argmax([log_joint(e) for e in grid[::40]])) * 40]],
            limit=200,
            epsabs=0,
            epsrel=1e-11,
        )
        total += -2.0 * (math.log(value) + peak)
    return total - n_obs * LOG_2PI


@pytest.mark.slow  # the censored variant below runs the same path by default
def test_importance_sampling_matches_quadrature():
    data = pmx.datasets.load("theophylline")
    table = pmx.datasets.load_table("theophylline")
    model = TheophyllineClearanceEta()
    exact = _quadrature_ofv(table, 0.46, 1.01, 3.46, 0.75, 0.09)
    result = pmx.importance_ofv(model, data, samples=2000, seed=0)
    assert result.se < 0.05
    assert abs(result.ofv - exact) < 3 * result.se
    # A normal proposal fits this conditional law closely: a tighter check.
    normal = pmx.importance_ofv(model, data, samples=4000, df=None, seed=1)
    assert normal.se < 0.01
    assert abs(normal.ofv - exact) < 3 * normal.se


def test_importance_sampling_with_censored_observations_matches_quadrature():
    """Observations under 2 mg/L (27 of 132) censored by M3 (an LLOQ column)."""
    table = pmx.datasets.load_table("theophylline")
    table["LLOQ"] = 2.0
    data = pmx.read_nonmem(table)
    assert data.n_observations == 132
    exact = _quadrature_ofv(table, 0.46, 1.01, 3.46, 0.75, 0.09, lloq=2.0)
    result = pmx.importance_ofv(TheophyllineClearanceEta(), data, samples=4000, df=None)
    assert result.n_observations == int(np.sum((table["EVID"] == 0) & (table["DV"] >= 2.0)))
    assert result.se < 0.01
    assert abs(result.ofv - exact) < 3 * result.se


# nlmixr2's FOCEI fit of theo_sd (REFERENCE_CASES R2): estimates and SEs.
THEO_FOCEI = dict(tka=(0.46445, 0.198), tcl=(1.01205, 0.0756), tv=(3.45997, 0.0429))
THEO_ADD_SD = (0.69384, 0.0925)


@pytest.fixture(scope="module")
def theophylline_saem():
    data = pmx.datasets.load("theophylline")
    return pmx.fit(pmx.library.Theophylline(), data, "saem", seed=1), data


def test_saem_theophylline_within_two_standard_errors_of_focei(theophylline_saem):
    fit, _ = theophylline_saem
    assert fit.method == "saem"
    assert fit.converged, (fit.message, fit.suspect)
    for name, (estimate, se) in THEO_FOCEI.items():
        assert abs(float(getattr(fit.model, name)) - estimate) < 2 * se, name
    assert abs(float(fit.model.add_sd) - THEO_ADD_SD[0]) < 2 * THEO_ADD_SD[1]
    omega = np.diagonal(np.asarray(fit.model.iiv.matrix))
    # nlmixr2's OMEGA (0.40463, 0.068796, 0.019222); SAEM and FOCEI agree to
    # within their standard errors (Louis' here).
    table = fit.covariance.table().set_index("parameter")
    references = (0.40463, 0.068796, 0.019222)
    for name, value, reference in zip(("ka", "cl", "v"), omega, references, strict=True):
        assert abs(value - reference) < 2 * table.loc[f"iiv.{name}", "se"], name
    # Louis' standard errors of the THETAs are those of nlmixr2 to 30%.
    for name, (_, se) in THEO_FOCEI.items():
        assert table.loc[name, "se"] == pytest.approx(se, rel=0.3), name


def test_saem_reports_a_fresh_importance_sampling_ofv(theophylline_saem):
    fit, data = theophylline_saem
    details = fit.stochastic
    fresh = pmx.importance_ofv(fit.model, data, seed=details.seed, start=fit.ebe_matrix)
    assert fit.ofv == pytest.approx(fresh.ofv, abs=1e-8)
    assert details.ofv_se == pytest.approx(fresh.se, rel=1e-8)
    # The exact marginal lies above FOCEI's approximation at its own optimum
    # (116.80 by nlmixr2) and near the importance-sampling OFV there.
    focei_point = pmx.library.Theophylline().with_values(
        tka=0.46445, tcl=1.01205, tv=3.45997, add_sd=0.69384, iiv=[0.40463, 0.068796, 0.019222]
    )
    at_focei = pmx.importance_ofv(focei_point, data, seed=3)
    # The maximum-likelihood point is at least as good, up to Monte-Carlo error.
    assert fit.ofv < at_focei.ofv + 3 * math.hypot(fit.stochastic.ofv_se, at_focei.se)


def test_saem_trajectories_and_conditional_moments(theophylline_saem):
    fit, _ = theophylline_saem
    details = fit.stochastic
    frame = details.trajectories
    assert list(frame["phase"].value_counts().sort_index()) == [300, 200]
    # Exploration at step 1, then 1/k.
    smoothing = frame[frame["phase"] == "smoothing"]
    np.testing.assert_allclose(smoothing["gamma"], 1.0 / np.arange(1, 201))
    # The adapted random-walk kernels accept near the target rate.
    assert 0.2 < smoothing["acceptance_block"].mean() < 0.6
    assert details.mu_referenced == ("tka", "tcl", "tv")
    # Conditional means and modes of the random effects agree closely for
    # rich data (11 samples per subject).
    np.testing.assert_allclose(details.conditional_mean, fit.ebe_matrix, atol=0.15)
    assert fit.iteration_estimates.shape[0] == 500


def test_fit_options_belong_to_saem():
    data = pmx.datasets.load("theophylline")
    with pytest.raises(TypeError, match="iterations"):
        pmx.fit(pmx.library.Theophylline(), data, "focei", iterations=(10, 10))
    with pytest.raises(ValueError, match="iterations"):
        pmx.fit(pmx.library.Theophylline(), data, "saem", iterations=(0, 10))
    with pytest.raises(ValueError, match="method must be one of"):
        pmx.fit(pmx.library.Theophylline(), data, "saemx")
