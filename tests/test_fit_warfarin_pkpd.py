"""Warfarin PK/PD (indirect response, kind 1) on ``warfarin.csv``: the fit of
``examples/warfarin_pkpd.py``, sequential (PK first, then PD with the PK
population parameters fixed).

Tolerances and their sources:

- The PK stage is REFERENCE_CASES R4: NONMEM 7.4.3's FOCEI OFV 423.32729, to
  0.01 as in ``test_fit_reference.py``.
- The PD estimates have no reference run, so they are checked against the
  physiology and the published analyses of O'Reilly's data (O'Reilly &
  Aggeler 1968; the warfarin turnover model of Holford's PK/PD course and
  nlmixr2's warfarin PK/PD example, Fidler et al. 2019): baseline PCA 80-120
  (% of normal; the 30 pre-dose values here are 82-100), turnover half-life
  ``ln 2 / kout`` 5-50 h (clotting-factor half-lives 6-60 h; ~14-35 h in
  those fits), IC50 0.3-3 mg/L (~1-1.5 mg/L in those fits).
- Individual PCA predictions track the data: the sd of the PCA IWRES is
  between 0.5 and 1.5 (1 if the additive error model describes the
  individual residuals).

The whole test takes several minutes on a CPU (ODE model, 483 observations),
hence slow.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "warfarin_pkpd.py"


def _example():
    spec = importlib.util.spec_from_file_location("warfarin_pkpd", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fitted(refdata):
    example = _example()
    return (example, *example.main(refdata=refdata))


@pytest.mark.slow
def test_pk_stage_matches_nonmem_r4(fitted):
    _, pk, _ = fitted
    assert pk.converged, pk.message
    assert (pk.n_subjects, pk.n_observations) == (32, 251)
    assert abs(pk.ofv - 423.32729) < 0.01


@pytest.mark.slow
def test_pkpd_fit_converges_to_plausible_pd_estimates(fitted):
    example, pk, result = fitted
    assert result.converged, result.message
    assert (result.n_subjects, result.n_observations) == (32, 483)
    pd_values = example.pd_parameters(result.model)
    assert 80.0 < pd_values["pca0"] < 120.0
    assert 5.0 < pd_values["turnover_half_life"] < 50.0
    assert 0.3 < pd_values["ic50"] < 3.0
    # PCA is measured to a few % of normal
    assert 1.0 < pd_values["pca_sd"] < 15.0
    # the PK population parameters stayed where the PK stage put them
    for name in example.PK_NAMES:
        assert float(getattr(result.model, name)) == float(getattr(pk.model, name))


@pytest.mark.slow
def test_individual_pca_predictions_track_observations(fitted):
    _, _, result = fitted
    table = result.table()
    dvid = result.dataset.table["dvid"].to_numpy()[table["row"].to_numpy()]
    pca = table[(table["EVID"] == 0) & (dvid == "pca")]
    assert len(pca) == 232
    assert 0.5 < float(np.std(pca["IWRES"])) < 1.5
    # and no systematic bias of the individual predictions
    assert abs(float(np.mean(pca["IWRES"]))) < 0.3
