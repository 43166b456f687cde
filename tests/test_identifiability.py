"""Expected Fisher information against closed forms: a model linear in its
parameters, the marginal normal of a random intercept, and Gompertz growth
(ODE path vs hand-derived derivatives of its closed form)."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.estimation import fisher_information

DOSE = 100.0
TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0])


class LogLinear(pmx.Model):
    """IV bolus, one compartment, parametrised so that ``log C = lnc0 - k t``:
    with a log-scale (Exponential) error the mean is linear in (lnc0, k)."""

    lnc0: pmx.Theta = pmx.theta(np.log(10.0))
    k: pmx.Theta = pmx.theta(0.2)
    sd: pmx.Theta = pmx.theta(0.1, lower=0.0)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        v = DOSE * jnp.exp(-self.lnc0)
        return dict(cl=self.k * v, v=v)

    def observe(self, amounts, p):
        return pmx.Exponential(amounts.central / p["v"], self.sd)


class RandomIntercept(pmx.Model):
    """``y_ij = mu + eta_i + eps_ij``: each subject ``y_i ~ N(mu 1, omega 11^T + sd^2 I)``."""

    mu: pmx.Theta = pmx.theta(5.0)
    sd: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(m=0.3)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.asarray(1.0), v=jnp.asarray(1.0), m=self.mu + eta.m)

    def observe(self, amounts, p):
        return pmx.Additive(p["m"], self.sd)


def _observations(n_per_subject):
    rows = [
        dict(ID=i + 1, TIME=float(j + 1), AMT=0.0, EVID=0, CMT=1, DV=0.0)
        for i, n in enumerate(n_per_subject)
        for j in range(n)
    ]
    return pmx.read_nonmem(pd.DataFrame(rows))


def test_linear_model_information_is_jt_j_over_sigma_squared():
    rows = [dict(ID=1, TIME=0.0, AMT=DOSE, EVID=1, CMT=1, DV=0.0)]
    rows += [dict(ID=1, TIME=t, AMT=0.0, EVID=0, CMT=1, DV=1.0) for t in TIMES]
    data = pmx.read_nonmem(pd.DataFrame(rows))
    info = fisher_information(LogLinear(), data, individual=True)
    sd = 0.1
    jacobian = np.stack([np.ones_like(TIMES), -TIMES], axis=1)
    expected = np.zeros((3, 3))
    expected[:2, :2] = jacobian.T @ jacobian / sd**2
    # d log-variance / d sd = 2 / sd per record: 1/2 * n * (2/sd)^2 = 2n / sd^2
    expected[2, 2] = 2 * len(TIMES) / sd**2
    assert info.names == ("lnc0", "k", "sd")
    np.testing.assert_allclose(info.information, expected, rtol=1e-10, atol=1e-8)
    # Cramer-Rao bound of a linear regression: sd^2 (J^T J)^-1
    np.testing.assert_allclose(
        info.covariance[:2, :2], sd**2 * np.linalg.inv(jacobian.T @ jacobian), rtol=1e-9
    )
    assert info.identifiable and np.isfinite(info.condition_number)
    # No OMEGA: the FO population information is the same matrix.
    population = fisher_information(LogLinear(), data)
    np.testing.assert_allclose(population.information, info.information, rtol=1e-12)


def _random_intercept_information(n, omega, sd):
    """Expected information of N(mu 1, omega 11^T + sd^2 I) about (mu, sd, omega),
    from hand-written derivatives of the mean and covariance."""
    ones = np.ones(n)
    cov = omega * np.outer(ones, ones) + sd**2 * np.eye(n)
    inv = np.linalg.inv(cov)
    d_mean = [ones, np.zeros(n), np.zeros(n)]
    d_cov = [np.zeros((n, n)), 2 * sd * np.eye(n), np.outer(ones, ones)]
    out = np.zeros((3, 3))
    for j in range(3):
        for k in range(3):
            out[j, k] = d_mean[j] @ inv @ d_mean[k] + 0.5 * np.trace(
                inv @ d_cov[j] @ inv @ d_cov[k]
            )
    return out


def test_fo_information_of_a_random_intercept_matches_the_marginal_normal():
    info = fisher_information(RandomIntercept(), _observations([1, 3, 4]))
    assert info.names == ("mu", "sd", "iiv.m")
    expected = sum(_random_intercept_information(n, 0.3, 0.5) for n in (1, 3, 4))
    np.testing.assert_allclose(info.information, expected, rtol=1e-10)
    for s, n in enumerate((1, 3, 4)):
        np.testing.assert_allclose(
            info.per_subject[s], _random_intercept_information(n, 0.3, 0.5), rtol=1e-10
        )
    assert info.identifiable
    np.testing.assert_allclose(info.se, np.sqrt(np.diagonal(np.linalg.inv(expected))), rtol=1e-8)


def test_one_observation_cannot_split_omega_from_sigma():
    # y ~ N(mu, omega + sd^2): only omega + sd^2 is identified, so the
    # information is singular along d omega = -2 sd d sd.
    info = fisher_information(RandomIntercept(), _observations([1]))
    assert not info.identifiable and info.condition_number == np.inf
    assert np.all(np.isnan(info.se))
    (least,) = info.least_identifiable(1)
    assert abs(least["eigenvalue"]) < 1e-10 * info.eigenvalues[-1]
    assert set(least["combination"]) == {"sd", "iiv.m"}
    # On the log-parameter scale the null direction is (sd dlog sd, omega dlog omega)
    # proportional to (1, -2 sd^2 / omega) ... normalised.
    vector = info.eigenvectors[:, 0]
    direction = np.array([0.0, 1.0, -2 * 0.5**2 / 0.3])
    direction /= np.linalg.norm(direction)
    assert abs(abs(vector @ direction) - 1.0) < 1e-8


@pytest.fixture(scope="module")
def gompertz():
    path = Path(__file__).resolve().parents[1] / "examples" / "gompertz_identifiability.py"
    spec = importlib.util.spec_from_file_location("gompertz_identifiability", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gompertz_ode_information_matches_its_closed_form(gompertz):
    # log T(t) = log tmax + log(t0/tmax) exp(-kg t); proportional error cv on T:
    # mean T, variance cv^2 T^2, so with g = d log T / d(kg, tmax, t0):
    # F_struct = (1/cv^2 + 2) g g^T, F_struct,cv = 2 g / cv, F_cv,cv = 2 / cv^2.
    kg, tmax, t0, cv = 0.1, 2000.0, 50.0, 0.1
    times = gompertz.EARLY
    decay = np.exp(-kg * times)
    log_ratio = np.log(t0 / tmax)
    g = np.stack([-log_ratio * times * decay, (1 - decay) / tmax, decay / t0], axis=1)
    expected = np.zeros((4, 4))
    expected[:3, :3] = (1 / cv**2 + 2) * g.T @ g
    expected[:3, 3] = expected[3, :3] = 2 * g.sum(axis=0) / cv
    expected[3, 3] = 2 * len(times) / cv**2
    info = fisher_information(gompertz.TumourGrowth(), gompertz.design(times), individual=True)
    assert info.names == ("kg", "tmax", "t0", "prop")
    # ODE tolerance rtol 1e-8: sensitivities agree to ~1e-6 relative.
    np.testing.assert_allclose(info.information, expected, rtol=1e-5)
    # Early growth: the least identifiable combination is kg against tmax.
    (least,) = info.least_identifiable(1, threshold=0.3)
    assert set(least["combination"]) == {"kg", "tmax"}
    assert np.sign(least["combination"]["kg"]) != np.sign(least["combination"]["tmax"])
    assert info.condition_number > 1e3


def test_argument_checks():
    data = _observations([2])
    with pytest.raises(ValueError, match="method"):
        fisher_information(RandomIntercept(), data, method="focei")
    with pytest.raises(ValueError, match="scale"):
        fisher_information(RandomIntercept(), data, scale="log")


def test_unit_scale_has_a_unit_diagonal_and_report_prints():
    info = fisher_information(RandomIntercept(), _observations([2, 3]), scale="unit")
    np.testing.assert_allclose(np.diagonal(info.scaled), 1.0, rtol=1e-12)
    text = info.report()
    assert "condition number" in text and "iiv.m" in text
