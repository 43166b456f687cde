"""The event loop used when no derivative is taken (``record_amounts(...,
derivatives=False)``: prediction and simulation) against the general loop:
the same amounts for closed forms and a linear ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_superposition import _history, _model

import pmx_jax as pmx
from pmx_jax.events import record_amounts
from pmx_jax.likelihood import prepare


@pytest.mark.parametrize(
    "dynamics",
    [
        pmx.pk.OneCompartmentOral(),
        # Two and three compartments (a 2x2 and a 4x4 spectrum): slow set, 13-20 s each.
        pytest.param(pmx.pk.TwoCompartment(), marks=pytest.mark.slow),
        pytest.param(pmx.pk.ThreeCompartmentOral(), marks=pytest.mark.slow),
        pmx.pk.OneCompartmentOralODE(),
    ],
    ids=lambda d: type(d).__name__,
)
def test_event_loop_without_derivatives_is_the_same(dynamics):
    """The loop used when no derivative is taken (transitions computed in the
    loop, kept while the interval length repeats; closed forms and linear
    ODEs) gives the general loop's amounts: on a history with SS=1/2 doses,
    infusions, lags and resets, one subject at a time, and for many parameter
    sets sharing one design (the test for a repeat is then not batched, and a
    repeat skips the work)."""
    from test_closed_form_vs_ode import _events_table

    oral = getattr(dynamics, "has_depot", "depot" in getattr(dynamics, "compartments", ()))
    model = _model(dynamics, 1)
    tables = [_history(1, 2 if oral else 1, 3)]
    if not isinstance(dynamics, pmx.ODE):
        # (with an ODE its steady states take half a minute to compile)
        tables.append(_events_table(1, 2 if oral else 1))
    for table in tables:
        _check_loop_without_derivatives(model, prepare(model, pmx.read_nonmem(table)))


def _check_loop_without_derivatives(model, prepared):
    subjects, plan = prepared.subjects, prepared.plan
    assert plan.constant_parameters
    scales = jnp.asarray([0.5, 1.0, 3.0])

    def amounts(subject, r, v, scale, derivatives):
        params = jax.vmap(
            lambda c: model.individual_parameters(jnp.zeros(0), c, subject.covariate_names)
        )(subject.cov)
        params = dict(params, cl=params["cl"] * scale, ka=params["ka"] / scale)
        return record_amounts(
            model.dynamics, subject, params, r, v,
            has_ss=plan.has_ss, max_ss_overlap=plan.max_ss_overlap,
            constant_parameters=not derivatives, derivatives=derivatives,
        ).amounts  # fmt: skip

    @jax.jit
    def both():
        return [
            jax.vmap(lambda s, r, v, d=d: jax.vmap(lambda k: amounts(s, r, v, k, d))(scales))(
                subjects, plan.dose_record, plan.dose_valid
            )
            for d in (True, False)
        ]

    general, fast = both()
    valid = np.asarray(subjects.valid)[:, None, :]
    assert np.all(np.isfinite(np.asarray(general)[np.broadcast_to(valid, general.shape[:3])]))
    np.testing.assert_allclose(
        np.where(valid[..., None], fast, 0.0),
        np.where(valid[..., None], general, 0.0),
        rtol=1e-11,
        atol=1e-11 * float(np.max(np.abs(general))),
    )
