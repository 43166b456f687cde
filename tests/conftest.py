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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.  XLA:CPU maps
    every compiled kernel into memory (about 1,200 mappings for one FOCEI
    objective of theophylline); over the whole suite one process would pass
    Linux's default limit of 65,530 mappings (vm.max_map_count), where XLA
    crashes with a segmentation fault.  Modules rarely share programs, so
    little is recompiled."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def refdata() -> Path:
    """The shared reference datasets; tests using them skip when absent."""
    if not REFDATA.is_dir():
        pytest.skip(f"reference data folder {REFDATA} not present")
    return REFDATA
