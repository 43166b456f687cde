"""Parameter recovery: fit a population simulated from known values, starting
far from them, with each estimation method.

The design is a rich-sampling single oral dose study (200 subjects, 8 samples
each, 1,600 observations): one compartment with first-order absorption,
log-normal IIV on KA (its own block) and a correlated CL-V block
(``pmx.omega_block``, correlation 0.5), proportional error.  The simulation
seed is fixed, so each test is deterministic; its tolerances are stated as
multiples of the sampling error of the estimates, approximated from the truth:

- log THETAs: the typical value of ``log P`` is estimated from ``n`` subjects'
  ``log P_i`` with variance ``omega``, so ``SE ~ sqrt(omega / n)``;
- the proportional CV from ``N`` residuals: ``SE ~ cv / sqrt(2 N)``;
- an OMEGA variance: ``SE ~ omega sqrt(2 / n)``; a covariance:
  ``SE ~ sqrt((omega_11 omega_22 + omega_12^2) / n)`` (Wishart moments).

These ignore eta shrinkage (about 10% here) and the estimation of the other
parameters, so the true SEs are somewhat larger (the slow test compares them
with the covariance step's).  FOCEI, FOCE and Laplace must recover every
parameter within 3 of these SEs; FO gets its own, wider bounds (see its test).

Runtime: the simulation and the FOCEI fit (30-60 s on 2 CPU cores, mostly compilation) are
in the default run; the other methods and the covariance step are slow.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _checks import check_reports_its_own_ofv

import pmx_jax as pmx
from pmx_jax.estimation import EBEStatus

N_SUBJECTS = 200
SAMPLE_TIMES = (0.5, 1.0, 2.0, 3.0, 6.0, 9.0, 12.0, 24.0)  # h after 100 mg orally
DOSE = 100.0

KA, CL, V = 1.5, 4.0, 30.0  # 1/h, L/h, L
PROP_CV = 0.15
OMEGA_KA = 0.25
OMEGA_CL_V = np.array([[0.09, 0.03], [0.03, 0.04]])  # correlation 0.5


class OneCptOral(pmx.Model):
    """KA, CL, V log-normal; CL and V correlated; proportional error."""

    tka: pmx.Theta = pmx.theta(math.log(KA))
    tcl: pmx.Theta = pmx.theta(math.log(CL))
    tv: pmx.Theta = pmx.theta(math.log(V))
    prop_cv: pmx.Theta = pmx.theta(PROP_CV, lower=0.0)
    iiv_ka: pmx.Omega = pmx.omega(ka=OMEGA_KA)
    iiv: pmx.Omega = pmx.omega_block(("cl", "v"), OMEGA_CL_V)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop_cv)


# Truth, in the parameter names of FitResult.estimates().
TRUTH = {
    "tka": math.log(KA),
    "tcl": math.log(CL),
    "tv": math.log(V),
    "prop_cv": PROP_CV,
    "iiv_ka.ka": OMEGA_KA,
    "iiv.cl": OMEGA_CL_V[0, 0],
    "iiv.cl,v": OMEGA_CL_V[0, 1],
    "iiv.v": OMEGA_CL_V[1, 1],
}
LOG_THETAS = ("tka", "tcl", "tv")
VARIANCES = ("iiv_ka.ka", "iiv.cl", "iiv.v")

# Initial estimates: typical values 35-50% off, CV 0.25, variances doubled or
# more, no correlation.
START = dict(
    tka=0.0,
    tcl=math.log(CL) + 0.3,
    tv=math.log(V) - 0.3,
    prop_cv=0.25,
    iiv_ka=[0.5],
    iiv=[[0.2, 0.0], [0.0, 0.2]],
)


def approximate_se(n_subjects: int, n_observations: int) -> dict[str, float]:
    """Large-sample SEs from the truth (module docstring)."""
    n = n_subjects
    w = OMEGA_CL_V
    return {
        "tka": math.sqrt(OMEGA_KA / n),
        "tcl": math.sqrt(w[0, 0] / n),
        "tv": math.sqrt(w[1, 1] / n),
        "prop_cv": PROP_CV / math.sqrt(2 * n_observations),
        "iiv_ka.ka": OMEGA_KA * math.sqrt(2 / n),
        "iiv.cl": w[0, 0] * math.sqrt(2 / n),
        "iiv.cl,v": math.sqrt((w[0, 0] * w[1, 1] + w[0, 1] ** 2) / n),
        "iiv.v": w[1, 1] * math.sqrt(2 / n),
    }


@pytest.fixture(scope="module")
def population() -> pmx.Dataset:
    """200 virtual subjects simulated from the truth, as a NONMEM dataset."""
    return simulate_population(N_SUBJECTS)


def simulate_population(n_subjects: int, seed: int = 2024) -> pmx.Dataset:
    """``n_subjects`` virtual subjects simulated from the truth."""
    regimen = pmx.Regimen.oral(DOSE).sample(SAMPLE_TIMES)
    sim = pmx.simulate(OneCptOral(), regimen, key=jax.random.PRNGKey(seed), n_subjects=n_subjects)
    observed = sim.to_frame()
    table = pd.concat(
        [regimen.to_table(id_value=i + 1) for i in range(n_subjects)], ignore_index=True
    )
    is_obs = table["EVID"] == 0
    # to_frame lists each virtual subject's samples in time order, as the table does
    np.testing.assert_array_equal(table.loc[is_obs, "ID"], observed["SIM_ID"])
    np.testing.assert_array_equal(table.loc[is_obs, "TIME"], observed["TIME"])
    table.loc[is_obs, "DV"] = observed["DV"].to_numpy()
    data = pmx.read_nonmem(table)
    assert (data.n_subjects, data.n_observations) == (n_subjects, n_subjects * len(SAMPLE_TIMES))
    return data


def fit_from_start(data, method):
    """Fit without the covariance step (the slow test runs it on the FOCEI fit)."""
    return pmx.fit(OneCptOral().with_values(**START), data, method, covariance=None)


def errors(result) -> pd.Series:
    """Estimate minus truth, by parameter name."""
    table = result.estimates().set_index("parameter")["estimate"]
    return pd.Series({name: table[name] - truth for name, truth in TRUTH.items()})


def check_converged(result):
    assert result.converged, result.message
    assert np.all(result.ebe_status == EBEStatus.CONVERGED)
    check_reports_its_own_ofv(result)


def check_within_se(result, data, k: float = 3.0):
    se = pd.Series(approximate_se(data.n_subjects, data.n_observations))
    z = errors(result) / se
    assert np.all(np.abs(z) < k), f"estimates more than {k} SE from the truth:\n{z}"


@pytest.fixture(scope="module")
def focei(population):
    return fit_from_start(population, "focei")


def test_focei_recovers_the_truth(focei, population):
    check_converged(focei)
    check_within_se(focei, population)


@pytest.mark.slow
def test_focei_standard_errors_match_sampling_error(focei, population):
    # The covariance step's SEs: each estimate within 3 of them of the truth,
    # and the SEs themselves within [0.7, 1.6] times the large-sample
    # approximations (which ignore shrinkage, so they are a little too small).
    cov = focei.compute_covariance("sandwich").covariance
    assert cov.ok, cov.message
    se = pd.Series(dict(zip(cov.names, cov.se, strict=True)))[list(TRUTH)]
    z = errors(focei) / se
    assert np.all(np.abs(z) < 3.0), z
    ratio = se / pd.Series(approximate_se(population.n_subjects, population.n_observations))
    assert np.all((ratio > 0.7) & (ratio < 1.6)), ratio


@pytest.mark.slow
@pytest.mark.parametrize("method", ["foce", "laplace"])
def test_conditional_methods_recover_the_truth(population, method):
    # FOCE without interaction evaluates the proportional error at eta = 0; with
    # a 15% CV and IIV of 20-50% CV the resulting bias is well below the SEs.
    result = fit_from_start(population, method)
    check_converged(result)
    check_within_se(result, population)


@pytest.mark.slow
def test_fo_recovers_the_truth_within_its_bias(population):
    # FO linearises the model in eta at eta = 0: it fits the population-average
    # curve rather than the typical subject's, and the residual variance absorbs
    # the nonlinearity.  Its bias is expected to grow with omega (up to ~omega/2
    # on the log scale of the typical values, here 0.125 for KA) and is not a
    # sampling error, so the bounds are absolute: log THETAs within 0.15, the CV
    # within 25%, the OMEGA variances and covariance within 50%.  All are far
    # tighter than the distance of the initial estimates from the truth.
    result = fit_from_start(population, "fo")
    check_converged(result)  # the EBE status is that of FO's POSTHOC EBEs
    error = errors(result)
    for name in LOG_THETAS:
        assert abs(error[name]) < 0.15, (name, error[name])
    assert abs(error["prop_cv"]) < 0.25 * PROP_CV
    for name in (*VARIANCES, "iiv.cl,v"):
        assert abs(error[name]) < 0.5 * TRUTH[name], (name, error[name])
