"""Test configuration: float64 everywhere, and the reference-data location."""

import os
from pathlib import Path

import jax
import pytest

# The suite does not use the persistent compilation cache (pmx_jax turns it on
# in ~/.cache by default): runs stay independent of what earlier runs left
# there.  tests/test_compilation_cache.py tests it in subprocesses.
os.environ.setdefault("PMX_JAX_CACHE_DIR", "off")

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "standard")

REFDATA = Path(
    os.environ.get("PMX_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)


_MAPS = Path("/proc/self/maps")
_MAPS_LIMIT = 30_000  # half of Linux's default vm.max_map_count (65,530)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after a test module once the process holds
    more than 30,000 memory mappings.  XLA:CPU maps every compiled kernel into
    memory (about 1,200 mappings for one FOCEI objective of theophylline); the
    whole suite in one process would pass Linux's default limit of 65,530
    (vm.max_map_count), where XLA compilation crashes with a segmentation
    fault.  Clearing only past the threshold keeps the programs that later
    modules share (the same theophylline fit compiles once)."""
    yield
    if _MAPS.exists() and len(_MAPS.read_text().splitlines()) > _MAPS_LIMIT:
        jax.clear_caches()


# Modules that fit theophylline by FOCEI as the README does: under pytest-xdist
# they run in one worker, so that the compiled fit is shared (about 40 s each).
_THEOPHYLLINE_FOCEI = {
    "test_cli", "test_covariance_reference", "test_examples", "test_fit_theophylline",
    "test_plots", "test_report", "test_nonmem_results", "test_nonmem_tables",
}  # fmt: skip


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (the default run, see pyproject.toml) sends each test
    module to one worker, whole, so that its module-scoped fixtures run once;
    here the theophylline FOCEI modules also go together."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0].rpartition("/")[2].removesuffix(".py")
            return "theophylline_focei" if module in _THEOPHYLLINE_FOCEI else module

    return ModuleGroups(config, log)


@pytest.fixture(scope="session")
def refdata() -> Path:
    """The shared reference datasets; tests using them skip when absent."""
    if not REFDATA.is_dir():
        pytest.skip(f"reference data folder {REFDATA} not present")
    return REFDATA
