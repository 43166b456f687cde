"""A text progress line for the long resampling loops (bootstrap refits,
SIR's OFV evaluations)."""

from __future__ import annotations

import math
import sys
import time


class _Progress:
    """One self-overwriting line on stderr: done/total, rate and time left."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.started = time.perf_counter()
        self.last = -math.inf

    def update(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < 0.2:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed / done * (self.total - done) if done else math.nan
        left_text = f", about {left:.0f} s left" if done and done < self.total else ""
        sys.stderr.write(
            f"\r{self.label}: {done}/{self.total}{' ' + detail if detail else ''} "
            f"({elapsed:.0f} s{left_text})   "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
