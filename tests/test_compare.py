"""Model comparison table and likelihood-ratio test.

The default tests build FitResults directly (a model, an OFV and the data
counts are all that the statistics read) and check the formulas against hand
computation and scipy; the full theophylline fits (FOCEI, full model and a
model with ``tka`` fixed) are slow-marked.
"""

import math

import numpy as np
import pytest
from scipy import stats

import pmx_jax as pmx
from pmx_jax import RESULTS
from pmx_jax.diagnostics._compare import (
    chi2_sf,
    compare,
    likelihood_ratio_test,
)
from pmx_jax.estimation import FitResult


def _result(model, ofv, *, n_obs=132, n_sub=12, method="focei", converged=True) -> FitResult:
    """A FitResult with the given OFV and counts (no fit: compare reads only these)."""
    return FitResult(
        model=model,
        method=method,
        ofv=ofv,
        n_subjects=n_sub,
        n_observations=n_obs,
        n_censored=0,
        iterations=10,
        n_evaluations=12,
        status=RESULTS.successful if converged else RESULTS.max_iterations,
        message="test",
        ebe_matrix=np.zeros((n_sub, model.n_eta)),
        ebe_status=np.zeros(n_sub, dtype=int),
        ids=tuple(range(1, n_sub + 1)),
        gradient_max=0.0,
        elapsed_seconds=0.0,
        compile_seconds=0.0,
    )


@pytest.fixture(scope="module")
def full_model():
    return pmx.library.Theophylline()


@pytest.fixture(scope="module")
def reduced_model(full_model):
    return full_model.with_values(tka=pmx.theta(0.45, fixed=True))


def test_compare_table_matches_hand_computation(full_model, reduced_model):
    full = _result(full_model, 116.8034)
    reduced = _result(reduced_model, 121.5, converged=False)
    table = compare(full, reduced, names=["full", "tka fixed"])
    assert list(table["model"]) == ["full", "tka fixed"]  # order as given
    assert list(table["n_parameters"]) == [7, 6]
    log2pi = math.log(2 * math.pi)
    m2ll = np.array([116.8034, 121.5]) + 132 * log2pi
    aic = m2ll + 2 * np.array([7, 6])
    bic = m2ll + np.array([7, 6]) * math.log(132)
    np.testing.assert_allclose(table["m2ll"], m2ll, rtol=1e-14)
    np.testing.assert_allclose(table["aic"], aic, rtol=1e-14)
    np.testing.assert_allclose(table["bic"], bic, rtol=1e-14)
    np.testing.assert_allclose(table["delta_aic"], aic - aic.min(), atol=1e-10)
    np.testing.assert_allclose(table["delta_bic"], bic - bic.min(), atol=1e-10)
    assert list(table["converged"]) == [True, False]
    assert table["condition_number"].isna().all()  # no covariance step
    assert list(table["method"]) == ["focei", "focei"]


def test_compare_default_names_are_unique(full_model):
    table = compare(_result(full_model, 1.0), _result(full_model, 2.0))
    assert list(table["model"]) == ["Theophylline (1)", "Theophylline (2)"]


def test_compare_refuses_different_data(full_model, reduced_model):
    with pytest.raises(ValueError, match="same data"):
        compare(_result(full_model, 116.8), _result(reduced_model, 120.0, n_obs=120))
    with pytest.raises(ValueError, match="same data"):
        likelihood_ratio_test(_result(reduced_model, 120.0, n_sub=11), _result(full_model, 116.8))


def test_lrt_p_value_matches_scipy(full_model, reduced_model):
    full, reduced = _result(full_model, 116.8034), _result(reduced_model, 121.5)
    lrt = likelihood_ratio_test(reduced, full)
    assert lrt.df == 1
    assert lrt.dofv == pytest.approx(121.5 - 116.8034, abs=1e-12)
    assert lrt.p_value == pytest.approx(stats.chi2.sf(121.5 - 116.8034, 1), rel=1e-10)
    assert lrt.critical_value == pytest.approx(stats.chi2.ppf(0.95, 1), rel=1e-8)
    assert lrt.significant
    assert lrt.note == ""  # nothing to warn about: a THETA fixed, same OMEGAs
    # An explicit df overrides the parameter count.
    lrt3 = likelihood_ratio_test(reduced, full, df=3, alpha=0.01)
    assert lrt3.p_value == pytest.approx(stats.chi2.sf(4.6966, 3), rel=1e-10)
    assert lrt3.critical_value == pytest.approx(stats.chi2.ppf(0.99, 3), rel=1e-8)


@pytest.mark.parametrize("x", [0.0, 0.3, 2.7055, 3.84, 10.0, 40.0])
@pytest.mark.parametrize("df", [1, 2, 5])
def test_chi2_sf_matches_scipy(x, df):
    assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-10, abs=1e-300)


def test_chi2_sf_at_printed_table_values():
    """The 5% points of chi-square tables have tail probability 0.05; for
    df = 2 the survival function is exp(-x/2) in closed form."""
    assert chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-7)
    assert chi2_sf(7.814728, 3) == pytest.approx(0.05, abs=1e-7)
    for x in (0.5, 5.991465, 20.0):
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
    assert chi2_sf(0.0, 0) == 1.0 and chi2_sf(1e-9, 0) == 0.0  # point mass at 0
    assert chi2_sf(-1.0, 3) == 1.0


@pytest.mark.parametrize(
    ("df", "alpha", "boundary", "table", "decimals"),
    [
        (1, 0.05, False, 3.841459, 6),  # chi-square tables
        (2, 0.05, False, 5.991465, 6),
        (3, 0.05, False, 7.814728, 6),
        (1, 0.01, False, 6.634897, 6),
        (1, 0.05, True, 2.705543, 6),  # 0.5 chi2(0) + 0.5 chi2(1): chi2(1)'s 10% point
        (2, 0.05, True, 5.14, 2),  # 0.5 chi2(1) + 0.5 chi2(2) (Stram and Lee 1994)
    ],
)
def test_critical_values_match_printed_tables(
    full_model, reduced_model, df, alpha, boundary, table, decimals
):
    lrt = likelihood_ratio_test(
        _result(reduced_model, 120.0),
        _result(full_model, 116.8),
        df=df,
        alpha=alpha,
        boundary=boundary,
    )
    assert lrt.critical_value == pytest.approx(table, abs=0.5 * 10.0**-decimals)
    # At the critical value the tail probability is alpha.
    tail = chi2_sf(lrt.critical_value, df)
    if boundary:
        tail = 0.5 * tail + 0.5 * chi2_sf(lrt.critical_value, df - 1)
    assert tail == pytest.approx(alpha, rel=1e-9)


def test_lrt_alpha_must_be_a_probability(full_model, reduced_model):
    for alpha in (0.0, 1.0, 5.0):
        with pytest.raises(ValueError, match="alpha must be in"):
            likelihood_ratio_test(
                _result(reduced_model, 120.0), _result(full_model, 116.8), alpha=alpha
            )


def test_lrt_boundary_mixture(full_model, reduced_model):
    """Self and Liang: 0.5 chi2(0) + 0.5 chi2(1) for one variance at 0, so the
    p-value is half the chi-square one, and the 5% critical value is the
    chi-square's 10% one (2.71)."""
    full, reduced = _result(full_model, 100.0), _result(reduced_model, 103.0)
    plain = likelihood_ratio_test(reduced, full)
    mixed = likelihood_ratio_test(reduced, full, boundary=True)
    assert mixed.p_value == pytest.approx(0.5 * stats.chi2.sf(3.0, 1), rel=1e-10)
    assert mixed.p_value == pytest.approx(0.5 * plain.p_value, rel=1e-10)
    assert mixed.critical_value == pytest.approx(stats.chi2.ppf(0.90, 1), rel=1e-8)
    assert mixed.significant and not plain.significant
    assert "boundary" in mixed.note
    # df = 2 with one parameter on the boundary: 0.5 chi2(1) + 0.5 chi2(2).
    mixed2 = likelihood_ratio_test(reduced, full, df=2, boundary=True)
    expected = 0.5 * stats.chi2.sf(3.0, 1) + 0.5 * stats.chi2.sf(3.0, 2)
    assert mixed2.p_value == pytest.approx(expected, rel=1e-10)
    # dOFV = 0: the point mass at 0 counts fully.
    tie = likelihood_ratio_test(_result(reduced_model, 100.0), full, boundary=True)
    assert tie.p_value == pytest.approx(1.0)


def test_lrt_checks_nesting(full_model, reduced_model):
    full, reduced = _result(full_model, 116.8), _result(reduced_model, 120.0)
    with pytest.raises(ValueError, match="fewer"):
        likelihood_ratio_test(full, reduced)  # arguments swapped
    better = _result(reduced_model, 110.0)
    with pytest.warns(UserWarning, match="cannot fit better"):
        lrt = likelihood_ratio_test(better, full)
    assert lrt.p_value == 1.0 and "negative dOFV" in lrt.note
    with pytest.raises(ValueError, match="same method"):
        likelihood_ratio_test(_result(reduced_model, 120.0, method="fo"), full)


def test_lrt_notes_fewer_omegas(full_model):
    """A reduced model with its OMEGA block fixed estimates fewer OMEGA
    elements: the test points at the boundary option."""
    no_iiv = full_model.with_values(iiv=pmx.omega(ka=0.6, cl=0.3, v=0.1, fixed=True))
    lrt = likelihood_ratio_test(_result(no_iiv, 130.0), _result(full_model, 116.8))
    assert lrt.df == 3
    assert "boundary=True" in lrt.note


# -- real fits (slow: two compilations of the FOCEI step) -----------------------------


@pytest.fixture(scope="module")
def theo_fits():
    data = pmx.datasets.load("theophylline")
    full = pmx.fit(pmx.library.Theophylline(), data, "focei", progress=False)
    reduced_model = pmx.library.Theophylline().with_values(tka=pmx.theta(0.0, fixed=True))
    reduced = pmx.fit(reduced_model, data, "focei", covariance=None, progress=False)
    return full, reduced


@pytest.mark.slow
def test_compare_and_lrt_on_theophylline_fits(theo_fits):
    full, reduced = theo_fits
    assert full.converged and reduced.converged
    table = compare(full, reduced, names=["full", "tka=0"])
    assert list(table["n_parameters"]) == [7, 6]
    assert table.loc[0, "ofv"] == pytest.approx(116.8038, abs=0.01)  # nlmixr2 (R2)
    np.testing.assert_allclose(table["aic"], [full.aic, reduced.aic])
    assert table.loc[0, "condition_number"] == pytest.approx(full.covariance.condition_number)
    assert np.isnan(table.loc[1, "condition_number"])
    lrt = likelihood_ratio_test(reduced, full)
    dofv = reduced.ofv - full.ofv
    assert dofv > 0  # ka = 1/h is far from the estimate exp(0.46) = 1.6/h
    assert lrt.dofv == pytest.approx(dofv)
    assert lrt.p_value == pytest.approx(stats.chi2.sf(dofv, 1), rel=1e-10)
