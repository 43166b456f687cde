"""Repeated time-to-event data: recurrent bleeding episodes with a Weibull
hazard and a log-normal frailty, in NONMEM's TTE data layout, fitted by
Laplace, with the Kaplan-Meier VPC of the time to the first bleed.

Patients are followed for 12 months and every bleeding episode counts (a
repeated time-to-event, RTTE, analysis: the events of one patient are
successive records of one endpoint).  The hazard of a bleed is

    h_i(t) = exp(eta_i) * (shape / scale) * (t / scale) ** (shape - 1)

(a Weibull hazard in time since randomisation, shape > 1: bleeds become more
frequent as the disease progresses), so the cumulative hazard is
``H_i(t) = exp(eta_i) * (t / scale) ** shape``.  ``exp(eta_i)`` is the
patient's frailty (log-normal, variance ``omega`` of ``eta``): some patients
bleed far more often than others, which makes the events of one patient
correlated.

The data follow NONMEM's TTE coding, one subject after another:

* a start record at TIME 0 (EVID 2, MDV 1): the origin of the hazard;
* patients with an electronic diary: one record per bleed at its exact time
  (DV 1), then a record at the end of their follow-up (DV 0: event-free since
  the previous record, right censoring);
* patients seen at monthly clinic visits only: at each visit DV 2 if they had
  at least one bleed since the previous visit (interval censoring: the
  likelihood is ``1 - exp(-(H(t) - H(t_prev)))``, the probability of at least
  one bleed in the interval) and DV 0 otherwise;
* a fifth of the patients drop out early: their follow-up ends at the
  dropout time (right censoring).

Each record contributes the hazard accrued since the previous record of the
endpoint, so the likelihood of a diary patient is the Poisson-process
likelihood of its event times, ``prod h(t_j) * exp(-H(end))``.

The script simulates the trial with numpy from stated true values (event
times by inverting the cumulative hazard), fits the model from other initial
estimates, prints the estimates next to the truth with their standard
errors, and the Kaplan-Meier VPC of the time to the first bleed of the diary
patients (exact times) against simulations of the fitted model; with a path
the VPC plot is saved there.

    python examples/repeated_time_to_event.py
    python examples/repeated_time_to_event.py --subjects 300 --path rtte_km_vpc.png
"""

import argparse

import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx

FOLLOW_UP = 12.0  # months
VISITS = np.arange(1.0, FOLLOW_UP + 1.0)  # monthly clinic visits
DROPOUT_FRACTION = 0.2


class RecurrentBleeds(pmx.Model):
    """Weibull intensity of bleeding episodes with a log-normal frailty."""

    log_scale: pmx.Theta = pmx.theta(np.log(2.0))  # months
    log_shape: pmx.Theta = pmx.theta(0.0)
    iiv: pmx.Omega = pmx.omega(frailty=0.2)
    dynamics = pmx.pk.Pred()

    def individual(self, eta, cov):
        return dict(t=cov.TIME, frailty=jnp.exp(eta.frailty))

    def observe(self, amounts, p):
        shape = jnp.exp(self.log_shape)
        # The start record is at TIME 0, where h = shape * H / t is 0 / 0.
        t = jnp.maximum(p["t"], 1e-9)
        cumulative = p["frailty"] * (t / jnp.exp(self.log_scale)) ** shape
        return pmx.TimeToEvent(hazard=shape * cumulative / t, cumulative_hazard=cumulative)


TRUTH = RecurrentBleeds().with_values(log_scale=np.log(4.0), log_shape=np.log(1.3), iiv=[0.5])


def bleed_times(rng, n_subjects: int, model: RecurrentBleeds = TRUTH):
    """Each patient's bleeding times over the whole follow-up: the events of a
    Poisson process with intensity ``h_i`` are where ``H_i`` crosses the
    partial sums of unit exponentials, ``t = scale * (sum / frailty) **
    (1 / shape)``."""
    scale, shape = np.exp(float(model.log_scale)), np.exp(float(model.log_shape))
    omega = float(model.iiv.matrix[0, 0])
    for _ in range(n_subjects):
        frailty = np.exp(rng.normal(0.0, np.sqrt(omega)))
        cumulative = np.cumsum(rng.exponential(size=20))
        while scale * (cumulative[-1] / frailty) ** (1.0 / shape) < FOLLOW_UP:
            cumulative = np.r_[cumulative, cumulative[-1] + np.cumsum(rng.exponential(size=20))]
        times = scale * (cumulative / frailty) ** (1.0 / shape)
        yield times[times < FOLLOW_UP]


def trial_records(n_subjects: int, seed: int) -> pd.DataFrame:
    """The trial in NONMEM TTE layout (ID, TIME, DV, EVID, MDV, DIARY): odd IDs
    keep a diary, even IDs are seen at monthly visits."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, bleeds in enumerate(bleed_times(rng, n_subjects), start=1):
        drops_out = rng.uniform() < DROPOUT_FRACTION
        end = rng.uniform(1.0, FOLLOW_UP) if drops_out else FOLLOW_UP
        bleeds = bleeds[bleeds < end]
        diary = i % 2 == 1
        rows.append(dict(ID=i, TIME=0.0, DV=0.0, EVID=2, MDV=1, DIARY=float(diary)))
        if diary:
            rows += [dict(ID=i, TIME=t, DV=1.0, EVID=0, MDV=0) for t in bleeds]
            rows.append(dict(ID=i, TIME=end, DV=0.0, EVID=0, MDV=0))
        else:
            visits = np.r_[VISITS[VISITS < end], end] if end < FOLLOW_UP else VISITS
            previous = 0.0
            for visit in np.unique(visits):
                any_bleed = np.any((bleeds > previous) & (bleeds <= visit))
                rows.append(dict(ID=i, TIME=visit, DV=2.0 * any_bleed, EVID=0, MDV=0))
                previous = visit
    table = pd.DataFrame(rows)
    table["DIARY"] = table.groupby("ID")["DIARY"].transform("first")
    return table


def weekly_design(table: pd.DataFrame) -> pd.DataFrame:
    """The diary patients' records with event-free records (DV 0) added every
    week of their follow-up.  They change nothing in the likelihood (the
    survival over an interval is the product of the survivals over its parts)
    but give the simulation of the VPC a fine grid: simulated event times
    interpolate the cumulative hazard between records."""
    diary = table[table["DIARY"] == 1]
    ends = diary.groupby("ID")["TIME"].max()
    weeks = np.arange(7.0, 366.0, 7.0) * 12.0 / 365.25  # months
    extra = pd.DataFrame(
        [
            dict(ID=i, TIME=t, DV=0.0, EVID=0, MDV=0, DIARY=1.0)
            for i, end in ends.items()
            for t in weeks[weeks < end]
        ]
    )
    return pd.concat([diary, extra]).sort_values(["ID", "TIME"], kind="stable")


def main(n_subjects: int = 160, seed: int = 7, n_sim: int = 200, path: str | None = None):
    table = trial_records(n_subjects, seed)
    data = pmx.read_nonmem(table)
    diary = table["DIARY"] == 1
    print(
        f"{n_subjects} patients: {int((diary & (table.DV == 1)).sum())} bleeds at exact times "
        f"(diary), {int((table.DV == 2).sum())} of {int((~diary & (table.EVID == 0)).sum())} "
        "visits with a bleed since the previous visit (DV 2), "
        f"{int((table.groupby('ID').TIME.max() < FOLLOW_UP).sum())} dropouts"
    )

    fit = pmx.fit(RecurrentBleeds(), data, "laplace")
    print(fit)
    truth = {name: float(getattr(TRUTH, name)) for name in TRUTH.thetas()}
    truth["iiv.frailty"] = float(TRUTH.iiv.matrix[0, 0])
    estimates = fit.estimates().set_index("parameter")
    print("\nparameter       truth   estimate      SE   (estimate - truth) / SE")
    for name, value in truth.items():
        estimate, se = estimates.loc[name, ["estimate", "se"]]
        print(f"{name:12s} {value:8.3f} {estimate:10.3f} {se:7.3f} {(estimate - value) / se:10.2f}")
    # On the natural scale: the typical patient (frailty 1) has H(12 months)
    # bleeds expected in the year.
    natural = {}
    for label, model in (("estimated", fit.model), ("true", TRUTH)):
        scale, shape = np.exp(float(model.log_scale)), np.exp(float(model.log_shape))
        natural[label] = (scale, shape, (FOLLOW_UP / scale) ** shape)
    for label, (scale, shape, per_year) in natural.items():
        print(
            f"{label:9s}: scale {scale:.2f} months, shape {shape:.2f}, "
            f"{per_year:.1f} bleeds a year for a typical patient"
        )

    from pmx_jax.diagnostics import kaplan_meier_vpc

    km = kaplan_meier_vpc(fit, weekly_design(table), n_sim=n_sim, seed=seed, exact_times=True)
    band = km.simulated
    observed = km.observed
    print(f"\nKaplan-Meier VPC, time to first bleed ({len(km.subjects)} diary patients):")
    print("month  observed  simulated median  (90% interval)")
    for month in (1.0, 2.0, 3.0, 6.0, 9.0, 12.0):
        at = np.searchsorted(observed.TIME, month, side="right") - 1
        seen = 1.0 if at < 0 else observed.SURVIVAL.iloc[at]
        row = band.iloc[np.argmin(np.abs(band.TIME - month))]
        print(f"{month:5.0f}  {seen:8.3f}  {row.MEDIAN:16.3f}  ({row.LOWER:.3f}-{row.UPPER:.3f})")
    if path is not None:
        km.plot(path=path, units=dict(time="months"))
        print(f"Kaplan-Meier VPC saved to {path}")
    return fit, truth, km


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=160)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--path", default=None, help="where to save the VPC plot (e.g. a .png)")
    args = parser.parse_args()
    main(args.subjects, args.seed, args.replicates, args.path)
