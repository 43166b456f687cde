"""The M3 likelihood evaluated at the censored observations only
(``Prepared.censored_record``, ``likelihood/_kernel.py:
_censored_log_likelihood``) against its evaluation at every record: the
same per-record log-likelihoods and the same derivatives, for censoring
below and above a limit and within an interval, on log and linear scales;
and which data get the list."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pmx_jax as pmx
from pmx_jax.likelihood import prepare
from pmx_jax.likelihood._kernel import record_terms
from pmx_jax.likelihood._prepare import censored_records


class Oral(pmx.Model):
    tka: pmx.Theta = pmx.theta(0.3)
    tcl: pmx.Theta = pmx.theta(1.0)
    tv: pmx.Theta = pmx.theta(3.0)
    add: pmx.Theta = pmx.theta(0.2, lower=0.0)
    prop: pmx.Theta = pmx.theta(0.15, lower=0.0)
    iiv: pmx.Omega = pmx.omega(ka=0.1, cl=0.1, v=0.05)
    dynamics = pmx.pk.OneCompartmentOral()

    def individual(self, eta, cov):
        return dict(
            ka=jnp.exp(self.tka + eta.ka),
            cl=jnp.exp(self.tcl + eta.cl),
            v=jnp.exp(self.tv + eta.v),
        )

    def observe(self, amounts, p):
        return pmx.Combined2(amounts.central / p["v"], self.add, self.prop)


class OralLog(Oral):
    def observe(self, amounts, p):
        return pmx.Exponential(amounts.central / p["v"], self.prop)


def _table(n_subjects: int = 4, n_samples: int = 20) -> pd.DataFrame:
    """Two doses per subject; subject 1 has three records below 0.6 mg/L,
    subject 2 one above 1.2 mg/L, subject 3 one in an interval (LIMIT) and
    one below; subject 4 none."""
    rows = []
    times = np.linspace(0.5, 47.0, n_samples)
    for i in range(1, n_subjects + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=100.0, EVID=1, DV=np.nan, CENS=0, LIMIT=np.nan))
        rows.append(dict(ID=i, TIME=24.0, AMT=100.0, EVID=1, DV=np.nan, CENS=0, LIMIT=np.nan))
        for k, t in enumerate(times):
            dv, cens, limit = 0.9 + 0.02 * k + 0.1 * i, 0, np.nan
            if i == 1 and k in (3, 11, 19):
                dv, cens = 0.6, 1
            if i == 2 and k == 5:
                dv, cens = 1.2, -1
            if i == 3 and k == 7:
                dv, cens, limit = 0.6, 1, 0.1
            if i == 3 and k == 17:
                dv, cens = 0.6, 1
            rows.append(dict(ID=i, TIME=t, AMT=0.0, EVID=0, DV=dv, CENS=cens, LIMIT=limit))
    table = pd.DataFrame(rows).sort_values(["ID", "TIME"], kind="stable")
    table["CMT"] = np.where(table.EVID == 1, 1, 2)
    return table.reset_index(drop=True)


@pytest.mark.parametrize("model", [Oral(), OralLog()], ids=["combined", "log"])
def test_censored_records_only_give_the_same_likelihood_and_derivatives(model):
    prepared = prepare(model, pmx.read_nonmem(_table()))
    assert prepared.censored_record is not None
    every = dataclasses.replace(prepared, censored_record=None, censored_valid=None)
    eta = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.3, (4, 3)))
    kinds = ("below", "above", "interval")

    def loglik(source, theta, eta):
        names = ("tka", "tcl", "tv", "add", "prop")
        m = model.with_values(**dict(zip(names, theta, strict=True)))
        data = source.subject_data()
        return jax.vmap(lambda d, e: record_terms(m, d, e, jnp.zeros((1, 0)), kinds))(
            data, eta
        ).log_likelihood

    # The residual error's THETAs too: each censored entry depends on them
    # directly, not through the record it is picked from.
    theta = jnp.asarray([0.3, 1.0, 3.0, 0.2, 0.15])
    weights = jnp.asarray(np.random.default_rng(1).uniform(size=np.shape(prepared.subjects.time)))

    @eqx.filter_jit
    def evaluate(source):
        """Per-record log-likelihoods, a gradient in the THETAs and the etas,
        and each subject's Hessian in its etas (Laplace, SAEM's information):
        every subject has padding entries in the list (subject 4 only those).
        Subjects are independent, so the Hessian of the sum in all etas is
        block-diagonal and its diagonal blocks are the subjects' Hessians."""
        values = loglik(source, theta, eta)
        gradient = jax.grad(lambda t, e: jnp.sum(weights * loglik(source, t, e)), argnums=(0, 1))(
            theta, eta
        )
        hessian = jax.hessian(lambda e: jnp.sum(loglik(source, theta, e)))(eta)
        blocks = jnp.stack([hessian[i, :, i, :] for i in range(eta.shape[0])])
        return values, gradient, blocks

    (listed, listed_g, listed_h), (full, full_g, full_h) = evaluate(prepared), evaluate(every)
    listed, full = np.asarray(listed), np.asarray(full)
    assert np.all(np.isfinite(full))
    np.testing.assert_allclose(listed, full, rtol=1e-13, atol=1e-13)
    # Every censored record's entry is an M3 probability (log P <= 0) and changed
    # with the list: the test sees the censored records.
    censored = np.asarray(prepared.subjects.is_obs) & (np.asarray(prepared.subjects.cens) != 0)
    assert censored.sum() == 6 and np.all(full[censored] <= 0.0)

    for a, b in zip(listed_g, full_g, strict=True):
        assert np.all(np.isfinite(np.asarray(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-12)

    assert np.all(np.isfinite(np.asarray(full_h)))
    np.testing.assert_allclose(np.asarray(listed_h), np.asarray(full_h), rtol=1e-10, atol=1e-10)


def test_which_data_list_their_censored_records():
    data = pmx.read_nonmem(_table())
    subjects = prepare(Oral(), data).subjects
    index, valid = censored_records(subjects, buckets=False)
    index, valid = np.asarray(index), np.asarray(valid)
    assert index.shape == (4, 3)  # subject 1 has the most: three
    cens, time = np.asarray(subjects.cens), np.asarray(subjects.time)
    for i in range(4):
        expected = np.flatnonzero(cens[i] != 0)
        assert index[i][valid[i]].tolist() == expected.tolist()
    assert time[0][index[0]].tolist() == pytest.approx([7.8421, 27.4211, 47.0], abs=1e-4)
    # Nothing censored: no list.
    none = prepare(Oral(), pmx.read_nonmem(_table().assign(CENS=0, LIMIT=np.nan)))
    assert none.censored_record is None
    # Censored records filling more than a quarter of the record slots: no list.
    crowded = _table(n_samples=8)
    crowded.loc[(crowded.ID == 1) & (crowded.EVID == 0), "CENS"] = 1
    assert prepare(Oral(), pmx.read_nonmem(crowded)).censored_record is None
