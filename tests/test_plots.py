"""Goodness-of-fit plots: every plot type renders to a file, with labels, and
shows what it claims (one point per observation, correct normal quantiles)."""

from statistics import NormalDist

import matplotlib
import numpy as np
import pytest

import pmx_jax as pmx
from pmx_jax.diagnostics._plots import (
    eta_distributions,
    eta_vs_covariates,
    gof_panel,
    individual_fits,
    lowess,
    normal_quantiles,
    qq_plot,
    subject_covariates,
)
from pmx_jax.diagnostics._report import FittedRun

matplotlib.use("Agg")

UNITS = dict(time="h", conc="mg/L", WT="kg")


@pytest.fixture(scope="module")
def theophylline_fit():
    # The same call as examples/theophylline_fit.py and the reference tests, so
    # that in a full run the compiled fit is shared (about 30 s alone).
    return pmx.fit(pmx.library.Theophylline(), pmx.datasets.load("theophylline"), "focei")


def _labelled(figure):
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert axes
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    return axes


def _written(path):
    assert path.is_file() and path.stat().st_size > 1000, path
    return path


def test_normal_quantiles_are_hazen_positions():
    # n = 4: positions 1/8, 3/8, 5/8, 7/8
    expected = [NormalDist().inv_cdf(p) for p in (0.125, 0.375, 0.625, 0.875)]
    np.testing.assert_allclose(normal_quantiles(4), expected, rtol=1e-12)
    np.testing.assert_allclose(normal_quantiles(5)[2], 0.0, atol=1e-12)


def test_qq_plot_places_sorted_sample_on_normal_quantiles(tmp_path):
    sample = np.array([0.3, -1.2, np.nan, 2.0, 0.0, -0.4])  # the NaN (a dose record) is dropped
    figure = qq_plot(sample, "NPDE", path=tmp_path / "qq.png")
    _written(tmp_path / "qq.png")
    (ax,) = _labelled(figure)
    points = ax.collections[0].get_offsets()
    np.testing.assert_allclose(points[:, 0], normal_quantiles(5), rtol=1e-12)
    np.testing.assert_allclose(points[:, 1], np.sort(sample[np.isfinite(sample)]))
    assert "NPDE" in ax.get_ylabel() and "n = 5" in ax.get_title()
    with pytest.raises(ValueError, match="no finite values"):
        qq_plot([np.nan], "CWRES")


def test_lowess_follows_a_line_and_a_step():
    x = np.linspace(0.0, 10.0, 50)
    trend_x, trend = lowess(x, 2.0 * x + 1.0)  # local linear fits reproduce a line
    np.testing.assert_allclose(trend, 2.0 * trend_x + 1.0, atol=1e-9)
    step_x, step = lowess(np.arange(100.0), np.where(np.arange(100) < 50, 0.0, 1.0), span=0.1)
    np.testing.assert_allclose(step[step_x < 40], 0.0, atol=1e-12)
    np.testing.assert_allclose(step[step_x > 60], 1.0, atol=1e-12)
    assert lowess([1, 2], [1, 2])[0].size == 0  # too few points: no trend


def test_gof_panel(theophylline_fit, tmp_path):
    figure = gof_panel(theophylline_fit, units=UNITS, path=tmp_path / "gof.png")
    _written(tmp_path / "gof.png")
    axes = _labelled(figure)
    assert len(axes) == 6
    dv_pred = axes[0]
    assert dv_pred.get_xlabel() == "Population prediction (PRED) (mg/L)"
    # one point per observation: theophylline has 132
    assert len(dv_pred.collections[0].get_offsets()) == 132
    assert axes[3].get_xlabel() == "Time (h)"
    assert all(ax.get_legend() is not None for ax in axes)
    log_panel = gof_panel(theophylline_fit, log=True, path=tmp_path / "gof_log.svg")
    _written(tmp_path / "gof_log.svg")
    assert log_panel.axes[0].get_xscale() == "log"
    # log axes drop the non-positive observations (the t = 0 samples equal to 0)
    n_positive = len(theophylline_fit.table().query("EVID == 0 and DV > 0 and PRED > 0"))
    assert len(log_panel.axes[0].collections[0].get_offsets()) == n_positive < 132


def test_individual_fits(theophylline_fit, tmp_path):
    pages = individual_fits(theophylline_fit, per_page=8, units=UNITS, path=tmp_path / "ind.png")
    assert len(pages) == 2  # 12 subjects, 8 per page
    _written(tmp_path / "ind_01.png")
    _written(tmp_path / "ind_02.png")
    # outer labels only: y on the first column, x under every last panel of a column
    axes = [ax for ax in pages[1].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["ID 9", "ID 10", "ID 11", "ID 12"]
    assert axes[0].get_ylabel() == "Concentration (mg/L)"
    assert all(ax.get_xlabel() == "Time (h)" for ax in axes)
    ipred, pred = axes[0].lines[:2]
    # dense and smooth: ~200 grid points, IPRED peaks above the highest sample
    # is not required, but it must pass through the fitted IPRED at the samples
    assert len(ipred.get_xdata()) >= 200
    table = theophylline_fit.table().query("ID == 9 and EVID == 0")
    curve = dict(zip(ipred.get_xdata(), ipred.get_ydata(), strict=True))
    np.testing.assert_allclose([curve[t] for t in table.TIME], table.IPRED, rtol=1e-6)
    assert pages[0].legends and len(pages[0].legends[0].get_texts()) == 3
    # n_grid=0: lines through the predictions at the samples (no new compile)
    one = individual_fits(
        theophylline_fit, subjects=[3], log_y=True, n_grid=0, path=tmp_path / "one.svg"
    )
    _written(tmp_path / "one.svg")
    assert len(one) == 1 and one[0].axes[0].get_yscale() == "log"
    assert "joined at observation times" in one[0].get_suptitle()
    with pytest.raises(ValueError, match="99"):
        individual_fits(theophylline_fit, subjects=[1, 99])


def test_eta_distributions(theophylline_fit, tmp_path):
    figure = eta_distributions(theophylline_fit, path=tmp_path / "etas.png")
    _written(tmp_path / "etas.png")
    axes = _labelled(figure)
    assert [ax.get_xlabel() for ax in axes] == ["EBE of eta ka", "EBE of eta cl", "EBE of eta v"]
    shrinkage = theophylline_fit.eta_shrinkage
    assert f"{100 * shrinkage['cl']:.1f}%" in axes[1].get_title()
    # the overlaid density is N(0, omega): its peak is 1 / sqrt(2 pi omega)
    omega_cl = float(np.asarray(theophylline_fit.model.omega_matrix())[1, 1])
    peak = max(axes[1].lines[0].get_ydata())
    assert peak == pytest.approx(1 / np.sqrt(2 * np.pi * omega_cl), rel=1e-3)


def test_eta_vs_covariates(theophylline_fit, tmp_path):
    figure = eta_vs_covariates(theophylline_fit, units=UNITS, path=tmp_path / "cov.png")
    _written(tmp_path / "cov.png")
    axes = _labelled(figure)
    assert len(axes) == 3 and axes[0].get_xlabel() == "WT (kg)"
    assert len(axes[0].collections[0].get_offsets()) == 12  # one point per subject
    baseline = subject_covariates(theophylline_fit, ["wt"])  # case-insensitive
    assert list(baseline.columns) == ["ID", "WT"] and baseline.WT.iloc[0] == 79.6
    with pytest.raises(ValueError, match="'AGE'"):
        eta_vs_covariates(theophylline_fit, ["WT", "AGE"])


def test_categorical_covariates_are_box_plots(theophylline_fit, tmp_path):
    # a two-level covariate (heavier than 70 kg) joined to the same fit's EBEs
    data = pmx.datasets.load("theophylline")
    table = data.table.assign(HEAVY=np.where(data.table.WT > 70, "yes", "no"))
    run = FittedRun(
        name="theophylline",
        folder=tmp_path,
        model=theophylline_fit.model,
        method="focei",
        dataset=pmx.read_nonmem(table),
        ebes=theophylline_fit.ebes,
        table=theophylline_fit.table(),
    )
    figure = eta_vs_covariates(run, ["HEAVY"], path=tmp_path / "cat.png")
    _written(tmp_path / "cat.png")
    axes = _labelled(figure)
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["no", "yes"]
