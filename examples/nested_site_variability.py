"""Between-site variability: a third level of random effects with ``pmx.data.nest``.

A multicentre trial: subjects at several study sites, one oral dose, seven
samples.  Clearance varies between sites (a site eta shared by the site's
subjects) and between subjects within a site; volume between subjects.

``nest`` rewrites the dataset the NONMEM way: each site becomes an ID and its
subjects become occasions, placed one after another with the compartments reset
between them.  In the model the site eta is an ordinary IIV block and the subject
etas are an occasion block:

    site: pmx.Omega = pmx.omega(site_cl=0.1)
    subject: pmx.Omega = pmx.omega(cl=0.09, v=0.04, occasion=True)

The script simulates such a trial (from the nested design, written back to the
original table through the ORIG_ROW column), nests it, fits it by FOCEI and
prints the variance components with their standard errors, the site and
subject EBEs, and the first rows of the residual table mapped back to the
original subjects.

    python examples/nested_site_variability.py
    python examples/nested_site_variability.py --sites 20 --per-site 6
"""

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import pmx_jax as pmx

SAMPLE_TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)


class SiteOral(pmx.Model):
    """One compartment, first-order absorption (mg, L, h); proportional error."""

    tka: pmx.Theta = pmx.theta(0.0)
    tcl: pmx.Theta = pmx.theta(math.log(4.0))
    tv: pmx.Theta = pmx.theta(math.log(40.0))
    prop_cv: pmx.Theta = pmx.theta(0.1, lower=0.0)
    site: pmx.Omega = pmx.omega(site_cl=0.1)  # between sites (IIV of the nested ID)
    subject: pmx.Omega = pmx.omega(cl=0.09, v=0.04, occasion=True)  # within a site
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka),
            cl=jnp.exp(self.tcl + eta.site_cl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop_cv)


def trial_design(n_sites: int, per_site: int) -> pd.DataFrame:
    """The original NONMEM table: subjects 1..n numbered across sites, a SITE column."""
    rows = []
    for i in range(n_sites * per_site):
        site = 100 + i // per_site
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, DV=np.nan, SITE=site))
        rows += [dict(ID=i + 1, TIME=t, AMT=0.0, DV=0.0, SITE=site) for t in SAMPLE_TIMES]
    return pd.DataFrame(rows)


def simulate_trial(model: pmx.Model, design: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``design`` with DV simulated from ``model`` (site etas, subject etas and
    residual error), simulated on the nested design and written back by ORIG_ROW."""
    nested = pmx.data.nest(pmx.read_nonmem(design), by="SITE")
    sim = pmx.simulate(model, nested, key=jax.random.PRNGKey(seed))
    # Simulated records are those of the padded subjects; ``row`` indexes nested.table.
    rows = np.asarray(pmx.likelihood.prepare(model, nested).subjects.row)[sim.observed]
    original_rows = nested.table["ORIG_ROW"].to_numpy()[rows].astype(int)
    table = design.copy()
    table.loc[original_rows, "DV"] = sim.dv[sim.observed]
    return table


def variance_components(result: pmx.estimation.FitResult) -> pd.DataFrame:
    """Site, subject and residual variability with standard errors."""
    est = result.estimates().set_index("parameter")
    names = {
        "site.site_cl": "between sites, CL",
        "subject.cl": "between subjects within a site, CL",
        "subject.v": "between subjects, V",
    }
    frame = est.loc[list(names), ["estimate", "se", "cv_percent"]]
    frame.index = [f"{p} ({names[p]})" for p in frame.index]
    return frame


def subject_ebes(result: pmx.estimation.FitResult) -> pd.DataFrame:
    """Subject-level EBEs (the occasion etas of the nested fit), one row per original
    subject: site ``s``, occasion ``k`` is the subject whose records carry ID ``s``
    and OCC ``k`` in the nested table."""
    data, model = result.dataset, result.model
    per_occasion = result.ebe_matrix[:, model.n_eta :].reshape(
        data.n_subjects, len(data.occ_levels), model.n_iov_eta
    )
    first = data.table.groupby("ORIG_ID", sort=False)[["ID", "OCC"]].first()
    site = [data.ids.index(s) for s in first["ID"]]
    occasion = [data.occ_levels.index(k) for k in first["OCC"]]
    frame = pd.DataFrame(per_occasion[site, occasion], columns=list(model.iov_eta_names))
    frame.insert(0, "SITE", first["ID"].to_numpy())
    frame.insert(0, "ID", first.index.to_numpy())
    return frame


def main(n_sites: int = 12, per_site: int = 8, seed: int = 3, covariance: str | None = "r"):
    """Simulate, nest, fit by FOCEI; print the variance components; return the FitResult."""
    truth = SiteOral()
    observed = simulate_trial(truth, trial_design(n_sites, per_site), seed)
    data = pmx.data.nest(pmx.read_nonmem(observed), by="SITE")
    print(data.summary(), "\n")

    start = SiteOral().with_values(
        tka=0.2,
        tcl=math.log(3.0),
        tv=math.log(50.0),
        prop_cv=0.2,
        site=[0.05],
        subject=[0.05, 0.08],
    )
    result = pmx.fit(start, data, "focei", covariance=covariance)
    print(result)
    with pd.option_context("display.width", 120, "display.precision", 4):
        print("\nVariance components (truth: 0.1, 0.09, 0.04):")
        print(variance_components(result).to_string())
        print("\nSite EBEs (eta on CL shared by the site's subjects):")
        print(result.ebes.rename(columns={"ID": "SITE"}).to_string(index=False))
        print("\nSubject EBEs (occasion etas), first subjects:")
        print(subject_ebes(result).head(8).to_string(index=False))
        table = result.table()
        mapping = data.table[["ORIG_ID", "ORIG_TIME"]].iloc[table["row"].to_numpy()]
        table = table.assign(
            SITE=table["ID"], ID=mapping["ORIG_ID"].to_numpy(), TIME=mapping["ORIG_TIME"].to_numpy()
        )
        observations = table.loc[table["EVID"] == 0, ["SITE", "ID", "TIME", "DV", "IPRED", "CWRES"]]
        print("\nFirst observations, in the original subjects' IDs and times:")
        print(observations.head(8).to_string(index=False))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=12)
    parser.add_argument("--per-site", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    main(args.sites, args.per_site, args.seed)
