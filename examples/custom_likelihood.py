"""A user-written likelihood: beta regression of a bounded disease score
(ADAS-cog / 70, a proportion in (0, 1)) with ``pmx.LogLikelihood``, fitted by
Laplace, simulated with its own sampler, and checked with quantile residuals
computed from the beta distribution.

The ADAS-cog score of Alzheimer's disease runs from 0 to 70; divided by 70 it
is a proportion whose spread shrinks near the bounds, which a normal residual
error does not describe.  A beta distribution does (Rogers et al., J
Pharmacokinet Pharmacodyn 2012): with mean ``mu`` and precision ``phi`` its
parameters are ``a = mu * phi`` and ``b = (1 - mu) * phi``, and its variance
``mu (1 - mu) / (1 + phi)``.  The disease progresses linearly on the logit
scale:

    logit mu_ij = logit_base + eta_base_i + (progression + eta_prog_i) * TIME_ij

with TIME in years, subject-specific baseline severity and progression rate
(two random effects).

pmx_jax has no beta observation model, and needs none: ``observe`` returns
``pmx.LogLikelihood(log_density, prediction=..., sampler=...)`` where
``log_density(y)`` is the log density of one DV, a JAX function that closes
over the record's ``mu`` and the THETA ``phi`` (NONMEM's ``$ESTIMATION
LIKELIHOOD`` with ``Y`` the likelihood; nlmixr2's ``ll()``).  The Laplace fit
differentiates it like any built-in model.  ``prediction`` is what tables show
as IPRED (here ``mu``), and ``sampler(key)`` draws a DV, which is what
``pmx.simulate`` (and so the data of this script, and a VPC) needs.  A
LogLikelihood has no distribution function that pmx_jax could know, so
``pmx.diagnostics.quantile_residuals`` returns NaN for it: the script computes
the quantile residuals itself, ``Phi^-1(F_beta(DV))`` at each subject's EBE
predictions, standard normal if the model is right.

    python examples/custom_likelihood.py
    python examples/custom_likelihood.py --subjects 200
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import gammaln
from scipy import stats

import pmx_jax as pmx

VISITS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # years


def beta_log_density(y, mu, phi):
    """Log density of a beta distribution with mean ``mu`` and precision
    ``phi`` (``-inf`` outside ``0 < y < 1``)."""
    a, b = mu * phi, (1.0 - mu) * phi
    # The likelihood kernel evaluates the density on every record of the laid
    # out data, also where DV is a placeholder 0 (records that pad a subject
    # to the program's size) and masks the value there.  log(0) would still
    # turn the derivatives with respect to the etas into NaN (0 * inf), so the
    # density is computed at a harmless y outside (0, 1) and replaced by -inf
    # afterwards: the "double where" of JAX's FAQ, as pmx's own models do.
    inside = (y > 0.0) & (y < 1.0)
    y = jnp.where(inside, y, 0.5)
    value = (
        gammaln(phi) - gammaln(a) - gammaln(b) + (a - 1.0) * jnp.log(y) + (b - 1.0) * jnp.log1p(-y)
    )
    return jnp.where(inside, value, -jnp.inf)


class BetaProgression(pmx.Model):
    """Disease progression on the logit scale, beta-distributed scores."""

    logit_base: pmx.Theta = pmx.theta(-1.0)
    progression: pmx.Theta = pmx.theta(0.1)  # logit units per year
    log_phi: pmx.Theta = pmx.theta(np.log(20.0))  # precision of the beta
    iiv: pmx.Omega = pmx.omega(base=0.2, prog=0.02)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        slope = self.progression + eta.prog
        return dict(mu=jax.nn.sigmoid(self.logit_base + eta.base + slope * cov.TIME))

    def observe(self, amounts, p):
        mu, phi = p["mu"], jnp.exp(self.log_phi)

        # Closures over this record's mean and the THETA: the likelihood kernel
        # calls log_density with the DV, pmx.simulate calls sampler with a key.
        def log_density(y):
            return beta_log_density(y, mu, phi)

        def sampler(key):
            return jax.random.beta(key, mu * phi, (1.0 - mu) * phi)

        return pmx.LogLikelihood(log_density, prediction=mu, sampler=sampler)


TRUTH = BetaProgression().with_values(
    logit_base=-1.2, progression=0.3, log_phi=np.log(50.0), iiv=[0.25, 0.04]
)


def design(n_subjects: int) -> pd.DataFrame:
    times = np.asarray(VISITS)
    return pd.DataFrame(
        dict(
            ID=np.repeat(np.arange(1, n_subjects + 1), times.size),
            TIME=np.tile(times, n_subjects),
            DV=0.5,  # a placeholder
        )
    )


def beta_quantile_residuals(fit) -> np.ndarray:
    """``Phi^-1(F(DV))`` with ``F`` the beta distribution at each record's
    individual prediction (IPRED, at the EBEs) and the estimated precision."""
    table = fit.table()
    table = table[table["EVID"] == 0]
    phi = np.exp(float(fit.model.log_phi))
    mu = table["IPRED"].to_numpy()
    return stats.norm.ppf(stats.beta.cdf(table["DV"].to_numpy(), mu * phi, (1.0 - mu) * phi))


def main(n_subjects: int = 100, seed: int = 4, n_sim: int = 200):
    plan = design(n_subjects)
    simulated = pmx.simulate(TRUTH, pmx.read_nonmem(plan), key=jax.random.PRNGKey(seed))
    plan = plan.assign(DV=simulated.to_frame()["DV"].to_numpy())
    data = pmx.read_nonmem(plan)
    by_visit = plan.groupby("TIME")["DV"].mean() * 70
    print(
        f"{n_subjects} subjects, {len(plan)} scores; mean ADAS-cog at 0 and 3 years: "
        f"{by_visit.iloc[0]:.1f}, {by_visit.iloc[-1]:.1f} (of 70)"
    )

    fit = pmx.fit(BetaProgression(), data, "laplace")
    print(fit)
    truth = {name: float(getattr(TRUTH, name)) for name in TRUTH.thetas()}
    omega = np.diagonal(np.asarray(TRUTH.iiv.matrix))
    truth.update({"iiv.base": float(omega[0]), "iiv.prog": float(omega[1])})
    estimates = fit.estimates().set_index("parameter")
    print("\nparameter       truth   estimate      SE   (estimate - truth) / SE")
    for name, value in truth.items():
        estimate, se = estimates.loc[name, ["estimate", "se"]]
        print(f"{name:12s} {value:8.3f} {estimate:10.3f} {se:7.3f} {(estimate - value) / se:10.2f}")

    residuals = beta_quantile_residuals(fit)
    ks = stats.kstest(residuals, "norm")
    print(
        f"\nbeta quantile residuals at the EBEs: mean {residuals.mean():.3f}, "
        f"SD {residuals.std():.3f}, KS p = {ks.pvalue:.2f} (N(0, 1) if the model is right, "
        "with an SD somewhat below 1: each subject's EBEs absorb part of its scatter)"
    )

    # A numerical predictive check with the model's own sampler: the mean score
    # per visit of studies simulated from the fitted model.
    replicates = pmx.simulate(
        fit.model, data, key=jax.random.PRNGKey(seed + 1), n_subjects=n_sim * n_subjects
    )
    sim = replicates.to_frame()["DV"].to_numpy().reshape(n_sim, n_subjects, len(VISITS))
    sim_means = sim.mean(axis=1) * 70  # (replicate, visit)
    low, median, high = np.quantile(sim_means, [0.05, 0.5, 0.95], axis=0)
    check = pd.DataFrame(
        dict(
            year=VISITS,
            observed=by_visit.to_numpy(),
            simulated=median,
            lower=low,
            upper=high,
        )
    )
    print(f"\nmean ADAS-cog per visit: observed vs {n_sim} simulated studies (90% interval)")
    print(check.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return fit, truth, dict(residuals=residuals, ks_pvalue=ks.pvalue, check=check)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--replicates", type=int, default=200)
    args = parser.parse_args()
    main(args.subjects, args.seed, args.replicates)
