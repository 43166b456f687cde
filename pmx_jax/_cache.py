"""JAX's persistent compilation cache, on by default.

Compiling the objective of a population model takes tens of seconds on a CPU;
the compiled programs are kept on disk so that the next run of the same job (a
new process, the same model and data shapes) loads them instead.  The folder is
``$XDG_CACHE_HOME/pmx_jax/jax`` (``~/.cache/pmx_jax/jax``); the environment
variable ``PMX_JAX_CACHE_DIR`` moves it, and ``PMX_JAX_CACHE_DIR=off`` turns
the cache off.  The folder is kept under 2 GB, least recently used programs
deleted first.  A cache folder the user has already given JAX
(``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is left as it is.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import jax

ENVIRONMENT_VARIABLE = "PMX_JAX_CACHE_DIR"
OFF = ("off", "0", "false", "no", "none")
#: Size of the default folder, least recently used programs deleted first (a
#: theophylline FOCEI fit with its covariance step keeps about 3 MB).
MAX_BYTES = 2 * 1024**3


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pmx_jax" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled programs in ``path`` (default: ``PMX_JAX_CACHE_DIR`` or
    :func:`default_cache_dir`); returns the folder in use, or None when the
    cache is off or its folder cannot be written (then nothing is cached)."""
    given = jax.config.jax_compilation_cache_dir
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
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program, not only those that took a second to compile: a job compiles
    # hundreds of small ones (data transfers, the covariance step's pieces).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if jax.config.jax_compilation_cache_max_size < 0 and importlib.util.find_spec("filelock"):
        # JAX bounds the folder only with filelock (without it every read fails).
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return folder
