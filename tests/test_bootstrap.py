"""Nonparametric bootstrap and SIR.

Default run: the resampling (IDs renumbered, strata kept, the index path equal
to the dataset path) and the SIR kernel on Gaussian targets with known answers,
without fitting; one FO fit of theophylline (one compilation, shared by the
module) for a short bootstrap, which must not compile again.  Slow: a FOCEI
fit with its covariance step, 40 bootstrap replicates against the sandwich SEs
and SIR against the covariance step's R-matrix intervals.
"""

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from scipy import stats

import pmx_jax as pmx
from pmx_jax.diagnostics._bootstrap import bootstrap
from pmx_jax.diagnostics._compile_counter import compilation_count
from pmx_jax.diagnostics._resample import (
    _resampled_prepared,
    resample_indices,
    resample_subjects,
    resampled_dataset,
    subject_strata,
)
from pmx_jax.diagnostics._sir import SIRResult, _call, _LogJacobian, chi2_quantile, sir
from pmx_jax.diagnostics._sir_kernel import (
    importance_resample,
    importance_weights,
    proposal_samples,
)
from pmx_jax.likelihood import prepare

# -- resampling (no fitting) ------------------------------------------------------------


@pytest.fixture(scope="module")
def theo():
    return pmx.datasets.load("theophylline")


@pytest.fixture(scope="module")
def pheno():
    return pmx.datasets.load("phenobarbital")


def test_resample_indices_keep_strata_and_are_reproducible():
    strata = np.array(["a"] * 7 + ["b"] * 3 + ["c"] * 10)
    rng = np.random.default_rng(4)
    for _ in range(50):
        index = resample_indices(strata, rng)
        assert index.shape == (20,)
        # Position k holds a subject of subject k's stratum: counts are kept.
        np.testing.assert_array_equal(strata[index], strata)
    a = resample_indices(strata, np.random.default_rng(1))
    b = resample_indices(strata, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_resample_indices_draw_with_replacement_uniformly():
    """Each subject appears Binomial(n, 1/n) times: over 2,000 replicates of 10
    subjects the mean count is 1 (SE 0.007) and some replicates repeat subjects."""
    rng = np.random.default_rng(0)
    draws = np.stack([resample_indices(np.zeros(10), rng) for _ in range(2000)])
    counts = np.stack([np.bincount(d, minlength=10) for d in draws])
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=0.05)
    assert np.mean(counts.max(axis=1) > 1) > 0.99  # P(no repeat) = 10!/10^10
    # The variance of a count is (1 - 1/n) = 0.9.
    np.testing.assert_allclose(counts.var(axis=0).mean(), 0.9, atol=0.05)


def test_resampled_dataset_renumbers_ids(theo):
    index = np.array([3, 3, 0, 11, 5, 5, 5, 2, 7, 8, 9, 1])
    boot = resampled_dataset(theo, index)
    assert boot.ids == tuple(range(1, 13))
    assert boot.n_subjects == 12
    table, orig = boot.table, theo.table
    assert list(table["ID"].unique()) == list(range(1, 13))
    for k, s in enumerate(index):
        new = table[table["ID"] == k + 1].drop(columns="ID").reset_index(drop=True)
        old = orig[orig["ID"] == theo.ids[s]].drop(columns="ID").reset_index(drop=True)
        pd.testing.assert_frame_equal(new, old)
    assert boot.n_observations == sum(
        int(((orig["ID"] == theo.ids[s]) & (orig["EVID"] == 0)).sum()) for s in index
    )
    np.testing.assert_array_equal(boot.records["row"], np.arange(len(table)))
    assert "bootstrap resample" in boot.notes[-1]


def test_resample_subjects_stratified_by_covariate(pheno):
    """Stratify by APGR (baseline value per subject): every APGR level keeps its
    number of subjects."""
    strata = subject_strata(pheno, "apgr")  # case-insensitive
    first = pheno.table.groupby("ID", sort=False)["APGR"].first().to_numpy()
    np.testing.assert_array_equal(strata, first)
    boot, index = resample_subjects(pheno, seed=3, stratify="APGR")
    np.testing.assert_array_equal(strata[index], strata)
    boot_apgr = boot.table.groupby("ID", sort=False)["APGR"].first().to_numpy()
    assert sorted(boot_apgr) == sorted(first)
    with pytest.raises(KeyError, match="no such covariate"):
        subject_strata(pheno, "SEX")
    with pytest.raises(ValueError, match="one label per subject"):
        subject_strata(pheno, [1, 2, 3])


def test_index_path_equals_dataset_path(pheno):
    """What bootstrap fits (the original padded arrays indexed by the drawn
    subjects) equals the prepared resampled Dataset, record by record (pheno:
    subjects of different lengths, padded)."""
    model = pmx.library.Phenobarbital()
    source = prepare(model, pheno)
    _, index = resample_subjects(pheno, seed=11)
    fast = _resampled_prepared(source, index)
    slow = prepare(model, resampled_dataset(pheno, index), pad_to=source.subjects.n_records)
    for field in ("time", "evid", "amt", "cmt", "rate", "dv", "is_obs", "cov", "valid"):
        np.testing.assert_array_equal(
            np.asarray(getattr(fast.subjects, field)), np.asarray(getattr(slow.subjects, field))
        )
    # Same shapes and static flags as the original: the compiled objective fits.
    assert fast.subjects.time.shape == source.subjects.time.shape
    assert fast.plan.dose_record.shape == source.plan.dose_record.shape
    assert fast.plan.has_ss == source.plan.has_ss


# -- SIR kernel on Gaussian targets (no fitting) -------------------------------------------


def test_proposal_densities_match_scipy():
    mean = np.array([1.0, -2.0, 0.5])
    a = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, -0.4], [0.0, -0.4, 0.5]])
    x, logq = proposal_samples(mean, a, 200, np.random.default_rng(0))
    np.testing.assert_allclose(logq, stats.multivariate_normal(mean, a).logpdf(x), rtol=1e-12)
    x, logq = proposal_samples(mean, a, 200, np.random.default_rng(0), df=5)
    np.testing.assert_allclose(logq, stats.multivariate_t(mean, a, df=5).logpdf(x), rtol=1e-12)


def test_weights_uniform_when_proposal_is_the_target():
    mean, cov = np.zeros(2), np.array([[2.0, 0.5], [0.5, 1.0]])
    x, logq = proposal_samples(mean, cov, 500, np.random.default_rng(1))
    dofv = -2.0 * logq + 17.0  # target = proposal, up to a constant
    np.testing.assert_allclose(importance_weights(dofv, logq), 1.0 / 500, rtol=1e-10)
    dofv[3] = np.nan  # a failed OFV gets weight 0, the others stay equal
    w = importance_weights(dofv, logq)
    assert w[3] == 0.0
    np.testing.assert_allclose(np.delete(w, 3), 1.0 / 499, rtol=1e-10)


@pytest.mark.parametrize("df", [None, 6.0])
def test_sir_kernel_recovers_a_gaussian_target(df):
    """Target N(m, S); proposal centred off m with twice the covariance.  The
    resamples' mean and covariance approach m and S: with 20,000 draws and 4,000
    resamples the Monte Carlo SE of a mean is about sqrt(1/4000) ~ 0.016 SD, so
    means are checked to 0.1 SD and variances to 12%."""
    m = np.array([0.5, -1.0])
    s = np.array([[1.0, 0.6], [0.6, 2.0]])
    s_inv = np.linalg.inv(s)

    def log_target(x):
        r = x - m
        return -0.5 * np.einsum("ni,ij,nj->n", r, s_inv, r)

    draw = importance_resample(
        log_target, m + 0.3, 2.0 * s, 20000, 4000, np.random.default_rng(2), df=df
    )
    kept = draw.samples[draw.chosen]
    assert len(np.unique(draw.chosen)) == 4000  # without replacement
    sd = np.sqrt(np.diagonal(s))
    np.testing.assert_array_less(np.abs(kept.mean(axis=0) - m) / sd, 0.1)
    np.testing.assert_allclose(np.cov(kept.T), s, rtol=0.12, atol=0.12 * 0.6)


def test_chi2_quantile_matches_scipy():
    p = np.array([0.05, 0.5, 0.9, 0.95, 0.99])
    for df in (1, 3, 7):
        np.testing.assert_allclose(chi2_quantile(p, df), stats.chi2.ppf(p, df), rtol=1e-8)


def test_chi2_quantile_matches_printed_tables():
    """Chi-square table values (6 decimals), and the median for df = 2,
    2 log 2 in closed form; a scalar probability gives a 1-vector."""
    np.testing.assert_allclose(chi2_quantile([0.95, 0.99], 1), [3.841459, 6.634897], atol=5e-7)
    np.testing.assert_allclose(
        chi2_quantile([0.5, 0.95], 2), [2.0 * math.log(2.0), 5.991465], atol=5e-7
    )
    seven = chi2_quantile(0.95, 7)
    assert seven.shape == (1,)
    assert seven[0] == pytest.approx(14.067140, abs=5e-7)


def test_sir_summary_wald_interval_uses_the_normal_quantile():
    """The covariance step's interval next to SIR's is estimate -/+ z SE with
    z = 1.959964 at 95% and 1.644854 at 90% (normal tables)."""
    names = ["tcl", "tv"]
    samples = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 2)), columns=names)
    estimate, se = np.array([1.0, 2.0]), np.array([0.1, 0.5])
    result = SIRResult(
        samples=samples, names=names, estimate=estimate, covariance_se=se, level=0.95
    )
    for level, z in ((None, 1.959964), (0.90, 1.644854)):
        table = result.summary(level)
        np.testing.assert_allclose(table["cov_ci_upper"], estimate + z * se, atol=5e-7 * se.max())
        np.testing.assert_allclose(table["cov_ci_lower"], estimate - z * se, atol=5e-7 * se.max())
        np.testing.assert_allclose(table["cov_se"], se)


def test_log_jacobian_to_nonmem_scale():
    """THETAs without bounds map by identity, add_sd (lower bound 0) by exp and
    the diagonal OMEGA by exp of log variances: log|J| = log add_sd + sum log omega."""
    model = pmx.library.Theophylline()
    y, unravel = ravel_pytree(model.to_unconstrained())
    y2 = y + 0.1
    got = np.asarray(_call(_LogJacobian(unravel), jnp.stack([y, y2]), model))
    for value, point in zip(got, (y, y2), strict=True):
        moved = model.from_unconstrained(unravel(point))
        expected = math.log(float(moved.add_sd)) + float(
            np.sum(np.log(np.diagonal(np.asarray(moved.omega_matrix()))))
        )
        assert value == pytest.approx(expected, rel=1e-12)


# -- bootstrap of a real fit (one FO compilation) ------------------------------------------


@pytest.fixture(scope="module")
def theo_fo(theo):
    return pmx.fit(pmx.library.Theophylline(), theo, "fo", covariance=None, progress=False)


def test_bootstrap_reuses_the_compiled_fit(theo, theo_fo, capsys):
    assert theo_fo.converged
    boot = bootstrap(theo_fo, n=4, seed=5, progress=True)
    assert boot.n == 4 and boot.n_failed == 0
    # The fit compiled the estimation step; no refit compiles it again.
    assert boot.compilations_after_first == 0
    # (and the counter does count: a new function compiles once)
    before = compilation_count()
    jnp.sin(jnp.arange(7.0) * 1.2345).block_until_ready()
    assert compilation_count() > before
    assert "bootstrap: 4/4" in capsys.readouterr().err
    reps = boot.replicates
    assert list(reps.columns[:7]) == [
        "replicate", "status", "ofv", "iterations", "seconds", "compilations", "message",
    ]  # fmt: skip
    assert list(reps.columns[7:]) == list(boot.names)
    # Same seed, same replicates.
    again = bootstrap(theo_fo, n=2, seed=5, progress=False)
    np.testing.assert_array_equal(again.subject_index, boot.subject_index[:2])
    np.testing.assert_allclose(
        again.replicates[list(boot.names)], reps[list(boot.names)].iloc[:2], rtol=1e-12
    )
    # Replicate 1 equals an ordinary fit of the resampled Dataset.
    data1 = resampled_dataset(theo, boot.subject_index[0])
    direct = pmx.fit(
        theo_fo.model,
        prepare(theo_fo.model, data1, pad_to=theo_fo._problem.source.subjects.n_records),
        "fo",
        covariance=None,
        progress=False,
    )
    assert direct.ofv == pytest.approx(reps["ofv"].iloc[0], abs=1e-8)


def test_bootstrap_summary_statistics(theo_fo):
    boot = bootstrap(theo_fo, n=6, seed=0, progress=False, level=0.8)
    table = boot.summary()
    values = boot.used()[list(boot.names)].to_numpy()
    np.testing.assert_allclose(table["se"], values.std(axis=0, ddof=1))
    np.testing.assert_allclose(table["bias"], values.mean(axis=0) - boot.estimate)
    np.testing.assert_allclose(table["ci_lower"], np.percentile(values, 10, axis=0))
    np.testing.assert_allclose(boot.ci(0.5)["ci_upper"], np.percentile(values, 75, axis=0))
    assert "percentile" in str(boot)


def test_bootstrap_counts_failed_and_unconverged_refits(theo_fo):
    """Refits that raise are 'failed' (counted, message kept, out of the
    statistics); refits stopped by max_iterations are 'not converged' and enter
    only with include='all'."""
    failed = bootstrap(theo_fo, n=3, progress=False, max_iterations=-1)
    assert failed.n_failed == 3 and failed.fraction_converged == 0.0
    assert failed.replicates["message"].str.contains("max_iterations").all()
    assert failed.summary()["n_used"].eq(0).all() and failed.summary()["se"].isna().all()
    short = bootstrap(theo_fo, n=3, progress=False, max_iterations=1)
    assert short.n_not_converged == 3 and short.n_converged == 0
    assert len(short.used()) == 0
    short.include = "all"
    assert len(short.used()) == 3


def test_sir_needs_a_covariance_step(theo_fo):
    with pytest.raises(ValueError, match="covariance step"):
        sir(theo_fo, n_samples=10)


# -- slow: FOCEI with its covariance step ---------------------------------------------------


@pytest.fixture(scope="module")
def theo_focei(theo):
    return pmx.fit(pmx.library.Theophylline(), theo, "focei", covariance="sandwich", progress=False)


@pytest.mark.slow
def test_bootstrap_se_close_to_sandwich_se(theo_focei):
    """40 replicates of 12 subjects: bootstrap SEs within 0.6-1.6 of the sandwich
    SEs (the SE of an SD estimated from 40 replicates is ~11%; the two SEs are
    different estimators, asymptotically equal)."""
    boot = bootstrap(theo_focei, n=40, seed=1, progress=False)
    assert boot.fraction_converged >= 0.9
    assert boot.compilations_after_first == 0
    ratio = boot.se.to_numpy() / theo_focei.covariance.se
    assert np.all((ratio > 0.6) & (ratio < 1.6)), dict(zip(boot.names, ratio, strict=True))


@pytest.mark.slow
def test_sir_close_to_covariance_step_for_thetas(theo_focei):
    """With the R-matrix covariance as proposal (the curvature of the likelihood
    itself) the near-normal THETA posteriors give SIR SEs within 20% of the
    covariance step's, and 95% intervals whose ends lie within 0.35 SE of the
    Wald ones.  The OMEGAs are skewed (flat prior on the variance): checked only
    for a reasonable ESS."""
    with_r = theo_focei.compute_covariance("r")
    result = sir(with_r, n_samples=1000, n_resamples=250, seed=0, progress=False)
    table = result.summary().set_index("parameter")
    assert result.n_nonfinite == 0
    assert result.effective_sample_size > 50  # 188 of 1,000 draws with this seed
    for name in ("tka", "tcl", "tv", "add_sd"):
        row = table.loc[name]
        assert 0.8 < row.se / row.cov_se < 1.2, (name, row.se, row.cov_se)
        assert abs(row.ci_lower - row.cov_ci_lower) < 0.35 * row.cov_se, name
        assert abs(row.ci_upper - row.cov_ci_upper) < 0.35 * row.cov_se, name
    dofv = result.dofv_table()
    assert list(dofv.columns) == ["probability", "chi_square", "proposal", "resampled"]
    np.testing.assert_allclose(dofv["chi_square"], stats.chi2.ppf(dofv["probability"], 7))
