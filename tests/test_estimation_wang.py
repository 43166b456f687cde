"""R1 (REFERENCE_CASES.md): Wang (2007)'s likelihood approximations at fixed
parameters, the EBE statuses on the same data, and the OFV gradient.

``y = 10 exp(-ke t)``, ``ke = 0.5 exp(eta)``, omega^2 = 0.04, residual variance
0.1: a one-compartment IV bolus of 10 with V = 1.  The reference values are
printed to 3 decimals (Laplace: 4), so the tolerance is 1e-3 on the OFV.

One model class covers the proportional, additive and combined2 rows
(``Var = add^2 + prop^2 f^2`` with ``add`` or ``prop`` set to 0), so each method
compiles once for all of them.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree

import pmx_jax as pmx
from pmx_jax.estimation import EBEStatus, NonFiniteOFVWarning, ofv
from pmx_jax.likelihood import prepare

SD = math.sqrt(0.1)
ERRORS = {
    "proportional": dict(add=0.0, prop=SD),
    "additive": dict(add=SD, prop=0.0),
    "combined2": dict(add=SD, prop=SD),
}
# Wang 2007 Table 2 (FOCEI proportional: NONMEM) and the independent values of R1.
REFERENCE = {
    ("proportional", "fo"): 39.213,
    ("proportional", "foce"): 39.207,
    ("proportional", "focei"): 39.458,
    ("proportional", "laplace"): 39.2268,
    ("additive", "fo"): 0.026,
    ("additive", "foce"): -2.059,
    ("additive", "focei"): -2.059,
    ("additive", "laplace"): -1.9361,
    ("combined2", "focei"): 39.735,
}


class Wang(pmx.Model):
    tke: pmx.Theta = pmx.theta(0.5, lower=0.0)
    add: pmx.Theta = pmx.theta(SD)
    prop: pmx.Theta = pmx.theta(SD)
    iiv: pmx.Omega = pmx.omega(ke=0.04)
    dynamics = pmx.pk.OneCompartment()

    def individual(self, eta, cov):
        return dict(cl=self.tke * jnp.exp(eta.ke), v=jnp.asarray(1.0))

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add, self.prop)


class WangCombined1(Wang):
    def observe(self, amounts, p):
        return pmx.Combined1(amounts.central / p["v"], self.add, self.prop)


def wang_table(refdata, *, dose_time=None):
    """Wang2007.csv with the dose of 10 at time 0 added (or at ``dose_time``
    for the subjects it maps)."""
    obs = pd.read_csv(refdata / "Wang2007.csv").rename(columns={"Time": "TIME", "Y": "DV"})
    obs["AMT"] = 0.0
    doses = pd.DataFrame({"ID": range(1, 11), "TIME": 0.0, "DV": np.nan, "AMT": 10.0})
    for subject, time in (dose_time or {}).items():
        doses.loc[doses.ID == subject, "TIME"] = time
    table = pd.concat([doses, obs], ignore_index=True)
    return table.sort_values(["ID", "TIME", "AMT"], ascending=[True, True, False], kind="stable")


@functools.cache
def _prepared(refdata):
    return prepare(Wang(), pmx.read_nonmem(wang_table(refdata)))


@pytest.fixture
def wang(refdata):
    # The batched data is built once per session; compiled objectives are cached
    # by equinox for every test that uses the same model class and shapes.
    return Wang(), _prepared(refdata)


@pytest.mark.parametrize("error", ["proportional", "additive", "combined2"])
def test_focei_matches_reference(wang, error):
    model, data = wang
    result = ofv(model.with_values(**ERRORS[error]), data, "focei")
    assert np.all(result.status == EBEStatus.CONVERGED)
    assert abs(float(result.ofv) - REFERENCE[error, "focei"]) < 1e-3


def test_focei_per_subject_matches_nonmem_table(wang, refdata):
    model, data = wang
    result = ofv(model.with_values(**ERRORS["proportional"]), data, "focei")
    table = pd.read_csv(refdata / "Wang2007_NONMEM_focei_prop_table.csv")
    nonmem = table.groupby("ID").first()
    # OBJI is printed with 5 significant digits, ETA1 likewise.
    np.testing.assert_allclose(result.per_subject, nonmem["OBJI"], atol=1e-3)
    np.testing.assert_allclose(result.eta[:, 0], nonmem["ETA1"], rtol=1e-4, atol=1e-6)
    assert abs(float(result.ofv) - nonmem["OBJI"].sum()) < 1e-3


@pytest.mark.parametrize("error", ["proportional", "additive"])
def test_fo_matches_reference(wang, error):
    model, data = wang
    result = ofv(model.with_values(**ERRORS[error]), data, "fo")
    assert abs(float(result.ofv) - REFERENCE[error, "fo"]) < 1e-3
    np.testing.assert_array_equal(result.ebes, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["foce", "laplace"])
@pytest.mark.parametrize("error", ["proportional", "additive"])
def test_foce_and_laplace_match_reference(wang, error, method):
    model, data = wang
    result = ofv(model.with_values(**ERRORS[error]), data, method)
    assert np.all(result.status == EBEStatus.CONVERGED)
    assert abs(float(result.ofv) - REFERENCE[error, method]) < 1e-3


@pytest.mark.slow
def test_focei_combined1_matches_reference(refdata):
    model = WangCombined1()
    result = ofv(model, pmx.read_nonmem(wang_table(refdata)), "focei")
    assert abs(float(result.ofv) - 43.554) < 1e-3


# -- EBE statuses -----------------------------------------------------------------


def test_subject_without_observations_has_zero_ebe(refdata, wang):
    model, _ = wang
    table = wang_table(refdata)
    table["MDV"] = np.where(table["ID"] == 3, 1, np.where(table["AMT"] > 0, 1, 0))
    data = prepare(model, pmx.read_nonmem(table))
    result = ofv(model.with_values(**ERRORS["proportional"]), data, "focei")
    assert int(result.status[2]) == EBEStatus.CONVERGED
    assert float(result.eta[2, 0]) == 0.0
    # No data: log det(Omega) + log det(Omega^-1) = 0.
    assert abs(float(result.per_subject[2])) < 1e-12


@pytest.mark.parametrize("start", [5.0, -5.0, 40.0, 1e3, np.nan])
def test_pathological_warm_start(wang, start):
    model, data = wang
    model = model.with_values(**ERRORS["proportional"])
    reference = ofv(model, data, "focei")
    init = np.zeros((10, 1))
    init[[0, 4], 0] = start
    result = ofv(model, data, "focei", ebe_init=jnp.asarray(init))
    assert np.all(result.status == EBEStatus.CONVERGED)
    np.testing.assert_allclose(result.eta, reference.eta, atol=1e-6)
    assert abs(float(result.ofv) - float(reference.ofv)) < 1e-6


def test_subject_with_undefined_likelihood_is_named_not_nan(refdata, wang):
    # Subject 4's dose comes after its samples: IPRED = 0 there, and a purely
    # proportional error has zero variance, so no eta gives a finite likelihood.
    model, _ = wang
    data = prepare(model, pmx.read_nonmem(wang_table(refdata, dose_time={4: 2.0})))
    # The non-finite OFV is announced with the subject (prepared data keeps no
    # IDs: the subject is named by its position).
    with pytest.warns(NonFiniteOFVWarning, match=r"ID #4 \(nonfinite\)"):
        result = ofv(model.with_values(**ERRORS["proportional"]), data, "focei")
    status = np.asarray(result.status)
    assert status[3] == EBEStatus.NONFINITE
    assert np.all(np.delete(status, 3) == EBEStatus.CONVERGED)
    assert np.all(np.isfinite(result.ebes))
    assert float(result.per_subject[3]) == np.inf and float(result.ofv) == np.inf


# -- gradient -----------------------------------------------------------------------


def test_focei_gradient_matches_finite_differences(wang):
    model, data = wang
    flat, unravel = ravel_pytree(model.to_unconstrained())

    def objective(x):
        return ofv(model.from_unconstrained(unravel(x)), data, "focei", tolerance=1e-16).ofv

    gradient = np.asarray(jax.grad(objective)(flat))
    # Central differences with h = 1e-5 on the unconstrained scale: truncation
    # error ~h^2 |f'''| ~ 1e-9, rounding ~1e-16 |f| / h ~ 1e-9; the EBEs are
    # re-solved at each point to a Newton decrement of 1e-16 (relative), so their
    # error adds ~1e-15 to the OFV.
    h = 1e-5
    steps = np.eye(flat.size) * h
    fd = np.array([(objective(flat + e) - objective(flat - e)) / (2 * h) for e in steps])
    np.testing.assert_allclose(gradient, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["focei", pytest.param("laplace", marks=pytest.mark.slow)])
def test_chunked_objective_equals_unchunked(wang, method):
    # 10 subjects in chunks of 4: 3 chunks, the last padded with 2 copies of
    # subject 10 that must not count.
    model, data = wang
    model = model.with_values(**ERRORS["proportional"])
    whole = ofv(model, data, method)
    chunked = ofv(model, data, method, chunk_size=4)
    assert chunked.per_subject.shape == (10,)
    np.testing.assert_allclose(chunked.per_subject, whole.per_subject, rtol=1e-12)
    assert float(chunked.ofv) == pytest.approx(float(whole.ofv), rel=1e-12)


@pytest.mark.slow
def test_chunked_gradient_equals_unchunked(wang):
    model, data = wang
    model = model.with_values(**ERRORS["proportional"])

    def total(t, **kw):
        return ofv(model.with_values(tke=t), data, "focei", **kw).ofv

    g_whole = jax.grad(total)(0.5)
    g_chunk = jax.grad(lambda t: total(t, chunk_size=4))(0.5)
    assert float(g_chunk) == pytest.approx(float(g_whole), rel=1e-10)
