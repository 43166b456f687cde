"""Checks shared by the fit tests."""

import pytest

import pmx_jax as pmx


def check_reports_its_own_ofv(result):
    """The OFV a fit reports is a fresh ``pmx.ofv`` of the model it returns
    (global EBE search, no warm start), to 1e-6."""
    fresh = pmx.ofv(result.model, result.problem, result.method, ebe_search=result.ebe_search)
    assert result.ofv == pytest.approx(float(fresh.ofv), abs=1e-6)
