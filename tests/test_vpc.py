"""VPC and pcVPC (pmx_jax.diagnostics._vpc): coverage under a correctly
specified model, the prediction correction, stratification, BLQ fractions,
binning and the plot.  Every simulation uses the 128-subject design of
test_npde, so one compilation serves all of them."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_npde import SAMPLE_TIMES, IVBolus, observed_table

import pmx_jax as pmx
from pmx_jax.diagnostics._vpc import VPCResult, vpc

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def correct():
    return vpc(IVBolus(), observed_table(), n_sim=200, seed=11)


def test_observed_percentiles_inside_simulated_bands(correct):
    """Under the true model each observed percentile falls in the 95% band of
    its simulated distribution with probability about 0.95.  6 bins x 3
    percentiles = 18; requiring at least 15 inside fails by chance with
    probability about 1% (binomial tail, treating them as independent)."""
    table = correct.to_frame()
    assert len(table) == len(SAMPLE_TIMES) * 3
    inside = (table.OBSERVED >= table.SIM_LOWER) & (table.OBSERVED <= table.SIM_UPPER)
    assert inside.sum() >= 15, table
    assert (table.SIM_LOWER <= table.SIM_MEDIAN).all()
    assert (table.SIM_MEDIAN <= table.SIM_UPPER).all()


def test_misspecified_model_falls_outside_the_bands():
    wrong = IVBolus().with_values(tcl=math.log(4.0))
    table = vpc(wrong, observed_table(), n_sim=100, seed=12).to_frame()
    inside = (table.OBSERVED >= table.SIM_LOWER) & (table.OBSERVED <= table.SIM_UPPER)
    assert inside.sum() <= 9


def test_auto_bins_are_the_nominal_times(correct):
    table = correct.to_frame()
    np.testing.assert_allclose(sorted(table.TIME.unique()), SAMPLE_TIMES)
    assert (table.N_OBS == 128).all()
    np.testing.assert_allclose(correct.edges[None], [0.5, 0.75, 1.5, 3.0, 6.0, 10.0, 12.0])


def test_observed_percentiles_are_numpy_percentiles(correct):
    data = observed_table()
    obs = data[data.EVID == 0]
    table = correct.to_frame()
    for t in SAMPLE_TIMES:
        expected = np.quantile(obs.DV[obs.TIME == t], correct.quantiles)
        np.testing.assert_allclose(table.OBSERVED[table.TIME == t], expected)


def test_prediction_correction_is_the_hand_formula():
    """DV_pc = DV * median_bin(PRED) / PRED, bins of 3 equal counts of times."""
    data = observed_table()
    result = vpc(IVBolus(), data, n_sim=50, seed=13, pred_corrected=True, bins=3)
    pred = pmx.predict(IVBolus(), data)
    obs = pred[pred.EVID == 0].reset_index(drop=True)
    edges = np.quantile(obs.TIME, [0, 1 / 3, 2 / 3, 1])
    bin_of = np.clip(np.searchsorted(edges, obs.TIME, side="right") - 1, 0, 2)
    median = obs.groupby(bin_of).PRED.transform("median")
    expected = obs.DV * median / obs.PRED
    np.testing.assert_allclose(result.observations.DV, expected, rtol=1e-12)
    np.testing.assert_array_equal(result.observations.BIN, bin_of)
    assert result.pred_corrected
    table = result.to_frame()
    inside = (table.OBSERVED >= table.SIM_LOWER) & (table.OBSERVED <= table.SIM_UPPER)
    assert inside.sum() >= 7  # of 9


def test_stratification_gives_one_panel_per_level(tmp_path):
    result = vpc(IVBolus(), observed_table(), n_sim=50, seed=14, stratify="group")
    assert result.strata == [1, 2]
    table = result.to_frame()
    assert set(table.STRATUM) == {1, 2}
    assert (table.N_OBS == 64).all()
    figure = result.plot()
    assert len(figure.axes) == 2
    assert [ax.get_title() for ax in figure.axes] == ["group = 1", "group = 2"]
    figure.savefig(tmp_path / "strata.png")


def test_stratify_by_dvid():
    result = vpc(IVBolus(), observed_table(), n_sim=20, seed=15, stratify="DVID")
    assert len(result.strata) == 1


def test_bad_input_is_named():
    data = observed_table()
    with pytest.raises(KeyError, match="'SEX' is not in the dataset"):
        vpc(IVBolus(), data, n_sim=10, stratify="SEX")
    with pytest.raises(ValueError, match="128 distinct values"):
        vpc(IVBolus(), data, n_sim=10, stratify="ID")
    with pytest.raises(ValueError, match="increasing sequence"):
        vpc(IVBolus(), data, n_sim=10, bins=[0, 5, 5, 12])
    with pytest.raises(ValueError, match="bins must be 'auto'"):
        vpc(IVBolus(), data, n_sim=10, bins="kmeans")
    with pytest.raises(ValueError, match="quantiles"):
        vpc(IVBolus(), data, n_sim=10, quantiles=(5, 50, 95))
    with pytest.raises(KeyError, match="lloq column 'LOQ'"):
        vpc(IVBolus(), data, n_sim=10, lloq="LOQ")


def test_user_edges_and_left_out_observations():
    result = vpc(IVBolus(), observed_table(), n_sim=20, seed=16, bins=[0.0, 3.0, 10.0])
    table = result.to_frame()
    assert list(table.N_OBS.unique()) == [3 * 128, 2 * 128]
    assert any("128 observations outside" in note for note in result.notes)


def test_blq_fraction_from_cens_column():
    """CENS = 1 with DV = LLOQ = 1 mg/L on the observations below 1: the observed
    fraction per bin is counted by hand; simulated fractions are fractions of
    simulated values below 1; observed percentiles below the limit are NaN."""
    table = observed_table().copy()
    below = (table.EVID == 0) & (table.DV < 1.0)
    table["CENS"] = below.astype(int)
    table.loc[below, "DV"] = 1.0
    result = vpc(IVBolus(), table, n_sim=100, seed=17)
    assert result.blq is not None
    obs = table[table.EVID == 0]
    expected = (obs.DV.eq(1.0) & obs.CENS.eq(1)).groupby(obs.TIME).mean()
    np.testing.assert_allclose(result.blq.OBSERVED, expected.to_numpy())
    assert expected.iloc[-1] > 0.1 and expected.iloc[0] == 0
    late = result.blq.iloc[-1]
    assert late.SIM_LOWER <= late.OBSERVED <= late.SIM_UPPER
    assert result.blq.SIM_MEDIAN.iloc[0] == 0.0
    percentiles = result.to_frame()
    last = percentiles[percentiles.TIME == 12.0].set_index("QUANTILE")
    assert np.isnan(last.OBSERVED[0.05])  # among the censored values: unknown
    assert np.isfinite(last.OBSERVED[0.95])


def test_blq_fraction_from_a_given_lloq():
    data = observed_table()
    result = vpc(IVBolus(), data, n_sim=50, seed=18, lloq=2.0)
    obs = data[data.EVID == 0]
    np.testing.assert_allclose(
        result.blq.OBSERVED, (obs.DV < 2.0).groupby(obs.TIME).mean().to_numpy()
    )
    assert any("treated as BLQ" in note for note in result.notes)


def test_plot_renders_to_png(tmp_path):
    table = observed_table().copy()
    below = (table.EVID == 0) & (table.DV < 1.0)
    table["CENS"] = below.astype(int)
    table.loc[below, "DV"] = 1.0
    result = vpc(IVBolus(), table, n_sim=100, seed=19, stratify="GROUP")
    figure = result.plot(log_y=True, units={"time": "h", "conc": "mg/L"})
    path = tmp_path / "vpc.png"
    figure.savefig(path, dpi=80)
    assert path.stat().st_size > 10_000
    labels = [ax.get_ylabel() for ax in figure.axes]
    assert "Concentration (mg/L)" in labels and "Fraction BLQ" in labels
    assert figure.axes[-1].get_xlabel() == "Time (h)"
    assert isinstance(result, VPCResult)
    plain = vpc(IVBolus(), observed_table(), n_sim=20, seed=20, pred_corrected=True).plot()
    plain.savefig(tmp_path / "pcvpc.png", dpi=80)
    assert "Prediction-corrected" in plain.axes[0].get_ylabel()


def test_to_frame_is_a_copy(correct):
    frame = correct.to_frame()
    frame.loc[:, "OBSERVED"] = 0.0
    assert not (correct.percentiles.OBSERVED == 0).all()
    assert isinstance(frame, pd.DataFrame)


def test_auto_bins_follow_clusters_of_actual_times():
    # actual times scattered (+-5%) around 9 nominal times: one bin per nominal
    # time, edges between the clusters; uniform times fall back to equal counts.
    from pmx_jax.diagnostics._vpc import _assign, _bin_edges

    rng = np.random.default_rng(3)
    nominal = np.array([0.25, 0.5, 1, 2, 4, 6, 8, 12, 24])
    times = (nominal[None, :] * rng.uniform(0.95, 1.05, (20, 9))).ravel()
    edges = _bin_edges(times, "auto", None)
    assert len(edges) - 1 == len(nominal)
    bins = _assign(times, edges).reshape(20, 9)
    np.testing.assert_array_equal(bins, np.tile(np.arange(9), (20, 1)))
    uniform = _bin_edges(rng.uniform(0, 24, 300), "auto", None)
    assert len(uniform) - 1 == 8
