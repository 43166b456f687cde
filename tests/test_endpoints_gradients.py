"""Exact derivatives with non-Gaussian endpoints: the Laplace OFV of a joint
model (Gaussian, count and time-to-event endpoints) against central finite
differences, and the positive part of a curvature (Laplace's information
for those endpoints) against finite differences, finite where eigenvalues
repeat."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.likelihood import make_problem
from pmx_jax.likelihood._curvature import positive_part


def _finite_difference(f, x, direction, step=1e-6):
    return (f(x + step * direction) - f(x - step * direction)) / (2 * step)


def test_positive_part_derivative_matches_finite_differences():
    rng = np.random.default_rng(1)
    vectors, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    # Eigenvalues 2, 2 (repeated, positive), 0.5 and -1.5.
    matrix = jnp.asarray(vectors @ np.diag([2.0, 2.0, 0.5, -1.5]) @ vectors.T)
    direction = rng.normal(size=(4, 4))
    direction = jnp.asarray(direction + direction.T)
    _, tangent = jax.jvp(positive_part, (matrix,), (direction,))
    # f(mu) = max(mu, 0) is smooth away from 0: central differences with
    # step 1e-6 are accurate to ~1e-9.
    expected = _finite_difference(positive_part, matrix, direction)
    np.testing.assert_allclose(tangent, expected, atol=1e-7)
    # A rank-one curvature in three dimensions (eigenvalue 0 twice), where
    # eigh's own derivative divides 0 by 0.
    u = jnp.asarray([1.0, 2.0, -1.0])
    _, tangent = jax.jvp(positive_part, (jnp.outer(u, u),), (direction[:3, :3],))
    assert np.all(np.isfinite(tangent))


class Joint(pmx.Model):
    """A biomarker (Gaussian), a count and a time to event, all driven by one
    subject effect."""

    base: pmx.Theta = pmx.theta(1.0)
    add_sd: pmx.Theta = pmx.theta(0.3, lower=0.0)
    log_rate: pmx.Theta = pmx.theta(0.5)
    log_hazard: pmx.Theta = pmx.theta(-2.0)
    link: pmx.Theta = pmx.theta(0.4)
    iiv: pmx.Omega = pmx.omega(b=0.3)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(b=eta.b, t=cov.TIME)

    def observe(self, amounts, p):
        hazard = jnp.exp(self.log_hazard + self.link * p["b"])
        return {
            1: pmx.Additive(self.base + p["b"], self.add_sd),
            2: pmx.Poisson(jnp.exp(self.log_rate + p["b"])),
            3: pmx.TimeToEvent(hazard=hazard, cumulative_hazard=hazard * p["t"]),
        }


def _joint_data():
    rows = []
    rng = np.random.default_rng(4)
    for i in range(1, 7):
        b = rng.normal(0, 0.5)
        rows.append((i, 0.0, 0.0, 3, 1))  # start of follow-up, no observation
        for t in (1.0, 2.0, 3.0):
            rows.append((i, t, 1.0 + b + rng.normal(0, 0.3), 1, 0))
            rows.append((i, t, float(rng.poisson(np.exp(0.5 + b))), 2, 0))
        event = rng.exponential(1 / np.exp(-2.0 + 0.4 * b))
        # exact event, interval-censored event or censoring at day 5
        code = 1.0 if event < 5 and i % 2 else (2.0 if event < 5 else 0.0)
        rows.append((i, min(event, 5.0) if code == 1 else 5.0, code, 3, 0))
    table = pd.DataFrame(rows, columns=["ID", "TIME", "DV", "DVID", "MDV"])
    return pmx.read_nonmem(table.sort_values(["ID", "TIME"], kind="stable"))


def test_joint_laplace_gradient_matches_finite_differences():
    data = _joint_data()
    model = Joint()
    problem = make_problem(model, data, "laplace")
    names = list(model.thetas())

    def ofv_at(values):
        m = model.with_values(**dict(zip(names, values, strict=True)))
        return pmx.ofv(m, problem, "laplace", ebe_search="local").ofv

    x = jnp.asarray([float(getattr(model, n)) for n in names])
    gradient = jax.grad(lambda v: ofv_at(v))(x)
    for k in range(len(names)):
        direction = jnp.zeros_like(x).at[k].set(1.0)
        # The EBE search converges to a Newton decrement of 1e-12, so the
        # OFV is smooth to ~1e-10 and central differences with step 1e-5
        # agree with the exact derivative to ~1e-5 relative.
        expected = _finite_difference(lambda v: float(ofv_at(v)), x, direction, step=1e-5)
        assert float(gradient[k]) == pytest.approx(expected, rel=1e-5, abs=1e-6), names[k]
