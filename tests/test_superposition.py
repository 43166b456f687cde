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

    def total(x, superpose, constant=False, resets=True):
        m = model.with_values(**dict(zip(names, x, strict=True)))

        def one(subject, r, v):
            params = jax.vmap(
                lambda c: m.individual_parameters(jnp.zeros(0), c, subject.covariate_names)
            )(subject.cov)
            if superpose:
                result = superposed_amounts(m.dynamics, subject, params, r, v)
            else:
                result = record_amounts(
                    m.dynamics, subject, params, r, v,
                    has_ss=plan.has_ss, max_ss_overlap=plan.max_ss_overlap,
                    constant_parameters=constant, has_resets=resets,
                )  # fmt: skip
            return result.amounts

        return jax.vmap(one)(subjects, plan.dose_record, plan.dose_valid)

    x = jnp.asarray([float(model.thetas()[n].value) for n in names])
    # Compiled: run op by op, the derivatives below took minutes.
    return names, x, jax.jit(total, static_argnums=(1, 2, 3))


def _value_gradient_amounts(total, x, weights, *path):
    """``sum(weights * amounts)``, its gradient in the THETAs and the amounts
    themselves, by one path of ``total``: one compiled program per path."""

    def scalar(x):
        amounts = total(x, *path)
        return jnp.sum(weights * amounts), amounts

    (value, amounts), gradient = jax.jit(jax.value_and_grad(scalar, has_aux=True))(x)
    return float(value), np.asarray(gradient), np.asarray(amounts)


@pytest.mark.parametrize("dynamics", CLOSED_FORMS, ids=lambda d: type(d).__name__)
def test_amounts_and_gradients_equal_the_event_loop(dynamics):
    oral = dynamics.has_depot
    dose_cmt = 1
    obs_cmt = 2 if oral else 1
    data = pmx.read_nonmem(_history(dose_cmt, obs_cmt, dynamics.n_compartments))
    model = _model(dynamics, dose_cmt)
    prepared = prepare(model, data)
    # Nine dose slots: prepare itself would choose the loop; both are run here.
    assert prepared.plan.constant_parameters and prepared.plan.has_infusions
    _, x, total = _both(model, prepared)
    valid = np.asarray(prepared.subjects.valid)
    weights = jnp.asarray(
        np.random.default_rng(1).uniform(size=(*valid.shape, dynamics.n_compartments))
        * valid[..., None]
    )
    _, g_loop, loop = _value_gradient_amounts(total, x, weights, False)
    _, g_sup, sup = _value_gradient_amounts(total, x, weights, True)
    np.testing.assert_allclose(sup[valid], loop[valid], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g_sup, g_loop, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "dynamics",
    # The ODE: its transitions from ODE solves, in the slow set (18 s).
    [*CLOSED_FORMS, pytest.param(pmx.pk.OneCompartmentOralODE(), marks=pytest.mark.slow)],
    ids=lambda d: type(d).__name__,
)
def test_loop_over_dose_points_equals_the_full_loop(dynamics):
    """Constant parameters, no steady state, no reset: the loop runs over the
    dose points alone and each record is moved from the last one before it
    (``_from_dose_points``).  Same amounts and gradients as the loop over
    every record, on boluses, ADDL, infusions with RATE > 0, -1 and -2, a lag,
    doses into two compartments and samples at dose times on either side of
    the dose; for every closed form and a linear ODE (its transitions from
    ODE solves)."""
    obs_cmt = 2 if "Oral" in type(dynamics).__name__ else 1
    data = pmx.read_nonmem(_history(1, obs_cmt, dynamics.n_compartments))
    model = _model(dynamics, 1)
    prepared = prepare(model, data)
    assert prepared.plan.constant_parameters and not prepared.plan.has_resets
    _, x, total = _both(model, prepared)
    valid = np.asarray(prepared.subjects.valid)
    weights = jnp.asarray(
        np.random.default_rng(4).uniform(size=(*valid.shape, dynamics.n_compartments))
        * valid[..., None]
    )

    # The full loop: parameters not known to be constant.
    v_full, g_full, amounts_full = _value_gradient_amounts(total, x, weights, False, False, True)
    v_points, g_points, amounts_points = _value_gradient_amounts(
        total, x, weights, False, True, False
    )
    # The ODE solves of either path integrate other intervals: they agree to
    # the solver's tolerance, the closed forms to rounding.
    ode = "ODE" in type(dynamics).__name__
    np.testing.assert_allclose(v_points, v_full, rtol=1e-7 if ode else 1e-11)
    np.testing.assert_allclose(g_points, g_full, rtol=1e-6 if ode else 1e-8, atol=1e-10)
    np.testing.assert_allclose(
        amounts_points[valid],
        amounts_full[valid],
        rtol=1e-6 if ode else 1e-10,
        atol=1e-7 if ode else 1e-12,
    )


@pytest.mark.slow  # 36 s: steady state and resets, value and gradient by two loops
def test_event_loop_with_constant_parameters_is_the_same():
    """The event loop told that the parameters are constant (one
    eigen-decomposition per subject) gives the same amounts and gradients on
    a history with SS=1/2 doses, an SS infusion longer than its interval,
    modelled rates and durations, and resets."""
    from test_closed_form_vs_ode import _events_table

    model = _model(pmx.pk.TwoCompartmentOral(), 1)
    prepared = prepare(model, pmx.read_nonmem(_events_table(1, 2)))
    assert prepared.plan.constant_parameters and not prepared.plan.superpose
    _, x, total = _both(model, prepared)
    valid = np.asarray(prepared.subjects.valid)
    weights = np.random.default_rng(2).uniform(size=(*valid.shape, 3)) * valid[..., None]

    def value_and_gradient(constant):
        def scalar(x):
            return jnp.sum(jnp.asarray(weights) * total(x, False, constant))

        value, gradient = jax.jit(jax.value_and_grad(scalar))(x)
        return float(value), np.asarray(gradient)

    (v_loop, g_loop), (v_constant, g_constant) = value_and_gradient(False), value_and_gradient(True)
    np.testing.assert_allclose(v_constant, v_loop, rtol=1e-12)
    np.testing.assert_allclose(g_constant, g_loop, rtol=1e-10, atol=1e-12)


class Oral(pmx.Model):
    """One-compartment oral model; reads WT, and TIME or OCC's IOV on request."""

    tcl: pmx.Theta = pmx.theta(np.log(2.7))
    sd: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.1)
    dynamics = pmx.pk.OneCompartmentOral()
    reads_time = False

    def individual(self, eta, cov):
        cl = jnp.exp(self.tcl + eta.cl) * (cov.WT / 70.0) ** 0.75
        if self.reads_time:
            cl = cl * (1.0 + 0.0 * cov.TIME)
        return dict(ka=jnp.asarray(1.5), cl=cl, v=jnp.asarray(30.0))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


class OralTime(Oral):
    reads_time = True


class OralTimeInBulk(Oral):
    """Reads TIME without a lookup by name: through ``cov.as_dict()``."""

    def individual(self, eta, cov):
        p = super().individual(eta, cov)
        return dict(p, cl=p["cl"] * jnp.where(cov.as_dict()["TIME"] > 6.0, 2.0, 1.0))


class OralTimeByValues(Oral):
    def individual(self, eta, cov):
        p = super().individual(eta, cov)
        return dict(p, cl=p["cl"] * jnp.where(cov.values[-1] > 6.0, 2.0, 1.0))


class OralIOV(Oral):
    iov: pmx.Omega = pmx.omega(cl_occ=0.05, occasion=True)

    def individual(self, eta, cov):
        p = super().individual(eta, cov)
        return dict(p, cl=p["cl"] * jnp.exp(eta.cl_occ))


def _table(n_doses=1, **changes):
    """Two subjects, ``n_doses`` daily doses, six samples after each."""
    rows = []
    for subject in (1, 2):
        for day in range(n_doses):
            rows.append(dict(ID=subject, TIME=24.0 * day, AMT=100.0, EVID=1, DV=np.nan, WT=70.0))
            for t in (0.5, 1, 2, 4, 8, 12):
                rows.append(dict(ID=subject, TIME=24.0 * day + t, AMT=0.0, EVID=0, DV=1.0, WT=70.0))
    table = pd.DataFrame(rows)
    table["CMT"] = np.where(table.EVID == 1, 1, 2)
    table["OCC"] = 1
    table["SS"] = 0
    table["II"] = 0.0
    for column, (row, value) in changes.items():
        table.loc[row, column] = value
    return table


@pytest.mark.parametrize(
    ("model", "table", "superposed", "constant"),
    [
        (Oral(), _table(), True, True),
        (Oral(), _table(2), True, True),
        (Oral(), _table(3), False, True),  # more dose slots than SUPERPOSE_MAX_DOSES
        (Oral(), _table(WT=(3, 80.0)), False, False),  # WT changes within subject 1
        (Oral(), _table(WT=(slice(7, 13), 80.0)), True, True),  # constant within subjects
        (OralTime(), _table(), False, False),  # $PK reads TIME
        (OralTimeInBulk(), _table(), False, False),  # ... through cov.as_dict()
        (OralTimeByValues(), _table(), False, False),  # ... through cov.values
        (OralIOV(), _table(), True, True),  # one occasion per subject
        (OralIOV(), _table(OCC=(5, 2)), False, False),  # subject 1 on two occasions
        (Oral(), _table(SS=(0, 1), II=(0, 24.0)), False, True),  # steady state
    ],
    ids=["one-dose", "two-doses", "three-doses", "varying-WT", "WT-per-subject",
         "reads-TIME", "TIME-as-dict", "TIME-by-values", "IOV-one-occasion",
         "IOV-two-occasions", "steady-state"],
)  # fmt: skip
def test_which_data_and_models_are_superposed(model, table, superposed, constant):
    plan = prepare(model, pmx.read_nonmem(table)).plan
    assert (plan.superpose, plan.constant_parameters) == (superposed, constant)


def test_a_sample_at_the_end_of_an_infusion_has_the_loops_derivative():
    """Duration F * AMT / RATE = 1.6 h with F estimated, after a lag of
    0.75 h; a sample exactly at the end of the infusion (2.35 h) is after
    the end in event order, so its derivative in F is the ended infusion's
    (the event loop's side of the kink): dA/dF = AMT = 100 there, not an
    average of the two sides."""
    rows = [(1, 0.0, 100.0, 1, 1, 50.0), (1, 2.35, 0.0, 0, 1, 0.0), (1, 6.0, 0.0, 0, 1, 0.0)]
    table = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "EVID", "CMT", "RATE"])
    table["DV"] = np.where(table.EVID == 0, 1.0, np.nan)
    model = _model(pmx.pk.OneCompartment(), 1)
    prepared = prepare(model, pmx.read_nonmem(table))
    assert prepared.plan.superpose
    names, x, total = _both(model, prepared)
    at = names.index("bioav")
    for superpose in (False, True):
        jacobian = np.asarray(jax.jit(jax.jacfwd(lambda x, s=superpose: total(x, s)))(x))
        np.testing.assert_allclose(jacobian[0, 1, 0, at], 100.0, rtol=1e-12)


def test_ode_and_reset_use_the_event_loop():
    class OralODE(Oral):
        dynamics = pmx.pk.OneCompartmentOralODE()

    table = _table()
    assert not prepare(OralODE(), pmx.read_nonmem(table)).plan.superpose
    reset = pd.concat(
        [
            table,
            pd.DataFrame(
                [
                    dict(
                        ID=1,
                        TIME=13.0,
                        AMT=0.0,
                        EVID=3,
                        DV=np.nan,
                        WT=70.0,
                        CMT=2,
                        OCC=1,
                        SS=0,
                        II=0.0,
                    )
                ]
            ),
        ]  # fmt: skip
    ).sort_values(["ID", "TIME"], kind="stable")
    plan = prepare(Oral(), pmx.read_nonmem(reset)).plan
    assert plan.has_resets and not plan.superpose
    assert not prepare(Oral(), pmx.read_nonmem(table)).plan.has_resets


def test_fit_objective_and_gradient_are_the_same_by_either_path():
    """The FOCEI OFV and its gradient of a superposed dataset equal those of
    the same data forced through the event loop."""
    import dataclasses

    from pmx_jax.likelihood import make_problem

    table = _table(2)
    rng = np.random.default_rng(3)
    table.loc[table.EVID == 0, "DV"] = rng.uniform(1.0, 4.0, int((table.EVID == 0).sum()))
    data = pmx.read_nonmem(table)
    model = Oral()
    prepared = prepare(model, data, buckets=True)
    assert prepared.plan.superpose
    looped = dataclasses.replace(prepared, plan=dataclasses.replace(prepared.plan, superpose=False))

    def ofv_and_gradient(source):
        problem = make_problem(model, source, "focei")

        def ofv(tcl):
            return pmx.ofv(model.with_values(tcl=tcl), problem, "focei").ofv

        return jax.value_and_grad(ofv)(jnp.asarray(np.log(2.7)))

    (v_sup, g_sup), (v_loop, g_loop) = ofv_and_gradient(prepared), ofv_and_gradient(looped)
    np.testing.assert_allclose(float(v_sup), float(v_loop), rtol=1e-10)
    np.testing.assert_allclose(float(g_sup), float(g_loop), rtol=1e-7)
