"""The log posterior that NUTS samples: priors with their Jacobians, the
mu-reference detection, the conditional likelihood against predictions, and
the centred and non-centred forms against each other."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import pmx_jax as pmx
from pmx_jax.bayes import OmegaPrior, Posterior, mu_referenced_thetas, population_prior
from pmx_jax.likelihood import make_problem


class Bounded(pmx.Model):
    frac: pmx.Theta = pmx.theta(0.3, lower=0.0, upper=1.0, prior=dist.Beta(2.0, 5.0))
    tcl: pmx.Theta = pmx.theta(1.0)
    sd: pmx.Theta = pmx.theta(0.5, lower=0.0)
    iiv: pmx.Omega = pmx.omega(cl=0.2)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=jnp.exp(self.tcl + eta.cl), v=10.0 * (1.0 + self.frac))

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.sd)


class Block(Bounded):
    iiv: pmx.Omega = pmx.omega_block(("cl", "v"), [0.2, 0.05, 0.1])

    def individual(self, eta, cov):
        return dict(
            cl=jnp.exp(self.tcl + 0.75 * jnp.log(cov.WT / 70) + eta.cl),
            v=10.0 * (1.0 + self.frac) * jnp.exp(eta.v),
        )


def _quadrature(f, lo, hi, n=200001):
    x = np.linspace(lo, hi, n)
    y = np.asarray(jax.vmap(f)(jnp.asarray(x)))
    return float(np.sum((y[1:] + y[:-1]) / 2) * (x[1] - x[0]))


def test_theta_prior_includes_the_jacobian_and_integrates_to_one():
    prior = population_prior(Bounded())
    part = prior.parts[0]  # frac: Beta(2, 5) on (0, 1), logit scale
    density = lambda u: jnp.exp(part.log_prior(u[None]))
    assert _quadrature(density, -30.0, 30.0) == pytest.approx(1.0, abs=1e-6)
    # default prior of an unbounded THETA: Normal(initial, 10) on its own scale
    tcl = prior.parts[1]
    assert float(tcl.log_prior(jnp.array([1.0]))) == pytest.approx(
        float(dist.Normal(1.0, 10.0).log_prob(1.0))
    )


def test_omega_priors_integrate_to_one_on_the_sampler_scale():
    prior = population_prior(Bounded(), {"iiv": OmegaPrior(scale=0.7, family="halfcauchy")})
    part = prior.parts[-1]
    density = lambda u: jnp.exp(part.log_prior(u[None]))
    assert _quadrature(density, -40.0, 40.0, 400001) == pytest.approx(1.0, abs=1e-4)
    # 2x2 LKJ(eta): correlation r = tanh(v) has density prop. to (1 - r^2)^(eta - 1),
    # so v has density prop. to (1 - r^2)^eta; fix the SDs and compare differences.
    block = population_prior(Block(), {"iiv": OmegaPrior(concentration=3.0)}).parts[-1]
    u = lambda v: jnp.array([0.1, -0.2, v])
    for v1, v2 in [(0.0, 0.5), (-1.0, 2.0)]:
        r1, r2 = np.tanh(v1), np.tanh(v2)
        expected = 3.0 * (np.log1p(-(r1**2)) - np.log1p(-(r2**2)))
        got = float(block.log_prior(u(v1)) - block.log_prior(u(v2)))
        assert got == pytest.approx(expected, rel=1e-10)


def test_population_vector_round_trip_and_unknown_prior():
    model = Block().with_values(tcl=1.3, frac=0.6, iiv=np.array([[0.3, -0.1], [-0.1, 0.2]]))
    prior = population_prior(Block())
    u = prior.initial(model)
    back = prior.model(Block(), jnp.asarray(u))
    assert float(back.frac) == pytest.approx(0.6)
    np.testing.assert_allclose(np.asarray(back.iiv.matrix), [[0.3, -0.1], [-0.1, 0.2]])
    with pytest.raises(KeyError, match="tvx"):
        population_prior(Block(), {"tvx": dist.Normal(0, 1)})
    with pytest.raises(TypeError, match="OmegaPrior"):
        population_prior(Block(), {"iiv": dist.Normal(0, 1)})


def _data():
    rows = []
    for i, wt in zip(range(1, 5), (50.0, 70.0, 90.0, 65.0), strict=True):
        rows.append(dict(ID=i, TIME=0.0, AMT=100.0, EVID=1, MDV=1, DV=0.0, WT=wt))
        for t, dv in ((1.0, 6.0 + i), (4.0, 4.0 + i / 2), (12.0, 1.5 + i / 4)):
            rows.append(dict(ID=i, TIME=t, AMT=0.0, EVID=0, MDV=0, DV=dv, WT=wt))
    import pandas as pd

    return pmx.read_nonmem(pd.DataFrame(rows))


def test_mu_reference_detection():
    data = _data()
    model = Block()
    problem = make_problem(model, data, "laplace")
    # eta.cl enters as tcl + eta.cl (with a covariate term): mu-referenced to tcl;
    # eta.v multiplies a THETA that is not on the log scale: not mu-referenced.
    assert mu_referenced_thetas(model, problem) == ("tcl", None)
    b = np.full((4, 2), 0.3)
    assert mu_referenced_thetas(model, problem, b) == ("tcl", None)


def test_conditional_likelihood_equals_normal_density_of_predictions():
    data = _data()
    model = Bounded()
    problem = make_problem(model, data, "laplace")
    post = Posterior(model, population_prior(model), problem, "noncentered", ("tcl",))
    b = np.array([[0.1], [-0.2], [0.3], [0.0]])
    got = np.asarray(eqx.filter_jit(post.subject_log_likelihood)(model, jnp.asarray(b)))
    pred = pmx.predict(model, data, etas=b)
    obs = pred[pred.EVID == 0]
    sd = 0.5
    logpdf = -0.5 * np.log(2 * np.pi * sd**2) - 0.5 * ((obs.DV - obs.IPRED) / sd) ** 2
    expected = logpdf.groupby(obs.ID).sum().to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_centred_and_non_centred_densities_differ_by_the_jacobian():
    data = _data()
    model = Block()
    problem = make_problem(model, data, "laplace")
    prior = population_prior(model)
    mu = ("tcl", None)
    centred = Posterior(model, prior, problem, "centered", mu)
    noncentred = Posterior(model, prior, problem, "noncentered", mu)
    pop = jnp.asarray(prior.initial(model)) + 0.1
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    m = centred.model(pop)
    b = noncentred.random_effects(m, z)
    psi = centred.latent(m, b)
    np.testing.assert_allclose(centred.random_effects(m, psi), b, atol=1e-12)
    np.testing.assert_allclose(noncentred.latent(m, b), z, atol=1e-12)
    chol = np.linalg.cholesky(np.asarray(m.omega_matrix()))
    jacobian = 4 * np.sum(np.log(np.diag(chol)))  # b = L z for 4 subjects
    lc = float(eqx.filter_jit(centred.log_density)({"pop": pop, "eta": psi}))
    ln = float(eqx.filter_jit(noncentred.log_density)({"pop": pop, "eta": z}))
    assert lc - ln == pytest.approx(-jacobian, rel=1e-10)
