"""Write a pmx model as a NONMEM control stream: :func:`write_model`.

The model's blocks are Python, so they are not copied but *traced*: JAX
records ``individual`` (the $PK block), ``observe`` (the $ERROR block) and,
for an ODE model, ``rhs`` (the $DES block) as jaxprs on symbolic THETAs,
ETAs, covariates, amounts and individual parameters, and each jaxpr is
translated into NM-TRAN abbreviated code.  What the jaxpr says is what is
written, so the exported code computes what pmx computes (the same
operations in the same order; ``jnp.where`` becomes an ``IF``).

Translated:

* arithmetic (``+ - * /``, powers), ``EXP LOG SQRT ABS SIN COS TAN ATAN MIN
  MAX MOD`` (and ``log1p``, ``expm1``, ``jax.nn.sigmoid``, ``rsqrt``,
  ``clamp``, ``sign`` written with them), comparisons, ``& | ~`` on
  conditions, ``jnp.where`` (and conditions used as numbers), nested
  ``jax.jit`` and custom-derivative functions, indexing and stacking;
* dynamics: ``OneCompartment`` / ``OneCompartmentOral`` / ``TwoCompartment``
  / ``TwoCompartmentOral`` as ADVAN1/2/3/4 with TRANS2/TRANS4 (the
  parameters ``cl v q vp ka`` renamed to NONMEM's ``CL V[1|2] Q V[2|3] KA``),
  ``ThreeCompartment[Oral]`` as ADVAN11/12 TRANS4, any
  :class:`~pmx_jax.dynamics.AbstractODE` as ADVAN13 with ``$MODEL`` and
  ``$DES``, and :class:`~pmx_jax.pk.Pred` as ``$PRED``;
* residual error: ``Additive``, ``Proportional``, ``Combined1``,
  ``Combined2``, ``Normal`` as ``Y = IPRED + W*EPS(1)`` with the SD ``W``
  written from the model's THETAs and ``$SIGMA 1 FIX`` (NONMEM's THETA-based
  error), ``Exponential`` as ``Y = LOG(IPRED) + W*EPS(1)`` on log-transformed
  DV (transform both sides: the data file gets ``LOG(DV)``);
* ``$THETA`` with bounds and ``FIX`` (the field name as the label comment),
  ``$OMEGA`` diagonal and ``BLOCK(n)`` (eta names as labels), ``$ESTIMATION``,
  ``$COVARIANCE``, ``$TABLE`` (Xpose's sdtab/patab/cotab), and ``$INPUT`` /
  ``$DATA`` from a :class:`~pmx_jax.data.Dataset` (written next to the
  control stream) or an existing data file.

Every stream written reads back with :func:`~pmx_jax.nonmem.read_model`
into a model with the same objective function (ADVAN11/12 excepted: the
reader does not cover them).  Refused with :class:`ExportError`, naming the
part of the model and the construct (and the source line where JAX knows
it): JAX operations with no NM-TRAN counterpart (``erf``, ``tanh``, loops,
``lax.cond``, matrix products...), Python control flow on parameters, ODE
right-hand sides that read the time ``t`` (pmx's time since the last event,
not NONMEM's ``T``), dynamics with non-zero initial amounts, other
dynamics, several endpoints (DVID), non-Gaussian observation models,
between-occasion variability, and censored (BLQ) records.  Priors are not
written (no ``$PRIOR``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.extend import core as jex_core

from ..data import Dataset
from ..dynamics import (
    OneCompartment,
    OneCompartmentOral,
    Pred,
    ThreeCompartment,
    ThreeCompartmentOral,
    TwoCompartment,
    TwoCompartmentOral,
)
from ..dynamics._base import AbstractDynamics
from ..dynamics._ode import AbstractODE
from ..model import Model
from ..model._error import (
    Additive,
    Combined1,
    Combined2,
    Exponential,
    Normal,
    Proportional,
)
from ..model._views import CovariateView, EtaView

__all__ = ["ExportError", "write_model"]


class ExportError(ValueError):
    """A model (or dataset) that cannot be written as a NONMEM control stream:
    the message names the part of the model ($PK, $ERROR, $DES, data) and the
    construct."""


# -- expressions ---------------------------------------------------------------------
#
# A jaxpr is first turned into a graph of _Node objects (one per scalar value;
# arrays are numpy object arrays of nodes), then rendered as assignments: a node
# used more than once, or too long to inline, becomes a variable; a
# ``jnp.where`` becomes ``X = a`` followed by ``IF (cond) X = b``.

# Operator precedence of the rendered text (higher binds tighter).
_SUM, _PRODUCT, _POWER, _ATOM = 1, 2, 3, 4
# Longest operand inlined into another expression (NM-TRAN lines stay short).
_INLINE_LIMIT = 60


class _Node:
    """One scalar of a traced block: a leaf (THETA(1), ETA(2), WT, A(1), CL),
    a constant, or an operation on other nodes."""

    __slots__ = ("op", "args", "param", "value", "boolean", "name", "prefer")

    def __init__(self, op, args=(), param=None, value=None, boolean=False, name=None):
        self.op = op  # "leaf" "const" "add" "sub" "mul" "div" "neg" "pow" "ipow" "call"
        # "cmp" "and" "or" "not" "select"
        self.args: tuple[_Node, ...] = tuple(args)
        self.param = param  # function name, comparison, integer exponent
        self.value = value  # number (or bool) of a constant
        self.boolean = boolean
        self.name = name  # the variable holding it, once assigned (leaves: their text)
        self.prefer: str | None = None  # the name to give it when assigned


def _leaf(text: str) -> _Node:
    return _Node("leaf", name=text)


def _const(value: Any) -> _Node:
    if isinstance(value, bool | np.bool_):
        return _Node("const", value=bool(value), boolean=True)
    return _Node("const", value=float(value))


def _op(op: str, *args: _Node, param: Any = None) -> _Node:
    # Conditions known at trace time (a comparison of constants inside a
    # jnp function) are decided here: NM-TRAN has no logical constants.
    known = [a.value if a.op == "const" and a.boolean else None for a in args]
    if op == "not" and known[0] is not None:
        return _const(not known[0])
    if op == "not" and args[0].op == "not":
        return args[0].args[0]
    if op in ("and", "or"):
        absorbing = op == "or"  # x .OR. TRUE is TRUE, x .AND. FALSE is FALSE
        for k, value in enumerate(known):
            if value is not None:
                return _const(absorbing) if value == absorbing else args[1 - k]
    if op == "select" and known[0] is not None:
        return args[2] if known[0] else args[1]
    return _Node(op, args, param, boolean=op in ("cmp", "and", "or", "not"))


def format_number(x: float) -> str:
    """A real constant as NM-TRAN reads it back exactly: the shortest decimal
    that round-trips, always with a decimal point (``5.0``, ``1.0E-08``)."""
    x = float(x)
    if not math.isfinite(x):
        raise ExportError(f"the constant {x} has no NM-TRAN form")
    text = repr(x)
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}E{int(exponent):+03d}"
    return text


class _Names:
    """The variable names of one control stream (NM-TRAN names are upper
    case): names taken by data items, parameters and generated variables."""

    def __init__(self, reserved: set[str]):
        self.taken = set(reserved)
        self.count = 0

    def claim(self, wanted: str) -> str:
        """``wanted`` (upper-cased), or with ``_1``, ``_2``... appended if taken
        (a bare digit would turn ``S2`` into ``S21``, a scale of compartment 21)."""
        name = wanted.upper()
        candidate, k = name, 1
        while candidate in self.taken:
            candidate = f"{name}_{k}"
            k += 1
        self.taken.add(candidate)
        return candidate

    def fresh(self) -> str:
        while True:
            self.count += 1
            name = f"X{self.count}"
            if name not in self.taken:
                self.taken.add(name)
                return name


class _Renderer:
    """Writes nodes as NM-TRAN assignments into ``lines``."""

    def __init__(self, names: _Names, roots: Sequence[_Node]):
        self.names = names
        self.lines: list[str] = []
        self.refs: dict[int, int] = {}
        seen: set[int] = set()
        stack = list(roots)
        for root in roots:
            self.refs[id(root)] = self.refs.get(id(root), 0) + 1
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for arg in node.args:
                self.refs[id(arg)] = self.refs.get(id(arg), 0) + 1
                stack.append(arg)

    def assign(self, name: str, node: _Node) -> None:
        """``name = <node>``; a computed node is ``name`` from then on."""
        if node.name == name:
            return
        if node.name is not None or node.op == "const":
            self.lines.append(f"{name} = {self.text(node)[0]}")
            return
        if node.op == "select":
            node.prefer = name
            self.text(node)
            return
        text, _ = self._inline(node)
        self.lines.append(f"{name} = {text}")
        node.name = name

    def text(self, node: _Node) -> tuple[str, int]:
        """The node as an operand: its variable, or its expression inlined."""
        if node.name is not None:
            return node.name, _ATOM
        if node.op == "const":
            if node.boolean:
                raise ExportError("a constant condition has no NM-TRAN form")
            number = format_number(node.value)
            return number, _SUM if number.startswith("-") else _ATOM
        if node.op == "select":
            condition = self.condition(node.args[0])
            otherwise = self.text(node.args[1])[0]
            then = self.text(node.args[2])[0]
            name = node.prefer or self.names.fresh()
            self.lines.append(f"{name} = {otherwise}")
            self.lines.append(f"IF ({condition}) {name} = {then}")
            node.name = name
            return name, _ATOM
        text, precedence = self._inline(node)
        shared = self.refs.get(id(node), 0) > 1
        if not node.boolean and (shared or len(text) > _INLINE_LIMIT):
            name = node.prefer or self.names.fresh()
            self.lines.append(f"{name} = {text}")
            node.name = name
            return name, _ATOM
        return text, precedence

    def condition(self, node: _Node) -> str:
        if not node.boolean:
            raise ExportError("a condition that is not a comparison")
        return self._inline(node)[0]

    def _operand(self, node: _Node, tighter_than: int) -> str:
        text, precedence = self.text(node)
        return text if precedence > tighter_than else f"({text})"

    def _inline(self, node: _Node) -> tuple[str, int]:
        op, args = node.op, node.args
        if op == "leaf":
            return node.name, _ATOM
        if op in ("add", "sub"):
            sign = "+" if op == "add" else "-"
            # Right operands of the same level are parenthesised: NM-TRAN
            # evaluates left to right, and the grouping is kept exactly.
            left = self._operand(args[0], _SUM - 1)
            return f"{left} {sign} {self._operand(args[1], _SUM)}", _SUM
        if op in ("mul", "div"):
            sign = "*" if op == "mul" else "/"
            left = self._operand(args[0], _SUM)
            return f"{left}{sign}{self._operand(args[1], _PRODUCT)}", _PRODUCT
        if op == "neg":
            return f"-{self._operand(args[0], _SUM)}", _SUM
        if op == "pow":
            base = self._operand(args[0], _POWER)
            return f"{base}**{self._operand(args[1], _POWER)}", _POWER
        if op == "ipow":
            exponent = str(node.param) if node.param >= 0 else f"({node.param})"
            return f"{self._operand(args[0], _POWER)}**{exponent}", _POWER
        if op == "call":
            inner = ", ".join(self.text(a)[0] for a in args)
            return f"{node.param}({inner})", _ATOM
        if op == "cmp":
            left, right = (self.text(a)[0] for a in args)
            right = f"({right})" if right.startswith("-") else right
            return f"{left}.{node.param}.{right}", _ATOM
        if op in ("and", "or"):
            left, right = (self._logical(a) for a in args)
            return f"{left}.{op.upper()}.{right}", _ATOM
        if op == "not":
            return f".NOT.{self._logical(args[0])}", _ATOM
        raise AssertionError(op)

    def _logical(self, node: _Node) -> str:
        return f"({self.condition(node)})"


# -- jaxpr -> nodes --------------------------------------------------------------------

_COMPARISONS = {"lt": "LT", "le": "LE", "gt": "GT", "ge": "GE", "eq": "EQ", "ne": "NE"}
_FUNCTIONS = {
    "exp": "EXP",
    "log": "LOG",
    "sqrt": "SQRT",
    "abs": "ABS",
    "sin": "SIN",
    "cos": "COS",
    "tan": "TAN",
    "atan": "ATAN",
    "max": "MAX",
    "min": "MIN",
    "rem": "MOD",
}
# Primitives that only move elements around: the data operands (None: all);
# the others (indices) must be constants.
_STRUCTURAL: dict[str, tuple[int, ...] | None] = {
    "broadcast_in_dim": (0,),
    "reshape": (0,),
    "squeeze": (0,),
    "expand_dims": (0,),
    "transpose": (0,),
    "rev": (0,),
    "slice": (0,),
    "concatenate": None,
    "pad": (0, 1),
    "dynamic_slice": (0,),
    "dynamic_update_slice": (0, 1),
    "gather": (0,),
    "copy": None,
    "copy_p": None,
}
# Primitives that call a jaxpr: the parameter holding it.
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}
_IDENTITY = {"stop_gradient", "optimization_barrier", "reduce_precision"}


def _where(eqn) -> str:
    try:
        from jax._src import source_info_util

        where = source_info_util.summarize(eqn.source_info)
        return f" at {where}" if where.strip(" :") else ""
    except Exception:  # the location is a courtesy: never fail for it
        return ""


class _Tracer:
    """Evaluates a closed jaxpr on arrays of nodes; ``part`` names the model
    block in error messages (e.g. ``"Theophylline.individual ($PK)"``)."""

    def __init__(self, part: str):
        self.part = part

    def refuse(self, eqn, what: str) -> ExportError:
        return ExportError(f"{self.part}{_where(eqn)}: {what}")

    def run(self, closed, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._jaxpr(closed.jaxpr, closed.consts, inputs)

    def _jaxpr(self, jaxpr, consts, inputs) -> list[np.ndarray]:
        env: dict[Any, np.ndarray] = {}

        def read(atom):
            if isinstance(atom, jex_core.Literal):
                return _constants(atom.val)
            return env[atom]

        for var, value in zip(jaxpr.constvars, consts, strict=True):
            env[var] = _constants(value)
        for var, value in zip(jaxpr.invars, inputs, strict=True):
            env[var] = value
        live = _live_equations(jaxpr)
        for eqn, needed in zip(jaxpr.eqns, live, strict=True):
            if not needed:
                continue
            outs = self._equation(eqn, [read(a) for a in eqn.invars])
            for var, value in zip(eqn.outvars, outs, strict=True):
                env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def _equation(self, eqn, ins: list[np.ndarray]) -> list[np.ndarray]:
        name = eqn.primitive.name
        if name in _CALLS:
            sub = eqn.params.get(_CALLS[name])
            if sub is None:
                raise self.refuse(eqn, f"cannot read the function called by {name}")
            if hasattr(sub, "jaxpr"):
                return self._jaxpr(sub.jaxpr, sub.consts, ins)
            return self._jaxpr(sub, (), ins)
        if all(_is_constant(x) for x in ins) and name not in ("while", "scan", "cond"):
            return self._fold(eqn, ins)
        if name in _STRUCTURAL:
            return [self._structural(eqn, ins)]
        if name in ("reduce_sum", "reduce_max", "reduce_min"):
            return [self._reduce(eqn, ins[0])]
        shape = eqn.outvars[0].aval.shape
        arrays = np.broadcast_arrays(*ins) if ins else []
        out = np.empty(shape, dtype=object)
        dtypes = [getattr(a.aval, "dtype", None) for a in eqn.invars]
        for index in np.ndindex(*shape):
            args = [_item(a, index if a.shape else ()) for a in arrays]
            out[index] = self._elementwise(eqn, args, dtypes)
        return [out]

    def _fold(self, eqn, ins: list[np.ndarray]) -> list[np.ndarray]:
        values = [_numbers(x).astype(a.aval.dtype) for x, a in zip(ins, eqn.invars, strict=True)]
        try:
            result = eqn.primitive.bind(*values, **eqn.params)
        except Exception as e:
            raise self.refuse(eqn, f"cannot evaluate the constant {eqn.primitive.name}: {e}") from e
        results = result if eqn.primitive.multiple_results else [result]
        return [_constants(np.asarray(r)) for r in results]

    def _structural(self, eqn, ins: list[np.ndarray]) -> np.ndarray:
        # Run the primitive on element numbers: where each element lands.
        data = _STRUCTURAL[eqn.primitive.name]
        elements: list[_Node] = []
        operands = []
        for k, (x, atom) in enumerate(zip(ins, eqn.invars, strict=True)):
            if data is None or k in data:
                start = len(elements) + 1
                elements.extend(x.ravel())
                operands.append(np.arange(start, start + x.size, dtype=np.int32).reshape(x.shape))
            elif _is_constant(x):
                operands.append(_numbers(x).astype(atom.aval.dtype))
            else:
                raise self.refuse(
                    eqn, f"{eqn.primitive.name} with an index computed from parameters"
                )
        moved = np.asarray(eqn.primitive.bind(*operands, **eqn.params))
        if moved.size and (moved.min() < 1 or moved.max() > len(elements)):
            raise self.refuse(eqn, f"{eqn.primitive.name} outside the array (a fill value)")
        out = np.empty(moved.shape, dtype=object)
        for index in np.ndindex(*moved.shape):
            out[index] = elements[int(moved[index]) - 1]
        return out

    def _reduce(self, eqn, x: np.ndarray) -> np.ndarray:
        axes = tuple(eqn.params["axes"])
        kept = [d for d in range(x.ndim) if d not in axes]
        moved = np.transpose(x, kept + list(axes))
        moved = moved.reshape([x.shape[d] for d in kept] + [-1])
        out = np.empty(moved.shape[:-1], dtype=object)
        for index in np.ndindex(*out.shape):
            row = list(moved[index])
            if not row:
                raise self.refuse(eqn, f"{eqn.primitive.name} of an empty array")
            total = row[0]
            for node in row[1:]:
                if eqn.primitive.name == "reduce_sum":
                    total = _op("add", total, node)
                else:
                    function = "MAX" if eqn.primitive.name == "reduce_max" else "MIN"
                    total = _op("call", total, node, param=function)
            out[index] = total
        return out

    def _elementwise(self, eqn, args: list[_Node], dtypes) -> _Node:
        name = eqn.primitive.name
        params = eqn.params
        boolean_in = [a.boolean for a in args]
        if name in _COMPARISONS:
            if all(boolean_in) and name in ("eq", "ne"):  # (in)equivalence of conditions
                a, b = args
                same = _op("or", _op("and", a, b), _op("and", _op("not", a), _op("not", b)))
                return same if name == "eq" else _op("not", same)
            if any(boolean_in):
                raise self.refuse(eqn, f"the comparison {name} of two conditions")
            return _op("cmp", *args, param=_COMPARISONS[name])
        if name in ("and", "or", "not"):
            if not all(boolean_in):
                raise self.refuse(eqn, f"the bitwise operation {name} on integers")
            return _op(name, *args)
        if any(boolean_in) and name not in ("select_n", "convert_element_type"):
            raise self.refuse(eqn, f"{name} of a condition")
        if name in ("add", "sub", "mul", "div", "neg", "pow"):
            if name == "div" and any(
                d is not None and jnp.issubdtype(d, jnp.integer) for d in dtypes
            ):
                raise self.refuse(eqn, "integer division")
            return _op(name, *args)
        if name in _FUNCTIONS:
            return _op("call", *args, param=_FUNCTIONS[name])
        if name == "integer_pow":
            return _op("ipow", args[0], param=int(params["y"]))
        if name == "square":
            return _op("ipow", args[0], param=2)
        if name == "rsqrt":
            return _op("div", _const(1.0), _op("call", args[0], param="SQRT"))
        if name == "log1p":
            return _op("call", _op("add", _const(1.0), args[0]), param="LOG")
        if name == "expm1":
            return _op("sub", _op("call", args[0], param="EXP"), _const(1.0))
        if name == "exp2":
            return _op("pow", _const(2.0), args[0])
        if name == "logistic":
            exp = _op("call", _op("neg", args[0]), param="EXP")
            return _op("div", _const(1.0), _op("add", _const(1.0), exp))
        if name == "clamp":
            low, x, high = args
            return _op("call", _op("call", x, low, param="MAX"), high, param="MIN")
        if name == "sign":
            x = args[0]
            negative = _op(
                "select", _op("cmp", x, _const(0.0), param="LT"), _const(0.0), _const(-1.0)
            )
            return _op("select", _op("cmp", x, _const(0.0), param="GT"), negative, _const(1.0))
        if name == "select_n":
            if len(args) != 3 or not args[0].boolean:
                raise self.refuse(eqn, "select_n with an integer selector (use jnp.where)")
            if args[1].boolean or args[2].boolean:
                raise self.refuse(eqn, "a choice between conditions (use numbers)")
            return _op("select", *args)
        if name == "convert_element_type":
            new = params["new_dtype"]
            if jnp.issubdtype(new, jnp.floating):
                if args[0].boolean:  # a condition used as a number: 1 or 0
                    return _op("select", args[0], _const(0.0), _const(1.0))
                if dtypes[0] is not None and not jnp.issubdtype(dtypes[0], jnp.floating):
                    raise self.refuse(eqn, "an integer computed from parameters")
                return args[0]
            if new == jnp.bool_ and not args[0].boolean:
                return _op("cmp", args[0], _const(0.0), param="NE")
            raise self.refuse(eqn, f"conversion to {new} (truncation to an integer)")
        if name in _IDENTITY:
            return args[0]
        raise self.refuse(eqn, f"the JAX operation {name!r} has no NM-TRAN counterpart")


def _constants(value: Any) -> np.ndarray:
    array = np.asarray(value)
    out = np.empty(array.shape, dtype=object)
    for index in np.ndindex(*array.shape):
        out[index] = _const(array[index])
    return out


def _item(x: np.ndarray, index: Any = ()) -> _Node:
    return x[index]


def _is_constant(x: np.ndarray) -> bool:
    return all(node.op == "const" for node in x.ravel())


def _numbers(x: np.ndarray) -> np.ndarray:
    return np.array([node.value for node in x.ravel()]).reshape(x.shape)


def _live_equations(jaxpr) -> list[bool]:
    """Which equations the outputs need (JAX keeps dead code in a trace)."""
    needed = {v for v in jaxpr.outvars if not isinstance(v, jex_core.Literal)}
    live = [False] * len(jaxpr.eqns)
    for k in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[k]
        if any(v in needed for v in eqn.outvars) or eqn.effects:
            live[k] = True
            needed |= {v for v in eqn.invars if not isinstance(v, jex_core.Literal)}
    return live


def _leaves(texts: Sequence[str]) -> np.ndarray:
    out = np.empty(len(texts), dtype=object)
    for i, text in enumerate(texts):
        out[i] = _leaf(text)
    return out


def _scalar(text: str) -> np.ndarray:
    out = np.empty((), dtype=object)
    out[()] = _leaf(text)
    return out


def _trace(part: str, fn: Callable, *args: Any):
    try:
        return jax.make_jaxpr(fn)(*args)
    except jax.errors.ConcretizationTypeError as e:
        raise ExportError(
            f"{part}: Python control flow (if/while, int(), float()) on a parameter, eta, "
            "covariate or amount cannot be written as NM-TRAN; use jnp.where"
            f"\n{str(e).splitlines()[0]}"
        ) from None
    except jax.errors.TracerArrayConversionError:
        raise ExportError(
            f"{part}: a NumPy function on a parameter, eta, covariate or amount cannot be "
            "traced; use jax.numpy"
        ) from None


# -- the model's blocks ----------------------------------------------------------------

# Closed forms: dynamics class -> (ADVAN, TRANS, central compartment, pmx -> NONMEM names)
_CLOSED_FORMS: dict[type, tuple[int, int, int, dict[str, str]]] = {
    OneCompartment: (1, 2, 1, {"cl": "CL", "v": "V"}),
    OneCompartmentOral: (2, 2, 2, {"cl": "CL", "v": "V", "ka": "KA"}),
    TwoCompartment: (3, 4, 1, {"cl": "CL", "v": "V1", "q": "Q", "vp": "V2"}),
    TwoCompartmentOral: (4, 4, 2, {"cl": "CL", "v": "V2", "q": "Q", "vp": "V3", "ka": "KA"}),
    ThreeCompartment: (
        11, 4, 1, {"cl": "CL", "v": "V1", "q": "Q2", "vp": "V2", "q2": "Q3", "vp2": "V3"}
    ),
    ThreeCompartmentOral: (
        12, 4, 2,
        {"cl": "CL", "v": "V2", "q": "Q3", "vp": "V3", "q2": "Q4", "vp2": "V4", "ka": "KA"},
    ),
}  # fmt: skip

_ERROR_MODELS = (Additive, Proportional, Combined1, Combined2, Exponential, Normal)

# Names a $PK variable may not take: NM-TRAN's own, and those this writer uses.
_RESERVED = set(
    "THETA ETA EPS ERR A F Y W T DADT IPRED IRES IWRES IPRSAFE PRED RES WRES CWRES CIPRED "
    "NPDE NPD EPRED MDV DV ID TIME AMT EVID CMT RATE II ADDL SS MODE ICALL NEWIND IREP "
    "EXP LOG LOG10 SQRT ABS SIN COS TAN ATAN INT MIN MAX MOD PHI GAMLN IF THEN ELSE ENDIF "
    "AND OR NOT EQ NE LT LE GT GE COMACT COMSAV MIXNUM MIXEST".split()
) | {f"S{i}" for i in range(1, 10)}
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclasses.dataclass
class _Blocks:
    """The translated abbreviated code and what the records around it need."""

    pk: list[str]
    error: list[str]
    des: list[str]
    subroutines: str | None  # None for $PRED
    compartments: list[str]  # $MODEL lines
    parameters: list[str]  # NM-TRAN names of the individual parameters
    log_dv: bool  # the data file holds LOG(DV)


def _model_name(model: Model) -> str:
    return type(model).__name__


def _with_thetas(model: Model, values: Sequence[Any]) -> Model:
    names = list(model.thetas())
    if not names:
        return model
    return eqx.tree_at(lambda m: [getattr(m, n).value for n in names], model, list(values))


def _covariates_read(model: Model) -> list[str]:
    """The covariate names ``individual`` reads (``cov.WT``, ``cov["WT"]``), in order."""

    class Probe(CovariateView):
        __slots__ = ("seen",)

        def __init__(self):
            super().__init__(jnp.ones(1), ("_",))
            self.seen: list[str]
            object.__setattr__(self, "seen", [])

        def _lookup(self, name: str) -> int:
            if name not in self.seen:
                self.seen.append(name)
            return 0

    probe = Probe()
    # Run eagerly (not traced), so that it reaches every covariate read even
    # where the code branches in Python (refused later, with its own message).
    model._as_numbers().individual(EtaView(jnp.zeros(model.n_eta), model.eta_names), probe)
    return list(probe.seen)


def _translate(model: Model, covariates: Sequence[str], names: _Names) -> _Blocks:
    cls = _model_name(model)
    dynamics = model.dynamics
    thetas = list(model.thetas())
    theta_args = [jnp.zeros(())] * len(thetas)
    theta_nodes = [_scalar(f"THETA({i + 1})") for i in range(len(thetas))]

    # $PK: individual(eta, cov) -> parameters
    keys: list[str] = []

    def individual(theta_values, eta, cov):
        m = _with_thetas(model, theta_values)
        params = m.individual_parameters(eta, cov, tuple(covariates))
        keys.extend(params)
        return list(params.values())

    pk_part = f"{cls}.individual ($PK)"
    closed = _trace(
        pk_part, individual, theta_args, jnp.zeros(model.n_eta), jnp.zeros(len(covariates))
    )
    inputs = [
        *theta_nodes,
        _leaves([f"ETA({i + 1})" for i in range(model.n_eta)]),
        _leaves(covariates),
    ]
    outputs = [_item(x) for x in _Tracer(pk_part).run(closed, inputs)]

    if type(dynamics) in _CLOSED_FORMS:
        advan, trans, central, renamed = _CLOSED_FORMS[type(dynamics)]
        missing = [k for k in renamed if k not in keys]
        if missing:
            raise ExportError(
                f"{pk_part}: {type(dynamics).__name__} (ADVAN{advan}) needs the individual "
                f"parameters {', '.join(renamed)}; {', '.join(missing)} not returned"
            )
    else:
        advan, trans, central, renamed = None, None, None, {}
    for key, fixed_name in renamed.items():
        if fixed_name in names.taken:
            raise ExportError(
                f"{pk_part}: ADVAN{advan} TRANS{trans} names the parameter {key!r} "
                f"{fixed_name}, which is also a data item; rename the column"
            )
        names.taken.add(fixed_name)
    parameter_names: dict[str, str] = {}
    for key in keys:
        if key in renamed:
            parameter_names[key] = renamed[key]
            continue
        if not _NAME_RE.fullmatch(key):
            raise ExportError(
                f"{pk_part}: the individual parameter {key!r} is not a valid NM-TRAN "
                "name (a letter, then letters, digits or _)"
            )
        parameter_names[key] = names.claim(key)
    roots = []
    for key, node in zip(keys, outputs, strict=True):
        if node.prefer is None and node.op not in ("leaf", "const"):
            node.prefer = parameter_names[key]
        roots.append(node)
    pk = _Renderer(names, roots)
    for key, node in zip(keys, outputs, strict=True):
        pk.assign(parameter_names[key], node)
    pk_lines = pk.lines

    # $ERROR: observe(amounts, parameters) -> one Gaussian error model
    compartments = dynamics.compartments
    error_fields: list[str] = []
    error_types: list[type] = []

    def observe(theta_values, amounts, parameter_values):
        m = _with_thetas(model, theta_values)
        _, models = m._observe(amounts, dict(zip(keys, parameter_values, strict=True)))
        if len(models) != 1:
            raise ExportError(
                f"{cls}.observe ($ERROR): {len(models)} endpoints; NONMEM's Y is one "
                "observation model (the reader has no DVID-dependent Y)"
            )
        (error,) = models
        error_types.append(type(error))
        if type(error) not in _ERROR_MODELS:
            kind = "observation model" if not error.gaussian else "error model"
            raise ExportError(
                f"{cls}.observe ($ERROR): the {kind} {type(error).__name__} has no "
                f"Y = IPRED + W*EPS(1) form; supported: "
                f"{', '.join(t.__name__ for t in _ERROR_MODELS)}"
            )
        fields = [f.name for f in dataclasses.fields(error)]
        error_fields.extend(fields)
        return [jnp.asarray(getattr(error, f)) for f in fields]

    error_part = f"{cls}.observe ($ERROR)"
    closed = _trace(
        error_part,
        observe,
        theta_args,
        jnp.zeros(len(compartments)),
        [jnp.zeros(())] * len(keys),
    )
    inputs = [
        *theta_nodes,
        _leaves([f"A({i + 1})" for i in range(len(compartments))]),
        *[_scalar(parameter_names[k]) for k in keys],
    ]
    leaves = _Tracer(error_part).run(closed, inputs)
    for field, leaf in zip(error_fields, leaves, strict=True):
        if leaf.shape != ():
            raise ExportError(f"{error_part}: {field} has shape {leaf.shape}, not one number")
    fields = {f: _item(x) for f, x in zip(error_fields, leaves, strict=True)}
    error_type = error_types[0]
    prediction = fields["prediction"]
    sd = _residual_sd(error_type, fields)

    # dynamics
    des_lines: list[str] = []
    model_lines: list[str] = []
    if type(dynamics).initial_amounts is not AbstractDynamics.initial_amounts:
        raise ExportError(
            f"{cls}.dynamics: {type(dynamics).__name__} starts from non-zero amounts "
            "(initial_amounts); NONMEM's A_0 is not written"
        )
    if isinstance(dynamics, Pred):
        subroutines = None
    elif advan is not None:
        subroutines = f"ADVAN{advan} TRANS{trans}"
    elif isinstance(dynamics, AbstractODE):
        des_lines = _des(model, keys, parameter_names, names)
        tol = max(1, min(15, round(-math.log10(dynamics.rtol))))
        subroutines = f"ADVAN13 TOL={tol}"
        # The observed compartment (DEFOBS): the one the prediction reads.
        observed = sorted(_reached(prediction) & {f"A({i + 1})" for i in range(len(compartments))})
        lower = [c.lower() for c in compartments]
        if len(observed) == 1:
            central = int(observed[0][2:-1])
        else:
            central = lower.index("central") + 1 if "central" in lower else 1
        for i, c in enumerate(compartments, start=1):
            if not _NAME_RE.fullmatch(c):
                raise ExportError(
                    f"{type(dynamics).__name__}: the compartment name {c!r} is not an NM-TRAN name"
                )
            options = " DEFDOSE" * (i == 1) + " DEFOBS" * (i == central)
            model_lines.append(f"COMP=({c.upper()}{options})")
    else:
        raise ExportError(
            f"{cls}.dynamics: {type(dynamics).__name__} is neither a closed form "
            f"({', '.join(t.__name__ for t in _CLOSED_FORMS)}), an AbstractODE ($DES) "
            "nor Pred ($PRED)"
        )

    error = _Renderer(names, [prediction, sd])
    # IPRED = F where the prediction is A(central)/S, S a $PK variable.
    if prediction.name is None and prediction.op not in ("const", "select"):
        text, _ = error._inline(prediction)
        match = re.fullmatch(r"A\((\d+)\)/([A-Z][A-Z0-9_]*)", text)
        if (
            match
            and central is not None
            and int(match.group(1)) == central
            and match.group(2) in parameter_names.values()
        ):
            pk_lines.append(f"S{central} = {match.group(2)}")
            error.lines.append("IPRED = F")
            prediction.name = "IPRED"
    error.assign("IPRED", prediction)
    error.assign("W", sd)
    log_dv = error_type is Exponential
    if log_dv:
        error.lines += [
            "IPRSAFE = IPRED",
            "IF (IPRED.LE.0.0) IPRSAFE = 1.0",
            "Y = LOG(IPRSAFE) + W*EPS(1)",
            "IRES = DV - LOG(IPRSAFE)",
        ]
    else:
        error.lines += ["Y = IPRED + W*EPS(1)", "IRES = DV - IPRED"]
    error.lines += ["IWRES = 0.0", "IF (W.NE.0.0) IWRES = IRES/W"]
    return _Blocks(
        pk=pk_lines,
        error=error.lines,
        des=des_lines,
        subroutines=subroutines,
        compartments=model_lines,
        parameters=[parameter_names[k] for k in keys],
        log_dv=log_dv,
    )


def _reached(*roots: _Node) -> set[str]:
    """The leaves (THETA(1), A(2), T...) that ``roots`` depend on."""
    found, seen, stack = set(), set(), list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op == "leaf":
            found.add(node.name)
        stack.extend(node.args)
    return found


def _residual_sd(error_type: type, fields: Mapping[str, _Node]) -> _Node:
    """W, the residual SD, from the error model's fields (its variance is W**2)."""
    f = fields["prediction"]
    if error_type in (Additive, Normal, Exponential):
        return fields["sd"]
    if error_type is Proportional:
        return _op("mul", fields["cv"], f)
    if error_type is Combined1:
        return _op("add", fields["add"], _op("mul", fields["prop"], _op("call", f, param="ABS")))
    # Combined2: variances add
    additive = _op("ipow", fields["add"], param=2)
    proportional = _op("ipow", _op("mul", fields["prop"], f), param=2)
    return _op("call", _op("add", additive, proportional), param="SQRT")


def _des(model: Model, keys: list[str], parameter_names: Mapping[str, str], names: _Names):
    dynamics = model.dynamics
    n = len(dynamics.compartments)
    part = f"{type(dynamics).__name__}.rhs ($DES)"

    def rhs(t, amounts, parameter_values):
        return jnp.asarray(dynamics.rhs(t, amounts, dict(zip(keys, parameter_values, strict=True))))

    closed = _trace(part, rhs, jnp.zeros(()), jnp.zeros(n), [jnp.zeros(())] * len(keys))
    inputs = [
        _scalar("T"),
        _leaves([f"A({i + 1})" for i in range(n)]),
        *[_scalar(parameter_names[k]) for k in keys],
    ]
    (rates,) = _Tracer(part).run(closed, inputs)
    if rates.shape != (n,):
        raise ExportError(f"{part}: returned shape {rates.shape}, expected ({n},)")
    if "T" in _reached(*rates):
        raise ExportError(
            f"{part}: reads t, the time since the last event in pmx (not NONMEM's T, "
            "the time since the first record); write the model without t"
        )
    renderer = _Renderer(names, list(rates))
    for i, node in enumerate(rates, start=1):
        renderer.assign(f"DADT({i})", node)
    return renderer.lines


# -- data --------------------------------------------------------------------------------

_ROLE_COLUMNS = ("ID", "TIME", "AMT", "RATE", "II", "ADDL", "SS", "EVID", "MDV", "CMT", "DV")
_NONMEM_ITEMS = set(
    "ID L1 L2 DV MDV TIME DATE DAT1 DAT2 DAT3 EVID AMT RATE SS II ADDL CMT PCMT CALL CONT "
    "MRG_ RAW_ RPT_ DVID OCC CENS LIMIT LLOQ BLQ".split()
)


def _data_table(dataset: Dataset, log_dv: bool) -> pd.DataFrame:
    """The dataset as NONMEM reads it: roles under NONMEM's names, then the
    covariates as the model sees them (carried forward, categories coded)."""
    records = dataset.records
    if (records["cens"] != 0).any():
        row = int(records.loc[records["cens"] != 0, "row"].iloc[0]) + 1
        raise ExportError(
            f"data: censored (BLQ) records (first: row {row}); NONMEM's M3 likelihood is "
            "not written, drop them or export without censoring"
        )
    if len(dataset.dvid_levels) > 1:
        raise ExportError(f"data: {len(dataset.dvid_levels)} DVID levels; one endpoint is written")
    ids = records["id"]
    if not pd.api.types.is_numeric_dtype(ids):
        ids = records["subject"] + 1
    table = pd.DataFrame({"ID": ids.to_numpy(), "TIME": records["time"].to_numpy()})
    table["AMT"] = records["amt"].to_numpy()
    for role in ("rate", "ii", "addl", "ss"):
        if (records[role] != 0).any():
            table[role.upper()] = records[role].to_numpy()
    table["EVID"] = records["evid"].to_numpy()
    table["MDV"] = records["mdv"].to_numpy()
    table["CMT"] = records["cmt"].to_numpy()
    dv = records["dv"].to_numpy(dtype=float).copy()
    if log_dv:
        observed = ((records["evid"] == 0) & (records["mdv"] == 0)).to_numpy()
        bad = observed & ~(dv > 0)
        if bad.any():
            row = int(records["row"].to_numpy()[bad][0]) + 1
            raise ExportError(
                f"data: DV <= 0 on row {row}; the log-scale error model writes LOG(DV)"
            )
        dv[observed] = np.log(dv[observed])
    table["DV"] = dv
    covariates = dataset.covariates
    for name in covariates.columns:
        column = name.upper()
        if not _NAME_RE.fullmatch(column) or column in _NONMEM_ITEMS | _RESERVED:
            raise ExportError(
                f"data: the covariate {name!r} cannot be a NONMEM data item name; rename it"
            )
        if column in table.columns:
            raise ExportError(f"data: two covariates named {column} (names are case-insensitive)")
        table[column] = covariates[name].to_numpy(dtype=float)
    return table


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig") as handle:
        first = handle.readline().strip()
    fields = first.split(",") if "," in first else first.split()
    names = [f.strip().strip("'\"").upper() for f in fields]
    bad = [n for n in names if not _NAME_RE.fullmatch(n)]
    if not names or bad:
        raise ExportError(
            f"data: the first line of {path} is not a header of NM-TRAN names ({bad or first!r})"
        )
    return names


# -- the control stream ----------------------------------------------------------------


def _thetas(model: Model) -> list[str]:
    lines = []
    for name, theta in model.thetas().items():
        value = format_number(float(np.asarray(theta.value)))
        lo, hi = theta.lower, theta.upper
        inside = (lo < float(np.asarray(theta.value)) < hi) or not theta.fixed
        if inside and (math.isfinite(lo) or math.isfinite(hi)):
            low = format_number(lo) if math.isfinite(lo) else "-INF"
            text = f"({low}, {value}" + (f", {format_number(hi)})" if math.isfinite(hi) else ")")
        else:
            text = value
        lines.append(f"$THETA {text}{' FIX' * theta.fixed} ; {name}")
    return lines


def _omegas(model: Model) -> list[str]:
    lines = []
    for field, block in model.omega_blocks():
        if block.occasion:
            raise ExportError(
                f"{_model_name(model)}.{field}: between-occasion variability (IOV) is not "
                "written (NONMEM codes it with OCC-indexed ETAs and BLOCK SAME)"
            )
        matrix = np.asarray(block.matrix, dtype=float)
        fix = " FIX" * block.fixed
        if block.diagonal:
            lines.append(f"$OMEGA ; {field}")
            for i, eta in enumerate(block.names):
                lines.append(f"  {format_number(matrix[i, i])}{fix} ; {eta}")
        else:
            lines.append(f"$OMEGA BLOCK({block.n_eta}) ; {field}")
            for i, eta in enumerate(block.names):
                row = " ".join(format_number(matrix[i, j]) for j in range(i + 1))
                last = fix if i == block.n_eta - 1 else ""
                lines.append(f"  {row}{last} ; {eta}")
    return lines


_METHODS = {
    "fo": "METHOD=0",
    "foce": "METHOD=1",
    "focei": "METHOD=1 INTERACTION",
    "laplace": "METHOD=1 INTERACTION LAPLACIAN",
}


def write_model(
    model: Model,
    path: str | os.PathLike,
    data: Dataset | str | os.PathLike | None = None,
    *,
    method: str = "focei",
    maxeval: int = 9999,
    covariance: bool | str = True,
    tables: bool = True,
    problem: str | None = None,
) -> Path:
    """Write ``model`` (at its current THETA/OMEGA values) as a NONMEM control
    stream at ``path``.

    Arguments:
        model: a :class:`~pmx_jax.Model` (see the module docstring for what is
            translated).
        path: the control stream to write (e.g. ``run1.mod``).
        data: a :class:`~pmx_jax.data.Dataset`, written next to the control
            stream as ``<stem>.csv`` with NONMEM's items (``ID TIME AMT
            [RATE II ADDL SS] EVID MDV CMT DV`` and the covariates as the
            model sees them), or the path of an existing NONMEM data file
            (``$INPUT`` from its header, ``$DATA`` relative to the control
            stream), or ``None`` (``$INPUT`` of those items and the
            covariates the model reads, ``$DATA <stem>.csv``).
        method: ``"fo"``, ``"foce"``, ``"focei"`` or ``"laplace"`` ($ESTIMATION).
        maxeval: $ESTIMATION MAXEVAL.
        covariance: write ``$COVARIANCE`` (``True``: unconditional; a string:
            its options).
        tables: write the $TABLE records of Xpose (sdtab, patab, cotab).
        problem: the $PROBLEM text (default: the model's class name).

    Returns the path written.  Raises :class:`ExportError` for what has no
    NM-TRAN translation, naming the block and the construct.

    Example: ``write_model(Theophylline(), "run1.mod", pmx.datasets.load("theophylline"))``
    then ``read_model("run1.mod")`` gives the same OFV.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    path = Path(path)
    cls = _model_name(model)
    if model.n_iov_eta:
        _omegas(model)  # raises, naming the IOV block
    read = _covariates_read(model)

    # data items
    frame = None
    if isinstance(data, Dataset):
        covariates = list(data.check_covariates(read))
        items = None  # from the table below
        taken = set(_ROLE_COLUMNS) | {c.upper() for c in data.covariate_names}
        data_name = path.with_suffix(".csv").name
    elif data is not None:
        data_path = Path(data)
        items = _header(data_path)
        covariates = [c.upper() for c in read]
        absent = [c for c in covariates if c not in items]
        if absent:
            raise ExportError(
                f"{cls}.individual reads the covariate(s) {', '.join(absent)}, not in the "
                f"header of {data_path} ({', '.join(items)})"
            )
        taken = set(items)
        try:
            data_name = os.path.relpath(data_path.resolve(), path.resolve().parent)
        except ValueError:  # another drive
            data_name = str(data_path.resolve())
    else:
        covariates = [c.upper() for c in read]
        items = [*("ID", "TIME", "AMT", "EVID", "MDV", "CMT", "DV"), *covariates]
        data_name = path.with_suffix(".csv").name
        taken = set(items)
    covariates = [c.upper() for c in covariates]
    for c in covariates:
        if not _NAME_RE.fullmatch(c) or c in _RESERVED | _NONMEM_ITEMS:
            raise ExportError(
                f"{cls}.individual reads the covariate {c!r}, which cannot be an NM-TRAN "
                "data item name; rename the column"
            )
    names = _Names(_RESERVED | taken | set(covariates))
    blocks = _translate(model, covariates, names)
    if isinstance(data, Dataset):
        frame = _data_table(data, blocks.log_dv)
        items = list(frame.columns)
    elif blocks.log_dv and data is not None:
        raise ExportError(
            f"{cls}.observe: the log-scale (Exponential) error model needs LOG(DV) in the "
            "data file; pass the Dataset so that write_model writes it"
        )
    assert items is not None
    if "DV" not in items:
        raise ExportError(f"data: no DV item in {', '.join(items)}")

    run = re.search(r"(\d+)$", path.stem)
    suffix = run.group(1) if run else path.stem
    out = [f"$PROBLEM {problem or cls}", f"$INPUT {' '.join(items)}"]
    out.append(f"$DATA {data_name} IGNORE=@" + ("" if data is not None else " ; the data file"))
    if blocks.log_dv:
        out.append("; DV is LOG(observation): Exponential error, transform both sides")
    if blocks.subroutines is None:
        out.append("$PRED")
        out += [f"  {line}" for line in blocks.pk + blocks.error]
    else:
        out.append(f"$SUBROUTINES {blocks.subroutines}")
        if blocks.compartments:
            out.append("$MODEL " + " ".join(blocks.compartments))
        out.append("$PK")
        out += [f"  {line}" for line in blocks.pk]
        if blocks.des:
            out.append("$DES")
            out += [f"  {line}" for line in blocks.des]
        out.append("$ERROR")
        out += [f"  {line}" for line in blocks.error]
    out += _thetas(model)
    out += _omegas(model)
    out.append("$SIGMA 1 FIX ; EPS(1): the residual SD is W")
    out.append(f"$ESTIMATION {_METHODS[method]} MAXEVAL={int(maxeval)} PRINT=5")
    if covariance:
        out.append(
            "$COVARIANCE " + (covariance if isinstance(covariance, str) else "UNCONDITIONAL")
        )
    if tables:
        sd: list[str] = [i for i in ("ID", "TIME", "DV", "MDV", "EVID") if i in items]
        sd += ["IPRED", "IWRES", "PRED", "RES", "WRES", "CWRES"]
        out.append(f"$TABLE {' '.join(sd)} NOPRINT ONEHEADER FILE=sdtab{suffix}")
        etas = [f"ETA{i + 1}" for i in range(model.n_eta)]
        out.append(
            f"$TABLE ID {' '.join(blocks.parameters + etas)} NOPRINT ONEHEADER FIRSTONLY "
            f"FILE=patab{suffix}"
        )
        if covariates:
            out.append(
                f"$TABLE ID {' '.join(covariates)} NOPRINT ONEHEADER FIRSTONLY FILE=cotab{suffix}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    if frame is not None:
        frame.to_csv(path.with_suffix(".csv"), index=False, na_rep=".")
    return path
