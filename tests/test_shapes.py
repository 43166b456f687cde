"""Shape buckets (``pmx_jax._shapes``) and what they are for: a dataset of
the same model and bucket reuses the compiled fit (nothing compiles), and
padding changes no result."""

from __future__ import annotations

import numpy as np
import pytest

import pmx_jax as pmx
from pmx_jax._shapes import bucket, doses_bucket, records_bucket, subjects_bucket
from pmx_jax.likelihood import make_problem, prepare


def test_the_ladder_pads_by_less_than_a_quarter():
    sizes = np.arange(1, 70_000)
    padded = np.array([bucket(n, minimum=8, per_octave=4) for n in sizes])
    assert np.all(padded >= sizes)
    assert np.all(np.diff(padded) >= 0)  # monotone: a larger dataset never pads to less
    above = sizes > 8
    assert np.max((padded[above] - sizes[above]) / sizes[above]) < 0.25
    assert set(padded[~above]) == {8}
    # Few distinct sizes: 4 per doubling.
    assert len(set(padded[(sizes > 1024) & (sizes <= 2048)])) == 4


def test_the_stated_examples():
    # The table in the module docstring.
    assert [subjects_bucket(n) for n in (12, 33, 1000, 10_000)] == [32, 40, 1024, 10240]
    assert [records_bucket(n) for n in (12, 13, 71)] == [12, 14, 80]
    assert [doses_bucket(n) for n in (1, 5, 9, 30)] == [1, 5, 10, 32]


@pytest.fixture(scope="module")
def data():
    return pmx.datasets.load("theophylline")


def test_datasets_of_one_bucket_share_the_compiled_fit(data):
    from pmx_jax.diagnostics._compile_counter import compilation_count

    model = pmx.library.Theophylline()
    first = pmx.fit(model, data.subset(data.ids[2:]), "focei", max_iterations=2, covariance=None)
    before = compilation_count()
    other = pmx.fit(model, data.subset(data.ids[:9]), "focei", max_iterations=2, covariance=None)
    assert compilation_count() == before
    assert first.n_subjects == 10 and other.n_subjects == 9


def test_padding_changes_no_result(data):
    # The OFV is a sum over subjects: each subject alone (padded with 31 copies
    # of itself to the bucket of 32) adds up to the OFV of all twelve; and
    # records padded from 12 to 20 per subject change nothing.
    model = pmx.library.Theophylline()
    total = float(pmx.ofv(model, data, "focei").ofv)
    problem = make_problem(model, data, "focei")
    assert problem.n_padded == 32 and problem.n_subjects == 12
    alone = [float(pmx.ofv(model, data.subset([i]), "focei").ofv) for i in data.ids]
    assert sum(alone) == pytest.approx(total, rel=1e-10)
    longer = prepare(model, data, pad_to=20)
    assert longer.subjects.time.shape == (12, 20)
    assert float(pmx.ofv(model, longer, "focei").ofv) == pytest.approx(total, rel=1e-10)
