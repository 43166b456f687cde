"""Count data: seizure counts per period under an antiepileptic drug, fitted as
Poisson, negative binomial and zero-inflated Poisson mixed-effects models, and
the diagnostics that tell them apart.

A parallel-group trial: after two 2-week baseline periods, subjects take
placebo or the drug for four 2-week periods, and a diary gives the number of
seizures in each period (DV).  The expected count is

    log E[count] = log_base + drug_effect * ACTIVE + eta

with ``ACTIVE`` 1 on the active arm's treatment periods (``exp(drug_effect)``
is the ratio of seizure rates on drug), and ``eta`` the subject's own seizure
frequency (a random intercept).  Seizure counts vary more from period to
period than a Poisson count does (clusters of seizures): the data are
simulated from a negative binomial model (NB2: variance ``mean + alpha *
mean**2``), and three models are fitted to them by Laplace:

* Poisson: the period-to-period variance equals the mean;
* negative binomial: the overdispersion ``alpha`` is estimated;
* zero-inflated Poisson: a fraction of periods is seizure-free whatever the
  rate (another way of making room for extra zeros, not for large counts).

They are compared by OFV and AIC (``pmx.diagnostics.compare``: the Poisson
model is nested in the negative binomial one at ``alpha = 0``), and checked by
randomized quantile residuals (Dunn & Smyth): standard normal if the model is
right, whatever the endpoint; the Poisson fit's are overdispersed (SD well
above 1), the negative binomial fit's are not.  Last, the count VPC of the
negative binomial and Poisson fits: the observed proportion of periods with
0, 1, 2, 3 and >= 4 seizures per period against simulations of the fitted models.

    python examples/count_models.py
    python examples/count_models.py --subjects 200 --path count_vpc.png
"""

import argparse
import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx

PERIODS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)  # 2-week periods
FIRST_TREATED = 3.0  # periods 1-2 are baseline


class PoissonSeizures(pmx.Model):
    log_base: pmx.Theta = pmx.theta(1.0)  # log seizures per period at baseline
    drug_effect: pmx.Theta = pmx.theta(0.0)  # log rate ratio on drug
    iiv: pmx.Omega = pmx.omega(base=0.3)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(log_mean=self.log_base + self.drug_effect * cov.ACTIVE + eta.base)

    def observe(self, amounts, p):
        return pmx.Poisson(jnp.exp(p["log_mean"]))


class NegativeBinomialSeizures(PoissonSeizures):
    # alpha on the log scale: positive, and estimated freely.
    log_alpha: pmx.Theta = pmx.theta(np.log(0.2))

    def observe(self, amounts, p):
        return pmx.NegativeBinomial(jnp.exp(p["log_mean"]), jnp.exp(self.log_alpha))


class ZeroInflatedSeizures(PoissonSeizures):
    logit_zero: pmx.Theta = pmx.theta(-2.0)  # log-odds of a structural zero

    def observe(self, amounts, p):
        zero = jax.nn.sigmoid(jnp.asarray(self.logit_zero))
        return pmx.ZeroInflatedPoisson(jnp.exp(p["log_mean"]), zero)


TRUTH = NegativeBinomialSeizures().with_values(
    log_base=np.log(4.0), drug_effect=np.log(0.6), log_alpha=np.log(0.5), iiv=[0.4]
)


def design(n_subjects: int) -> pd.DataFrame:
    """Six periods per subject, alternate subjects on the active arm; DV is a
    placeholder."""
    rows = []
    for i in range(1, n_subjects + 1):
        active_arm = i % 2 == 0
        for period in PERIODS:
            on_drug = active_arm and period >= FIRST_TREATED
            rows.append(dict(ID=i, TIME=period, DV=0.0, ACTIVE=float(on_drug)))
    return pd.DataFrame(rows)


def _quiet_fit(model, data):
    # The three fit summaries would drown the comparison: keep only the result.
    with contextlib.redirect_stdout(io.StringIO()):
        return pmx.fit(model, data, "laplace")


def main(n_subjects: int = 120, seed: int = 3, n_sim: int = 100, path: str | None = None):
    plan = design(n_subjects)
    simulated = pmx.simulate(TRUTH, pmx.read_nonmem(plan), key=jax.random.PRNGKey(seed))
    plan = plan.assign(DV=simulated.to_frame()["DV"].to_numpy())
    data = pmx.read_nonmem(plan)
    baseline = plan.loc[plan["TIME"] < FIRST_TREATED, "DV"]
    print(
        f"{n_subjects} subjects x {len(PERIODS)} periods; baseline counts: mean "
        f"{baseline.mean():.2f}, variance {baseline.var():.2f}; "
        f"zero counts {(plan['DV'] == 0).mean():.0%}"
    )

    fits = {
        "Poisson": _quiet_fit(PoissonSeizures(), data),
        "negative binomial": _quiet_fit(NegativeBinomialSeizures(), data),
        "zero-inflated Poisson": _quiet_fit(ZeroInflatedSeizures(), data),
    }
    from pmx_jax.diagnostics import compare, count_vpc, quantile_residuals

    table = compare(*fits.values(), names=list(fits))
    print("\nmodel comparison (Laplace):")
    columns = ["model", "ofv", "n_parameters", "aic", "delta_aic", "converged"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.2f}"))

    truth = {name: float(getattr(TRUTH, name)) for name in TRUTH.thetas()}
    truth["iiv.base"] = float(TRUTH.iiv.matrix[0, 0])
    print("\nestimates (SE):")
    print("parameter     truth " + "".join(f"{name:>23s}" for name in fits))
    estimates = {name: fit.estimates().set_index("parameter") for name, fit in fits.items()}
    for parameter, value in truth.items():
        cells = []
        for frame in estimates.values():
            if parameter in frame.index:
                estimate, se = frame.loc[parameter, ["estimate", "se"]]
                cells.append(f"{estimate:15.3f} ({se:.3f})")
            else:
                cells.append(" " * 23)
        print(f"{parameter:11s} {value:7.3f} " + "".join(cells))
    ratio = np.exp(estimates["negative binomial"].loc["drug_effect", "estimate"])
    print(
        f"seizure rate ratio on drug (negative binomial): {ratio:.2f} "
        f"(truth {np.exp(truth['drug_effect']):.2f})"
    )

    # Randomized quantile residuals at the EBEs: N(0, 1) if the model is right.
    residual_sd = {}
    for name, fit in fits.items():
        residuals = quantile_residuals(fit, seed=seed).RESIDUAL
        residual_sd[name] = float(residuals.std())
    print(
        "\nSD of the randomized quantile residuals (1 if the model is right): "
        + ", ".join(f"{name} {sd:.2f}" for name, sd in residual_sd.items())
    )

    vpcs = {}
    for name in ("negative binomial", "Poisson"):
        vpcs[name] = count_vpc(fits[name], n_sim=n_sim, bins=1, k=4, seed=seed)
        shown = vpcs[name].proportions
        print(f"\ncount VPC of the {name} fit (all periods, {n_sim} simulated studies):")
        print(
            shown[["CATEGORY", "OBSERVED", "SIM_MEDIAN", "SIM_LOWER", "SIM_UPPER"]].to_string(
                index=False, float_format=lambda v: f"{v:.3f}"
            )
        )
    if path is not None:
        vpc = count_vpc(fits["negative binomial"], n_sim=n_sim, k=4, seed=seed)
        vpc.plot(path=path, units=dict(time="2-week period"))
        print(f"count VPC of the negative binomial fit by period saved to {path}")
    return dict(fits=fits, truth=truth, comparison=table, residual_sd=residual_sd, vpcs=vpcs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--path", default=None, help="where to save the count VPC plot")
    args = parser.parse_args()
    main(args.subjects, args.seed, args.replicates, args.path)
