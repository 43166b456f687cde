"""Event semantics beyond nmtest: derivatives w.r.t. every dose modifier and
parameter (reverse mode vs central finite differences), closed-form checks of
single events, and the compile-once property of the prediction path."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from test_closed_form_vs_ode import _events_table

import pmx_jax as pmx
from pmx_jax.events import record_amounts
from pmx_jax.likelihood import prepare


class Modifiers(pmx.Model):
    """Two-compartment oral model with every dose modifier on the depot."""

    lcl: pmx.Theta = pmx.theta(np.log(2.0))
    lv: pmx.Theta = pmx.theta(np.log(15.0))
    lq: pmx.Theta = pmx.theta(np.log(3.0))
    lvp: pmx.Theta = pmx.theta(np.log(30.0))
    lka: pmx.Theta = pmx.theta(np.log(1.2))
    bioav: pmx.Theta = pmx.theta(0.8, lower=0.0, upper=1.0)
    lag: pmx.Theta = pmx.theta(0.73, lower=0.0)
    rate: pmx.Theta = pmx.theta(23.0, lower=0.0)
    duration: pmx.Theta = pmx.theta(3.1, lower=0.0)
    sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
    dynamics = pmx.pk.TwoCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.lcl),
            v=jnp.exp(self.lv),
            q=jnp.exp(self.lq),
            vp=jnp.exp(self.lvp),
            ka=jnp.exp(self.lka),
            F1=self.bioav * 1.0,
            ALAG1=self.lag * 1.0,
            R1=self.rate * 1.0,
            D1=self.duration * 1.0,
        )

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


def test_gradients_of_every_parameter_match_finite_differences():
    """Sum of concentrations over a history with bolus, infusion, RATE=-1/-2,
    SS=1/2 (with an infusion longer than the interval), ADDL and resets.
    Central differences with h = 1e-6 on each THETA; smooth away from event
    ties (sampling times avoid lag/infusion ends), so 1e-5 relative is ample."""
    data = pmx.read_nonmem(_events_table(1, 2))
    model = Modifiers()
    prepared = prepare(model, data)
    subjects, plan = prepared.subjects, prepared.plan
    names = [n for n in model.theta_names if n != "sd"]

    def total(values):
        m = model.with_values(**dict(zip(names, values, strict=True)))

        def one(subject, r, v):
            params = jax.vmap(
                lambda c: m.individual_parameters(jnp.zeros(0), c, subject.covariate_names)
            )(subject.cov)
            amounts = record_amounts(
                m.dynamics,
                subject,
                params,
                r,
                v,
                has_ss=plan.has_ss,
                max_ss_overlap=plan.max_ss_overlap,
            ).amounts
            return jnp.sum(jnp.where(subject.is_obs, amounts[:, 1] / params["v"], 0.0))

        return jnp.sum(jax.vmap(one)(subjects, plan.dose_record, plan.dose_valid))

    x = jnp.asarray([float(model.thetas()[n].value) for n in names])
    h = 1e-6
    steps = jnp.concatenate([x[None], x + jnp.eye(x.size) * h, x - jnp.eye(x.size) * h])
    # One compilation: values at the steps and the gradient at x (row 0).
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(total)))(steps)
    values, grad = np.asarray(values)[1:], np.asarray(grads)[0]
    fd = (values[: x.size] - values[x.size :]) / (2 * h)
    assert np.all(np.abs(fd) > 1e-3), dict(zip(names, fd, strict=True))
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_single_bolus_and_infusion_match_textbook_formulas():
    """One-compartment IV: bolus C = D/V exp(-k t); infusion of D over T:
    C = D/(T CL) (1 - exp(-k t)) during, then decaying from the end value."""

    class Iv(pmx.Model):
        sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
        dynamics = pmx.pk.OneCompartment()

        def individual(self, eta, cov):
            return dict(cl=jnp.asarray(2.0), v=jnp.asarray(10.0))

        def observe(self, amounts, p):
            return pmx.Additive(amounts.central / p["v"], self.sd)

    times = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0])
    table = pd.DataFrame(
        [(1, 0.0, 100.0, 1, 0.0), (2, 0.0, 100.0, 1, 25.0)]
        + [(i, t, 0.0, 0, 0.0) for i in (1, 2) for t in times],
        columns=["ID", "TIME", "AMT", "EVID", "RATE"],
    ).sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False])
    table["DV"] = 0.0
    out = pmx.predict(Iv(), pmx.read_nonmem(table))
    obs = out[out.EVID == 0]
    k = 0.2
    bolus = 100 / 10 * np.exp(-k * times)
    T = 4.0
    during = 100 / (T * 2.0) * (1 - np.exp(-k * np.minimum(times, T)))
    infusion = np.where(times <= T, during, during * np.exp(-k * (times - T)))
    np.testing.assert_allclose(obs[obs.ID == 1].IPRED, bolus, rtol=1e-12)
    np.testing.assert_allclose(obs[obs.ID == 2].IPRED, infusion, rtol=1e-12, atol=1e-14)


def test_steady_state_bolus_matches_geometric_series():
    """SS=1 bolus every tau: trough amount D e^{-k tau} / (1 - e^{-k tau})."""

    class Iv(pmx.Model):
        sd: pmx.Theta = pmx.theta(1.0, lower=0.0)
        dynamics = pmx.pk.OneCompartment()

        def individual(self, eta, cov):
            return dict(cl=jnp.asarray(1.5), v=jnp.asarray(12.0))

        def observe(self, amounts, p):
            return pmx.Additive(amounts.central, self.sd)

    tau, dose = 12.0, 100.0
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1],
            "TIME": [0.0, 0.0, 6.0],
            "AMT": [dose, 0, 0],
            "EVID": [1, 0, 0],
            "II": [tau, 0, 0],
            "SS": [1, 0, 0],
            "DV": [0.0, 0.0, 0.0],
        }
    )
    out = pmx.predict(Iv(), pmx.read_nonmem(table))
    k = 1.5 / 12.0
    peak = dose / (1 - np.exp(-k * tau))
    expected = [peak, peak * np.exp(-k * 6.0)]
    np.testing.assert_allclose(out.IPRED.to_numpy()[1:], expected, rtol=1e-12)


def test_new_parameter_values_do_not_recompile():
    """The prediction path is traced once per data shape: a second call with other
    THETA values reuses the compiled function (as an optimiser step must)."""
    from pmx_jax.library import Theophylline
    from pmx_jax.simulation._simulate import _predict_batch

    data = pmx.datasets.load("theophylline")
    model = Theophylline()
    pmx.predict(model, data)
    before = _predict_batch.jitted._cached._cache_size()
    pmx.predict(model.with_values(tcl=1.3, tv=3.2), data)
    assert _predict_batch.jitted._cached._cache_size() == before


@pytest.mark.slow  # 30 s; every event type is also covered by test_nmtest and the engine tests
def test_jit_vmap_and_eager_agree():
    """The batched, compiled engine equals the one-subject eager computation.
    Eager mode runs op by op (slow), so this uses the subjects without a
    steady-state infusion: bolus, ADDL, lag, infusion, SS bolus, resets."""
    table = _events_table(1, 2)
    data = pmx.read_nonmem(table[table.ID != 2])
    model = Modifiers()
    prepared = prepare(model, data)
    subjects, plan = prepared.subjects, prepared.plan

    def one(subject, r, v):
        params = jax.vmap(
            lambda c: model.individual_parameters(jnp.zeros(0), c, subject.covariate_names)
        )(subject.cov)
        return record_amounts(
            model.dynamics,
            subject,
            params,
            r,
            v,
            has_ss=plan.has_ss,
            max_ss_overlap=plan.max_ss_overlap,
        ).amounts

    batched = jax.jit(jax.vmap(one))(subjects, plan.dose_record, plan.dose_valid)
    for i in range(subjects.n_subjects):
        subject = jax.tree_util.tree_map(lambda x, i=i: x[i], subjects)
        with jax.disable_jit():
            eager = one(subject, plan.dose_record[i], plan.dose_valid[i])
        np.testing.assert_allclose(batched[i], eager, rtol=1e-12, atol=1e-10)
        assert float(jnp.max(eager)) > 1.0
