"""Test configuration: float64 everywhere, and the reference-data location."""

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "standard")

REFDATA = Path(
    os.environ.get("PMX_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)


@pytest.fixture(scope="session")
def refdata() -> Path:
    """The shared reference datasets; tests using them skip when absent."""
    if not REFDATA.is_dir():
        pytest.skip(f"reference data folder {REFDATA} not present")
    return REFDATA
