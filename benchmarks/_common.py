"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import jax


def machine() -> dict:
    """JAX backend and versions, CPU count, load average, commit and date."""
    device = jax.devices()[0]
    return dict(
        jax_version=jax.__version__,
        jaxlib_version=_jaxlib_version(),
        backend=jax.default_backend(),
        device_kind=device.device_kind,
        n_devices=jax.device_count(),
        cpu_count=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        platform=platform.platform(),
        load_average=load_average(),
        pmx_jax_commit=git_commit(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def load_average():
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def git_commit():
    """HEAD of the checkout (with ``+dirty`` when pmx_jax/ has local changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "pmx_jax"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover - informational only
        return None
