"""NPDE and NPD (pmx_jax.diagnostics._npde): against NONMEM's table for Wang
(2007) (statistically: both are Monte-Carlo estimates), standard normal under
a correctly specified model, and the bookkeeping of dose and censored records.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_estimation_wang import ERRORS, Wang, wang_table

import pmx_jax as pmx
from pmx_jax.diagnostics._npde import npde

# -- a correctly specified simulated population (shared with test_vpc) ---------------
SAMPLE_TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0)
N_SUBJECTS = 128  # pmx.simulate's CPU chunk: every simulation here reuses one compilation


class IVBolus(pmx.Model):
    """One compartment, IV bolus; IIV on CL and V; combined additive + proportional
    error (concentration in mg/L, time in h)."""

    tcl: pmx.Theta = pmx.theta(math.log(2.0))
    tv: pmx.Theta = pmx.theta(math.log(20.0))
    add: pmx.Theta = pmx.theta(0.1, lower=0.0)
    prop: pmx.Theta = pmx.theta(0.15, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.09, v=0.04)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl), v=jnp.exp(self.tv + eta.v))

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add, self.prop)


def design_table() -> pd.DataFrame:
    """128 subjects: 100 mg at t = 0 and six samples; GROUP alternates 1, 2."""
    rows = []
    for subject in range(1, N_SUBJECTS + 1):
        group = 1 + subject % 2
        rows.append(dict(ID=subject, TIME=0.0, AMT=100.0, DV=np.nan, EVID=1, GROUP=group))
        rows += [
            dict(ID=subject, TIME=t, AMT=0.0, DV=0.0, EVID=0, GROUP=group) for t in SAMPLE_TIMES
        ]
    return pd.DataFrame(rows)


@functools.cache
def observed_table(seed: int = 7) -> pd.DataFrame:
    """The design with DV simulated from the true model (IVBolus())."""
    table = design_table()
    sims = pmx.simulate(IVBolus(), pmx.read_nonmem(table), key=jax.random.PRNGKey(seed))
    frame = sims.to_frame()
    table = table.copy()
    table.loc[table.EVID == 0, "DV"] = frame.DV.to_numpy()
    return table


# -- Wang (2007) against NONMEM --------------------------------------------------------
N_SIM_WANG = 2000
NONMEM_ESAMPLE = 300  # NONMEM's NPDE are Phi^-1(k / 300): its default ESAMPLE


@pytest.fixture(scope="module")
def wang(refdata):
    model = Wang().with_values(**ERRORS["proportional"])
    dataset = pmx.read_nonmem(wang_table(refdata))
    ours = npde(model, dataset, n_sim=N_SIM_WANG, seed=0)
    nonmem = pd.read_csv(refdata / "Wang2007_NONMEM_focei_prop_table.csv")
    return ours, nonmem


def test_nonmem_esample_is_300(wang):
    _, nonmem = wang
    counts = stats.norm.cdf(nonmem.NPDE) * NONMEM_ESAMPLE
    np.testing.assert_allclose(counts, np.round(counts), atol=0.02)


@pytest.mark.parametrize("ours_column, nonmem_column", [("PDE", "NPDE"), ("PD", "NPD")])
def test_wang_matches_nonmem_within_monte_carlo_error(wang, ours_column, nonmem_column):
    """Both tables estimate the same probability p per observation from
    independent simulations (ours K = 2000, NONMEM's 300), so the difference
    has SE sqrt(p (1 - p) (1/300 + 1/2000)) (p pooled from both).  Each of the
    20 differences must be within 3.5 SE (two-sided 5e-4 each: a 1% family-wise
    level by Bonferroni) and their sum of squared z-scores must not be
    extreme for chi2(20) (p > 0.001).  (NONMEM's NPD integrates the residual
    error analytically, which only lowers its SE: the bound is conservative.)"""
    ours, nonmem = wang
    ours = ours[ours.EVID == 0].reset_index(drop=True)
    assert len(ours) == len(nonmem) == 20
    np.testing.assert_allclose(ours.TIME, nonmem.TIME)
    np.testing.assert_allclose(ours.DV, nonmem.DV)
    p_ours = ours[ours_column].to_numpy()
    p_nonmem = stats.norm.cdf(nonmem[nonmem_column].to_numpy())
    pooled = (p_ours * N_SIM_WANG + p_nonmem * NONMEM_ESAMPLE) / (N_SIM_WANG + NONMEM_ESAMPLE)
    se = np.sqrt(pooled * (1 - pooled) * (1 / N_SIM_WANG + 1 / NONMEM_ESAMPLE))
    z = (p_ours - p_nonmem) / se
    assert np.max(np.abs(z)) < 3.5, z
    assert stats.chi2.sf(np.sum(z**2), df=len(z)) > 1e-3


def test_wang_epred_is_the_mean_prediction(wang):
    """EPRED estimates E[y] = 10 E[exp(-0.5 exp(eta) t)], eta ~ N(0, 0.04), whose
    exact value (Gauss-Hermite) is compared within 4 Monte-Carlo SE,
    sd(y) / sqrt(K) with Var(y) = E[f^2] (1 + 0.1) - E[f]^2."""
    ours, nonmem = wang
    ours = ours[ours.EVID == 0]
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / weights.sum()
    for t in (0.0, 1.0):
        f = 10.0 * np.exp(-0.5 * np.exp(0.2 * nodes) * t)
        mean, second = weights @ f, weights @ f**2
        se = math.sqrt(second * 1.1 - mean**2) / math.sqrt(N_SIM_WANG)
        values = ours.EPRED[ours.TIME == t].to_numpy()
        assert np.all(np.abs(values - mean) < 4 * se), (t, values, mean, se)
    # NONMEM's EPRED averages predictions over eta draws only: exactly 10 at t = 0.
    np.testing.assert_allclose(nonmem.EPRED[nonmem.TIME == 0], 10.0)


def test_wang_table_layout(wang):
    ours, _ = wang
    assert list(ours.columns) == [
        "ID",
        "TIME",
        "EVID",
        "DV",
        "EPRED",
        "PD",
        "NPD",
        "PDE",
        "NPDE",
        "row",
    ]
    assert len(ours) == 30 and list(ours.row) == list(range(30))
    doses = ours[ours.EVID == 1]
    assert doses[["EPRED", "PD", "NPD", "PDE", "NPDE"]].isna().all().all()
    observations = ours[ours.EVID == 0]
    assert observations[["EPRED", "PD", "NPD", "PDE", "NPDE"]].notna().all().all()
    np.testing.assert_allclose(observations.NPDE, stats.norm.ppf(observations.PDE))


# -- correctly specified model: NPDE ~ N(0, 1) ------------------------------------------
@pytest.fixture(scope="module")
def simulated_npde():
    return npde(IVBolus(), observed_table(), n_sim=500, seed=1)


def test_npde_is_standard_normal_under_the_true_model(simulated_npde):
    """768 NPDE (128 subjects x 6): independent N(0, 1) under the true model.
    Mean within 3 SE (1 / sqrt(N)); variance within 3 SE of the sample
    variance of normals (sqrt(2 / (N - 1)) = 0.051); Kolmogorov-Smirnov p > 0.01.
    With K = 500, pde lies on a grid of step 1/500, far finer than the KS
    statistic's resolution at N = 768."""
    values = simulated_npde.NPDE.dropna().to_numpy()
    n = len(values)
    assert n == N_SUBJECTS * len(SAMPLE_TIMES)
    assert abs(values.mean()) < 3 / math.sqrt(n)
    assert abs(values.var(ddof=1) - 1) < 3 * math.sqrt(2 / (n - 1))
    assert stats.kstest(values, "norm").pvalue > 0.01
    # NPD are standard normal marginally as well (correlated within a subject).
    npd_values = simulated_npde.NPD.dropna().to_numpy()
    assert abs(npd_values.mean()) < 3 * 2.5 / math.sqrt(n)  # 2.5: design effect allowance


def test_cholesky_decorrelation_keeps_first_observation(simulated_npde):
    """With the Cholesky factor the first decorrelated value of a subject is
    (y1 - E1) / sd1, a monotone map of y1: its PDE equals its PD."""
    observations = simulated_npde[simulated_npde.EVID == 0]
    first = observations.groupby("ID").head(1)
    np.testing.assert_allclose(first.PDE, first.PD)
    later = observations.drop(first.index)
    assert not np.allclose(later.PDE, later.PD)


def test_inverse_decorrelation_is_also_standard_normal():
    values = npde(IVBolus(), observed_table(), n_sim=500, seed=2, decorrelation="inverse")
    values = values.NPDE.dropna().to_numpy()
    assert abs(values.mean()) < 3 / math.sqrt(len(values))
    assert stats.kstest(values, "norm").pvalue > 0.01


def test_misspecified_model_is_detected():
    """Clearance twice the truth: the observations sit above the predictive
    distribution, NPDE mean far from 0."""
    wrong = IVBolus().with_values(tcl=math.log(4.0))
    values = npde(wrong, observed_table(), n_sim=200, seed=3).NPDE.dropna()
    assert values.mean() > 0.5


# -- bookkeeping --------------------------------------------------------------------------
def test_censored_records_are_nan_with_a_note():
    table = observed_table().copy()
    below = (table.EVID == 0) & (table.DV < 1.0)
    assert below.sum() > 10
    table["CENS"] = below.astype(int)
    table.loc[below, "DV"] = 1.0
    result = npde(IVBolus(), table, n_sim=200, seed=4)
    censored = result[below.to_numpy()]
    assert censored[["PD", "NPD", "PDE", "NPDE"]].isna().all().all()
    assert censored.EPRED.notna().all()
    measured = result[((table.EVID == 0) & ~below).to_numpy()]
    assert measured.NPDE.notna().all()
    assert any("censored (BLQ)" in note for note in result.attrs["notes"])


def test_same_seed_same_npde():
    first = npde(IVBolus(), observed_table(), n_sim=200, seed=5)
    again = npde(IVBolus(), observed_table(), n_sim=200, seed=5)
    pd.testing.assert_frame_equal(first, again)


def test_bad_input_is_named():
    data = observed_table()
    with pytest.raises(ValueError, match="decorrelation must be one of"):
        npde(IVBolus(), data, decorrelation="svd")
    with pytest.raises(ValueError, match="n_sim > 6"):
        npde(IVBolus(), data, n_sim=5)
    with pytest.raises(ValueError, match="needs the data"):
        npde(IVBolus())
    with pytest.raises(TypeError, match="FitResult"):
        npde("run1", data)


@pytest.mark.slow
def test_npde_of_a_fit(refdata):
    model = Wang().with_values(**ERRORS["proportional"])
    fit = pmx.fit(model, pmx.read_nonmem(wang_table(refdata)), "focei", covariance=None)
    result = npde(fit, n_sim=300)
    assert result.NPDE[result.EVID == 0].notna().all()


def test_npde_of_a_subset_names_its_own_records():
    # Dataset.subset keeps the original row numbers: NPDE must map its
    # records by them (it indexed by position and failed past the subset).
    data = pmx.datasets.load("theophylline")
    subset = data.subset([11, 12])
    result = npde(pmx.library.Theophylline(), subset, n_sim=50)
    records = subset.records
    pd.testing.assert_series_equal(
        result["TIME"].reset_index(drop=True),
        records["time"].reset_index(drop=True),
        check_names=False,
    )
    assert list(result["ID"]) == list(records["id"]) and set(result["ID"]) == {11, 12}
    assert list(result["row"]) == list(records["row"])
