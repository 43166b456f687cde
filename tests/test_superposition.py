"""Superposition (``superposed_amounts``) against the event loop
(``record_amounts``): the same amounts and the same derivatives on dosing
histories without steady state or resets, for every closed form; and which
data and models :func:`can_superpose` sends to it."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.events import record_amounts
from pmx_jax.events._engine import superposed_amounts
from pmx_jax.likelihood import prepare

PARAMS = dict(cl=2.0, v=15.0, q=3.0, vp=30.0, q2=0.7, vp2=60.0, ka=1.3)
CLOSED_FORMS = [
    pmx.pk.OneCompartment(),
    pmx.pk.OneCompartmentOral(),
    pmx.pk.TwoCompartment(),
    pmx.pk.TwoCompartmentOral(),
    pmx.pk.ThreeCompartment(),
    pmx.pk.ThreeCompartmentOral(),
]


def _history(dose_cmt: int, obs_cmt: int, n_cmt: int, seed: int = 0) -> pd.DataFrame:
    """Boluses, an ADDL series, infusions (RATE > 0, -1, -2), two doses at one
    time, a dose into another compartment, samples at dose times before and
    after the dose record, and a subject whose first record is a sample."""
    rng = np.random.default_rng(seed)
    d, o = dose_cmt, obs_cmt
    other = min(2, n_cmt)
    columns = ["ID", "TIME", "AMT", "EVID", "CMT", "RATE", "II", "ADDL"]
    rows = [
        (1, 0.0, 0, 0, o, 0, 0, 0),  # sample at the dose time, before the dose
        (1, 0.0, 100, 1, d, 0, 12, 3),
        (1, 0.0, 0, 0, o, 0, 0, 0),  # after it: sees the dose
        (1, 30.0, 50, 1, d, 20, 0, 0),
        (1, 30.0, 40, 1, other, 0, 0, 0),
        (1, 40.0, 60, 1, d, -1, 0, 0),
        (1, 40.0, 30, 1, d, 0, 0, 0),
        (1, 52.0, 60, 1, d, -2, 0, 0),
        (2, 1.0, 0, 0, o, 0, 0, 0),
        (2, 2.0, 80, 1, d, 10, 0, 0),
        (2, 9.0, 80, 1, d, 0, 0, 0),
    ]
    for subject in (1, 2):
        for t in np.sort(rng.uniform(0.0, 70.0, 14)):
            rows.append((subject, float(np.round(t, 3)), 0, 0, o, 0, 0, 0))
        rows += [(subject, t, 0, 0, o, 0, 0, 0) for t in (12.0, 30.0, 31.0, 55.0)]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)
    table["DV"] = np.where(table["EVID"] == 0, 1.0, np.nan)
    return table


def _model(dynamics, dose_cmt):
    class Linear(pmx.Model):
        lcl: pmx.Theta = pmx.theta(np.log(PARAMS["cl"]))
        lka: pmx.Theta = pmx.theta(np.log(PARAMS["ka"]))
        lag: pmx.Theta = pmx.theta(0.75, lower=0.0)
        bioav: pmx.Theta = pmx.theta(0.8, lower=0.0)
        rate: pmx.Theta = pmx.theta(25.0, lower=0.0)
        duration: pmx.Theta = pmx.theta(3.0, lower=0.0)
        sd: pmx.Theta = pmx.theta(1.0, lower=0.0)

        def individual(self, eta, cov):
            p = {k: jnp.asarray(v) for k, v in PARAMS.items()}
            p["cl"] = jnp.exp(self.lcl)
            p["ka"] = jnp.exp(self.lka)
            p[f"F{dose_cmt}"] = self.bioav * 1.0
            p[f"ALAG{dose_cmt}"] = self.lag * 1.0
            p[f"R{dose_cmt}"] = self.rate * 1.0
            p[f"D{dose_cmt}"] = self.duration * 1.0
            return p

        def observe(self, amounts, p):
            return pmx.Additive(amounts.central / p["v"], self.sd)

    Linear.dynamics = dynamics
    return Linear()


def _both(model, prepared, values=None):
    """Sum of all compartments' amounts at observed records, by each path, as
    a function of the THETAs (names, vector)."""
    subjects, plan = prepared.subjects, prepared.plan
    names = [n for n in model.theta_names if n != "sd"]

    def total(x, superpose):
        m = model.with_values(**dict(zip(names, x, strict=True)))

        def one(subject, r, v):
            params = jax.vmap(
                lambda c: m.individual_parameters(jnp.zeros(0), c, subject.covariate_names)
            )(subject.cov)
            if superpose:
                result = superposed_amounts(m.dynamics, subject, params, r, v)
            else:
                result = record_amounts(
                    m.dynamics, subject, params, r, v, has_ss=False, max_ss_overlap=0
                )
            return result.amounts

        return jax.vmap(one)(subjects, plan.dose_record, plan.dose_valid)

    x = jnp.asarray([float(model.thetas()[n].value) for n in names])
    return names, x, total


@pytest.mark.parametrize("dynamics", CLOSED_FORMS, ids=lambda d: type(d).__name__)
def test_amounts_and_gradients_equal_the_event_loop(dynamics):
    oral = dynamics.has_depot
    dose_cmt = 1
    obs_cmt = 2 if oral else 1
    data = pmx.read_nonmem(_history(dose_cmt, obs_cmt, dynamics.n_compartments))
    model = _model(dynamics, dose_cmt)
    prepared = prepare(model, data)
    assert prepared.plan.superpose and prepared.plan.has_infusions
    _, x, total = _both(model, prepared)
    loop, sup = total(x, False), total(x, True)
    valid = np.asarray(prepared.subjects.valid)
    np.testing.assert_allclose(np.asarray(sup)[valid], np.asarray(loop)[valid], rtol=1e-10, atol=1e-10)
    weights = jnp.asarray(np.random.default_rng(1).uniform(size=loop.shape) * valid[..., None])

    def scalar(x, superpose):
        return jnp.sum(weights * total(x, superpose))

    g_loop = jax.grad(scalar)(x, False)
    g_sup = jax.grad(scalar)(x, True)
    np.testing.assert_allclose(np.asarray(g_sup), np.asarray(g_loop), rtol=1e-9, atol=1e-9)


def test_fit_objective_is_the_same_by_either_path():
    """Theophylline's FOCEI objective and its gradient at NONMEM-like values:
    superposition (chosen by prepare) and the event loop (forced) agree."""
    from pmx_jax.likelihood import make_problem

    data = pmx.datasets.theophylline()
    model = pmx.library.theophylline_model() if hasattr(pmx.library, "theophylline_model") else None
    if model is None:
        pytest.skip("no library theophylline model")
    problem = make_problem(model, data, "focei")
    assert problem.prepared.plan.superpose
