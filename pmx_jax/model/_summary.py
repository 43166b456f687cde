"""A NONMEM-flavoured text summary of a model (its ``repr``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._parameters import Omega, Theta, is_traced

if TYPE_CHECKING:
    from ._model import Model


def _number(x: float) -> str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:.6g}"


def _theta_row(name: str, theta: Theta) -> list[str]:
    value = "<traced>" if is_traced(theta.value) else _number(float(np.asarray(theta.value)))
    bounds = ""
    if math.isfinite(theta.lower) or math.isfinite(theta.upper):
        bounds = f"({_number(theta.lower)}, {_number(theta.upper)})"
    flags = ["FIX"] * theta.fixed
    if theta.prior is not None:
        flags.append(f"prior {type(theta.prior.distribution).__name__}")
    return [name, value, bounds, " ".join(flags)]


def _cv_percent(variance: float) -> str:
    # CV of a log-normally distributed parameter exp(theta + eta).
    if not variance > 0:
        return ""
    return f"CV {100.0 * math.sqrt(math.expm1(variance)):.1f}%"


def _omega_rows(name: str, block: Omega) -> list[list[str]]:
    kind = ("diag" if block.diagonal else "block") + " IOV" * block.occasion
    kind += " FIX" * block.fixed
    if is_traced(block.matrix):
        return [[name, kind, ", ".join(block.names), "<traced>", ""]]
    m = np.asarray(block.matrix)
    rows = []
    for i, eta in enumerate(block.names):
        # Lower triangle, one row per eta, as NONMEM prints $OMEGA BLOCK.
        values = [m[i, i]] if block.diagonal else list(m[i, : i + 1])
        rows.append(
            [
                name if i == 0 else "",
                kind if i == 0 else "",
                eta,
                "  ".join(_number(float(v)) for v in values),
                _cv_percent(float(m[i, i])),
            ]
        )
    return rows


def _table(label: str, rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        lines.append(f"  {label if i == 0 else ' ' * len(label)}  {'  '.join(cells)}".rstrip())
    return lines


def model_summary(model: Model) -> str:
    """Class name and dynamics, then a THETA table (value, bounds, FIX) and the
    OMEGA blocks (variances, lower triangle for blocks, CV% for log-normal
    parameters)."""
    dynamics = getattr(model, "dynamics", None)
    if dynamics is None:
        dyn = "?"
    else:
        dyn = f"{type(dynamics).__name__}({', '.join(getattr(dynamics, 'compartments', ()))})"
    lines = [f"{type(model).__name__}(dynamics={dyn})"]
    lines += _table("THETA", [_theta_row(n, t) for n, t in model.thetas().items()])
    lines += _table("OMEGA", [r for n, b in model.omega_blocks() for r in _omega_rows(n, b)])
    return "\n".join(lines)
