"""Refusing results that cannot fit in memory, before building them.

An array of 10^6 subjects x 337 records is allocated lazily by the operating
system, so a result that does not fit is found out only when it is filled, and
the process is killed without a message.  Callers estimate the bytes first and
ask :func:`check_fits`.
"""

from __future__ import annotations

import os

#: Share of the memory available now that one result may take.
SHARE = 0.75


class ResultTooLargeError(MemoryError):
    """A result would not fit in the memory available; the message says how to stream it."""


def available_bytes() -> int | None:
    """Memory available to new allocations (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB"


def check_fits(n_bytes: float, what: str, advice: str) -> None:
    """Raise :class:`ResultTooLargeError` if ``n_bytes`` exceed :data:`SHARE` of the
    memory available now."""
    free = available_bytes()
    if free is None or n_bytes <= SHARE * free:
        return
    raise ResultTooLargeError(
        f"{what} would take about {gigabytes(n_bytes)}, more than the {gigabytes(SHARE * free)} "
        f"this machine can give it ({gigabytes(free)} available). {advice}"
    )
