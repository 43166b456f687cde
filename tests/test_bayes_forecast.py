"""Bayesian forecasting of one patient: the MAP etas are the FOCEI EBEs, the
Laplace covariance is the inverse curvature of the posterior (checked by
finite differences of an independent log posterior built from predictions),
and a recommended dose attains its target when the patient is predicted
afresh from an ordinary dataset."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.bayes import Target, forecast

# Theophylline FOCEI estimates (rounded): the population prior of the forecasts.
POPULATION = dict(tka=0.464, tcl=1.012, tv=3.46, add_sd=0.694, iiv=[0.402, 0.0691, 0.0192])


def _model():
    return pmx.library.Theophylline().with_values(**POPULATION)


def _patient(subject=3):
    return pmx.datasets.load("theophylline").subset([subject])


def test_map_etas_equal_the_focei_ebes():
    data = pmx.datasets.load("theophylline")
    model = _model()
    ebes = np.asarray(pmx.ofv(model, data, "focei").ebes)
    for i, subject in enumerate(data.ids[:2]):
        result = forecast(model, data.subset([subject]))
        assert result.converged
        np.testing.assert_allclose(result.eta, ebes[i], atol=1e-6)


def _minus_log_posterior(model, data, eta):
    """-log p(y | eta) - log p(eta), from pmx.predict (additive error)."""
    pred = pmx.predict(model, data, etas=np.asarray(eta)[None, :])
    obs = pred[pred.EVID == 0]
    sd = POPULATION["add_sd"]
    omega = np.diag(POPULATION["iiv"])
    return 0.5 * np.sum(((obs.DV - obs.IPRED) / sd) ** 2) + 0.5 * eta @ np.linalg.solve(omega, eta)


def test_laplace_covariance_is_the_inverse_posterior_curvature():
    model, data = _model(), _patient()
    result = forecast(model, data, n_draws=4000, seed=1)
    eta = result.eta
    h, n = 1e-4, eta.size
    hessian = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            ei, ej = np.eye(n)[i] * h, np.eye(n)[j] * h
            f = lambda d: _minus_log_posterior(model, data, eta + d)
            hessian[i, j] = (f(ei + ej) - f(ei - ej) - f(ej - ei) + f(-ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(result.covariance, np.linalg.inv(hessian), rtol=2e-4)
    # the draws are normal around the mode with that covariance
    assert np.all(
        np.abs(result.draws.mean(axis=0) - eta) < 4 * np.sqrt(np.diag(result.covariance) / 4000)
    )


def _fresh_prediction(model, data, eta, regimen, times, cmt=2):
    """IPRED of the patient at ``times`` from a plain NONMEM table: the
    history, the regimen's doses and one observation record per time."""
    history = data.table[["ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT"]]
    doses = regimen.to_table(id_value=int(history.ID.iloc[0]))
    doses = doses[doses.EVID == 1][["ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT", "II", "ADDL"]]
    samples = pd.DataFrame(
        dict(ID=history.ID.iloc[0], TIME=times, AMT=0.0, DV=0.0, EVID=0, MDV=1, CMT=cmt)
    )
    table = pd.concat([history, doses.fillna(0), samples], ignore_index=True).fillna(0)
    table = table.sort_values(["TIME", "EVID"], ascending=[True, False], kind="stable")
    pred = pmx.predict(model, pmx.read_nonmem(table), etas=np.asarray(eta)[None, :])
    future = pred[(pred.EVID == 0) & (pred.TIME > history.TIME.max())]
    return future.IPRED.to_numpy()


def test_trough_recommendation_attains_the_target():
    model, data = _model(), _patient()
    result = forecast(model, data)
    regimen = pmx.Regimen.oral(320.0, every=24.0, n=5, start=48.0)  # last dose at 144 h
    rec = result.recommend_dose(regimen, Target.trough(2.5, at=168.0))
    assert rec.converged
    trough = _fresh_prediction(model, data, result.eta, rec.regimen, [168.0])
    assert trough[0] == pytest.approx(2.5, rel=1e-6)
    assert rec.achieved == pytest.approx(2.5, rel=1e-6)
    lo, hi = rec.interval
    assert lo < 2.5 < hi and 0.2 < rec.attainment < 0.8
    # rounding reports the value at the rounded dose
    rounded = result.recommend_dose(regimen, Target.trough(2.5, at=168.0), round_to=50)
    assert rounded.amount % 50 == 0 and abs(rounded.amount - rec.amount) <= 25
    fresh = _fresh_prediction(model, data, result.eta, rounded.regimen, [168.0])
    assert rounded.achieved == pytest.approx(fresh[0], rel=1e-6)


def test_auc_recommendation_matches_a_dense_trapezoid():
    model, data = _model(), _patient()
    result = forecast(model, data)
    regimen = pmx.Regimen.oral(200.0, every=12.0, n=4, start=30.0)
    window = (66.0, 78.0)  # the last dosing interval
    rec = result.recommend_dose(regimen, Target.auc(60.0, window))
    times = np.linspace(*window, 6001)
    conc = _fresh_prediction(model, data, result.eta, rec.regimen, times)
    auc = np.sum((conc[1:] + conc[:-1]) / 2) * (times[1] - times[0])
    # 241-point trapezoid inside the recommendation vs 6001 points here
    assert auc == pytest.approx(60.0, rel=2e-3)


class MichaelisMenten(pmx.Model):
    tvm: pmx.Theta = pmx.theta(np.log(20.0))
    tkm: pmx.Theta = pmx.theta(np.log(2.0))
    tv: pmx.Theta = pmx.theta(np.log(10.0))
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    iiv: pmx.Omega = pmx.omega(vm=0.09, v=0.04)
    dynamics = pmx.pk.OneCompartmentMM()

    def individual(self, eta, cov):
        return dict(vm=jnp.exp(self.tvm + eta.vm), km=jnp.exp(self.tkm), v=jnp.exp(self.tv + eta.v))

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop)


@pytest.mark.slow  # about 45 s of compilation (a Michaelis-Menten ODE model)
def test_recommendation_for_a_nonlinear_model():
    table = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0.0, 2.0, 8.0],
            AMT=[100.0, 0, 0],
            DV=[0.0, 7.1, 3.0],
            EVID=[1, 0, 0],
            MDV=[1, 0, 0],
            CMT=1,
        )
    )
    data = pmx.read_nonmem(table)
    model = MichaelisMenten()
    result = forecast(model, data)
    regimen = pmx.Regimen.bolus(100.0, every=12.0, n=3, start=12.0)
    rec = result.recommend_dose(regimen, Target.concentration(4.0, at=44.0))
    assert rec.converged
    conc = _fresh_prediction(model, data, result.eta, rec.regimen, [44.0], cmt=1)
    assert conc[0] == pytest.approx(4.0, rel=1e-6)
    # saturable elimination: exposure rises more than proportionally with dose
    base = result.predict([44.0], regimen).IPRED[0]
    assert rec.amount / 100.0 < 4.0 / base if base < 4.0 else rec.amount / 100.0 > 4.0 / base


def test_forecast_input_errors():
    model = _model()
    with pytest.raises(ValueError, match="one patient"):
        forecast(model, pmx.datasets.load("theophylline").subset([1, 2]))
    result = forecast(model, _patient())
    with pytest.raises(ValueError, match="must not start before"):
        result.predict([1.0], pmx.Regimen.oral(320.0))
    with pytest.raises(ValueError, match="> 0"):
        Target.trough(0.0, at=10.0)
