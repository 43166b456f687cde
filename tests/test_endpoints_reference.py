"""Non-Gaussian endpoints against independent fits (REFERENCE_CASES G1-G3).

G1 cbpp (lme4): binomial, logit, random herd intercept, Laplace.
G2 salamanders (glmmTMB): Poisson, log link, random site intercept, Laplace.
G3 lung (survival): Weibull time to death, age and sex, no random effect.

The data are read from ``../shared/refdata`` (skipped when absent).  The
models are NONMEM ``$PRED`` models (``pmx.pk.Pred``): each table row is one
record of its group's subject.
"""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _checks import check_reports_its_own_ofv
from conftest import REFDATA

import pmx_jax as pmx


def _refdata(name):
    path = REFDATA / name
    if not path.exists():
        pytest.skip(f"reference data {name} not available")
    return pd.read_csv(path)


class Herds(pmx.Model):
    """``logit P = b0 + b_k [period k] + eta_herd``; incidence of ``SIZE`` cattle."""

    b0: pmx.Theta = pmx.theta(-1.0)
    b2: pmx.Theta = pmx.theta(0.0)
    b3: pmx.Theta = pmx.theta(0.0)
    b4: pmx.Theta = pmx.theta(0.0)
    herd: pmx.Omega = pmx.omega(herd=0.3)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        logit = self.b0 + self.b2 * cov.P2 + self.b3 * cov.P3 + self.b4 * cov.P4 + eta.herd
        return dict(logit=logit, size=cov.SIZE)

    def observe(self, amounts, p):
        return pmx.Binomial(p["logit"], p["size"])


def _cbpp():
    table = _refdata("cbpp.csv").sort_values("herd", kind="stable")
    return pmx.read_nonmem(
        pd.DataFrame(
            dict(
                ID=table["herd"],
                TIME=table["period"].astype(float),
                DV=table["incidence"].astype(float),
                SIZE=table["size"].astype(float),
                P2=(table["period"] == 2) * 1.0,
                P3=(table["period"] == 3) * 1.0,
                P4=(table["period"] == 4) * 1.0,
            )
        )
    )


def test_cbpp_binomial_laplace_as_glmer_and_glmmtmb():
    fit = pmx.fit(Herds(), _cbpp(), "laplace")
    assert fit.converged
    check_reports_its_own_ofv(fit)
    log_lik = -fit.ofv / 2
    # glmmTMB (TMB's Laplace) on the same data, measured with R 4.2.2,
    # glmmTMB 1.1.5: logLik -92.02628186.  lme4's glmer reports -92.026566
    # (REFERENCE_CASES G1) and its estimates; at those estimates the textbook
    # Laplace value (ours and glmmTMB's) is -92.026286: lme4's Laplace
    # deviance differs from it by 2.8e-4, so lme4 is matched to 5e-4.
    assert log_lik == pytest.approx(-92.02628186, abs=1e-6)
    assert log_lik == pytest.approx(-92.026566, abs=5e-4)
    estimates = [float(getattr(fit.model, n)) for n in ("b0", "b2", "b3", "b4")]
    # glmmTMB's estimates to 1e-4 (both optimisers stop at gradient ~1e-4);
    # lme4's to 2e-3 (its optimum differs through the deviance above).
    np.testing.assert_allclose(estimates, [-1.39853, -0.99233, -1.12867, -1.58031], atol=1e-4)
    np.testing.assert_allclose(estimates, [-1.398343, -0.991925, -1.128216, -1.579745], atol=2e-3)
    sd = float(np.sqrt(fit.model.herd.matrix[0, 0]))
    assert sd == pytest.approx(0.642070, abs=2e-3)
    # The OFV of a binomial model is -2 log L itself: no log(2 pi) constant.
    assert fit.n_observations == 0 and fit.n_general == 56
    assert fit.minus_two_log_likelihood == fit.ofv


class Sites(pmx.Model):
    """``log mean = b0 + b_mined [mined == "no"] + eta_site``, Poisson counts."""

    b0: pmx.Theta = pmx.theta(0.0)
    b_not_mined: pmx.Theta = pmx.theta(0.0)
    site: pmx.Omega = pmx.omega(site=0.5)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(log_mean=self.b0 + self.b_not_mined * cov.NOTMINED + eta.site)

    def observe(self, amounts, p):
        return pmx.Poisson(jnp.exp(p["log_mean"]))


def test_salamanders_poisson_laplace_as_glmmtmb():
    table = _refdata("salamanders.csv")
    table["ID"] = pd.factorize(table["site"])[0] + 1
    table = table.sort_values("ID", kind="stable")
    data = pmx.read_nonmem(
        pd.DataFrame(
            dict(
                ID=table["ID"],
                TIME=table.groupby("ID").cumcount().astype(float),
                DV=table["count"].astype(float),
                NOTMINED=(table["mined"] == "no") * 1.0,
            )
        )
    )
    fit = pmx.fit(Sites(), data, "laplace")
    assert fit.converged
    check_reports_its_own_ofv(fit)
    # REFERENCE_CASES G2: logLik -1104.849310; glmmTMB and this fit both stop
    # within ~1e-7 of the optimum in log-likelihood.
    assert -fit.ofv / 2 == pytest.approx(-1104.849310, abs=1e-5)
    assert float(fit.model.b0) == pytest.approx(-1.505325, abs=2e-4)
    assert float(fit.model.b_not_mined) == pytest.approx(2.264413, abs=2e-4)
    assert float(np.sqrt(fit.model.site.matrix[0, 0])) == pytest.approx(0.575854, abs=2e-4)


class WeibullSurvival(pmx.Model):
    """survreg's Weibull: ``log T = mu + sigma W`` (W: minimum extreme value), so
    ``H(t) = (t exp(-mu))^(1/sigma)`` and ``h(t) = H(t) / (sigma t)``."""

    b0: pmx.Theta = pmx.theta(6.0)
    b_age: pmx.Theta = pmx.theta(0.0)
    b_sex: pmx.Theta = pmx.theta(0.0)
    log_scale: pmx.Theta = pmx.theta(0.0)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(mu=self.b0 + self.b_age * cov.AGE + self.b_sex * cov.SEX, t=cov.TIME)

    def observe(self, amounts, p):
        sigma = jnp.exp(self.log_scale)
        cumulative = (p["t"] * jnp.exp(-p["mu"])) ** (1.0 / sigma)
        return pmx.TimeToEvent(hazard=cumulative / (sigma * p["t"]), cumulative_hazard=cumulative)


def test_lung_weibull_as_survreg():
    table = _refdata("lung.csv")
    data = pmx.read_nonmem(
        pd.DataFrame(
            dict(
                ID=np.arange(1, len(table) + 1),
                TIME=table["time"].astype(float),
                DV=(table["status"] - 1).astype(float),  # survival's 1/2 -> 0/1
                AGE=table["age"].astype(float),
                SEX=table["sex"].astype(float),
            )
        )
    )
    # No random effect: the likelihood is exact, so any method that accepts
    # the endpoint gives survreg's maximum likelihood.
    fit = pmx.fit(WeibullSurvival(), data, "laplace")
    assert fit.converged
    assert -fit.ofv / 2 == pytest.approx(-1147.054431, abs=1e-5)
    coefficients = [float(fit.model.b0), float(fit.model.b_age), float(fit.model.b_sex)]
    np.testing.assert_allclose(coefficients, [6.274853, -0.012257, 0.382085], atol=2e-5)
    assert float(np.exp(fit.model.log_scale)) == pytest.approx(0.754051, abs=2e-5)


class InstitutionWeibull(pmx.Model):
    """The survreg model with a log-normal institution effect on the time
    scale: ``log T = mu + eta_inst + sigma W``.  Each institution is an ID;
    its patients follow one another, each after a reset (EVID 3) that starts
    a new history, with the patient's own follow-up time in column T."""

    b0: pmx.Theta = pmx.theta(6.0)
    b_age: pmx.Theta = pmx.theta(0.0)
    b_sex: pmx.Theta = pmx.theta(0.0)
    log_scale: pmx.Theta = pmx.theta(0.0)
    inst: pmx.Omega = pmx.omega(inst=0.1)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        mu = self.b0 + self.b_age * cov.AGE + self.b_sex * cov.SEX + eta.inst
        return dict(mu=mu, t=cov.T)

    def observe(self, amounts, p):
        sigma = jnp.exp(self.log_scale)
        cumulative = (p["t"] * jnp.exp(-p["mu"])) ** (1.0 / sigma)
        return pmx.TimeToEvent(hazard=cumulative / (sigma * p["t"]), cumulative_hazard=cumulative)


def test_weibull_with_an_institution_effect_is_recovered():
    # Truth: survreg's lung estimates (G3) and an institution variance of
    # 0.15 on the log-time scale; 40 institutions of 15 patients with lung's
    # ages and sexes resampled, administrative censoring uniform on
    # (200, 1000) days (about 30% censored).  Generated with numpy by
    # inverting the survival function, independently of pmx.simulate.
    rng = np.random.default_rng(11)
    n_inst, per_inst = 40, 15
    age = rng.integers(39, 83, size=(n_inst, per_inst)).astype(float)
    sex = rng.integers(1, 3, size=(n_inst, per_inst)).astype(float)
    b0, b_age, b_sex, sigma, omega = 6.274853, -0.012257, 0.382085, 0.754051, 0.15
    eta = rng.normal(0.0, np.sqrt(omega), n_inst)
    mu = b0 + b_age * age + b_sex * sex + eta[:, None]
    event = np.exp(mu + sigma * np.log(-np.log(rng.uniform(size=mu.shape))))
    censor = rng.uniform(200.0, 1000.0, size=mu.shape)
    rows = []
    for i in range(n_inst):
        for j in range(per_inst):
            time = 2.0 * j + 1.0
            if j:
                rows.append((i + 1, time, 3, 1, 0.0, 1.0, 60.0, 1.0))  # reset
            died = event[i, j] <= censor[i, j]
            follow_up = min(event[i, j], censor[i, j])
            rows.append((i + 1, time, 0, 0, float(died), follow_up, age[i, j], sex[i, j]))
    table = pd.DataFrame(rows, columns=["ID", "TIME", "EVID", "MDV", "DV", "T", "AGE", "SEX"])
    fit = pmx.fit(InstitutionWeibull(), pmx.read_nonmem(table), "laplace")
    assert fit.converged
    estimates = fit.estimates().set_index("parameter")
    truth = dict(b0=b0, b_age=b_age, b_sex=b_sex, log_scale=np.log(sigma), **{"inst.inst": omega})
    for name, value in truth.items():
        # 3 SE: a 99.7% interval for each of 5 parameters.  Seed fixed; the
        # z-scores are 0.45, -0.30, 0.13, -1.41 and 2.32 (the institution
        # variance, estimated 0.33 from 40 institutions).  Calibration,
        # measured on 60 other seeds with an exact (Gauss-Hermite) marginal
        # likelihood maximised by scipy: SEs 7-10% below the spread of the
        # fixed effects (mean z^2 of the sex effect 1.14); on seed 26 the
        # Laplace fit here and that exact fit agree to 3e-4 in every fixed
        # effect (OFV 0.16 above the exact -2LL).
        z = (estimates.loc[name, "estimate"] - value) / estimates.loc[name, "se"]
        assert abs(z) < 3.0, (name, z)
