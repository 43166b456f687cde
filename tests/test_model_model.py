"""The Model base class: introspection, validation, record-level evaluation,
and the model as a pytree under jit / vmap / grad."""

import jax

jax.config.update("jax_enable_x64", True)

from typing import ClassVar  # noqa: E402

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

import pmx_jax.model as pmx  # noqa: E402
from pmx_jax.dynamics._base import AbstractDynamics  # noqa: E402


class DepotCentral(AbstractDynamics):
    """A stand-in dynamics: the tests here never propagate."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central")
    is_linear: ClassVar[bool] = True

    def propagate(self, params, amounts, dt, rates):
        return amounts


class OneCptOral(pmx.Model):
    tka: pmx.Theta = pmx.theta(0.45)
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.45, lower=-5, upper=10)
    add_sd: pmx.Theta = pmx.theta(0.7, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.6, cl=0.3, v=0.1)
    dynamics = DepotCentral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl) * (cov.WT / 70) ** 0.75,
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.add_sd)


class PKPD(pmx.Model):
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.0)
    te0: pmx.Theta = pmx.theta(4.0)
    prop: pmx.Theta = pmx.theta(0.1, lower=0.0)
    ln_sd: pmx.Theta = pmx.theta(0.2, lower=0.0, fixed=True)
    block: pmx.Omega = pmx.omega_block(("cl", "v"), [[0.1, 0.01], [0.01, 0.1]])
    e0: pmx.Omega = pmx.omega(e0=0.2, fixed=True)
    occ: pmx.Omega = pmx.omega(cl_iov=0.05, occasion=True)
    dynamics = DepotCentral()

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + eta.cl + eta.cl_iov),
            v=jnp.exp(self.tv + eta.v),
            e0=jnp.exp(self.te0 + eta.e0),
        )

    def observe(self, amounts, p):
        conc = amounts.central / p["v"]
        return {
            "cp": pmx.Proportional(conc, self.prop),
            "effect": pmx.Exponential(p["e0"] * (1 - conc / (1 + conc)), self.ln_sd),
        }


COV_NAMES = ("WT", "SEX")
COV = jnp.array([80.0, 1.0])


def test_introspection():
    m = OneCptOral()
    assert m.theta_names == ("tka", "tcl", "tv", "add_sd")
    assert list(m.thetas()) == list(m.theta_names)
    assert m.eta_names == ("ka", "cl", "v") and m.n_eta == 3
    assert m.iov_eta_names == () and m.n_iov_eta == 0
    np.testing.assert_allclose(m.omega_matrix(), np.diag([0.6, 0.3, 0.1]))
    assert m.iov_omega_matrix().shape == (0, 0)
    assert [n for n, _ in m.omega_blocks()] == ["iiv"]

    p = PKPD()
    assert p.eta_names == ("cl", "v", "e0") and p.iov_eta_names == ("cl_iov",)
    np.testing.assert_allclose(
        p.omega_matrix(), [[0.1, 0.01, 0.0], [0.01, 0.1, 0.0], [0.0, 0.0, 0.2]]
    )
    np.testing.assert_allclose(p.iov_omega_matrix(), [[0.05]])


def test_repr_is_a_readable_summary():
    text = repr(OneCptOral())
    assert text.splitlines()[0] == "OneCptOral(dynamics=DepotCentral(depot, central))"
    for piece in ["THETA", "tka", "0.45", "(-5, 10)", "(0, inf)", "OMEGA", "iiv", "diag", "CV"]:
        assert piece in text, piece
    assert "ka" in text and "0.6" in text
    text = repr(PKPD())
    assert "block" in text and "FIX" in text and "IOV" in text and "0.01" in text


def test_individual_parameters():
    m = OneCptOral()
    eta = jnp.array([0.1, -0.2, 0.3])
    p = m.individual_parameters(eta, COV, COV_NAMES)
    assert set(p) == {"ka", "cl", "v"}
    assert float(p["cl"]) == pytest.approx(np.exp(1.0 - 0.2) * (80 / 70) ** 0.75)
    with pytest.raises(ValueError, match="expected 3 IIV etas"):
        m.individual_parameters(jnp.zeros(2), COV, COV_NAMES)


def test_iov_etas_are_read_by_name():
    p = PKPD()
    eta = jnp.array([0.1, 0.0, 0.0])
    base = p.individual_parameters(eta, COV, COV_NAMES)
    occ = p.individual_parameters(eta, COV, COV_NAMES, iov_eta=jnp.array([0.2]))
    assert float(base["cl"]) == pytest.approx(np.exp(1.1))
    assert float(occ["cl"]) == pytest.approx(np.exp(1.3))


def test_missing_covariate_is_reported():
    from pmx_jax.model._errors import missing_covariate_error_class

    with pytest.raises(missing_covariate_error_class(), match="'WT'"):
        OneCptOral().individual_parameters(jnp.zeros(3), jnp.array([1.0]), ("SEX",))


def test_individual_must_return_scalars():
    class Bad(OneCptOral):
        def individual(self, eta, cov):
            return dict(cl=jnp.ones(2))

    with pytest.raises(pmx.IndividualParametersError, match="'cl'"):
        Bad().individual_parameters(jnp.zeros(3), COV, COV_NAMES)

    class NotDict(OneCptOral):
        def individual(self, eta, cov):
            return jnp.ones(2)

    with pytest.raises(pmx.IndividualParametersError, match="dict"):
        NotDict().individual_parameters(jnp.zeros(3), COV, COV_NAMES)


def test_record_log_likelihood_single_endpoint():
    m = OneCptOral()
    p = m.individual_parameters(jnp.zeros(3), COV, COV_NAMES)
    amounts = jnp.array([10.0, 50.0])
    f = 50.0 / float(p["v"])
    assert float(m.record_prediction(amounts, p)) == pytest.approx(f)
    assert float(m.record_variance(amounts, p)) == pytest.approx(0.49)
    ll = m.record_log_likelihood(amounts, p, None, 1.7, 0, 0.0)
    assert float(ll) == pytest.approx(stats.norm.logpdf(1.7, f, 0.7))
    ll = m.record_log_likelihood(amounts, p, None, 0.0, 1, 0.5)
    assert float(ll) == pytest.approx(stats.norm.logcdf(0.5, f, 0.7))
    assert m.record_sample(jax.random.key(1), amounts, p).shape == ()


def test_multiple_endpoints_select_by_dvid():
    m = PKPD()
    amounts = jnp.array([0.0, 40.0])

    @eqx.filter_jit
    def record(model, dvid):
        p = model.individual_parameters(jnp.zeros(3), COV, COV_NAMES)
        return (
            model.record_prediction(amounts, p, dvid),
            model.record_log_likelihood(amounts, p, dvid, 2.0, 0, 0.0),
        )

    p = m.individual_parameters(jnp.zeros(3), COV, COV_NAMES)
    conc = 40.0 / float(p["v"])
    effect = float(p["e0"]) * (1 - conc / (1 + conc))
    assert list(m.endpoints(amounts, p)) == ["cp", "effect"]
    with pytest.raises(pmx.ObservationError, match="2 endpoints"):
        m.observation(amounts, p)
    # dvid traced and vmapped over records
    preds, lls = jax.vmap(record, in_axes=(None, 0))(m, jnp.array([0, 1]))
    np.testing.assert_allclose(preds, [conc, effect], rtol=1e-13)
    expected = [
        stats.norm.logpdf(2.0, conc, 0.1 * conc),
        stats.norm.logpdf(np.log(2.0), np.log(effect), 0.2),
    ]
    np.testing.assert_allclose(lls, expected, rtol=1e-12)
    assert float(record(m, 1)[1]) == pytest.approx(expected[1], rel=1e-12)


def test_unselected_endpoint_does_not_poison_gradient():
    # Pre-dose: concentration 0, so the proportional endpoint has zero
    # variance; a PD record (dvid 1) must still have a finite gradient.
    m = PKPD()

    def ll(model, dvid, y):
        p = model.individual_parameters(jnp.zeros(3), COV, COV_NAMES)
        return model.record_log_likelihood(jnp.zeros(2), p, dvid, y, 0, 0.0)

    @eqx.filter_jit
    def batch_gradient(model, dvids, ys):
        return jax.vmap(eqx.filter_grad(ll), in_axes=(None, 0, 0))(model, dvids, ys)

    g = batch_gradient(m, jnp.array([1, 1]), jnp.array([50.0, 60.0]))
    for leaf in jax.tree_util.tree_leaves(g):
        assert bool(jnp.all(jnp.isfinite(leaf)))


def test_model_is_a_pytree_under_jit_vmap_grad():
    m = OneCptOral()
    leaves = jax.tree_util.tree_leaves(m)
    assert len(leaves) == 5  # four THETA values and one OMEGA matrix

    def objective(model, eta):
        p = model.individual_parameters(eta, COV, COV_NAMES)
        return model.record_log_likelihood(jnp.array([0.0, 50.0]), p, None, 1.7, 0, 0.0)

    eta = jnp.array([0.1, -0.2, 0.3])
    eager = objective(m, eta)
    jitted = eqx.filter_jit(objective)(m, eta)
    assert float(jitted) == pytest.approx(float(eager), rel=1e-14)
    also = jax.jit(objective)(m, eta)
    assert float(also) == pytest.approx(float(eager), rel=1e-14)

    etas = jnp.array([[0.0, 0.0, 0.0], [0.1, -0.2, 0.3], [0.5, 0.5, 0.5]])
    batch = jax.jit(jax.vmap(objective, in_axes=(None, 0)))(m, etas)
    assert batch.shape == (3,) and float(batch[1]) == pytest.approx(float(eager), rel=1e-14)

    grads = eqx.filter_jit(eqx.filter_grad(objective))(m, eta)
    assert isinstance(grads.tv, pmx.Theta)
    assert float(grads.tka.value) == 0.0  # ka does not enter the concentration
    # d/d add_sd of log N(y; f, sd^2), and d/d tv by central differences
    f = 50.0 / np.exp(3.45 + 0.3)
    assert float(grads.add_sd.value) == pytest.approx(-1 / 0.7 + (1.7 - f) ** 2 / 0.7**3)
    h = 1e-6
    fd = (
        objective(m.with_values(tv=3.45 + h), eta) - objective(m.with_values(tv=3.45 - h), eta)
    ) / (2 * h)
    assert float(grads.tv.value) == pytest.approx(float(fd), rel=1e-6)


def test_with_values_and_unconstrained_round_trip():
    m = OneCptOral()
    m2 = m.with_values(tcl=2.0, iiv=[0.5, 0.2, 0.1])
    assert float(m2.tcl) == 2.0 and float(m.tcl) == 1.0
    np.testing.assert_allclose(m2.omega_matrix(), np.diag([0.5, 0.2, 0.1]))
    assert m2.tv.lower == -5.0  # bounds kept
    with pytest.raises(pmx.ThetaBoundsError, match="OneCptOral.tv"):
        m.with_values(tv=20.0)
    with pytest.raises(KeyError, match="tcx"):
        m.replace_thetas(tcx=1.0)
    with pytest.raises(KeyError):
        m.replace_thetas(iiv=[0.5, 0.2, 0.1])
    with pytest.raises(pmx.OmegaNotPositiveDefiniteError):
        m.with_values(iiv=[0.5, -0.2, 0.1])

    p = PKPD()
    u = eqx.filter_jit(type(p).to_unconstrained)(p)
    assert set(u) == {"tcl", "tv", "te0", "prop", "block", "occ"}  # fixed ones excluded
    u = {k: v + 0.1 for k, v in u.items()}
    back = jax.jit(lambda u: p.from_unconstrained(u).to_unconstrained())(u)
    for k in u:
        np.testing.assert_allclose(back[k], u[k], rtol=1e-12)


def test_fix_and_unfix_change_what_is_estimated():
    m = OneCptOral()
    fixed = m.fix("tcl", "iiv")
    assert fixed.tcl.fixed and fixed.iiv.fixed and not m.tcl.fixed
    assert float(fixed.tcl) == float(m.tcl)  # fixed at the current value
    assert set(fixed.to_unconstrained()) == set(m.to_unconstrained()) - {"tcl", "iiv"}
    assert fixed.tcl.lower == m.tcl.lower  # bounds kept
    back = fixed.unfix("tcl", "iiv")
    assert set(back.to_unconstrained()) == set(m.to_unconstrained())
    with pytest.raises(KeyError, match="tcx"):
        m.fix("tcx")


def test_class_validation_messages():
    with pytest.raises(pmx.ModelDefinitionError, match="no dynamics"):

        class NoDyn(pmx.Model):
            t: pmx.Theta = pmx.theta(1.0)

            def individual(self, eta, cov):
                return {}

            def observe(self, amounts, p):
                return pmx.Additive(0.0, 1.0)

        NoDyn()

    with pytest.raises(pmx.ModelDefinitionError, match="individual"):

        class NoPK(pmx.Model):
            dynamics = DepotCentral()

            def observe(self, amounts, p):
                return pmx.Additive(0.0, 1.0)

        NoPK()

    with pytest.raises(pmx.ModelDefinitionError, match="eta 'cl'.*'iiv' and 'a'"):

        class Dup(OneCptOral):
            a: pmx.Omega = pmx.omega(cl=0.1)
            b: pmx.Omega = pmx.omega_block(("cl", "q"), [[0.1, 0.0], [0.0, 0.1]])

        Dup()

    with pytest.raises(pmx.ThetaBoundsError, match="BadBounds.tv"):

        class BadBounds(OneCptOral):
            tv: pmx.Theta = pmx.theta(20.0, lower=-5, upper=10)

    with pytest.raises(pmx.ModelDefinitionError, match="annotation"):

        class NoAnnotation(OneCptOral):
            tq = pmx.theta(1.0)

    with pytest.raises(pmx.ModelDefinitionError, match="Model method"):

        class Shadow(OneCptOral):
            thetas: pmx.Theta = pmx.theta(1.0)


def test_instance_overrides_initial_values():
    m = OneCptOral(tcl=pmx.theta(2.0))
    assert float(m.tcl) == 2.0
    with pytest.raises(pmx.ThetaBoundsError, match="OneCptOral.add_sd"):
        OneCptOral(add_sd=pmx.theta(-1.0, lower=0.0))
    # A bare number for a THETA (or OMEGA) field would silently be a constant,
    # no longer estimated nor listed: refused, naming the field and the fix.
    with pytest.raises(pmx.ModelDefinitionError, match=r"'tcl' is a THETA.*with_values"):
        OneCptOral(tcl=2.0)
    with pytest.raises(pmx.ModelDefinitionError, match="'iiv' is an OMEGA block"):
        OneCptOral(iiv=np.eye(3) * 0.1)
    assert "tcl" in OneCptOral().with_values(tcl=2.0).theta_names


def test_observe_must_return_error_models():
    class BadObs(OneCptOral):
        def observe(self, amounts, p):
            return amounts.central / p["v"]

    m = BadObs()
    p = m.individual_parameters(jnp.zeros(3), COV, COV_NAMES)
    with pytest.raises(pmx.ObservationError, match="BadObs.observe"):
        m.record_prediction(jnp.zeros(2), p)


class LogPKWithBaseline(pmx.Model):
    tv: pmx.Theta = pmx.theta(3.0)
    sd: pmx.Theta = pmx.theta(0.2, lower=0.0)
    iiv: pmx.Omega = pmx.omega(v=0.1)
    dynamics = DepotCentral()

    def individual(self, eta, cov):
        return dict(v=jnp.exp(self.tv + eta.v))

    def observe(self, amounts, p):
        conc = amounts.central / p["v"]
        return (pmx.Exponential(conc, self.sd), pmx.Additive(conc + 1.0, self.sd))


def test_unselected_log_scale_endpoint_at_zero_keeps_gradients_finite():
    # Endpoint 0 is log-scale with prediction 0 before any dose; for a record
    # of endpoint 1 its log(0) would give a NaN gradient through the select.
    m = LogPKWithBaseline()

    def transformed_mean(model, dvid):
        p = model.individual_parameters(jnp.zeros(1), COV, COV_NAMES)
        return model.observation(jnp.zeros(2), p, dvid).mean()

    g = jax.vmap(eqx.filter_grad(transformed_mean), in_axes=(None, 0))(m, jnp.array([1, 1]))
    assert bool(jnp.all(jnp.isfinite(g.tv.value)))
    assert float(transformed_mean(m, 1)) == 1.0


def test_new_parameter_values_do_not_retrace():
    traces = []

    @eqx.filter_jit
    def typical_clearance(model):
        traces.append(None)
        return model.individual_parameters(jnp.zeros(3), COV, COV_NAMES)["cl"]

    m = OneCptOral()
    typical_clearance(m)
    typical_clearance(m.with_values(tcl=1.5))
    u = {k: jnp.asarray(v) + 0.1 for k, v in m.to_unconstrained().items()}
    out = typical_clearance(m.from_unconstrained(u))
    assert len(traces) == 1
    assert float(out) == pytest.approx(np.exp(1.1) * (80 / 70) ** 0.75)
