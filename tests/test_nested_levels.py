"""A third level of random effects (site above subject) through ``pmx.data.nest``.

The nested dataset makes each site an individual and each of its subjects an
occasion.  What must hold:

* the event layer sees each subject exactly as alone (time shift, resets), so
  predictions at given site and subject etas equal the per-subject predictions of
  the original dataset with the same etas: multiple doses, ADDL running past the
  last record, an infusion, a first record that is an observation or an EVID 2
  record, lagged doses, time-varying covariates with gaps;
* the nested likelihood is the three-level marginal likelihood: for a model whose
  prediction is linear in the etas with additive error, the Laplace (and FOCEI, FO)
  OFV equals the exact Gaussian ``y ~ N(mu, Z Omega Z^T + sigma^2 I)`` per site;
* FOCEI recovers the site and subject variances of a simulated population.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.data import (
    DatasetError,
    InvalidValueError,
    MissingColumnError,
    MissingCovariateError,
    nest,
    read_nonmem,
)
from pmx_jax.likelihood import prepare

# -- a model written twice: site etas as IIV (original data) or split (nested data) -----


class _SitePK(pmx.Model):
    """One compartment, first-order absorption with a lag; CL scales with WT."""

    tka: pmx.Theta = pmx.theta(math.log(1.2))
    tcl: pmx.Theta = pmx.theta(math.log(3.0))
    tv: pmx.Theta = pmx.theta(math.log(30.0))
    add_sd: pmx.Theta = pmx.theta(0.1, lower=0.0)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka),
            cl=jnp.exp(self.tcl + eta.site_cl + eta.cl) * (cov.WT / 70.0) ** 0.75,
            v=jnp.exp(self.tv + eta.v),
            alag1=jnp.asarray(0.25),
        )

    def observe(self, amounts, p):
        return pmx.Additive(amounts.central / p["v"], self.add_sd)


class FlatPK(_SitePK):
    """Every eta per subject: what the original (un-nested) dataset is fitted with."""

    iiv: pmx.Omega = pmx.omega(site_cl=0.1, cl=0.1, v=0.05)


class NestedPK(_SitePK):
    """Site eta as IIV of the site, subject etas as occasion etas."""

    site: pmx.Omega = pmx.omega(site_cl=0.1)
    subject: pmx.Omega = pmx.omega(cl=0.1, v=0.05, occasion=True)


def _row(id_, time, *, amt=0.0, dv=np.nan, evid=None, cmt=1, rate=0.0, ii=0.0, addl=0, wt=None):
    if evid is None:
        evid = 1 if amt > 0 else 0
    mdv = 0 if evid == 0 and not np.isnan(dv) else 1
    return dict(
        ID=id_,
        TIME=time,
        AMT=amt,
        DV=dv,
        EVID=evid,
        MDV=mdv,
        CMT=cmt,
        RATE=rate,
        II=ii,
        ADDL=addl,
        WT=wt,
    )


def design_table() -> pd.DataFrame:
    """Six subjects of three sites (sites interleaved in the table), every subject
    starting near time 0, with the awkward cases on purpose."""
    rows = [
        # ID 1, site A: single dose.
        _row(1, 0.0, amt=100, wt=60.0),
        *[_row(1, t, dv=1.0, wt=None) for t in (0.5, 1.0, 2.0, 4.0, 8.0)],
        # ID 2, site B: first record an observation (pre-dose), then two doses; WT
        # missing on the first records (carried back) and changing later.
        _row(2, 0.0, dv=0.1, wt=None),
        _row(2, 1.0, amt=50, wt=None),
        *[_row(2, t, dv=1.0, wt=80.0) for t in (2.0, 6.0)],
        _row(2, 13.0, amt=50, wt=90.0),
        *[_row(2, t, dv=1.0, wt=None) for t in (14.0, 20.0)],
        # ID 3, site A: ADDL doses that run past the last record (to t = 60).
        _row(3, 0.0, amt=80, ii=12.0, addl=5, wt=70.0),
        *[_row(3, t, dv=1.0, wt=70.0) for t in (1.0, 12.5, 40.0, 50.0)],
        # ID 4, site B: zero-order infusion into the central compartment.
        _row(4, 0.0, amt=100, cmt=2, rate=50.0, wt=75.0),
        *[_row(4, t, dv=1.0, wt=75.0) for t in (1.0, 3.0, 10.0)],
        # ID 5, site A: starts with an "other" record (EVID 2), then a dose.
        _row(5, 0.0, evid=2, wt=65.0),
        _row(5, 1.0, amt=100, wt=65.0),
        *[_row(5, t, dv=1.0, wt=65.0) for t in (0.5, 2.0, 5.0)],
        # ID 6, site C: alone at its site.
        _row(6, 0.0, amt=120, wt=85.0),
        *[_row(6, t, dv=1.0, wt=85.0) for t in (1.0, 6.0)],
    ]
    table = pd.DataFrame(rows)
    table = table.sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)
    table["SITE"] = table["ID"].map({1: "A", 2: "B", 3: "A", 4: "B", 5: "A", 6: "C"})
    table["STUDY"] = 101  # a column the model does not use
    return table


SITE_ETA = {"A": 0.3, "B": -0.2, "C": 0.1}


def subject_etas(n: int) -> np.ndarray:
    return np.random.default_rng(7).normal(0.0, 0.3, size=(n, 2))


def test_nested_layout_and_mapping():
    data = read_nonmem(design_table())
    nested = nest(data, by="SITE")
    assert nested.ids == ("A", "B", "C")
    assert nested.occ_levels == (1, 2, 3)
    assert nested.n_observations == data.n_observations
    assert nested.n_doses == data.n_doses
    table = nested.table
    # Occasions follow the subjects' order within their site.
    occ = table.groupby(["ID", "ORIG_ID"], sort=False)["OCC"].first()
    assert occ.to_dict() == {
        ("A", 1): 1,
        ("A", 3): 2,
        ("A", 5): 3,
        ("B", 2): 1,
        ("B", 4): 2,
        ("C", 6): 1,
    }
    # Times never go back within a site and subjects do not overlap (ID 3's ADDL
    # doses run to t = 60, so ID 5 starts after 60 + gap).
    assert (
        np.diff(table["TIME"].to_numpy())[table["ID"].to_numpy()[1:] == table["ID"].to_numpy()[:-1]]
        >= 0
    ).all()
    first_of_5 = table.loc[table["ORIG_ID"] == 5, "TIME"].min()
    assert first_of_5 == pytest.approx(table.loc[table["ORIG_ID"] == 3, "TIME"].min() + 60 + 100)
    # Resets at every later subject of a site: its first dose becomes EVID 4 (IDs 3
    # and 4), or an EVID 3 record is added when it starts otherwise (ID 5 starts with
    # EVID 2; ID 2 starts its site, so its pre-dose observation stays first).
    starts = table.groupby("ORIG_ID", sort=False).head(1).set_index("ORIG_ID")["EVID"]
    assert starts.to_dict() == {1: 1, 3: 4, 5: 3, 2: 0, 4: 4, 6: 1}
    added = table["ORIG_ROW"].isna()
    assert added.sum() == 1 and (table.loc[added, "EVID"] == 3).all()
    # The mapping back: original row, ID and TIME of every other record.
    original = data.table
    kept = table.loc[~added]
    rows = kept["ORIG_ROW"].astype(int).to_numpy()
    assert sorted(rows) == list(range(len(original)))
    np.testing.assert_array_equal(kept["ORIG_ID"].to_numpy(), original["ID"].to_numpy()[rows])
    np.testing.assert_array_equal(kept["ORIG_TIME"].to_numpy(), original["TIME"].to_numpy()[rows])
    np.testing.assert_array_equal(kept["STUDY"].to_numpy(), 101)
    # Covariates as the model sees them: carried within each subject, not across.
    wt = nested.covariates["WT"].to_numpy()[~added.to_numpy()]
    np.testing.assert_array_equal(wt, data.covariates["WT"].to_numpy()[rows])
    assert any("nested by SITE" in note for note in nested.notes)


@pytest.mark.parametrize("gap", [0.0, 100.0])
def test_nested_predictions_equal_per_subject_predictions(gap):
    data = read_nonmem(design_table())
    nested = nest(data, by="SITE", gap=gap)
    sites = [
        data.table.loc[data.records["subject"] == i, "SITE"].iloc[0] for i in range(data.n_subjects)
    ]
    subj = subject_etas(data.n_subjects)
    flat_etas = np.column_stack([[SITE_ETA[s] for s in sites], subj])
    flat = pmx.predict(FlatPK(), data, flat_etas)

    site_etas = np.array([[SITE_ETA[s]] for s in nested.ids])
    iov = np.zeros((nested.n_subjects, len(nested.occ_levels), 2))
    first = nested.table.groupby("ORIG_ID", sort=False).head(1)
    for orig_id, site, occ in first[["ORIG_ID", "ID", "OCC"]].itertuples(index=False):
        iov[nested.ids.index(site), occ - 1] = subj[data.ids.index(orig_id)]
    out = pmx.predict(NestedPK(), nested, site_etas, iov_etas=iov)

    orig_row = nested.table["ORIG_ROW"].to_numpy()[out["row"].to_numpy()]
    out = out.loc[~pd.isna(orig_row)].assign(orig_row=orig_row[~pd.isna(orig_row)].astype(int))
    out = out.sort_values("orig_row")
    assert out["orig_row"].tolist() == flat["row"].tolist()
    assert np.abs(flat["IPRED"]).max() > 0.5  # the comparison is not of zeros
    # Same arithmetic on shifted times: equal up to rounding of TIME + offset.
    np.testing.assert_allclose(out["IPRED"], flat["IPRED"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["PRED"], flat["PRED"], rtol=1e-10, atol=1e-12)


def test_nesting_a_subset_maps_to_the_first_read_rows():
    data = read_nonmem(design_table())
    part = data.subset([3, 5, 6])
    nested = nest(part, by="site")  # the column name is case-insensitive
    rows = nested.table["ORIG_ROW"].dropna().astype(int)
    assert set(rows) == set(part.records["row"])
    assert nested.ids == ("A", "C")


# -- errors -------------------------------------------------------------------------------


def test_missing_site_column_is_named():
    data = read_nonmem(design_table().drop(columns="SITE"))
    with pytest.raises(MissingColumnError, match="'CENTRE'"):
        nest(data, by="CENTRE")


def test_site_changing_within_a_subject_names_the_subject_and_row():
    table = design_table()
    table.loc[table.index[(table["ID"] == 3)][2], "SITE"] = "B"
    with pytest.raises(InvalidValueError, match=r"ID 3 has 'A' and then 'B' at row \d+"):
        nest(read_nonmem(table), by="SITE")


def test_site_missing_on_some_records_is_allowed_but_not_on_all():
    table = design_table()
    table.loc[table.index[table["ID"] == 2][1:], "SITE"] = np.nan
    assert nest(read_nonmem(table), by="SITE").ids == ("A", "B", "C")
    table.loc[table["ID"] == 2, "SITE"] = np.nan
    with pytest.raises(InvalidValueError, match="missing on every record of ID 2"):
        nest(read_nonmem(table), by="SITE")


def test_existing_occasions_are_refused():
    table = design_table().assign(OCC=1)
    with pytest.raises(DatasetError, match="already has occasions"):
        nest(read_nonmem(table), by="SITE")


def test_a_data_item_is_not_a_site_column():
    with pytest.raises(DatasetError, match="data item DV"):
        nest(read_nonmem(design_table()), by="DV")


def test_a_covariate_missing_for_a_whole_subject_is_refused():
    table = design_table()
    table.loc[table["ID"] == 4, "WT"] = np.nan
    with pytest.raises(MissingCovariateError, match="'WT'.*ID 4"):
        nest(read_nonmem(table), by="SITE")


# -- the likelihood against an exact computation -----------------------------------------


class LinearSite(pmx.Model):
    """``y = t0 + eta_site + b0 + (t1 + b1) X + eps``: linear in every random effect,
    additive error, so the marginal likelihood is Gaussian and every approximation
    (FO, FOCEI, Laplace) is exact.  The compartments play no part."""

    t0: pmx.Theta = pmx.theta(2.0)
    t1: pmx.Theta = pmx.theta(0.5)
    sd: pmx.Theta = pmx.theta(0.3, lower=0.0)
    site: pmx.Omega = pmx.omega(site=0.2)
    subject: pmx.Omega = pmx.omega_block(("b0", "b1"), [0.1, 0.02, 0.05], occasion=True)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        mean = self.t0 + eta.site + eta.b0 + (self.t1 + eta.b1) * cov.X
        return dict(cl=jnp.asarray(1.0), v=jnp.asarray(1.0), mean=mean)

    def observe(self, amounts, p):
        return pmx.Additive(p["mean"], self.sd)


def linear_table() -> tuple[pd.DataFrame, dict]:
    """Three sites with 3, 1 and 4 subjects (unvisited occasions at two sites),
    2-5 observations each at subject-specific X, DV drawn from the model."""
    rng = np.random.default_rng(11)
    sizes = {"north": 3, "south": 1, "east": 4}
    rows, next_id = [], 1
    for site, n in sizes.items():
        u = rng.normal(0.0, math.sqrt(0.2))
        for _ in range(n):
            b = rng.multivariate_normal([0, 0], [[0.1, 0.02], [0.02, 0.05]])
            for k in range(rng.integers(2, 6)):
                x = rng.uniform(0.0, 4.0)
                y = 2.0 + u + b[0] + (0.5 + b[1]) * x + rng.normal(0.0, 0.3)
                rows.append(dict(ID=next_id, TIME=float(k), DV=y, X=x, SITE=site))
            next_id += 1
    return pd.DataFrame(rows), sizes


def exact_ofv(table: pd.DataFrame, t0, t1, omega_site, omega_subject, sd) -> float:
    """Sum over sites of ``log det V + r^T V^-1 r`` (the OFV: -2 log L without
    ``N log 2 pi``) with ``V = Z Omega Z^T + sd^2 I``, Z from the design alone."""
    total = 0.0
    for _, site in table.groupby("SITE", sort=False):
        subjects = pd.factorize(site["ID"])[0]
        n_sub, n_obs = subjects.max() + 1, len(site)
        x = site["X"].to_numpy()
        z = np.zeros((n_obs, 1 + 2 * n_sub))
        z[:, 0] = 1.0
        z[np.arange(n_obs), 1 + 2 * subjects] = 1.0
        z[np.arange(n_obs), 2 + 2 * subjects] = x
        omega = np.zeros((1 + 2 * n_sub,) * 2)
        omega[0, 0] = omega_site
        omega[1:, 1:] = np.kron(np.eye(n_sub), omega_subject)
        v = z @ omega @ z.T + sd**2 * np.eye(n_obs)
        r = site["DV"].to_numpy() - (t0 + t1 * x)
        total += np.linalg.slogdet(v)[1] + r @ np.linalg.solve(v, r)
    return float(total)


@pytest.mark.parametrize("method", ["fo", "focei", "laplace"])
def test_nested_ofv_is_the_exact_three_level_marginal_likelihood(method):
    table, _ = linear_table()
    nested = nest(read_nonmem(table), by="SITE")
    # Away from the simulation values, so that nothing cancels by luck.
    model = LinearSite().with_values(
        t0=1.7, t1=0.6, sd=0.35, site=[0.3], subject=[[0.15, -0.03], [-0.03, 0.08]]
    )
    result = pmx.ofv(model, nested, method)
    expected = exact_ofv(table, 1.7, 0.6, 0.3, np.array([[0.15, -0.03], [-0.03, 0.08]]), 0.35)
    # Exact in exact arithmetic; the EBE Newton search converges to 1e-12 (-2LL
    # scale) and a quadratic objective is solved in one step, so only rounding is
    # left: 1e-6 absolute on an OFV of order 10.
    assert float(result.ofv) == pytest.approx(expected, abs=1e-6)


def test_nested_ofv_has_the_site_level():
    # Leaving the site eta out of the model changes the exact likelihood: the test
    # above is sensitive to the site level (with a tiny site variance the OFV
    # approaches the two-level one).
    table, _ = linear_table()
    nested = nest(read_nonmem(table), by="SITE")
    omega_subject = np.array([[0.1, 0.02], [0.02, 0.05]])
    with_site = float(pmx.ofv(LinearSite(), nested, "laplace").ofv)
    tiny_site = float(pmx.ofv(LinearSite().with_values(site=[1e-8]), nested, "laplace").ofv)
    assert with_site == pytest.approx(exact_ofv(table, 2.0, 0.5, 0.2, omega_subject, 0.3), abs=1e-6)
    assert tiny_site == pytest.approx(
        exact_ofv(table, 2.0, 0.5, 1e-8, omega_subject, 0.3), abs=1e-5
    )
    assert abs(with_site - tiny_site) > 1.0


# -- parameter recovery -------------------------------------------------------------------


class SiteOral(pmx.Model):
    """One compartment, oral; site eta on CL, subject etas on CL and V."""

    tka: pmx.Theta = pmx.theta(math.log(1.0))
    tcl: pmx.Theta = pmx.theta(math.log(4.0))
    tv: pmx.Theta = pmx.theta(math.log(40.0))
    prop_cv: pmx.Theta = pmx.theta(0.1, lower=0.0)
    site: pmx.Omega = pmx.omega(site_cl=0.1)
    subject: pmx.Omega = pmx.omega(cl=0.09, v=0.04, occasion=True)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka),
            cl=jnp.exp(self.tcl + eta.site_cl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Proportional(amounts.central / p["v"], self.prop_cv)


def site_trial(n_sites: int, per_site: int) -> pd.DataFrame:
    """A single 100 mg oral dose, seven samples, subjects numbered across sites."""
    times = [0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0]
    rows = []
    for i in range(n_sites * per_site):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, DV=np.nan, SITE=i // per_site + 1))
        rows += [dict(ID=i + 1, TIME=t, AMT=0.0, DV=0.0, SITE=i // per_site + 1) for t in times]
    return pd.DataFrame(rows)


def simulate_into(model: pmx.Model, original: pd.DataFrame, by: str, seed: int) -> pd.DataFrame:
    """The original table with DV simulated from ``model`` on its nested design
    (site and subject etas, residuals), written back through ORIG_ROW."""
    nested = nest(read_nonmem(original), by=by)
    sim = pmx.simulate(model, nested, key=jax.random.PRNGKey(seed))
    rows = np.asarray(prepare(model, nested).subjects.row)
    observed = sim.observed
    orig_rows = nested.table["ORIG_ROW"].to_numpy()[rows[observed]].astype(int)
    table = original.copy()
    table.loc[orig_rows, "DV"] = sim.dv[observed]
    return table


@pytest.mark.slow
def test_focei_recovers_site_and_subject_variances():
    truth = SiteOral().with_values(tka=0.0, tcl=math.log(4.0), tv=math.log(40.0), prop_cv=0.1)
    table = simulate_into(truth, site_trial(12, 8), "SITE", seed=3)
    nested = nest(read_nonmem(table), by="SITE")
    start = SiteOral().with_values(
        tka=0.2,
        tcl=math.log(3.0),
        tv=math.log(50.0),
        prop_cv=0.2,
        site=[0.05],
        subject=[0.05, 0.08],
    )
    fit = pmx.fit(start, nested, "focei", covariance="r")
    assert fit.converged, fit.message
    est = fit.estimates().set_index("parameter")
    for name, true in {"site.site_cl": 0.1, "subject.cl": 0.09, "subject.v": 0.04}.items():
        value, se = est.loc[name, "estimate"], est.loc[name, "se"]
        assert np.isfinite(se) and se > 0, name
        assert abs(value - true) < 3 * se, (name, value, se)
    # The site level is not absorbed by the subject level (nor the reverse): the
    # subject CL variance stays below truth + half the site variance, and the site
    # variance is clearly above zero.
    assert est.loc["site.site_cl", "estimate"] > 0.03
    assert est.loc["subject.cl", "estimate"] < 0.09 + 0.05


def test_data_items_survive_nesting():
    # Role columns under the user's own names (conc -> DV), censoring (CENS with
    # DV at the LLOQ) and text DVID levels whose order of first appearance changes
    # when subjects are regrouped by site (original a, c, b; nested a, b, c).
    table = pd.DataFrame(
        {
            "ID": [1, 1, 1, 2, 2, 2, 3, 3, 3],
            "TIME": [0.0, 1.0, 2.0] * 3,
            "AMT": [100.0, 0.0, 0.0] * 3,
            "conc": [np.nan, 5.0, 0.5, np.nan, 4.0, 3.0, np.nan, 6.0, 0.5],
            "CENS": [0, 0, 1, 0, 0, 0, 0, 0, 1],
            "DVID": ["a", "a", "a", "c", "c", "c", "b", "b", "b"],
            "SITE": [1, 1, 1, 2, 2, 2, 1, 1, 1],
        }
    )
    data = read_nonmem(table, columns={"conc": "DV"})
    assert data.dvid_levels == ("a", "c", "b")
    nested = nest(data, by="SITE")
    assert nested.dvid_levels == data.dvid_levels
    assert "conc" not in nested.table.columns and nested.roles["DV"] == "DV"
    kept = nested.records.loc[nested.table["ORIG_ROW"].notna().to_numpy()]
    rows = nested.table["ORIG_ROW"].dropna().astype(int).to_numpy()
    # EVID as read, but for the reset-and-dose that starts a later subject of a site.
    evid = kept["evid"].to_numpy()
    assert evid.tolist().count(4) == 1
    np.testing.assert_array_equal(
        np.where(evid == 4, 1, evid), data.records["evid"].to_numpy()[rows]
    )
    for field in ("mdv", "amt", "dv", "dvid", "cens", "limit"):
        np.testing.assert_array_equal(
            kept[field].to_numpy(), data.records[field].to_numpy()[rows], err_msg=field
        )
