"""Progress bars for the long loops (bootstrap refits, SIR's OFV
evaluations, SAEM's iterations): tqdm on stderr."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class _Progress:
    """A tqdm bar of ``total`` steps; ``update(done, detail)`` moves it to
    ``done`` with ``detail`` after it.  Nothing is shown when not ``enabled``."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total = label, total
        self.bar = tqdm(
            total=total,
            desc=f"{label}: 0/{total}",
            disable=not enabled,
            file=sys.stderr,
            mininterval=0.2,
            bar_format="{desc} |{bar:20}| {elapsed}<{remaining}",
            leave=True,
        )

    def update(self, done: int, detail: str = "") -> None:
        """``label: done/total detail |bar| elapsed<remaining``."""
        if self.bar.disable:
            return
        suffix = f" {detail}" if detail else ""
        self.bar.set_description_str(f"{self.label}: {done}/{self.total}{suffix}", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
