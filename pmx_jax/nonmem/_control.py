"""Read a NONMEM control stream into a pmx model, dataset and estimation
settings: :func:`read_model`.

Supported (everything else is refused with the record, line and construct):

* records (abbreviations accepted, case-insensitive, ``;`` comments):
  ``$PROBLEM``, ``$INPUT``, ``$DATA``, ``$SUBROUTINES``, ``$PK``, ``$ERROR``,
  ``$PRED``, ``$MODEL``, ``$DES``, ``$THETA``, ``$OMEGA``, ``$SIGMA``, ``$ESTIMATION``,
  ``$COVARIANCE`` (options kept in the settings); ``$TABLE``, ``$SCATTER`` and
  ``$SIZES`` are read and ignored.
* ``$INPUT``: columns by position, ``A=B`` synonyms (the NONMEM reserved name
  is the column's name, the other one an alias in the code), ``DROP``/``SKIP``.
* ``$DATA file IGNORE=c | IGNORE=(list) ACCEPT=(list)``: the file is read by
  position without a header; ``IGNORE=@`` skips lines whose first non-blank
  character is alphabetic or ``@``, ``IGNORE=c`` lines starting with ``c``
  (default ``#``); ``(COL.EQ.x, ...)`` conditions with ``.EQ. .NE. .GT.
  .GE. .LT. .LE.`` (or ``= == /= > >= < <=``); IGNORE drops a record if any
  condition holds, ACCEPT keeps it if any holds.
* ``$THETA``: ``init``, ``(low, init)``, ``(low, init, up)``, ``FIX``;
  ``INF``/``-INF`` and bounds of magnitude >= 1e6 (NONMEM's defaults) are
  infinite.  Each THETA is field ``theta<n>``, labelled by its line's comment
  (``settings["theta_labels"]``).
* ``$OMEGA``: diagonal values (consecutive values with the same ``FIX`` status
  form one diagonal block field ``omega<k>``), ``BLOCK(n)`` (lower triangle,
  optional ``FIX``), ``DIAGONAL(n)``; etas are named ``eta1``, ``eta2``...
* ``$SIGMA``: diagonal variances, each a THETA field ``sigma<n>`` (lower bound
  0, fixed with ``FIX``); ``BLOCK(n>1)`` is refused.
* ``$SUBROUTINES ADVAN1/2`` (``TRANS1``: K [KA]; ``TRANS2``: CL V [KA]) and
  ``ADVAN3/4`` (``TRANS1``: K K12 K21 / K K23 K32 KA; ``TRANS4``: CL V1 Q V2 /
  CL V2 Q V3 KA) on the closed forms of :mod:`pmx_jax.pk`.  ``F`` in
  ``$ERROR`` is ``A(central)/S<central>`` (``S`` 1 when not assigned);
  ``F1``/``ALAG1``/``R1``/``D1``... assigned in ``$PK`` are the dose
  modifiers of the event engine.
* ``$SUBROUTINES ADVAN6/13`` with ``$MODEL COMP=(NAME [DEFOBS] [DEFDOSE])``
  and ``$DES`` (``DADT(n) = ...`` from ``A(n)`` and variables assigned in
  ``$PK``; THETA/ETA, data items and ``T`` in ``$DES`` are refused): an
  :class:`~pmx_jax.dynamics.AbstractODE` (pmx's default solver and
  tolerances; ``TOL`` is ignored); ``F`` uses the DEFOBS compartment (else
  the first).  A ``$DES`` linear in the amounts (``DADT = K A``, checked at
  random parameter and amount values) is solved exactly by the matrix
  exponential instead (:class:`pmx_jax.dynamics.LinearSystem`,
  ``settings["des_linear"]``), as NONMEM's ADVAN5/7 would.  Doses go where
  the data's CMT says (DEFDOSE is not read).
* abbreviated code (see :mod:`pmx_jax.nonmem._abbreviated`): ``THETA(n)``,
  ``ETA(n)``, ``EPS(n)`` (or ``ERR(n)``), ``A(n)`` in ``$ERROR``, data items
  (covariates by their ``$INPUT`` name or alias).  Record roles (TIME, DV,
  AMT, EVID, CMT...) are not covariates of a pmx model: they read as NaN, so
  statements such as ``IRES = DV - IPRED`` are harmless, and a model whose
  ``Y`` (or dynamics) depends on one is refused.
* ``Y``: Gaussian in the EPSs, linearised at EPS = 0 as NONMEM's FO/FOCE
  family does: mean ``Y(0)``, variance ``g' SIGMA g`` with ``g = dY/dEPS(0)``
  (exact for ``Y`` linear in the EPSs), as :class:`LinearisedNormal`.  A ``W``
  written as ``SQRT(...)`` that is 0 where ``F = 0`` (purely proportional)
  has an infinite derivative there: write ``W = THETA(k)*F`` instead.

Why a small reader of our own rather than pharmpy-core's NM-TRAN parser:
pharmpy turns the abbreviated code into a sympy model (its dependencies and
import time are a large part of a run, and its symbolic statements would
still have to be translated into JAX), whereas the subset NONMEM users
write in practice (assignments, IF blocks, the intrinsic functions) maps
directly onto ``jax.numpy`` expressions in a few hundred lines, with errors
that name our own record and line.  pharmpy-core stays a test client: it
reads the files of :mod:`pmx_jax.nonmem._results` back.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..data import read_nonmem
from ..dynamics import OneCompartment, OneCompartmentOral, Pred, TwoCompartment, TwoCompartmentOral
from ..dynamics._linear_system import LinearSystem
from ..model import Model, Omega, Theta, omega, omega_block, theta
from ..model._error import AbstractErrorModel
from ._abbreviated import ControlStreamError, Line, Program, parse_program

__all__ = ["ControlStreamError", "parse_control_stream", "read_model"]

# -- records -----------------------------------------------------------------

_RECORDS = (
    "PROBLEM INPUT DATA SUBROUTINES PK ERROR PRED THETA OMEGA SIGMA ESTIMATION "
    "COVARIANCE TABLE SCATTER SIZES DES MODEL ABBREVIATED PRIOR MIXTURE SIMULATION "
    "INFN AES AESINITIAL THETAI THETAR LEVEL ETAS PHIS MSFI NONPARAMETRIC ANNEAL BIND "
    "FORMAT TTDF OMIT CONTR SUPER CHAIN RCOV RCOVI DEFAULT WARNINGS TOL INDEX LABEL "
    "OLKJDF OVARF SLKJDF SVARF THETAP THETAPV OMEGAP OMEGAPD SIGMAP SIGMAPD"
).split()
_IGNORED = {"TABLE", "SCATTER", "SIZES"}
_HANDLED = {
    "PROBLEM",
    "INPUT",
    "DATA",
    "SUBROUTINES",
    "PK",
    "ERROR",
    "PRED",
    "THETA",
    "OMEGA",
    "SIGMA",
    "ESTIMATION",
    "COVARIANCE",
    "MODEL",
    "DES",
} | _IGNORED


@dataclass
class Record:
    name: str  # canonical, e.g. "ESTIMATION"
    written: str  # as written, e.g. "$EST"
    line: int
    lines: list[Line] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.written} (line {self.line})"

    def text(self) -> str:
        return " ".join(ln.text for ln in self.lines)


def _canonical(name: str) -> str | None:
    name = name.upper()
    if name in _RECORDS:
        return name
    if len(name) >= 3:
        matches = sorted((r for r in _RECORDS if r.startswith(name)), key=len)
        if matches:
            return matches[0]
    return None


_RECORD_RE = re.compile(r"^\s*\$([A-Za-z]+)(.*)$")


def parse_control_stream(text: str) -> list[Record]:
    """Split a control stream into records (comments removed, kept per line)."""
    records: list[Record] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        code, _, comment = raw.partition(";")
        comment = comment.strip()
        m = _RECORD_RE.match(code)
        if m:
            name = _canonical(m.group(1))
            if name is None:
                raise ControlStreamError(f"line {number}: unknown record ${m.group(1)}")
            records.append(Record(name, "$" + m.group(1).upper(), number))
            code = m.group(2)
        elif not records:
            if code.strip():
                raise ControlStreamError(f"line {number}: text before the first record: {raw!r}")
            continue
        records[-1].lines.append(Line(number, code.rstrip(), comment))
    return records


def _refuse(record: Record, what: str, line: int | None = None) -> ControlStreamError:
    at = f"{record.written} line {line if line is not None else record.line}"
    return ControlStreamError(f"{at}: {what}")


# -- $INPUT --------------------------------------------------------------------

# NONMEM's reserved data item names (a synonym A=B names the column by the
# reserved one) and pmx's record roles (not covariates).
_NM_RESERVED = {
    "ID", "L1", "L2", "DV", "MDV", "TIME", "DATE", "DAT1", "DAT2", "DAT3", "EVID", "AMT",
    "RATE", "SS", "II", "ADDL", "CMT", "PCMT", "CALL", "CONT", "MRG_", "RAW_", "RPT_",
}  # fmt: skip
_ROLES = {"ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "DVID"}


@dataclass
class InputColumn:
    name: str  # the column name given to pmx
    alias: str | None
    drop: bool


def _parse_input(record: Record) -> list[InputColumn]:
    columns = []
    for line in record.lines:
        for token in re.split(r"[\s,]+", line.text.strip()):
            if not token:
                continue
            token = token.upper()
            if "=" in token:
                a, _, b = token.partition("=")
                if not a or not b:
                    raise _refuse(record, f"cannot read the item {token!r}", line.number)
                if b in ("DROP", "SKIP"):
                    columns.append(InputColumn(a, None, True))
                elif a in ("DROP", "SKIP"):
                    columns.append(InputColumn(b, None, True))
                elif b in _NM_RESERVED and a not in _NM_RESERVED:
                    columns.append(InputColumn(b, a, False))
                else:
                    columns.append(InputColumn(a, b, False))
            elif token in ("DROP", "SKIP"):
                columns.append(InputColumn(f"_DROP{len(columns) + 1}", None, True))
            else:
                columns.append(InputColumn(token, None, False))
    for c in columns:
        if c.name in ("DATE", "DAT1", "DAT2", "DAT3") and not c.drop:
            raise _refuse(record, f"the date item {c.name} is not supported (drop it)")
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", c.name):
            raise _refuse(record, f"the item name {c.name!r} is not a valid name")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise _refuse(record, f"duplicate item names in {names}")
    return columns


# -- $DATA ----------------------------------------------------------------------

_CONDITION_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(\.EQ\.|\.NE\.|\.GT\.|\.GE\.|\.LT\.|\.LE\.|\.EQN\.|\.NEN\.|==|/=|>=|<=|=|>|<)\s*(.+?)\s*$",
    re.IGNORECASE,
)
_OPS = {
    ".EQ.": "eq", ".EQN.": "eq", "==": "eq", "=": "eq",
    ".NE.": "ne", ".NEN.": "ne", "/=": "ne",
    ".GT.": "gt", ">": "gt", ".GE.": "ge", ">=": "ge",
    ".LT.": "lt", "<": "lt", ".LE.": "le", "<=": "le",
}  # fmt: skip


@dataclass
class DataSpec:
    path: str | None
    ignore_char: str = "#"
    ignore: list[tuple[str, str, str]] = field(default_factory=list)
    accept: list[tuple[str, str, str]] = field(default_factory=list)


def _split_data_options(text: str) -> list[str]:
    """Tokens, keeping parenthesised lists (and quoted strings) whole."""
    tokens, i = [], 0
    text = text.strip()
    while i < len(text):
        if text[i] in " \t,":
            i += 1
            continue
        j = i
        while j < len(text) and text[j] not in " \t,":
            if text[j] == "(":
                k = text.find(")", j)
                j = len(text) if k < 0 else k + 1
                continue
            if text[j] in "'\"":
                k = text.find(text[j], j + 1)
                j = len(text) if k < 0 else k + 1
                continue
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


def _parse_data(record: Record) -> DataSpec:
    tokens = _split_data_options(record.text())
    if not tokens:
        raise _refuse(record, "no data file named")
    spec = DataSpec(tokens[0].strip("'\""))
    merged: list[str] = []
    for token in tokens[1:]:  # IGNORE (list) / ACCEPT (list) without '='
        if merged and merged[-1].upper() in ("IGNORE", "IGN", "ACCEPT", "ACC"):
            if token.startswith("("):
                merged[-1] += "=" + token
                continue
        merged.append(token)
    for token in merged:
        key, eq, value = token.partition("=")
        key = key.upper()
        if key in ("IGNORE", "IGN", "ACCEPT", "ACC") and eq:
            if value.startswith("("):
                if not value.endswith(")"):
                    raise _refuse(record, f"unbalanced parentheses in {token!r}")
                target = spec.ignore if key.startswith("IGN") else spec.accept
                for item in value[1:-1].split(","):
                    if not item.strip():
                        continue
                    m = _CONDITION_RE.match(item)
                    if not m:
                        raise _refuse(record, f"cannot read the condition {item.strip()!r}")
                    target.append((m.group(1).upper(), _OPS[m.group(2).upper()], m.group(3)))
            elif key.startswith("IGN"):
                char = value.strip("'\"")
                if len(char) != 1:
                    raise _refuse(record, f"IGNORE= takes one character, got {value!r}")
                spec.ignore_char = char
            else:
                raise _refuse(record, f"ACCEPT= takes a list of conditions, got {value!r}")
        elif key in ("NOWIDE", "WIDE", "NOREWIND", "REWIND", "NOOPEN", "CHECKOUT"):
            continue
        elif key == "NULL" and eq:
            continue
        else:
            raise _refuse(record, f"unsupported $DATA option {token!r}")
    if spec.ignore and spec.accept:
        raise _refuse(record, "IGNORE=(list) and ACCEPT=(list) cannot be combined")
    return spec


def _skip_line(line: str, char: str) -> bool:
    stripped = line.lstrip()
    if not stripped:
        return True
    first = stripped[0]
    if char == "@":
        # a quoted header ("ID","TIME",...) counts as alphabetic too
        quoted = first in "'\"" and stripped[1:2].isalpha()
        return first.isalpha() or first == "@" or quoted
    if char == "#":
        return line.startswith("#") or first == "#"
    return line.startswith(char) or first == char


def _as_number(x: Any) -> float | None:
    try:
        return float(str(x).strip().strip("'\""))
    except ValueError:
        return None


def _holds(value: Any, op: str, literal: str) -> bool:
    a, b = _as_number(value), _as_number(literal)
    if a is None or b is None:
        a, b = str(value).strip(), literal.strip().strip("'\"")
        if op not in ("eq", "ne"):
            return False
    return {
        "eq": a == b,
        "ne": a != b,
        "gt": a > b,
        "ge": a >= b,
        "lt": a < b,
        "le": a <= b,
    }[op]


def read_data_file(
    path: str | os.PathLike, spec: DataSpec, columns: list[InputColumn]
) -> pd.DataFrame:
    """The data file as NONMEM reads it: by position, header lines skipped by
    the IGNORE character, IGNORE/ACCEPT conditions applied, columns named from
    $INPUT, DROP columns removed."""
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        for raw in handle:
            line = raw.rstrip("\r\n")
            if _skip_line(line, spec.ignore_char):
                continue
            fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
            rows.append(fields)
    return _frame_from_rows(rows, spec, columns)


def _frame_from_rows(rows, spec: DataSpec, columns: list[InputColumn]) -> pd.DataFrame:
    n = len(columns)
    rows = [(list(r) + [""] * n)[:n] for r in rows]
    names = [c.name for c in columns]
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    lookup = {c.name: c.name for c in columns} | {c.alias: c.name for c in columns if c.alias}
    for conditions, keep_when in ((spec.ignore, False), (spec.accept, True)):
        if not conditions:
            continue
        hits = np.zeros(len(frame), dtype=bool)
        for column, op, literal in conditions:
            if column not in lookup:
                raise ControlStreamError(
                    f"$DATA: the condition on {column} names no $INPUT item; items are {names}"
                )
            values = frame[lookup[column]]
            hits |= np.array([_holds(v, op, literal) for v in values], dtype=bool)
        frame = frame[hits if keep_when else ~hits]
    frame = frame[[c.name for c in columns if not c.drop]].reset_index(drop=True)
    for name in frame.columns:
        cleaned = frame[name].map(lambda v: np.nan if str(v).strip() in ("", ".") else v)
        numeric = pd.to_numeric(cleaned, errors="coerce")
        if numeric.notna().sum() == cleaned.notna().sum():
            frame[name] = numeric
        else:
            frame[name] = cleaned
    return frame


# -- $THETA / $OMEGA / $SIGMA ------------------------------------------------------

_INIT_TOKEN_RE = re.compile(r"\([^)]*\)|[^\s,()]+")
_BIG = 1e6


def _number(text: str, record: Record, line: Line) -> float:
    t = text.strip().upper().replace("D", "E")
    if t in ("INF", "+INF"):
        return math.inf
    if t == "-INF":
        return -math.inf
    try:
        return float(t)
    except ValueError:
        raise _refuse(record, f"cannot read {text.strip()!r} as a number", line.number) from None


def _bound(x: float) -> float:
    return math.copysign(math.inf, x) if abs(x) >= _BIG else x


@dataclass
class ThetaSpec:
    init: float
    lower: float
    upper: float
    fixed: bool
    label: str


def _parse_thetas(record: Record) -> list[ThetaSpec]:
    out: list[ThetaSpec] = []
    for line in record.lines:
        for token in _INIT_TOKEN_RE.findall(line.text):
            upper = token.upper()
            if upper in ("FIX", "FIXED"):
                if not out:
                    raise _refuse(record, "FIX before any value", line.number)
                out[-1].fixed = True
                continue
            if token.startswith("("):
                inner = token[1:-1]
                fixed = bool(re.search(r"\bFIX(ED)?\b", inner, re.IGNORECASE))
                inner = re.sub(r"\bFIX(ED)?\b", " ", inner, flags=re.IGNORECASE)
                parts = [p for p in re.split(r"[\s,]+", inner.strip()) if p]
                if ",," in inner.replace(" ", ""):
                    raise _refuse(record, f"empty entry in {token!r}", line.number)
                values = [_number(p, record, line) for p in parts]
                if len(values) == 1:
                    lo, init, hi = -math.inf, values[0], math.inf
                elif len(values) == 2:
                    lo, init, hi = _bound(values[0]), values[1], math.inf
                elif len(values) == 3:
                    lo, init, hi = _bound(values[0]), values[1], _bound(values[2])
                else:
                    raise _refuse(record, f"cannot read {token!r}", line.number)
                out.append(ThetaSpec(init, lo, hi, fixed, line.comment))
            elif re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?", token):
                out.append(
                    ThetaSpec(
                        _number(token, record, line), -math.inf, math.inf, False, line.comment
                    )
                )
            else:
                raise _refuse(record, f"unsupported item {token!r}", line.number)
    if not out:
        raise _refuse(record, "no THETA values")
    return out


@dataclass
class BlockSpec:
    values: list[float]  # diagonal variances, or the lower triangle of a BLOCK
    size: int
    block: bool
    fixed: bool
    labels: list[str]


def _parse_variances(record: Record) -> list[BlockSpec]:
    """One $OMEGA / $SIGMA record: a BLOCK(n) or diagonal values (grouped by
    their FIX status)."""
    text = record.text()
    options = re.findall(r"\b(SD|STANDARD|CORRELATION|CHOLESKY|VALUES|UNINT|SAME)\b", text, re.I)
    if options:
        raise _refuse(record, f"the option {options[0].upper()} is not supported")
    block = re.search(r"\bBLOCK\s*\(\s*(\d+)\s*\)", text, re.I)
    diagonal = re.search(r"\bDIAG(?:ONAL)?\s*\(\s*(\d+)\s*\)", text, re.I)
    entries: list[tuple[float, bool, str]] = []
    for line in record.lines:
        code = re.sub(r"\b(BLOCK|DIAG(?:ONAL)?)\s*\(\s*\d+\s*\)", " ", line.text, flags=re.I)
        code = re.sub(r"\b(VARIANCE|COVARIANCE)\b", " ", code, flags=re.I)
        for token in _INIT_TOKEN_RE.findall(code):
            if token.upper() in ("FIX", "FIXED"):
                if not entries:
                    if block:
                        entries.append((math.nan, True, ""))  # BLOCK(n) FIX before values
                        continue
                    raise _refuse(record, "FIX before any value", line.number)
                value, _, label = entries[-1]
                entries[-1] = (value, True, label)
                continue
            inner = token[1:-1] if token.startswith("(") else token
            fixed = bool(re.search(r"\bFIX(ED)?\b", inner, re.I))
            inner = re.sub(r"\bFIX(ED)?\b", " ", inner, flags=re.I).strip()
            parts = [p for p in re.split(r"[\s,]+", inner) if p]
            if len(parts) != 1:
                raise _refuse(record, f"cannot read {token!r}", line.number)
            entries.append((_number(parts[0], record, line), fixed, line.comment))
    leading_fix = bool(entries) and math.isnan(entries[0][0])
    if leading_fix:
        entries = entries[1:]
    if not entries:
        raise _refuse(record, "no values")
    if block:
        n = int(block.group(1))
        if len(entries) != n * (n + 1) // 2:
            raise _refuse(record, f"BLOCK({n}) needs {n * (n + 1) // 2} values, got {len(entries)}")
        fixed = leading_fix or any(f for _, f, _ in entries)
        diagonal_rows = [i * (i + 1) // 2 + i for i in range(n)]
        labels = [entries[k][2] for k in diagonal_rows]
        return [BlockSpec([v for v, _, _ in entries], n, n > 1, fixed, labels)]
    if diagonal and int(diagonal.group(1)) != len(entries):
        raise _refuse(record, f"DIAGONAL({diagonal.group(1)}) with {len(entries)} values")
    groups: list[BlockSpec] = []
    for value, fixed, label in entries:
        if groups and groups[-1].fixed == fixed:
            groups[-1].values.append(value)
            groups[-1].size += 1
            groups[-1].labels.append(label)
        else:
            groups.append(BlockSpec([value], 1, False, fixed, [label]))
    return groups


# -- $SUBROUTINES / $EST -----------------------------------------------------------

# (ADVAN, TRANS) -> (dynamics, central compartment number, required $PK names, mapping)
_ADVANS = {
    (1, 1): (OneCompartment, 1, ("K",)),
    (1, 2): (OneCompartment, 1, ("CL", "V")),
    (2, 1): (OneCompartmentOral, 2, ("K", "KA")),
    (2, 2): (OneCompartmentOral, 2, ("CL", "V", "KA")),
    (3, 1): (TwoCompartment, 1, ("K", "K12", "K21")),
    (3, 4): (TwoCompartment, 1, ("CL", "V1", "Q", "V2")),
    (4, 1): (TwoCompartmentOral, 2, ("K", "K23", "K32", "KA")),
    (4, 4): (TwoCompartmentOral, 2, ("CL", "V2", "Q", "V3", "KA")),
}


def _pmx_parameters(advan: int, trans: int, v: Mapping[str, Any]) -> dict[str, Any]:
    """The closed form's parameters from the $PK variables.  With TRANS1 the
    volume is arbitrary for the amounts (1 here): only the rate constants
    enter, and F = A/S uses the scale S."""
    if trans == 1:
        out = {"cl": v["K"], "v": jnp.asarray(1.0)}
        if advan == 3:
            out |= {"q": v["K12"], "vp": v["K12"] / v["K21"]}
        if advan == 4:
            out |= {"q": v["K23"], "vp": v["K23"] / v["K32"]}
    elif advan in (1, 2):
        out = {"cl": v["CL"], "v": v["V"]}
    elif advan == 3:
        out = {"cl": v["CL"], "v": v["V1"], "q": v["Q"], "vp": v["V2"]}
    else:
        out = {"cl": v["CL"], "v": v["V2"], "q": v["Q"], "vp": v["V3"]}
    if advan in (2, 4):
        out["ka"] = v["KA"]
    return out


def _parse_subroutines(record: Record) -> tuple[int, int]:
    advan, trans = None, 1
    for token in re.split(r"[\s,]+", record.text().strip().upper()):
        if not token:
            continue
        if m := re.fullmatch(r"ADVAN(\d+)", token):
            advan = int(m.group(1))
        elif m := re.fullmatch(r"TRANS(\d+)", token):
            trans = int(m.group(1))
        elif re.fullmatch(r"(TOL|ATOL|SSTOL|SSATOL)=\S+", token):
            continue
        else:
            raise _refuse(record, f"unsupported item {token!r}")
    if advan is None:
        raise _refuse(record, "no ADVAN")
    if advan in (6, 13) and trans == 1:
        return advan, trans
    if (advan, trans) not in _ADVANS:
        supported = ", ".join(f"ADVAN{a} TRANS{t}" for a, t in _ADVANS)
        raise _refuse(record, f"ADVAN{advan} TRANS{trans} is not supported ({supported})")
    return advan, trans


def _parse_model_record(record: Record) -> tuple[tuple[str, ...], int]:
    """$MODEL COMP=(NAME [DEFOBS] [DEFDOSE]) ...: compartment names and the
    observation compartment (DEFOBS, else the first)."""
    names, central = [], None
    for m in re.finditer(r"COMP(?:ARTMENT)?\s*=\s*(\([^)]*\)|\S+)", record.text(), re.I):
        items = [t for t in re.split(r"[\s,]+", m.group(1).strip("()").upper()) if t]
        if not items:
            raise _refuse(record, f"empty {m.group(0)!r}")
        names.append(items[0].lower())
        for option in items[1:]:
            if option in ("DEFOBS", "DEFOBSERVATION"):
                central = len(names)
            elif option not in ("DEFDOSE", "DEFDOS"):
                raise _refuse(record, f"unsupported compartment option {option}")
    rest = re.sub(r"COMP(?:ARTMENT)?\s*=\s*(\([^)]*\)|\S+)", " ", record.text(), flags=re.I)
    if rest.strip():
        raise _refuse(record, f"unsupported $MODEL items {rest.strip()!r}")
    if not names:
        raise _refuse(record, "no COMP=")
    if len(set(names)) != len(names):
        raise _refuse(record, f"duplicate compartment names {names}")
    return tuple(names), central or 1


def _ode_dynamics(names: tuple[str, ...], des: Program, pk_names: tuple[str, ...]):
    """An :class:`~pmx_jax.dynamics.AbstractODE` running the $DES code."""
    from ..dynamics._ode import AbstractODE

    n = len(names)

    def rhs(self, t, amounts, p):
        env = {k: v for k, v in p.items() if k in pk_names}
        des.run(env, _DesLookup(amounts))
        return jnp.stack([jnp.asarray(env.get(f"DADT_{i + 1}", 0.0)) for i in range(n)])

    namespace = {"compartments": names, "rhs": rhs, "__module__": __name__}
    cls = type(AbstractODE)("NonmemDES", (AbstractODE,), namespace)
    return cls()


class _DesLookup(Mapping):
    def __init__(self, amounts):
        self.amounts = amounts

    def __getitem__(self, key):
        if key == "A":
            return lambda n: self.amounts[n - 1]
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def _parse_estimation(records: list[Record]) -> dict[str, Any]:
    steps = []
    for record in records:
        tokens = [t for t in re.split(r"[\s,]+", record.text().strip()) if t]
        step: dict[str, Any] = {"method": "0", "interaction": False, "laplace": False}
        options: dict[str, str] = {}
        for token in tokens:
            key, eq, value = token.upper().partition("=")
            if key in ("METHOD", "METH", "METHO"):
                step["method"] = value
            elif key in ("INTERACTION", "INTER", "INT", "INTERACT"):
                step["interaction"] = True
            elif key in ("NOINTERACTION", "NOINTER"):
                step["interaction"] = False
            elif key in ("LAPLACIAN", "LAPLACE", "LAPLA", "LAPLACI"):
                step["laplace"] = True
            elif key in ("MAXEVAL", "MAXEVALS", "MAX"):
                step["maxeval"] = int(float(value))
            elif key in ("LIKELIHOOD", "LIKE", "-2LL", "-2LOGLIKELIHOOD", "NUMERICAL", "SLOW"):
                raise _refuse(record, f"the option {key} is not supported")
            else:
                options[key] = value if eq else ""
        method = step["method"]
        if method == "SAEM":
            steps.append(_saem_step(record, options))
            continue
        if method == "IMP":
            _merge_importance(record, options, steps)
            continue
        if method in ("0", "ZERO"):
            name = "fo"
            if step["interaction"]:
                raise _refuse(record, "METHOD=0 with INTERACTION is not supported")
        elif method in ("1", "COND", "CONDITIONAL"):
            name = "focei" if step["interaction"] else "foce"
        else:
            raise _refuse(record, f"METHOD={method} is not supported (0, 1/COND, SAEM, IMP)")
        if step["laplace"]:
            name = "laplace"
        steps.append({"method": name, "maxeval": step.get("maxeval"), "options": options})
    return {"estimation_steps": steps}


# $EST options of METHOD=SAEM and what pmx.fit(..., "saem") calls them.
_SAEM_OPTIONS = {"NBURN": "exploration", "NITER": "smoothing", "SEED": "seed",
                 "ISAMPLE": "chains"}  # fmt: skip
# Options that change nothing pmx computes (printing, NONMEM's convergence
# test of the burn-in, which pmx replaces by a fixed count).
_SAEM_IGNORED = {"PRINT", "NOABORT", "NOPRIOR", "CTYPE", "CINTERVAL", "CITER", "CALPHA",
                 "ISAMPLE_M1", "ISAMPLE_M2", "ISAMPLE_M3", "IACCEPT", "FILE", "MSFO",
                 "FORMAT", "DF", "GRD", "AUTO", "POSTHOC"}  # fmt: skip


def _saem_step(record: Record, options: dict[str, str]) -> dict[str, Any]:
    """``METHOD=SAEM``: NBURN exploration and NITER smoothing iterations
    (NONMEM's defaults 2000 and 1000 when absent), ISAMPLE chains per subject,
    SEED; the OFV comes from importance sampling (a following ``METHOD=IMP
    EONLY=1`` sets its samples)."""
    settings: dict[str, Any] = {}
    for key, value in options.items():
        if key in _SAEM_IGNORED:
            continue
        if key not in _SAEM_OPTIONS:
            raise _refuse(record, f"the METHOD=SAEM option {key} is not supported")
        try:
            settings[_SAEM_OPTIONS[key]] = int(float(value))
        except ValueError:
            raise _refuse(record, f"{key}={value!r} is not a number") from None
    iterations = (settings.pop("exploration", 2000), settings.pop("smoothing", 1000))
    return {"method": "saem", "maxeval": None, "options": {"iterations": iterations, **settings}}


def _merge_importance(record: Record, options: dict[str, str], steps: list) -> None:
    """``METHOD=IMP EONLY=1`` after ``METHOD=SAEM``: the OFV by importance
    sampling, which pmx's SAEM computes anyway (ISAMPLE draws per subject)."""
    if options.get("EONLY") != "1" or not steps or steps[-1]["method"] != "saem":
        raise _refuse(
            record,
            "METHOD=IMP is supported only as EONLY=1 after METHOD=SAEM (the OFV of the "
            "SAEM estimates by importance sampling); pmx.importance_ofv evaluates it "
            "after any fit",
        )
    for key, value in options.items():
        if key == "ISAMPLE":
            steps[-1]["options"]["imp_samples"] = int(float(value))
        elif key not in _SAEM_IGNORED | {"EONLY", "NITER", "SEED", "MAPITER", "MAPINTER"}:
            raise _refuse(record, f"the METHOD=IMP option {key} is not supported")


# -- the model -------------------------------------------------------------------------


@dataclass
class _Spec:
    """Everything the generated model class needs at trace time (static)."""

    theta_fields: tuple[str, ...]  # THETA(n) -> field n-1 (fixed and estimated)
    sigma_fields: tuple[str, ...]  # SIGMA(i,i) -> THETA field
    eta_names: tuple[str, ...]  # ETA(n) -> eta name n-1
    pk: Program | None
    error: Program
    advan: int | None
    trans: int | None
    central: int | None  # observation compartment, 1-based
    data_items: dict[str, str]  # name or alias in code -> column
    covariates: frozenset[str]  # columns that are pmx covariates
    error_data: tuple[str, ...]  # data items the $ERROR/$PRED reads
    error_etas: tuple[int, ...]  # ETA(n) read in $ERROR/$PRED
    pk_names: tuple[str, ...]  # variables assigned in $PK

    def __repr__(self) -> str:
        # The covariates sorted: the same text in every process (part of a stored
        # program's key, pmx_jax/_stored.py); a set prints in hash order.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["covariates"] = tuple(sorted(self.covariates))
        return f"_Spec({', '.join(f'{k}={v!r}' for k, v in values.items())})"


class LinearisedNormal(AbstractErrorModel):
    """Gaussian ``Y`` with mean ``Y(EPS = 0)`` and variance ``g' SIGMA g``
    (``g = dY/dEPS`` at 0), given as a variance: no square root, so a variance
    that vanishes where ``F = 0`` (a proportional error on a dose record) has
    finite derivatives, as with :class:`pmx_jax.model.Proportional`."""

    prediction: Any = eqx.field(converter=jnp.asarray)
    var: Any = eqx.field(converter=jnp.asarray)

    def variance(self):
        return self.var


class _Lookup(Mapping):
    """Names that are not variables: THETA(n), ETA(n), EPS(n), A(n), data items."""

    def __init__(self, model, spec: _Spec, *, eta=None, cov=None, params=None, eps=None,
                 amounts=None):  # fmt: skip
        self.model, self.spec = model, spec
        self.eta, self.cov, self.params, self.eps, self.amounts = eta, cov, params, eps, amounts

    def _theta(self, n):
        return getattr(self.model, self.spec.theta_fields[n - 1])

    def _eta(self, n):
        if self.eta is not None:
            return self.eta[self.spec.eta_names[n - 1]]
        return self.params[f"ETA({n})"]

    def _eps(self, n):
        if self.eps is None:
            raise ControlStreamError("EPS(n) is only allowed in $ERROR / $PRED")
        return self.eps[n - 1]

    def _amount(self, n):
        if self.amounts is None:
            raise ControlStreamError("A(n) is only allowed in $ERROR")
        return self.amounts[n - 1]

    def __getitem__(self, key):
        if key == "THETA":
            return self._theta
        if key == "ETA":
            return self._eta
        if key in ("EPS", "ERR"):
            return self._eps
        if key == "A":
            return self._amount
        column = self.spec.data_items.get(key)
        if column is None:
            raise KeyError(key)
        if self.cov is not None:
            if column in self.spec.covariates:
                return self.cov[column]
            return jnp.asarray(jnp.nan)
        return self.params.get(f"DATA({column})", jnp.asarray(jnp.nan))

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


class NonmemModel(Model):
    """Base of the classes :func:`read_model` builds: the parsed $PK and
    $ERROR (or $PRED) code run on THETA/OMEGA/SIGMA fields."""

    def individual(self, eta, cov):
        spec: _Spec = self._nonmem
        env: dict[str, Any] = {}
        if spec.pk is not None:
            spec.pk.run(env, _Lookup(self, spec, eta=eta, cov=cov))
        params = dict(env)
        if spec.advan is not None and spec.advan not in (6, 13):
            params |= _pmx_parameters(spec.advan, spec.trans, env)
        lookup = _Lookup(self, spec, eta=eta, cov=cov)
        for column in spec.error_data:
            params[f"DATA({column})"] = jnp.asarray(lookup[column], dtype=float)
        for n in spec.error_etas:
            params[f"ETA({n})"] = eta[spec.eta_names[n - 1]]
        return params

    def observe(self, amounts, p):
        spec: _Spec = self._nonmem
        base = {k: v for k, v in p.items() if k in spec.pk_names}
        if spec.central is not None:
            scale = base.get(f"S{spec.central}", 1.0)
            base["F"] = amounts[spec.central - 1] / scale
        n_eps = len(spec.sigma_fields)

        def y(eps):
            env = dict(base)
            lookup = _Lookup(self, spec, params=p, eps=eps, amounts=amounts)
            spec.error.run(env, lookup)
            if "Y" not in env:
                raise ControlStreamError(f"{spec.error.record} does not assign Y")
            return env["Y"], env["Y"]

        zero = jnp.zeros(n_eps)
        gradient, mean = jax.jacfwd(y, has_aux=True)(zero)
        sigma = jnp.stack([jnp.asarray(getattr(self, s), dtype=float) for s in spec.sigma_fields])
        return LinearisedNormal(mean, jnp.sum(sigma * gradient**2))


def _check_indices(program: Program, kind: str, n: int, record: Record) -> None:
    for index in sorted(program.indices(kind)):
        if not 1 <= index <= n:
            raise _refuse(record, f"{kind}({index}) but there are {n} {kind}s")


def read_model(
    path: str | os.PathLike, data: str | os.PathLike | None = None
) -> tuple[Model, Any, dict[str, Any]]:
    """Read a NONMEM control stream.

    Returns ``(model, dataset, settings)``: an instance of a generated
    :class:`NonmemModel` subclass at the initial estimates (THETAs
    ``theta1..``, SIGMAs ``sigma1..`` as THETAs on the variance scale, OMEGA
    blocks ``omega1..`` with etas ``eta1..``), the :class:`~pmx_jax.data.Dataset`
    read as $INPUT/$DATA say (``data`` replaces the $DATA file name, a relative
    $DATA name is relative to the control stream's folder), and a dict:
    ``method`` (``"fo"``, ``"foce"``, ``"focei"``, ``"laplace"`` or ``"saem"``, of
    the last $EST), ``maxeval``, ``fit_options`` (the ``pmx.fit`` options of a
    SAEM step: ``iterations`` from NBURN/NITER, ``chains`` from ISAMPLE, ``seed``,
    ``imp_samples`` from a following IMP EONLY=1), ``estimation_steps``,
    ``covariance`` ($COV options or None), ``problem``, ``theta_labels``,
    ``eta_labels``, ``sigma_labels``.

    Raises :class:`ControlStreamError` naming the record, line and construct
    for anything outside the supported subset (see the module docstring).
    """
    path = Path(path)
    records = parse_control_stream(path.read_text())
    model, frame_reader, settings = build(records)
    if data is not None:
        data_path = Path(data)
    else:
        if settings["_data"].path is None:
            raise ControlStreamError("no $DATA record and no data= given")
        data_path = Path(settings["_data"].path)
        if not data_path.is_absolute():
            data_path = path.parent / data_path
    frame = frame_reader(data_path)
    del settings["_data"]
    dataset = read_nonmem(frame)
    return model, dataset, settings


def build(records: list[Record]):
    """The model, a data reader (path -> DataFrame) and the settings of parsed records."""
    by_name: dict[str, list[Record]] = {}
    for record in records:
        if record.name not in _HANDLED:
            raise _refuse(record, f"the record {record.written} is not supported")
        by_name.setdefault(record.name, []).append(record)
    for name in ("PROBLEM", "INPUT", "DATA", "SUBROUTINES", "PK", "ERROR", "PRED"):
        if len(by_name.get(name, [])) > 1:
            raise _refuse(by_name[name][1], f"a second {by_name[name][1].written} record")
    if "INPUT" not in by_name:
        raise ControlStreamError("no $INPUT record")
    columns = _parse_input(by_name["INPUT"][0])
    data_spec = _parse_data(by_name["DATA"][0]) if "DATA" in by_name else DataSpec(None)

    # parameters
    thetas = [t for r in by_name.get("THETA", []) for t in _parse_thetas(r)]
    omegas = [b for r in by_name.get("OMEGA", []) for b in _parse_variances(r)]
    sigmas: list[tuple[float, bool, str]] = []
    for record in by_name.get("SIGMA", []):
        for b in _parse_variances(record):
            if b.block:
                raise _refuse(record, "BLOCK SIGMA is not supported (diagonal SIGMA only)")
            sigmas += [(v, b.fixed, lab) for v, lab in zip(b.values, b.labels, strict=True)]

    # code
    pred = by_name.get("PRED", [None])[0]
    if pred is not None:
        for name in ("PK", "ERROR", "SUBROUTINES"):
            if name in by_name:
                raise _refuse(by_name[name][0], f"{by_name[name][0].written} with $PRED")
        pk_program = None
        error_program = parse_program(pred.lines, pred.written)
        error_record = pred
        advan = trans = central = None
        dynamics: Any = Pred()
    else:
        for name in ("SUBROUTINES", "PK", "ERROR"):
            if name not in by_name:
                raise ControlStreamError(f"no ${name} record (and no $PRED)")
        advan, trans = _parse_subroutines(by_name["SUBROUTINES"][0])
        pk_record, error_record = by_name["PK"][0], by_name["ERROR"][0]
        pk_program = parse_program(pk_record.lines, pk_record.written)
        error_program = parse_program(error_record.lines, error_record.written)
        if advan in (6, 13):
            for name in ("MODEL", "DES"):
                if name not in by_name:
                    raise _refuse(by_name["SUBROUTINES"][0], f"ADVAN{advan} needs ${name}")
            names, central = _parse_model_record(by_name["MODEL"][0])
            des_record = by_name["DES"][0]
            des_lines = [
                Line(ln.number, re.sub(r"\bDADT\s*\(\s*(\d+)\s*\)", r"DADT_\1", ln.text,
                                       flags=re.I), ln.comment)
                for ln in des_record.lines
            ]  # fmt: skip
            des_program = parse_program(des_lines, des_record.written)
            for kind in ("THETA", "ETA", "EPS", "ERR"):
                if des_program.indices(kind):
                    raise _refuse(des_record, f"{kind}(n) in $DES (compute it in $PK)")
            _check_indices(des_program, "A", len(names), des_record)
            pk_assigned = pk_program.assigned()
            free = sorted(des_program.read() - pk_assigned - des_program.assigned() - {"A"})
            if free:
                raise _refuse(
                    des_record,
                    f"reads {', '.join(free)}, which $PK does not assign (data items and T "
                    "are not supported in $DES)",
                )
            dadt = {f"DADT_{i}" for i in range(1, len(names) + 1)}
            extra = sorted(a for a in des_program.assigned() if a.startswith("DADT_"))
            if set(extra) - dadt:
                raise _refuse(des_record, f"DADT beyond the {len(names)} compartments")
            dynamics = _ode_dynamics(names, des_program, tuple(sorted(pk_assigned)))
            required: tuple[str, ...] = ()
        else:
            for name in ("MODEL", "DES"):
                if name in by_name:
                    raise _refuse(by_name[name][0], f"${name} needs ADVAN6/13")
            dyn_class, central, required = _ADVANS[(advan, trans)]
            dynamics = dyn_class()
        missing = [n for n in required if n not in pk_program.assigned()]
        if missing:
            raise _refuse(
                pk_record, f"ADVAN{advan} TRANS{trans} needs {', '.join(required)}; "
                f"{', '.join(missing)} not assigned"
            )  # fmt: skip
        _check_indices(pk_program, "THETA", len(thetas), pk_record)
        _check_indices(pk_program, "ETA", sum(b.size for b in omegas), pk_record)
        for kind in ("EPS", "ERR", "A"):
            if pk_program.indices(kind):
                raise _refuse(pk_record, f"{kind}(n) in $PK")
    n_eta = sum(b.size for b in omegas)
    _check_indices(error_program, "THETA", len(thetas), error_record)
    _check_indices(error_program, "ETA", n_eta, error_record)
    _check_indices(error_program, "EPS", len(sigmas), error_record)
    _check_indices(error_program, "ERR", len(sigmas), error_record)
    if central is not None:
        _check_indices(error_program, "A", len(dynamics.compartments), error_record)
    elif error_program.indices("A"):
        raise _refuse(error_record, "A(n) with $PRED")
    if "Y" not in error_program.assigned():
        raise _refuse(error_record, "Y is never assigned")
    if not sigmas:
        raise ControlStreamError("no $SIGMA record")

    data_items = {c.name: c.name for c in columns if not c.drop}
    data_items |= {c.alias: c.name for c in columns if c.alias and not c.drop}
    covariates = frozenset(n for n in data_items.values() if n not in _ROLES)
    pk_names = tuple(sorted(pk_program.assigned())) if pk_program else ()
    des_linear = False
    if advan in (6, 13):
        required = tuple(sorted(des_program.read() & set(pk_names)))
        # A $DES linear in the amounts (ADVAN5/7 written as an ODE) is solved
        # exactly by the matrix exponential, not by a numerical solver.
        linear = LinearSystem.of(dynamics, required)
        if linear is not None:
            dynamics, des_linear = linear, True
    # Record roles (TIME, AMT, DV, ...) are not covariates of a pmx model: they
    # read as NaN, which is refused where Y depends on them.
    roles = {n for n, c in data_items.items() if c not in covariates}
    error_needed = error_program.needed({"Y"})
    targets = set(error_needed) & set(pk_names)
    if pk_program is not None:
        targets |= set(required) | {f"S{central}"}
        targets |= {n for n in pk_names if re.fullmatch(r"(F|ALAG|R|D)\d+", n)}
        used = sorted(pk_program.needed(targets) & roles)
        if used:
            raise _refuse(
                pk_record,
                f"the model reads the data item(s) {', '.join(used)}, record roles "
                "that are not covariates of a pmx model (only covariate columns can be read)",
            )
    used = sorted((error_needed - set(pk_names)) & roles)
    if used:
        raise _refuse(
            error_record,
            f"Y depends on the data item(s) {', '.join(used)}, record roles that are not "
            "covariates of a pmx model (only covariate columns can be read)",
        )
    error_data = tuple(
        sorted({data_items[n] for n in error_program.read() if n in data_items} - set(pk_names))
    )
    spec = _Spec(
        theta_fields=tuple(f"theta{i + 1}" for i in range(len(thetas))),
        sigma_fields=tuple(f"sigma{i + 1}" for i in range(len(sigmas))),
        eta_names=tuple(f"eta{i + 1}" for i in range(n_eta)),
        pk=pk_program,
        error=error_program,
        advan=advan,
        trans=trans,
        central=central,
        data_items=data_items,
        covariates=covariates,
        error_data=error_data,
        error_etas=tuple(sorted(error_program.indices("ETA"))),
        pk_names=pk_names,
    )

    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    for name, t in zip(spec.theta_fields, thetas, strict=True):
        annotations[name] = Theta
        namespace[name] = theta(float(t.init), t.lower, t.upper, fixed=t.fixed)
    for name, (value, fixed, _) in zip(spec.sigma_fields, sigmas, strict=True):
        annotations[name] = Theta
        namespace[name] = theta(float(value), 0.0, fixed=fixed) if fixed or value > 0 else None
        if namespace[name] is None:
            raise ControlStreamError(f"$SIGMA: a variance of {value:g} must be positive or FIX")
    k = 0
    for i, b in enumerate(omegas, start=1):
        names = spec.eta_names[k : k + b.size]
        k += b.size
        annotations[f"omega{i}"] = Omega
        if b.block:
            namespace[f"omega{i}"] = omega_block(names, b.values, fixed=b.fixed)
        else:
            namespace[f"omega{i}"] = omega(fixed=b.fixed, **dict(zip(names, b.values, strict=True)))
    namespace.update(
        __annotations__=annotations,
        __module__=__name__,
        dynamics=dynamics,
        _nonmem=spec,
    )
    cls = type(NonmemModel)("NonmemControlStream", (NonmemModel,), namespace)
    model = cls()

    estimation = _parse_estimation(by_name.get("ESTIMATION", []))
    steps = estimation["estimation_steps"]
    cov_records = by_name.get("COVARIANCE", [])
    settings: dict[str, Any] = {
        "method": steps[-1]["method"] if steps else None,
        "maxeval": steps[-1]["maxeval"] if steps else None,
        "fit_options": dict(steps[-1]["options"])
        if steps and steps[-1]["method"] == "saem"
        else {},
        "estimation_steps": steps,
        "des_linear": des_linear,
        "covariance": cov_records[0].text().strip() if cov_records else None,
        "problem": by_name["PROBLEM"][0].text().strip() if "PROBLEM" in by_name else "",
        "theta_labels": dict(zip(spec.theta_fields, [t.label for t in thetas], strict=True)),
        "sigma_labels": dict(zip(spec.sigma_fields, [s[2] for s in sigmas], strict=True)),
        "eta_labels": dict(
            zip(spec.eta_names, [lab for b in omegas for lab in b.labels], strict=True)
        ),
        "_data": data_spec,
    }

    def frame_reader(data_path):
        return read_data_file(data_path, data_spec, columns)

    return model, frame_reader, settings
