"""An ordered categorical PD endpoint: a sedation score 0-3 after an IV sedative,
driven by the plasma concentration, as a proportional-odds model with a random
subject intercept, fitted by Laplace, and its categorical VPC.

Each subject gets one IV bolus; a nurse scores sedation at set times after it
(0 awake, 1 drowsy, 2 asleep but rousable by voice, 3 rousable only by touch).
The PK was analysed first (a sequential PK-PD analysis): each record carries
the subject's individual predicted concentration, CONC, from a one-compartment
model, as NONMEM's IPRED would be merged into a PD dataset.  The score model
(a NONMEM ``$PRED`` model, ``pmx.pk.Pred``) is a cumulative logit model:

    P(score <= k) = logistic(cut_k - (slope * CONC + eta)),  k = 0, 1, 2

so that a higher concentration or a more sensitive subject (``eta > 0``)
shifts the whole score distribution upwards by the same log-odds
(proportional odds).  The three cutpoints must increase: they are written as
a first cut plus exponentiated increments, ``cut_1 = cut0 + exp(log_gap1)``,
``cut_2 = cut_1 + exp(log_gap2)``, which the estimation may move freely.
(NONMEM codes of this model write ``P(score >= k)``, the same model with the
signs of the cutpoints reversed.)

The script simulates the study from stated true values with ``pmx.simulate``,
fits the model from other initial estimates, prints the estimates next to the
truth with their standard errors, and the categorical VPC: the observed
proportion of each score per time bin against the median and 90% interval of
the same proportion in studies simulated from the fitted model; with a path,
the VPC plot is saved there.

    python examples/ordinal_sedation_score.py
    python examples/ordinal_sedation_score.py --subjects 200 --path sedation_vpc.png
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx

DOSE = 20.0  # mg IV bolus at time 0
SCORE_TIMES = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # h after the dose
TYPICAL_CL, TYPICAL_V = 1.0, 5.0  # L/h, L: a half-life of about 3.5 h
PK_CV = 0.3  # log-normal variability of CL and V (the PK step's etas)


class SedationScore(pmx.Model):
    """Proportional odds in the concentration, cutpoints kept increasing."""

    slope: pmx.Theta = pmx.theta(0.5)  # log-odds per mg/L
    cut0: pmx.Theta = pmx.theta(0.0)
    log_gap1: pmx.Theta = pmx.theta(0.0)
    log_gap2: pmx.Theta = pmx.theta(0.0)
    iiv: pmx.Omega = pmx.omega(sensitivity=0.3)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(drive=self.slope * cov.CONC + eta.sensitivity)

    def observe(self, amounts, p):
        cut1 = self.cut0 + jnp.exp(self.log_gap1)
        cut2 = cut1 + jnp.exp(self.log_gap2)
        return pmx.OrderedCategorical(p["drive"], [self.cut0, cut1, cut2])


TRUTH = SedationScore().with_values(
    slope=1.0, cut0=0.5, log_gap1=np.log(2.0), log_gap2=np.log(1.5), iiv=[1.0]
)


def cutpoints(model: SedationScore) -> np.ndarray:
    gaps = np.exp([float(model.log_gap1), float(model.log_gap2)])
    return float(model.cut0) + np.r_[0.0, np.cumsum(gaps)]


def design(n_subjects: int, seed: int) -> pd.DataFrame:
    """Score records with each subject's individual predicted concentration
    (mg/L) from the PK step; DV is a placeholder."""
    rng = np.random.default_rng(seed)
    cl = TYPICAL_CL * np.exp(PK_CV * rng.standard_normal(n_subjects))
    v = TYPICAL_V * np.exp(PK_CV * rng.standard_normal(n_subjects))
    times = np.asarray(SCORE_TIMES)
    conc = DOSE / v[:, None] * np.exp(-(cl / v)[:, None] * times)
    return pd.DataFrame(
        dict(
            ID=np.repeat(np.arange(1, n_subjects + 1), times.size),
            TIME=np.tile(times, n_subjects),
            DV=0.0,
            CONC=conc.ravel(),
        )
    )


def main(
    n_subjects: int = 120,
    seed: int = 5,
    n_sim: int = 200,
    path: str | None = None,
):
    plan = design(n_subjects, seed)
    simulated = pmx.simulate(TRUTH, pmx.read_nonmem(plan), key=jax.random.PRNGKey(seed))
    plan = plan.assign(DV=simulated.to_frame()["DV"].to_numpy())
    data = pmx.read_nonmem(plan)
    counts = plan["DV"].value_counts().reindex([0.0, 1.0, 2.0, 3.0], fill_value=0)
    print(f"{n_subjects} subjects, {len(plan)} scores; scores 0-3: {counts.tolist()}")

    fit = pmx.fit(SedationScore(), data, "laplace")
    print(fit)
    truth = {name: float(getattr(TRUTH, name)) for name in TRUTH.thetas()}
    truth["iiv.sensitivity"] = float(TRUTH.iiv.matrix[0, 0])
    table = fit.estimates().set_index("parameter")
    print("\nparameter           truth   estimate      SE   (estimate - truth) / SE")
    for name, value in truth.items():
        estimate, se = table.loc[name, "estimate"], table.loc[name, "se"]
        print(f"{name:15s} {value:9.3f} {estimate:10.3f} {se:7.3f} {(estimate - value) / se:10.2f}")
    print(
        "cutpoints: true "
        + " ".join(f"{c:.2f}" for c in cutpoints(TRUTH))
        + ", estimated "
        + " ".join(f"{c:.2f}" for c in cutpoints(fit.model))
    )

    from pmx_jax.diagnostics import categorical_vpc

    # One bin per scheduled time: edges halfway between them.
    times = np.asarray(SCORE_TIMES)
    edges = np.r_[0.0, (times[1:] + times[:-1]) / 2, times[-1] + 1.0]
    vpc = categorical_vpc(fit, n_sim=n_sim, bins=list(edges), seed=seed)
    shown = vpc.proportions.pivot(index="TIME", columns="CATEGORY", values="OBSERVED")
    median = vpc.proportions.pivot(index="TIME", columns="CATEGORY", values="SIM_MEDIAN")
    print(f"\ncategorical VPC ({n_sim} simulated studies): proportion observed / simulated median")
    both = shown.round(2).astype(str) + " / " + median.round(2).astype(str)
    print(both.rename(columns=lambda c: f"score {c}").rename_axis(columns=None).to_string())
    inside = (vpc.proportions.OBSERVED >= vpc.proportions.SIM_LOWER) & (
        vpc.proportions.OBSERVED <= vpc.proportions.SIM_UPPER
    )
    print(
        f"{int(inside.sum())} of {len(inside)} observed proportions inside the simulated "
        f"{vpc.ci:.0%} intervals"
    )
    if path is not None:
        vpc.plot(path=path, units=dict(time="h"))
        print(f"categorical VPC saved to {path}")
    return fit, truth, vpc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--path", default=None, help="where to save the VPC plot (e.g. a .png)")
    args = parser.parse_args()
    main(args.subjects, args.seed, args.replicates, args.path)
