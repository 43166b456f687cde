"""Binary exposure-response: the probability of an adverse event at each visit
as a logistic function of the exposure at that visit, with a random subject
intercept, fitted by Laplace.

The setting is a dose-titration study: every subject starts on half its target
dose and moves to the full dose from the third visit on, so the exposure (the
average steady-state concentration over the week before the visit,
``CAVG = dose / CL``) changes within a subject as well as between subjects
(four dose groups, placebo included, and a log-normal clearance).  At each of
six weekly visits the subject reports whether the adverse event (nausea, say)
occurred: DV 1 or 0.  The model (a NONMEM ``$PRED`` model, ``pmx.pk.Pred``):

    logit P(DV = 1) = logit_base + slope * CAVG + eta,   eta ~ N(0, omega)

``logit_base`` is the log-odds of the event off drug, ``slope`` the change of
log-odds per mg/L, and ``eta`` a subject's propensity to report the event
whatever its exposure (a random intercept: visits of one subject are
correlated).  A probit model is the same with ``pmx.Bernoulli(x,
link="probit")``.  FO, FOCE and FOCEI linearise a normal residual and refuse
binary data; the Laplace approximation integrates over ``eta`` exactly enough.

The script simulates the study from stated true values with ``pmx.simulate``,
fits the model from other initial estimates, prints the estimates next to the
truth with their standard errors, and checks the model the way an
exposure-response analysis is read: the observed proportion of visits with the
event per exposure quartile against the proportion predicted by simulating
the study again from the fitted model (median and 90% interval over
replicates; a VPC whose x axis is exposure, not time).

    python examples/binary_exposure_response.py
    python examples/binary_exposure_response.py --subjects 300 --replicates 500
"""

import argparse
import math

import jax
import numpy as np
import pandas as pd

import pmx_jax as pmx

DOSES = (0.0, 100.0, 200.0, 400.0)  # mg/day, randomised 1:1:1:1
TYPICAL_CL = 20.0  # L/day, so CAVG = dose / CL is 0-20 mg/L at the target doses
CL_CV = 0.35  # log-normal between-subject variability of clearance
VISITS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)  # weeks
FULL_DOSE_FROM = 3.0  # week at which the titration reaches the target dose


class ExposureResponse(pmx.Model):
    """Logistic regression on the visit's exposure with a random intercept."""

    logit_base: pmx.Theta = pmx.theta(-1.0)  # log-odds of the event off drug
    slope: pmx.Theta = pmx.theta(0.05)  # per mg/L
    iiv: pmx.Omega = pmx.omega(base=0.5)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(logit=self.logit_base + self.slope * cov.CAVG + eta.base)

    def observe(self, amounts, p):
        return pmx.Bernoulli(p["logit"])


TRUTH = ExposureResponse().with_values(logit_base=-2.0, slope=0.15, iiv=[1.0])


def design(n_subjects: int, seed: int) -> pd.DataFrame:
    """Visits of the titration study, with each visit's exposure (CAVG, mg/L)
    from the subject's dose and clearance; DV is a placeholder."""
    rng = np.random.default_rng(seed)
    dose = np.asarray(DOSES)[np.arange(n_subjects) % len(DOSES)]
    clearance = TYPICAL_CL * np.exp(CL_CV * rng.standard_normal(n_subjects))
    rows = []
    for i in range(n_subjects):
        for week in VISITS:
            titrated = dose[i] * (1.0 if week >= FULL_DOSE_FROM else 0.5)
            rows.append(dict(ID=i + 1, TIME=week, DV=0.0, CAVG=titrated / clearance[i]))
    return pd.DataFrame(rows)


def simulated_study(model: pmx.Model, plan: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The design with DV simulated under ``model`` (etas and Bernoulli draws)."""
    simulated = pmx.simulate(model, pmx.read_nonmem(plan), key=jax.random.PRNGKey(seed))
    table = simulated.to_frame()
    # One virtual subject per design subject, records in the design's order.
    assert np.array_equal(table["TIME"].to_numpy(), plan["TIME"].to_numpy())
    return plan.assign(DV=table["DV"].to_numpy())


def response_by_quartile(fit, plan: pd.DataFrame, n_replicates: int, seed: int) -> pd.DataFrame:
    """Observed against predicted proportion of visits with the event, per
    quartile of the visit's exposure (placebo visits, CAVG 0, are their own
    group): ``n_replicates`` copies of the study simulated from the fitted
    model, each summarised as the data are."""
    positive = plan["CAVG"] > 0
    edges = np.quantile(plan.loc[positive, "CAVG"], [0.0, 0.25, 0.5, 0.75, 1.0])
    group = np.where(positive, np.clip(np.searchsorted(edges, plan["CAVG"]), 1, 4), 0)
    labels = ["placebo"] + [f"Q{q} ({edges[q - 1]:.1f}-{edges[q]:.1f})" for q in range(1, 5)]
    replicates = pmx.simulate(
        fit.model,
        fit.dataset,
        key=jax.random.PRNGKey(seed),
        n_subjects=n_replicates * fit.n_subjects,
    )
    # Virtual subject k reuses the records of design subject k mod n: replicate
    # r is the block of n subjects r * n ... (r + 1) * n - 1.
    dv = replicates.to_frame()["DV"].to_numpy().reshape(n_replicates, len(plan))
    rows = []
    for g, label in enumerate(labels):
        here = group == g
        rates = dv[:, here].mean(axis=1)
        low, median, high = np.quantile(rates, [0.05, 0.5, 0.95])
        rows.append(
            dict(
                exposure=label,
                n_visits=int(here.sum()),
                mean_cavg=float(plan.loc[here, "CAVG"].mean()),
                observed=float(plan.loc[here, "DV"].mean()),
                predicted=float(median),
                lower=float(low),
                upper=float(high),
            )
        )
    return pd.DataFrame(rows)


def main(n_subjects: int = 200, seed: int = 11, n_replicates: int = 200):
    plan = simulated_study(TRUTH, design(n_subjects, seed), seed)
    data = pmx.read_nonmem(plan)
    print(
        f"{n_subjects} subjects x {len(VISITS)} visits: the event at "
        f"{plan['DV'].mean():.0%} of visits"
    )
    fit = pmx.fit(ExposureResponse(), data, "laplace")
    print(fit)

    truth = {name: float(getattr(TRUTH, name)) for name in TRUTH.thetas()}
    truth["iiv.base"] = float(TRUTH.iiv.matrix[0, 0])
    table = fit.estimates().set_index("parameter")
    print("\nparameter      truth   estimate      SE   (estimate - truth) / SE")
    for name, value in truth.items():
        estimate, se = table.loc[name, "estimate"], table.loc[name, "se"]
        print(f"{name:10s} {value:9.3f} {estimate:10.3f} {se:7.3f} {(estimate - value) / se:10.2f}")
    # The odds ratio of the event per 10 mg/L, what a clinical reader asks for.
    slope, se = table.loc["slope", "estimate"], table.loc["slope", "se"]
    print(
        f"\nodds ratio per 10 mg/L: {math.exp(10 * slope):.2f} "
        f"(95% CI {math.exp(10 * (slope - 1.96 * se)):.2f}-"
        f"{math.exp(10 * (slope + 1.96 * se)):.2f})"
    )

    check = response_by_quartile(fit, plan, n_replicates, seed + 1)
    print(f"\nevent rate by exposure (CAVG, mg/L): observed vs {n_replicates} simulated studies")
    print(check.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return fit, truth, check


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--replicates", type=int, default=200)
    args = parser.parse_args()
    main(args.subjects, args.seed, args.replicates)
