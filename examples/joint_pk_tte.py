"""A joint PK + time-to-event model: an exposure-driven hazard, fitted with the
concentrations, and its Kaplan-Meier VPC.

After a single oral dose, an adverse event occurs with hazard
``h(t) = h0 * (1 + beta * C(t))``: the concentration ``C`` of a
one-compartment model drives it, so subjects with a lower clearance (higher
exposure) have their event earlier.  The cumulative hazard is
``H(t) = h0 * (t + beta * AUC(t))``, and the area under the curve comes from
the model's state by mass balance: what has left the body, ``dose - depot -
central``, is ``CL * AUC``.  So the closed-form model serves, and the hazard
follows every subject's own exposure.  (A hazard that is not linear in the
concentration integrates as a third compartment of an ODE, ``d CHZ / dt = h``,
NONMEM's usual ``$DES`` construction; ``observe`` then reads
``amounts.cumhaz``.)

The dataset has two endpoints by DVID: 1 the concentrations (proportional
error), 2 the event record of each subject (NONMEM's TTE coding: DV 1 at the
time of the event, DV 0 at the end of follow-up for a subject without one).
One Laplace fit estimates PK and hazard together: the event times inform the
clearance through the exposure.

The script simulates a trial from known values (event records every hour,
then every 6 h, so that event times come out exact to the interpolation
between them), keeps each subject's first event or censoring as the observed
data, fits the joint model from other initial values, prints the estimates
next to the truth and saves the Kaplan-Meier VPC of the fitted model.

    python examples/joint_pk_tte.py
    python examples/joint_pk_tte.py --subjects 120 --path km_vpc.png
"""

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx

DOSE = 400.0  # mg, at time 0
PK_TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)  # h
FOLLOW_UP = 72.0  # h


class JointPKTTE(pmx.Model):
    tka: pmx.Theta = pmx.theta(math.log(1.0))  # 1/h
    tcl: pmx.Theta = pmx.theta(math.log(4.0))  # L/h
    tv: pmx.Theta = pmx.theta(math.log(30.0))  # L
    prop_cv: pmx.Theta = pmx.theta(0.15, lower=0.0)
    log_h0: pmx.Theta = pmx.theta(math.log(0.01))  # 1/h, hazard without drug
    log_beta: pmx.Theta = pmx.theta(math.log(0.1))  # per mg/L
    iiv: pmx.Omega = pmx.omega(cl=0.1, v=0.05)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
            dose=cov.DOSE,
            t=cov.TIME,
        )

    def observe(self, amounts, p):
        conc = amounts.central / p["v"]
        auc = (p["dose"] - amounts.depot - amounts.central) / p["cl"]
        h0, beta = jnp.exp(self.log_h0), jnp.exp(self.log_beta)
        return {
            1: pmx.Proportional(conc, self.prop_cv),
            2: pmx.TimeToEvent(
                hazard=h0 * (1.0 + beta * conc),
                cumulative_hazard=h0 * (p["t"] + beta * auc),
            ),
        }


TRUTH = JointPKTTE().with_values(
    tka=math.log(1.2),
    tcl=math.log(3.0),
    tv=math.log(35.0),
    prop_cv=0.12,
    log_h0=math.log(0.003),
    log_beta=math.log(0.4),
    iiv=np.diag([0.15, 0.04]),
)


def design(n_subjects: int) -> pd.DataFrame:
    """The simulation design: a dose, PK samples (DVID 1) and hourly-to-daily
    records of the event endpoint (DVID 2) over the follow-up."""
    event_grid = np.unique(np.r_[np.arange(1.0, 24.0, 1.0), np.arange(24.0, FOLLOW_UP + 1, 6.0)])
    rows = []
    for i in range(1, n_subjects + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=DOSE, EVID=1, CMT=1, DV=0.0, DVID=1))
        rows += [dict(ID=i, TIME=t, AMT=0.0, EVID=0, CMT=2, DV=0.0, DVID=1) for t in PK_TIMES]
        rows += [dict(ID=i, TIME=t, AMT=0.0, EVID=0, CMT=2, DV=0.0, DVID=2) for t in event_grid]
    table = pd.DataFrame(rows).sort_values(["ID", "TIME", "DVID"], kind="stable")
    return table.assign(DOSE=DOSE)


def observed_trial(simulated: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """The data a trial would record: concentrations, and per subject one event
    record (DV 1 at the event time) or a censoring record at the end of
    follow-up (DV 0)."""
    sim = simulated.assign(DVID=plan.loc[plan["EVID"] == 0, "DVID"].to_numpy())
    doses = plan[plan["EVID"] == 1]
    pk = sim[sim["DVID"] == 1].assign(EVID=0, AMT=0.0, CMT=2)
    events = sim[sim["DVID"] == 2]
    first = events[events["DV"] == 1].groupby("SIM_ID").first()
    records = []
    for i in plan["ID"].unique():
        if i in first.index:
            records.append(dict(ID=i, TIME=first.loc[i, "EVENT_TIME"], DV=1.0))
        else:
            records.append(dict(ID=i, TIME=FOLLOW_UP, DV=0.0))
    tte = pd.DataFrame(records).assign(EVID=0, AMT=0.0, CMT=2, DVID=2)
    columns = ["ID", "TIME", "AMT", "EVID", "CMT", "DV", "DVID"]
    table = pd.concat([doses[columns], pk[columns], tte[columns]])
    table = table.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")
    return table.assign(DOSE=DOSE)


def main(n_subjects: int = 60, seed: int = 2026, path: str | None = None, n_sim: int = 200):
    plan = design(n_subjects)
    simulated = pmx.simulate(TRUTH, pmx.read_nonmem(plan), key=jax.random.PRNGKey(seed)).to_frame()
    data = pmx.read_nonmem(observed_trial(simulated, plan))
    n_events = int(((data.records["dvid"] == 1) & (data.records["dv"] == 1)).sum())
    print(f"{n_subjects} subjects, {n_events} events within {FOLLOW_UP:g} h")
    fit = pmx.fit(JointPKTTE(), data, "laplace")
    print(fit)
    truth = {name: float(getattr(TRUTH, name)) for name in TRUTH.thetas()}
    table = fit.estimates().set_index("parameter")
    print("\nparameter      truth   estimate   (estimate - truth) / SE")
    for name, value in truth.items():
        estimate, se = table.loc[name, "estimate"], table.loc[name, "se"]
        print(f"{name:10s} {value:9.4f} {estimate:10.4f} {(estimate - value) / se:10.2f}")
    if path is not None:
        from pmx_jax.diagnostics import kaplan_meier_vpc

        check = kaplan_meier_vpc(fit, n_sim=n_sim, dvid=2, seed=seed)
        check.plot(path=path, units=dict(time="h"))
        print(f"Kaplan-Meier VPC saved to {path}")
    return fit, truth, n_events


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=60)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--path", default="joint_pk_tte_km_vpc.png")
    args = parser.parse_args()
    main(args.subjects, args.seed, args.path)
