"""Diagnostics of non-Gaussian endpoints against independent answers:
Kaplan-Meier against scipy, randomized quantile residuals of data simulated
from the model (standard normal) and from another model (not), categorical
and Kaplan-Meier VPCs of a model against its own simulated data, and the
simulated survival against the exact one."""

import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pmx_jax as pmx
from pmx_jax.diagnostics import (
    categorical_vpc,
    count_vpc,
    kaplan_meier,
    kaplan_meier_vpc,
    quantile_residuals,
)

matplotlib.use("Agg")

# A negligible IIV: the typical subject's distribution (quantile residuals of
# a Model, etas 0) is then the population's.
NO_IIV = 1e-12


# -- Kaplan-Meier -----------------------------------------------------------------------
def test_kaplan_meier_matches_scipy_ecdf():
    rng = np.random.default_rng(0)
    # Ties (times rounded to 0.5) between events, censorings and both.
    time = np.round(rng.exponential(5.0, 300) * 2) / 2 + 0.5
    event = rng.uniform(size=300) < 0.7
    table = kaplan_meier(time, event)
    reference = stats.ecdf(stats.CensoredData(uncensored=time[event], right=time[~event]))
    np.testing.assert_allclose(table.SURVIVAL, reference.sf.evaluate(table.TIME), atol=1e-12)
    # Between and after the distinct times the step function is flat.
    assert table.N_RISK.iloc[0] == 300 and table.N_EVENT.sum() == event.sum()
    assert (table.N_EVENT + table.N_CENSOR).sum() == 300
    np.testing.assert_array_equal(np.diff(table.N_RISK), -(table.N_EVENT + table.N_CENSOR)[:-1])


# -- randomized quantile residuals ---------------------------------------------------
class Endpoints(pmx.Model):
    """Every discrete observation model (and a Gaussian one), one DVID each."""

    b: pmx.Theta = pmx.theta(1.0)
    slope: pmx.Theta = pmx.theta(-0.1)
    iiv: pmx.Omega = pmx.omega(b=NO_IIV)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(x=self.b + self.slope * cov.TIME + eta.b)

    def observe(self, amounts, p):
        x = p["x"]
        return {
            1: pmx.Poisson(jnp.exp(x)),
            2: pmx.NegativeBinomial(jnp.exp(x), 0.5),
            3: pmx.OrderedCategorical(x, [0.0, 1.0, 2.5], categories=(1, 2, 3, 4)),
            4: pmx.Bernoulli(x - 1.0, link="probit"),
            5: pmx.Binomial(x - 0.5, 6.0),
            6: pmx.ZeroInflatedPoisson(jnp.exp(x), 0.2),
            7: pmx.Exponential(jnp.exp(x), 0.2),
        }


def _endpoint_draws(x: np.ndarray, dvid: np.ndarray, rng) -> np.ndarray:
    """Observations of :class:`Endpoints` drawn with numpy (not pmx.simulate)."""
    n = len(x)
    mean = np.exp(x)
    latent = x + rng.logistic(size=n)  # P(latent <= c) = expit(c - x)
    draws = {
        1: rng.poisson(mean),
        2: rng.negative_binomial(2.0, 2.0 / (2.0 + mean)),  # NB2, overdispersion 1/2
        3: 1.0 + (latent[:, None] > np.array([0.0, 1.0, 2.5])).sum(axis=1),
        4: rng.uniform(size=n) < stats.norm.cdf(x - 1.0),
        5: rng.binomial(6, 1.0 / (1.0 + np.exp(-(x - 0.5)))),
        6: np.where(rng.uniform(size=n) < 0.2, 0, rng.poisson(mean)),
        7: mean * np.exp(0.2 * rng.standard_normal(n)),
    }
    return np.select([dvid == k for k in draws], [np.asarray(v, float) for v in draws.values()])


def test_quantile_residuals_of_data_from_the_model_are_standard_normal():
    n, times = 150, np.arange(6.0)
    data = pd.DataFrame(
        [(i, t, d) for i in range(1, n + 1) for t in times for d in range(1, 8)],
        columns=["ID", "TIME", "DVID"],
    )
    x = 1.0 - 0.1 * data.TIME.to_numpy()
    data["DV"] = _endpoint_draws(x, data.DVID.to_numpy(), np.random.default_rng(3))
    frame = quantile_residuals(Endpoints(), data, seed=1)
    assert frame.attrs["etas"] == "population"
    assert list(frame.columns[:6]) == ["ID", "TIME", "DVID", "DV", "ENDPOINT", "RESIDUAL"]
    assert len(frame) == len(data) and np.all(np.isfinite(frame.RESIDUAL))
    # 6,300 residuals: KS p-value 0.29 at these seeds (statistic 0.012; its
    # 1% critical value is 0.021).
    assert stats.kstest(frame.RESIDUAL, "norm").pvalue > 0.01
    # Per endpoint (900 each): mean within 4 SE (0.13), SD within 0.12 of 1
    # (SE of an SD of 900 normals: 0.024).  Seen: means -0.027 to 0.059, SDs
    # 0.982 to 1.066, KS p-values 0.06 to 0.71.
    for dvid, residuals in frame.groupby("DVID").RESIDUAL:
        assert abs(residuals.mean()) < 0.13, dvid
        assert abs(residuals.std() - 1.0) < 0.12, dvid
    # Randomization: another seed changes discrete residuals, not Gaussian ones.
    again = quantile_residuals(Endpoints(), data, seed=2)
    gaussian = (frame.ENDPOINT == "Exponential").to_numpy()
    np.testing.assert_array_equal(frame.RESIDUAL[gaussian], again.RESIDUAL[gaussian])
    assert not np.allclose(frame.RESIDUAL[~gaussian], again.RESIDUAL[~gaussian])


def test_gaussian_residuals_are_standardised_and_censored_ones_randomized():
    class Linear(pmx.Model):
        a: pmx.Theta = pmx.theta(2.0)
        iiv: pmx.Omega = pmx.omega(a=NO_IIV)
        dynamics = pmx.pk.Pred()

        def individual(self, eta, cov):
            return dict(f=self.a + 0.5 * cov.TIME + eta.a)

        def observe(self, amounts, p):
            return pmx.Combined2(p["f"], 0.3, 0.1)

    data = pd.DataFrame(
        dict(
            ID=[1, 1, 1, 2, 2, 2],
            TIME=[0.0, 1, 2, 0, 1, 2],
            DV=[2.2, 2.0, 3.5, 1.0, 2.6, 3.1],
            CENS=[0, 1, 0, 1, 0, -1],
        )
    )
    frame = quantile_residuals(Linear(), data, seed=0)
    f = 2.0 + 0.5 * data.TIME.to_numpy()
    sd = np.sqrt(0.3**2 + (0.1 * f) ** 2)
    z = (data.DV.to_numpy() - f) / sd
    measured = (data.CENS == 0).to_numpy()
    np.testing.assert_allclose(frame.RESIDUAL[measured], z[measured], rtol=1e-12)
    # CENS = 1 (below the limit in DV): the residual is below the limit's
    # quantile; CENS = -1 (above): above it.
    assert np.all(frame.RESIDUAL[data.CENS == 1] < z[data.CENS == 1])
    assert np.all(frame.RESIDUAL[data.CENS == -1] > z[data.CENS == -1])


class ExponentialHazard(pmx.Model):
    """Constant hazard: ``S(t) = exp(-lambda t)``."""

    log_hazard: pmx.Theta = pmx.theta(np.log(0.08))
    iiv: pmx.Omega = pmx.omega(h=NO_IIV)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(t=cov.TIME, hazard=jnp.exp(self.log_hazard + eta.h))

    def observe(self, amounts, p):
        return pmx.TimeToEvent(hazard=p["hazard"], cumulative_hazard=p["hazard"] * p["t"])


HAZARD, DAYS = 0.08, 20


def _daily_design(n: int) -> pd.DataFrame:
    """Daily TTE records from day 1 to DAYS after a TIME 0 record (MDV 1)."""
    grid = np.arange(0.0, DAYS + 1.0)
    return pd.DataFrame(
        dict(
            ID=np.repeat(np.arange(1, n + 1), grid.size),
            TIME=np.tile(grid, n),
            DV=0.0,
            MDV=np.tile((grid == 0) * 1, n),
        )
    )


def _visit_data(n: int, seed: int) -> pd.DataFrame:
    """Events ascertained at daily visits (numpy draws): DV 2 where at least
    one event of the constant-hazard process happened since the previous day."""
    data = _daily_design(n)
    events = np.random.default_rng(seed).poisson(HAZARD, len(data)) > 0
    return data.assign(DV=np.where((data.MDV == 0) & events, 2.0, 0.0))


def test_time_to_event_residuals_are_standard_normal():
    rng = np.random.default_rng(5)
    # Subjects 1-100: exact times, one record each (the event, or event-free
    # at the end of follow-up); 101-200: daily visits, DV 2 for events.
    first = rng.exponential(1.0 / HAZARD, 100)
    exact = pd.DataFrame(
        dict(
            ID=np.repeat(np.arange(1, 101), 2),
            TIME=np.c_[np.zeros(100), np.minimum(first, DAYS)].ravel(),
            DV=np.c_[np.zeros(100), first <= DAYS].ravel() * 1.0,
            MDV=np.tile([1, 0], 100),
        )
    )
    visits = _visit_data(100, seed=6).assign(ID=lambda d: d.ID + 100)
    data = pd.concat([exact, visits], ignore_index=True)
    frame = quantile_residuals(ExponentialHazard(), data, seed=0)
    assert set(frame.DV) == {0.0, 1.0, 2.0} and len(frame) == 100 + 100 * DAYS
    # 2,100 residuals: KS p-value 0.99 at these seeds; the 100 exact-time
    # records alone 0.46, the visits alone 0.84.
    assert stats.kstest(frame.RESIDUAL, "norm").pvalue > 0.01
    assert stats.kstest(frame.RESIDUAL[frame.ID <= 100], "norm").pvalue > 0.01


class Counts(pmx.Model):
    b0: pmx.Theta = pmx.theta(1.0)
    iiv: pmx.Omega = pmx.omega(b=0.2)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(log_rate=self.b0 + eta.b)

    def observe(self, amounts, p):
        return pmx.Poisson(jnp.exp(p["log_rate"]))


class OverdispersedCounts(Counts):
    log_overdispersion: pmx.Theta = pmx.theta(np.log(0.5))

    def observe(self, amounts, p):
        return pmx.NegativeBinomial(jnp.exp(p["log_rate"]), jnp.exp(self.log_overdispersion))


def test_quantile_residuals_reveal_overdispersion():
    # NB2 counts (gamma-Poisson), mean exp(1.5 + eta), eta ~ N(0, 0.1),
    # overdispersion 1: the variance is 5.5 times the mean.
    rng = np.random.default_rng(7)
    mean = np.repeat(np.exp(1.5 + rng.normal(0.0, np.sqrt(0.1), 30)), 10)
    counts = rng.poisson(mean * rng.gamma(1.0, 1.0, 300))
    data = pmx.read_nonmem(
        pd.DataFrame(
            dict(ID=np.repeat(np.arange(1, 31), 10), TIME=np.tile(np.arange(10.0), 30), DV=counts)
        )
    )
    poisson = pmx.fit(Counts(), data, "laplace", covariance=None, progress=False)
    negative_binomial = pmx.fit(
        OverdispersedCounts(), data, "laplace", covariance=None, progress=False
    )
    wrong = quantile_residuals(poisson)
    right = quantile_residuals(negative_binomial)
    assert wrong.attrs["etas"] == "EBE" and right.attrs["etas"] == "EBE"
    # Measured: SD 1.90 under the Poisson fit (KS p 2e-15), 1.03 under the NB
    # fit (KS p 0.86); 300 residuals at the EBEs, SE of an SD about 0.04.
    assert wrong.RESIDUAL.std() > 1.4
    assert abs(right.RESIDUAL.std() - 1.0) < 0.12
    assert stats.kstest(wrong.RESIDUAL, "norm").pvalue < 1e-6
    assert stats.kstest(right.RESIDUAL, "norm").pvalue > 0.01


# -- categorical VPC -------------------------------------------------------------------
class Score(pmx.Model):
    """A 0-3 score that rises over time, with a random subject shift."""

    shift: pmx.Theta = pmx.theta(-0.5)
    slope: pmx.Theta = pmx.theta(0.15)
    iiv: pmx.Omega = pmx.omega(s=0.5)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(x=self.shift + self.slope * cov.TIME + eta.s)

    def observe(self, amounts, p):
        return pmx.OrderedCategorical(p["x"], [-0.5, 0.8, 2.0], categories=(0, 1, 2, 3))


def _score_data(seed: int = 1) -> pd.DataFrame:
    """60 subjects scored every 4 h, drawn with numpy from :class:`Score`."""
    rng = np.random.default_rng(seed)
    time = np.tile(np.arange(0.0, 24, 4), 60)
    eta = np.repeat(rng.normal(0.0, np.sqrt(0.5), 60), 6)
    latent = -0.5 + 0.15 * time + eta + rng.logistic(size=time.size)
    score = (latent[:, None] > np.array([-0.5, 0.8, 2.0])).sum(axis=1)
    return pd.DataFrame(dict(ID=np.repeat(np.arange(1, 61), 6), TIME=time, DV=score * 1.0))


def _inside(table: pd.DataFrame) -> np.ndarray:
    return ((table.OBSERVED >= table.SIM_LOWER) & (table.OBSERVED <= table.SIM_UPPER)).to_numpy()


def test_categorical_vpc_of_the_model_covers_its_own_data(tmp_path):
    result = categorical_vpc(Score(), _score_data(), n_sim=100, ci=0.9, seed=2)
    table = result.proportions
    assert result.categories == ("0", "1", "2", "3") and result.endpoint == "OrderedCategorical"
    assert len(table) == 6 * 4 and set(table.N_OBS) == {60}
    # Observed proportions and the simulated mean proportions sum to 1 per bin.
    sums = table.groupby("BIN")[["OBSERVED", "SIM_MEAN"]].sum()
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    assert np.all(table.SIM_LOWER <= table.SIM_MEDIAN) and np.all(
        table.SIM_MEDIAN <= table.SIM_UPPER
    )
    # The model's own data fall in the 90% interval in most of the 24 cells:
    # expected 21.6, at least 18 asked (binomial 24 x 0.9: P(< 18) = 2%, more
    # for correlated cells); 20 of 24 seen.  Under a falling score: 5 of 24.
    assert _inside(table).sum() >= 18
    # A trend the model lacks (the score falls instead) is caught.
    wrong = categorical_vpc(Score(slope=pmx.theta(-0.15)), _score_data(), n_sim=100, ci=0.9, seed=2)
    assert _inside(wrong.proportions).sum() <= 10
    result.plot(tmp_path / "categorical.png")


def test_count_vpc_pools_the_largest_counts():
    rng = np.random.default_rng(4)
    rate = np.repeat(np.exp(1.0 + rng.normal(0.0, np.sqrt(0.2), 40)), 5)
    data = pd.DataFrame(
        dict(
            ID=np.repeat(np.arange(1, 41), 5),
            TIME=np.tile(np.arange(5.0), 40),
            DV=rng.poisson(rate),
        )
    )
    result = count_vpc(Counts(), data, k=4, n_sim=50, bins=[0, 2, 5])
    assert result.categories == ("0", "1", "2", "3", ">= 4")
    table = result.proportions
    observed = data.DV.clip(upper=4)
    first = (data.TIME < 2).to_numpy()
    np.testing.assert_allclose(
        table[table.BIN == 0].OBSERVED, np.bincount(observed[first].astype(int), minlength=5) / 80
    )
    np.testing.assert_allclose(table.groupby("BIN").OBSERVED.sum(), 1.0)
    # Coverage: 10 cells, expected 9 inside, at least 7 asked (binomial:
    # P(< 7) = 1.3%); 8 seen.
    assert _inside(table).sum() >= 7
    with pytest.raises(ValueError, match=r"count_vpc needs an endpoint observed with count"):
        count_vpc(Score(), _score_data(), n_sim=2)


# -- Kaplan-Meier VPC ------------------------------------------------------------------
def test_kaplan_meier_vpc_of_an_exponential_hazard(tmp_path):
    n, n_sim = 100, 100
    data = _visit_data(n, seed=1)
    exact = kaplan_meier_vpc(ExponentialHazard(), data, n_sim=n_sim, exact_times=True, seed=1)
    visits = kaplan_meier_vpc(ExponentialHazard(), data, n_sim=n_sim, seed=1)
    assert exact.exact_times and not visits.exact_times and visits.notes
    grid = exact.simulated.TIME.to_numpy()
    assert grid[0] == 0.0 and grid[-1] == DAYS and len(grid) == 201
    # The median KM curve of 100 replicates of 100 subjects against the exact
    # survival: SE of one KM value <= sqrt(0.25 / 100) = 0.05, of the median
    # over 100 replicates ~ 1.25 x 0.05 / 10 = 0.006, plus the KM's steps of
    # 1/100: 0.03 allowed (largest differences seen: 0.016 exact, 0.011 at
    # visits).
    np.testing.assert_allclose(exact.simulated.MEDIAN, np.exp(-HAZARD * grid), atol=0.03)
    # Events ascertained at daily visits: survival steps at whole days.
    np.testing.assert_allclose(visits.simulated.MEDIAN, np.exp(-HAZARD * np.floor(grid)), atol=0.03)
    # The observed curve: each subject's first visit with DV 2, or censored
    # at day 20.
    on = data[data.MDV == 0]
    first = on[on.DV == 2].groupby("ID").TIME.min()
    ids = np.arange(1, n + 1)
    np.testing.assert_array_equal(visits.subjects.TIME, first.reindex(ids).fillna(DAYS))
    np.testing.assert_array_equal(visits.subjects.EVENT, np.isin(ids, first.index))
    assert visits.observed.N_RISK.iloc[0] == n and visits.observed.N_CENSOR.sum() == n - len(first)
    # The observed curve against the 90% band of the visit-coarsened
    # simulation: the share of the grid inside it varies a lot between
    # datasets (whole curves drift together): over 60 datasets drawn from
    # the model, median 0.95 and 5th percentile 0.50.  At this seed all of it
    # is inside; under a doubled hazard 0.05 of it (0.05 to 0.3 for a 1.5x
    # hazard at three seeds).
    wrong = kaplan_meier_vpc(
        ExponentialHazard(log_hazard=pmx.theta(np.log(2 * HAZARD))), data, n_sim=n_sim, seed=1
    )
    assert _share_inside(visits) >= 0.5
    assert _share_inside(wrong) < 0.35
    visits.plot(tmp_path / "km.png")


def _share_inside(result) -> float:
    band = result.simulated
    observed = _step(result.observed, band.TIME.to_numpy())
    return float(((observed >= band.LOWER - 1e-12) & (observed <= band.UPPER + 1e-12)).mean())


def _step(table: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """The Kaplan-Meier step function of ``table`` at ``times``."""
    index = np.searchsorted(table.TIME.to_numpy(), times, side="right") - 1
    return np.where(index >= 0, table.SURVIVAL.to_numpy()[np.maximum(index, 0)], 1.0)


# -- input checks ---------------------------------------------------------------------
class ConcentrationAndScore(pmx.Model):
    b: pmx.Theta = pmx.theta(0.0)
    iiv: pmx.Omega = pmx.omega(b=0.1)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(x=self.b + eta.b, t=cov.TIME)

    def observe(self, amounts, p):
        return {
            1: pmx.Proportional(jnp.exp(p["x"]), 0.1),
            2: pmx.Bernoulli(p["x"]),
            3: pmx.Poisson(jnp.exp(p["x"])),
            4: pmx.TimeToEvent(hazard=0.1, cumulative_hazard=0.1 * p["t"]),
        }


def test_inputs_are_checked_with_errors_that_say_what_to_change():
    data = pd.DataFrame(
        dict(
            ID=1,
            TIME=[1.0, 1, 1, 1, 2, 2, 2, 2],
            DV=[1.0, 1, 2, 0, 1.2, 0, 0, 1],
            DVID=[1, 2, 3, 4] * 2,
        )
    )
    model = ConcentrationAndScore()
    with pytest.raises(ValueError, match=r"several such endpoints \(DVID 2, 3\).*dvid="):
        categorical_vpc(model, data, n_sim=2)
    with pytest.raises(TypeError, match=r"Proportional.*pmx_jax.diagnostics.vpc"):
        categorical_vpc(model, data, n_sim=2, dvid=1)
    with pytest.raises(TypeError, match=r"TimeToEvent.*kaplan_meier_vpc"):
        categorical_vpc(model, data, n_sim=2, dvid=4)
    with pytest.raises(TypeError, match=r"DVID 2 is observed with Bernoulli.*categorical_vpc"):
        count_vpc(model, data, n_sim=2, dvid=2)
    with pytest.raises(TypeError, match=r"DVID 3 is observed with Poisson.*time-to-event"):
        kaplan_meier_vpc(model, data, n_sim=2, dvid=3)
    with pytest.raises(ValueError, match=r"DVID 9 is not an endpoint.*1 \(Proportional\)"):
        kaplan_meier_vpc(model, data, n_sim=2, dvid=9)
    with pytest.raises(ValueError, match="n_sim must be at least 2"):
        categorical_vpc(model, data, n_sim=1, dvid=2)
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        kaplan_meier_vpc(model, data, ci=90, dvid=4)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        categorical_vpc(model, data, dvid=3, k=0)
    with pytest.raises(ValueError, match="needs the data"):
        quantile_residuals(model)
    with pytest.raises(TypeError, match=r"DVID 1 is observed with Proportional.*diagnostics.vpc"):
        kaplan_meier_vpc(model, data, n_sim=2, dvid=1)
    # The one time-to-event (count) endpoint is found without dvid.
    assert kaplan_meier_vpc(model, data, n_sim=2).dvid == 4
    assert count_vpc(model, data, n_sim=2).dvid == 3


def test_docstring_examples():
    import doctest

    from pmx_jax.diagnostics import _discrete

    assert doctest.testmod(_discrete).failed == 0


@pytest.mark.slow  # about 16 s; test_pmx_fit_and_report_of_a_count_model covers the report path
def test_write_report_of_a_count_and_event_model_writes_their_checks(tmp_path):
    from pmx_jax.diagnostics import write_report

    class CountsAndEvents(pmx.Model):
        log_rate: pmx.Theta = pmx.theta(0.5)
        log_hazard: pmx.Theta = pmx.theta(-2.0)
        iiv: pmx.Omega = pmx.omega(b=0.2)
        dynamics = pmx.pk.Pred()

        def individual(self, eta, cov):
            return dict(b=eta.b, t=cov.TIME)

        def observe(self, amounts, p):
            hazard = jnp.exp(self.log_hazard + p["b"])
            return {
                1: pmx.Poisson(jnp.exp(self.log_rate + p["b"])),
                2: pmx.TimeToEvent(hazard=hazard, cumulative_hazard=hazard * p["t"]),
            }

    rng = np.random.default_rng(5)
    rows = []
    for i in range(1, 21):
        b = rng.normal(0, 0.45)
        rows += [(i, t, float(rng.poisson(np.exp(0.5 + b))), 1) for t in (1.0, 2.0, 3.0)]
        event = rng.exponential(1 / np.exp(-2.0 + b))
        rows.append((i, min(event, 4.0), float(event < 4.0), 2))
    table = pd.DataFrame(rows, columns=["ID", "TIME", "DV", "DVID"]).sort_values(
        ["ID", "TIME"], kind="stable"
    )
    fit = pmx.fit(CountsAndEvents(), pmx.read_nonmem(table), "laplace", covariance=None)
    written = {path.stem for path in write_report(fit, tmp_path, n_sim=20)}
    # No CWRES (no Gaussian endpoint): quantile residuals instead, and one
    # check per endpoint of its kind.
    assert written == {
        "qq_quantile_residuals",
        "eta_distributions",
        "categorical_vpc_dvid1",
        "km_vpc_dvid2",
    }


def test_pmx_fit_and_report_of_a_count_model(tmp_path):
    # The command line end to end: a Laplace fit of a Poisson model from a
    # run specification, then `pmx report` reading the run back from disk.
    from pmx_jax._cli import main

    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, 31):
        b = rng.normal(0, 0.5)
        rows += [(i, float(t), float(rng.poisson(np.exp(1 + b)))) for t in range(5)]
    pd.DataFrame(rows, columns=["ID", "TIME", "DV"]).to_csv(tmp_path / "counts.csv", index=False)
    (tmp_path / "counts.toml").write_text(
        'name = "counts"\n[model]\nuse = "test_observation_models:CountModel"\n'
        '[data]\npath = "counts.csv"\n[fit]\nmethod = "laplace"\n'
    )
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "counts.toml"), "--output", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    written = {path.stem for path in (run / "plots").iterdir()}
    assert written == {"qq_quantile_residuals", "eta_distributions", "categorical_vpc"}
