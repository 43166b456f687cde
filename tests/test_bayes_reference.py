"""NUTS (``pmx.sample``) against known answers: recovery of a simulated
population, and agreement with FOCEI on three reference datasets.

Every test runs ``pmx.sample`` with its defaults (chains started from a FOCEI
fit, default priors, automatic parametrisation, dense mass matrix) except for
shorter chains: 4 chains x (300 warmup + 500 draws), 2,000 draws in all
(warfarin: the defaults, 500 + 1,000; see its test).  Measured bulk ESS is
>= 450 for every parameter, so the Monte Carlo error of a posterior mean is
below 0.05 posterior SD, and the rank-normalised split R-hat of a converged
run stays below 1.01 (phenobarbital: 1.02, see its test).  No divergence is
allowed: the posteriors here are smooth, and one divergence in 2,000 draws
signals a geometry the sampler does not handle.

Tolerances (the measured values are in each test's comments):

- *Recovery*: with 8 population parameters and 90% intervals, some interval
  misses the truth for more than half of all datasets, so "every 90% interval
  covers" is a property of one seed, not of the sampler.  The test asserts
  what holds for any seed with high probability: every truth lies within the
  central 99.5% posterior interval (from the draws; Bonferroni over 8
  parameters: a family-wise miss rate of about 4% for a calibrated
  posterior), and the mean of ``|posterior mean - truth| / posterior SD`` is
  below 1.2 (for a calibrated posterior its expectation is ``sqrt(2/pi) =
  0.80`` and its SD over 8 roughly independent parameters about 0.21, so 1.2
  is two SDs above).  It also asserts that every 90% interval covers the truth
  for the fixed simulation seed used here (checked: mean |z| 0.83, largest
  |z| 1.53 for tka).
- *FOCEI agreement*: under the default (nearly flat) priors the posterior
  mean of a THETA equals its maximum-likelihood estimate up to O(1/n) terms
  and the skewness of its posterior, well below its standard error.  THETA
  posterior means must lie within 0.5 FOCEI (sandwich) SE of the estimate
  (0.75 where an eta is 45-50% shrunk; see those tests).  An OMEGA variance is
  different: its posterior is right-skewed, and even its median exceeds the ML
  estimate by a factor of about ``n / (n - 8/3)`` for ``n`` well-informed
  subjects (the inverse-gamma posterior of a variance under a prior flat on the
  SD, less one degree of freedom for the typical value): 1.29 for
  theophylline's 12 subjects (measured 1.27-1.34), which is 0.6-0.75 of an SE.
  Shrinkage lowers the effective ``n`` (measured: 1.22 for phenobarbital's CL,
  1.44 for warfarin's KA, both ~46% shrunk).  The variance is a scale
  parameter, so the comparison is relative: the posterior *median* must lie
  within a factor ``e^0.5 = 1.65`` of the estimate.

Runtime on a 2-core CPU shared with other work: 2-9 minutes per test (about
16 minutes for the file), half of it or more compiling the FOCEI fit and the
sampler, hence slow.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _reference_models import WARFARIN_EXT, WarfarinPK, initial_estimates, warfarin_data

import pmx_jax as pmx

N_CHAINS, N_WARMUP, N_SAMPLES = 4, 300, 500
RHAT_MAX = 1.01
OMEGA_LOG_TOL = 0.5

# -- recovery --------------------------------------------------------------------------

N_SUBJECTS = 100
DOSE = 100.0  # mg orally every 24 h, 4 doses
KA, CL, V = 1.2, 4.0, 40.0  # 1/h, L/h, L
PROP_CV = 0.15
OMEGA_KA = 0.16
OMEGA_CL_V = np.array([[0.09, 0.045], [0.045, 0.09]])  # correlation 0.5
SIMULATION_SEED = 1


class OralMultipleDose(pmx.Model):
    """One compartment, first-order absorption, log-normal IIV on KA and a
    correlated CL-V block, proportional error.  The initial estimates are
    deliberately off the truth (the starting FOCEI fit must find it)."""

    tka: pmx.Theta = pmx.theta(0.0)
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.5)
    prop_cv: pmx.Theta = pmx.theta(0.3, lower=0.0)
    iiv_ka: pmx.Omega = pmx.omega(ka=0.3)
    iiv: pmx.Omega = pmx.omega_block(("cl", "v"), [0.2, 0.05, 0.2])
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop_cv)


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


def multiple_dose_design(n_subjects: int) -> pd.DataFrame:
    """4 daily doses into the depot; a profile after the first dose, troughs
    before the 2nd and 3rd, and a profile after the last (15 samples)."""
    after_first = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0)
    after_last = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)
    rows = []
    for subject in range(1, n_subjects + 1):
        for day in range(4):
            start = 24.0 * day
            rows.append(dict(ID=subject, TIME=start, AMT=DOSE, EVID=1, MDV=1, DV=0.0, CMT=1))
            times = after_first if day == 0 else after_last if day == 3 else (23.5,)
            for dt in times:
                rows.append(
                    dict(ID=subject, TIME=start + dt, AMT=0.0, EVID=0, MDV=0, DV=0.0, CMT=2)
                )
    return pd.DataFrame(rows)


def simulated_population() -> pmx.Dataset:
    table = multiple_dose_design(N_SUBJECTS)
    truth = OralMultipleDose().with_values(
        tka=TRUTH["tka"],
        tcl=TRUTH["tcl"],
        tv=TRUTH["tv"],
        prop_cv=PROP_CV,
        iiv_ka=[OMEGA_KA],
        iiv=OMEGA_CL_V,
    )
    simulated = pmx.simulate(truth, table, key=jax.random.PRNGKey(SIMULATION_SEED))
    frame = simulated.to_frame(observations_only=False)
    table["DV"] = np.where(table["EVID"] == 0, frame["DV"].to_numpy(), 0.0)
    return pmx.read_nonmem(table)


def print_table(title: str, table: pd.DataFrame, result) -> None:
    """The comparison table (shown with ``pytest -s``)."""
    timings = {k: round(v, 1) for k, v in result.timings.items()}
    options = ("display.width", 200, "display.max_columns", None, "display.precision", 4)
    with pd.option_context(*options):
        print(f"\n{title}: {result!r}, parameterization {result.settings['parameterization']}")
        print(f"timings (s): {timings}")
        print(table)


def check_chains(result, summary: pd.DataFrame, rhat_max: float = RHAT_MAX) -> None:
    assert result.n_divergent == 0
    assert (summary["rhat"] < rhat_max).all(), summary["rhat"]


@pytest.mark.slow
def test_nuts_recovers_simulated_population():
    data = simulated_population()
    assert (data.n_subjects, data.n_observations) == (N_SUBJECTS, 15 * N_SUBJECTS)
    result = pmx.sample(
        OralMultipleDose(), data, n_chains=N_CHAINS, n_warmup=N_WARMUP, n_samples=N_SAMPLES
    )
    summary = result.summary()
    assert sorted(summary.index) == sorted(TRUTH)
    truth = pd.Series(TRUTH)
    draws = {name: result.parameter(name) for name in TRUTH}
    summary["truth"] = truth
    summary["q0.25"] = [np.quantile(draws[n], 0.0025) for n in summary.index]
    summary["q99.75"] = [np.quantile(draws[n], 0.9975) for n in summary.index]
    summary["z"] = (summary["mean"] - summary["truth"]) / summary["sd"]
    print_table("recovery", summary, result)

    check_chains(result, summary)
    assert ((summary["q0.25"] < truth) & (truth < summary["q99.75"])).all()
    assert summary["z"].abs().mean() < 1.2
    # this seed's 90% intervals all cover (checked; see the module notes)
    assert ((summary["q5"] < truth) & (truth < summary["q95"])).all()


def compare_with_focei(
    title: str,
    model: pmx.Model,
    data: pmx.Dataset,
    *,
    rhat_max: float = RHAT_MAX,
    n_warmup: int = N_WARMUP,
    n_samples: int = N_SAMPLES,
) -> pd.DataFrame:
    """FOCEI fit (sandwich SEs), then NUTS from it; checks the chains and
    returns the table of posterior summaries against the estimates."""
    fit = pmx.fit(model, data, "focei")
    assert fit.converged, fit.message
    assert fit.covariance is not None and fit.covariance.ok, fit.covariance
    result = pmx.sample(
        model, data, n_chains=N_CHAINS, n_warmup=n_warmup, n_samples=n_samples, init=fit
    )
    estimates = fit.estimates().set_index("parameter")
    table = result.summary()
    table["estimate"] = estimates["estimate"]
    table["se"] = estimates["se"]
    table["z_mean"] = (table["mean"] - table["estimate"]) / table["se"]
    table["z_median"] = (table["q50"] - table["estimate"]) / table["se"]
    print_table(title, table, result)
    check_chains(result, table, rhat_max)
    return table


def check_agreement(
    table: pd.DataFrame, thetas: list[str], omegas: list[str], theta_tol: float = 0.5
) -> None:
    """THETA posterior means within ``theta_tol`` FOCEI SEs of the estimates;
    OMEGA posterior medians within a factor ``e^0.5 = 1.65`` of them."""
    assert sorted(table.index) == sorted(thetas + omegas)
    assert (table.loc[thetas, "z_mean"].abs() < theta_tol).all(), table.loc[thetas, "z_mean"]
    log_ratio = np.log(table.loc[omegas, "q50"] / table.loc[omegas, "estimate"])
    assert (log_ratio.abs() < OMEGA_LOG_TOL).all(), log_ratio


@pytest.mark.slow
def test_nuts_agrees_with_focei_theophylline():
    # Measured: THETA means within 0.16 SE; OMEGA medians 1.34, 1.28, 1.31
    # times the estimates (expected about 1.29, see the module notes); R-hat
    # <= 1.005, bulk ESS >= 1,100 (centred random effects: shrinkage <= 10%).
    table = compare_with_focei(
        "theophylline", pmx.library.Theophylline(), pmx.datasets.load("theophylline")
    )
    check_agreement(table, ["tka", "tcl", "tv", "add_sd"], ["iiv.ka", "iiv.cl", "iiv.v"])


@pytest.mark.slow
def test_nuts_agrees_with_focei_phenobarbital():
    # Non-centred random effects (47% shrinkage on CL): bulk ESS 450-750 of
    # 2,000 draws, where the split R-hat of a converged run scatters by about
    # 0.005 (measured maximum over the 6 parameters: 1.009), hence 1.02.
    table = compare_with_focei(
        "phenobarbital",
        pmx.library.Phenobarbital(),
        pmx.datasets.load("phenobarbital"),
        rhat_max=1.02,
    )
    # th_cl's posterior mean lies 0.46 SE below FOCEI's estimate (a systematic
    # difference: its Monte Carlo error is below 0.05 SE): 59 neonates with 1-6
    # samples each, 47% shrinkage on CL, where FOCEI's linearised marginal
    # likelihood is least exact and the skewed posterior of iiv.cl (mean 40%
    # above the estimate) pulls the typical clearance down.  Hence 0.75 SE.
    # OMEGA medians: 1.22 (CL), 1.07 (V) times the estimates.
    check_agreement(
        table, ["th_cl", "th_v", "th_apgar", "prop_cv"], ["iiv.cl", "iiv.v"], theta_tol=0.75
    )


@pytest.mark.slow
def test_nuts_agrees_with_focei_warfarin(refdata):
    # KA is poorly identified (46% shrinkage: few samples in the absorption
    # phase), so "auto" makes every random effect non-centred, which mixes
    # slowly on the well-determined CL and V: with 300 + 500 iterations R-hat
    # reached 1.021 (iiv.cl) with one divergence.  The sampler's defaults,
    # 500 warmup + 1,000 draws per chain, gave R-hat <= 1.009 and no
    # divergence once, and later (other rounding in the potential) one
    # divergence, or R-hat 1.011 on tcl.  1,000 warmup + 1,000 draws: R-hat
    # <= 1.0091 (tcl), bulk ESS >= 630, no divergence; but the chains start
    # from the fit, so rounding in the fit's last digits (2e-13 relative,
    # 2026-12-07: the EBE search and the objective as two programs) gave
    # R-hat 1.0113 on tcl with bulk ESS 581.  2,000 draws halve R-hat's Monte
    # Carlo error, which the 1.01 criterion sat within.  The posterior of tka
    # is right-skewed (mean 0.45 SE, median 0.31 SE above the ML estimate in
    # each of three runs: two chain
    # lengths, both parametrisations; its Monte Carlo error is 0.05 SE), hence
    # 0.75 SE.  OMEGA medians: 1.44 (KA), 1.10 (CL), 1.11 (V) times the estimates.
    model = WarfarinPK.at(initial_estimates(refdata, WARFARIN_EXT))
    table = compare_with_focei(
        "warfarin PK", model, warfarin_data(refdata), n_warmup=1000, n_samples=2000
    )
    check_agreement(
        table, ["tka", "tcl", "tv", "prop", "add"], ["iiv.ka", "iiv.cl", "iiv.v"], theta_tol=0.75
    )
