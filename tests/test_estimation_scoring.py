"""Fisher scoring in the EBE search (``_objective._scoring``): its objective and
gradient are the inner objective's own (checked against reverse-mode autodiff,
censored records included), its curvature is the expected information (equal to
the exact Hessian where the residuals vanish under an additive error), and the
population OFV, EBEs and OFV gradient do not depend on whether the search used
it."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pmx_jax as pmx
from pmx_jax.likelihood import (
    Layout,
    Prior,
    SubjectLikelihood,
    make_problem,
    population_ofv,
    prepare,
)
from pmx_jax.likelihood._objective import _foce_objective, _interaction_objective, _scoring


class TheophyllineCombined(pmx.library.Theophylline):
    prop_cv: pmx.Theta = pmx.theta(0.15, lower=0.0)

    def observe(self, amounts, p):
        return pmx.Combined1(amounts.central / p["v"], self.add_sd, self.prop_cv)


def _theophylline(ids, censor_row=None):
    frame = pmx.datasets.load("theophylline").table
    frame = frame[frame["ID"].isin(ids)].reset_index(drop=True)
    if censor_row is not None:
        frame["CENS"] = 0
        frame.loc[censor_row, "CENS"] = 1  # M3: DV holds the limit
    return frame


def _subject(model, frame, index=0):
    prepared = prepare(model, pmx.read_nonmem(frame))
    layout = Layout.of(model, prepared.n_occasions)
    subj = SubjectLikelihood(model, prepared.subject(index), layout)
    return subj, Prior.of(layout.omega(model))


@pytest.mark.parametrize(
    "objective", [_interaction_objective, pytest.param(_foce_objective, marks=pytest.mark.slow)]
)
def test_scoring_value_and_gradient_are_the_objectives_own(objective):
    frame = _theophylline([1], censor_row=9)
    assert frame.loc[9, "MDV"] == 0 and frame.loc[9, "DV"] > 0
    model = TheophyllineCombined()
    subj, prior = _subject(model, frame)
    assert bool(jnp.any(subj.data.records.cens != 0))
    b = jnp.array([0.3, -0.2, 0.1])
    if objective is _foce_objective:
        args = (subj, prior, subj.terms(jnp.zeros(3)).variance)
    else:
        args = (subj, prior)
    value, grad, info = eqx.filter_jit(_scoring(objective))(b, args)
    reference_value, reference_grad = eqx.filter_jit(jax.value_and_grad(objective))(b, args)
    np.testing.assert_allclose(value, reference_value, rtol=1e-13)
    np.testing.assert_allclose(grad, reference_grad, rtol=1e-9, atol=1e-10)
    assert np.all(np.linalg.eigvalsh(np.asarray(info)) > 0)


def test_scoring_curvature_is_the_hessian_where_residuals_vanish():
    # Additive error and DV equal to IPRED at b: the second derivatives of the
    # predictions are multiplied by zero residuals, so Gauss-Newton is exact.
    model = pmx.library.Theophylline()
    frame = _theophylline([2])
    b = jnp.array([0.25, -0.15, 0.05])
    subj, prior = _subject(model, frame)
    observed = np.asarray(eqx.filter_jit(lambda s, b: s.terms(b).prediction)(subj, b))
    is_obs = (frame["MDV"] == 0).to_numpy()
    frame.loc[is_obs, "DV"] = observed[: len(frame)][is_obs]
    subj, prior = _subject(model, frame)
    value, grad, info = eqx.filter_jit(_scoring(_interaction_objective))(b, (subj, prior))
    hessian = eqx.filter_jit(jax.hessian(_interaction_objective))(b, (subj, prior))
    np.testing.assert_allclose(grad, 2.0 * prior.inverse @ b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(info, hessian, rtol=1e-8)


@pytest.mark.parametrize(
    "method",
    [
        "focei",
        pytest.param("foce", marks=pytest.mark.slow),
        pytest.param("laplace", marks=pytest.mark.slow),
    ],
)
def test_population_objective_does_not_depend_on_scoring(method):
    model = TheophyllineCombined()
    problem = make_problem(model, pmx.read_nonmem(_theophylline([1, 2])), method)
    start = problem.place(jnp.zeros((2, 3)))
    # A tolerance below rounding: the implicit derivative uses the Hessian at the
    # last evaluated point, which differs between the two searches by the
    # distance to the mode that the tolerance allows (relative 1e-6 at 1e-12).
    options = (jnp.asarray(100, jnp.int32), jnp.asarray(1e-16))

    def run(scoring):
        # One trace per search: the OFV with the EBEs as auxiliary output, and its gradient.
        def objective(m):
            out = population_ofv(m, problem, start, *options, scoring=scoring)
            return out.ofv, out

        (_, out), grads = eqx.filter_jit(eqx.filter_value_and_grad(objective, has_aux=True))(model)
        gradient = np.array([grads.tka, grads.tcl, grads.tv, grads.add_sd, grads.prop_cv])
        return out, gradient

    (exact, exact_gradient), (scored, scored_gradient) = run(False), run(True)
    assert np.all(np.asarray(scored.status) == 0)
    np.testing.assert_allclose(scored.ofv, exact.ofv, rtol=1e-12)
    np.testing.assert_allclose(scored.ebes, exact.ebes, atol=1e-10)
    np.testing.assert_allclose(scored_gradient, exact_gradient, rtol=1e-7, atol=1e-7)


def test_a_crawling_scoring_stage_hands_over_to_exact_newton():
    # A stand-in curvature 20 times the Hessian: each scoring step covers 5% of
    # the way, so scoring alone would need about 270 steps to reach
    # sqrt(tolerance).  After SCORING_STEPS of them the exact stage takes over
    # and converges to the same mode in a few more.
    from pmx_jax.likelihood._ebe import SCORING_STEPS, EBEStatus, newton_ebe

    target = jnp.asarray([1.0, -0.5])
    curvature = jnp.asarray([[2.0, 0.3], [0.3, 1.0]])

    def objective(b, args):
        d = b - target
        return d @ curvature @ d + 0.1 * jnp.sum(d**4)

    def crawling(b, args):
        value, grad = jax.value_and_grad(objective)(b, args)
        return value, grad, 20.0 * jax.hessian(objective)(b, args)

    result = jax.jit(lambda b: newton_ebe(objective, b, None, scoring=crawling))(jnp.zeros(2))
    assert int(result.status) == EBEStatus.CONVERGED
    np.testing.assert_allclose(result.eta, target, atol=1e-8)
    assert SCORING_STEPS < int(result.n_steps) <= SCORING_STEPS + 8
