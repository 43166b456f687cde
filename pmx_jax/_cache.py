"""JAX's persistent compilation cache, on by default, and the XLA options that
shorten compilation on a CPU.

Compiling the objective of a population model takes seconds to tens of
seconds on a CPU; the compiled programs are kept on disk so that the next run
of the same job (a new process, the same model and data shapes) loads them
instead.  The folder is ``$XDG_CACHE_HOME/pmx_jax/jax``
(``~/.cache/pmx_jax/jax``); the environment variable ``PMX_JAX_CACHE_DIR``
moves it, and ``PMX_JAX_CACHE_DIR=off`` turns the cache off.  The folder is
kept under 2 GB, least recently used programs deleted first.  A cache folder
the user has already given JAX (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config``) is left as it is.

XLA's CPU "fusion emitters" (the default code generator of recent jaxlib)
compile the event engine's long chains of small fusions slowly: with
``--xla_cpu_use_fusion_emitters=false`` the theophylline FOCEI programs
compiled in a third less time (25.3 against 16.9 s of XLA time, summed over
the programs of a fit, with ``jax.monitoring``) and ran as fast.
It is added to ``XLA_FLAGS`` unless that already sets it, or
``PMX_JAX_XLA_FLAGS=off``; it acts only on CPU programs.

On an installation without an accelerator plugin, XLA writes two error lines
of about 2.5 KB to the terminal for every program it reads back from the
persistent cache (a CPU feature check that counts LLVM tuning flags as
instruction sets, openxla/xla#44565; the program loads and runs correctly):
some 80 lines after a warm theophylline fit.  There, unless
``TF_CPP_MIN_LOG_LEVEL`` is set, XLA's C++ log is limited to fatal messages
(errors reach Python as exceptions).  Where a GPU or TPU plugin is installed
its start-up messages matter, and the log is left as it is.

Nothing here imports JAX: where JAX is not loaded yet, the options go to the
environment variables JAX reads when it loads (so ``import pmx_jax`` stays
quick and the options hold whichever module loads JAX first).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

ENVIRONMENT_VARIABLE = "PMX_JAX_CACHE_DIR"
OFF = ("off", "0", "false", "no", "none")
#: Size of the default folder, least recently used programs deleted first (a
#: theophylline FOCEI fit with its covariance step keeps about 3 MB).
MAX_BYTES = 2 * 1024**3
#: XLA options for faster CPU compilation (see the module notes), with the
#: first jaxlib version known to have them (older ones abort on unknown flags).
XLA_CPU_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)
_XLA_FLAGS_SINCE = (0, 8)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pmx_jax" / "jax"


def _jax_option(name: str) -> Any:
    """A JAX option's value: from ``jax.config`` when JAX is loaded, else from
    its environment variable (None when unset)."""
    if "jax" in sys.modules:
        return getattr(sys.modules["jax"].config, name)
    return os.environ.get(name.upper())


def _set_jax_option(name: str, value: Any) -> None:
    if "jax" in sys.modules:
        sys.modules["jax"].config.update(name, value)
    else:
        os.environ[name.upper()] = str(value)


def enable_x64() -> None:
    """JAX's 64-bit mode (unless ``PMX_JAX_X64=0``)."""
    if os.environ.get("PMX_JAX_X64", "1") != "0":
        _set_jax_option("jax_enable_x64", True)


def faster_cpu_compilation() -> bool:
    """Add :data:`XLA_CPU_FLAGS` to ``XLA_FLAGS`` (see the module notes); False
    when they are not added (turned off, already set, or an older jaxlib)."""
    if os.environ.get("PMX_JAX_XLA_FLAGS", "").strip().lower() in OFF:
        return False
    if _jaxlib_version() < _XLA_FLAGS_SINCE:
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    added = [f for f in XLA_CPU_FLAGS if f.split("=")[0] not in flags]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return bool(added)


def _jaxlib_version() -> tuple[int, ...]:
    """(major, minor) of the installed jaxlib; (0,) when unknown."""
    try:
        return tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0,)


_ACCELERATOR_PLUGINS = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu")


def quiet_cache_reads() -> bool:
    """Set ``TF_CPP_MIN_LOG_LEVEL=3`` where XLA would log every cache read as
    an error (see the module notes); False when it is not set (already set by
    the user, JAX already loaded, or an accelerator plugin installed)."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "jax" in sys.modules:
        return False
    if any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS):
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return True


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled programs in ``path`` (default: ``PMX_JAX_CACHE_DIR`` or
    :func:`default_cache_dir`); returns the folder in use, or None when the
    cache is off or its folder cannot be written (then nothing is cached)."""
    given = _jax_option("jax_compilation_cache_dir")
    if path is None and given:
        return Path(given)
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "")
    if path is None and setting.strip().lower() in OFF and setting.strip():
        return None
    try:
        folder = Path(path or setting or default_cache_dir()).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # no home folder, or one that cannot be written
        return None
    if not os.access(folder, os.W_OK):
        return None
    _set_jax_option("jax_compilation_cache_dir", str(folder))
    # Every program, not only those that took a second to compile: a job compiles
    # hundreds of small ones (data transfers, the covariance step's pieces).
    _set_jax_option("jax_persistent_cache_min_compile_time_secs", 0.0)
    size = _jax_option("jax_compilation_cache_max_size")
    if (size is None or int(size) < 0) and importlib.util.find_spec("filelock"):
        # JAX bounds the folder only with filelock (without it every read fails).
        _set_jax_option("jax_compilation_cache_max_size", MAX_BYTES)
    return folder
