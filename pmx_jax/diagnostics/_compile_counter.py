"""A count of XLA compilations in this process, fed by ``jax.monitoring``:
the bootstrap records it around each refit to show that the replicates reuse
the compiled estimation step of the original fit."""

from __future__ import annotations

from typing import Any

import jax

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_compilations = [0]
_listening = [False]


def _on_event(event: str, duration: float, **_: Any) -> None:
    if event == _BACKEND_COMPILE:
        _compilations[0] += 1


def compilation_count() -> int:
    """XLA compilations in this process since the first call (a counter fed by
    ``jax.monitoring``): the difference between two calls is the number of
    compilations in between."""
    if not _listening[0]:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _listening[0] = True
    return _compilations[0]
