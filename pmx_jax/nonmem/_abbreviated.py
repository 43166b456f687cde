"""NONMEM abbreviated code ($PK, $ERROR, $PRED) as a small interpreter over
JAX values.

Each line is parsed once into statements: assignments ``X = expr`` and
``IF (cond) THEN ... ELSE IF (cond) THEN ... ELSE ... ENDIF`` blocks (and the
single-line ``IF (cond) X = expr``).  Expressions are Fortran, rewritten into
Python (``.EQ.`` -> ``==``, ``.AND.`` -> ``and``, ``1.D0`` -> ``1.E0``,
names upper-cased) and compiled with :mod:`ast`, logical operators becoming
``jnp.logical_and/or/not`` so that they work on traced values.

Running a program executes the statements in order on an environment (a dict
of variable values).  An IF block runs every branch on a copy of the
environment and merges the variables assigned in any branch with
``jnp.where``, taking the previous value (0 when the variable had none, as
NONMEM's variables start at 0) where no branch assigns it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp


class ControlStreamError(ValueError):
    """A control stream that cannot be read: the message names the record,
    the line and the construct."""


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the control stream
    text: str  # code, comment removed
    comment: str = ""


_FORTRAN_OPERATORS = {
    "EQ": "==",
    "NE": "!=",
    "GT": ">",
    "GE": ">=",
    "LT": "<",
    "LE": "<=",
    "AND": " and ",
    "OR": " or ",
    "NOT": " not ",
}
_OPERATOR_RE = re.compile(r"\.(EQ|NE|GT|GE|LT|LE|AND|OR|NOT)\.", re.IGNORECASE)
_DEXP_RE = re.compile(r"(?<![A-Za-z_0-9])(\d+\.?\d*|\.\d+)[dD]([+-]?\d+)")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFUSED_STATEMENTS = re.compile(
    r"^(CALL|DO|EXIT|RETURN|GOTO|GO\s+TO|WRITE|PRINT|OPEN|CLOSE|INCLUDE|"
    r"COMRES|MTIME|MTDIFF|MNEXT|MPAST|DADT|A_0|A_0FLG|VERBATIM|\")\b",
    re.IGNORECASE,
)

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "EXP": jnp.exp,
    "LOG": jnp.log,
    "LOG10": jnp.log10,
    "SQRT": jnp.sqrt,
    "ABS": jnp.abs,
    "SIN": jnp.sin,
    "COS": jnp.cos,
    "TAN": jnp.tan,
    "ATAN": jnp.arctan,
    "INT": jnp.trunc,
    "MIN": jnp.minimum,
    "MAX": jnp.maximum,
    "MOD": jnp.fmod,  # Fortran MOD: the remainder with the sign of the dividend
}
# Indexed quantities supplied by the caller (THETA(n), ETA(n), EPS(n), A(n)).
INDEXED = ("THETA", "ETA", "EPS", "ERR", "A")


class _Logical(ast.NodeTransformer):
    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        fn = "_LAND" if isinstance(node.op, ast.And) else "_LOR"
        out = node.values[0]
        for value in node.values[1:]:
            out = ast.Call(ast.Name(fn, ast.Load()), [out, value], [])
        return ast.copy_location(out, node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.copy_location(
                ast.Call(ast.Name("_LNOT", ast.Load()), [node.operand], []), node
            )
        return node


_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
    ast.boolop,
)


@dataclass
class Expr:
    source: str  # the Fortran text
    code: Any = field(repr=False)  # compiled Python expression (from source)
    names: frozenset[str] = field(repr=False)  # variable names read (upper case, no functions)
    line: Line
    record: str


def _translate(text: str) -> str:
    # Names are case-insensitive (upper-cased first, so that the Python
    # keywords the operators become stay lower case); 1. and 2.E3 are Python.
    text = _NAME_RE.sub(lambda m: m.group(0).upper(), text)
    text = _OPERATOR_RE.sub(lambda m: _FORTRAN_OPERATORS[m.group(1).upper()], text)
    text = _DEXP_RE.sub(r"\1E\2", text)
    return text.replace("/=", "!=").strip()


def compile_expression(text: str, line: Line, record: str) -> Expr:
    source = _translate(text.strip())
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise ControlStreamError(
            f"{record} line {line.number}: cannot read the expression {text.strip()!r}"
        ) from None
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ControlStreamError(
                f"{record} line {line.number}: unsupported construct in {text.strip()!r}"
            )
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.keywords:
                raise ControlStreamError(
                    f"{record} line {line.number}: unsupported call in {text.strip()!r}"
                )
            fn = node.func.id
            if fn in INDEXED:
                if (
                    len(node.args) != 1
                    or not isinstance(node.args[0], ast.Constant)
                    or not isinstance(node.args[0].value, int)
                ):
                    raise ControlStreamError(
                        f"{record} line {line.number}: {fn}(n) needs a literal integer "
                        f"index, in {text.strip()!r}"
                    )
            elif fn not in FUNCTIONS:
                raise ControlStreamError(
                    f"{record} line {line.number}: unsupported function {fn} in {text.strip()!r}"
                )
        elif isinstance(node, ast.Name):
            names.add(node.id)
    callees = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names -= callees
    tree = ast.fix_missing_locations(_Logical().visit(tree))
    return Expr(
        text.strip(),
        compile(tree, f"<{record} line {line.number}>", "eval"),
        frozenset(names),
        line,
        record,
    )


@dataclass
class Assign:
    name: str
    expr: Expr


@dataclass
class IfBlock:
    branches: list[tuple[Expr, list[Any]]]
    otherwise: list[Any] | None
    line: Line


@dataclass
class Program:
    record: str
    statements: list[Any] = field(default_factory=list)

    def assigned(self) -> set[str]:
        return _assigned(self.statements)

    def read(self) -> set[str]:
        return _read(self.statements)

    def needed(self, targets: set[str]) -> set[str]:
        """The names (variables and data items) that ``targets`` depend on,
        a conservative backward slice (``targets`` included)."""
        return _needed(self.statements, set(targets))

    def indices(self, kind: str) -> set[int]:
        """The literal n of every ``kind(n)`` (e.g. ``"ETA"``)."""
        out: set[int] = set()
        for expr in _expressions(self.statements):
            tree = ast.parse(_translate(expr.source), mode="eval")
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    if node.func.id == kind:
                        out.add(node.args[0].value)
        return out

    def run(self, env: dict[str, Any], lookup: Mapping[str, Any]) -> dict[str, Any]:
        """Execute on ``env`` (variables, modified and returned); ``lookup``
        resolves names that are not variables (THETA, ETA, data items...)."""
        _run(self.statements, env, lookup)
        return env


def _expressions(statements):
    for s in statements:
        if isinstance(s, Assign):
            yield s.expr
        else:
            for cond, body in s.branches:
                yield cond
                yield from _expressions(body)
            if s.otherwise is not None:
                yield from _expressions(s.otherwise)


def _assigned(statements) -> set[str]:
    out: set[str] = set()
    for s in statements:
        if isinstance(s, Assign):
            out.add(s.name)
        else:
            for _, body in s.branches:
                out |= _assigned(body)
            if s.otherwise is not None:
                out |= _assigned(s.otherwise)
    return out


def _needed(statements, needed: set[str]) -> set[str]:
    needed = set(needed)
    for s in reversed(statements):
        if isinstance(s, Assign):
            if s.name in needed:
                needed |= s.expr.names
        elif _assigned([s]) & needed:
            for cond, body in s.branches:
                needed |= cond.names | _needed(body, needed)
            if s.otherwise is not None:
                needed |= _needed(s.otherwise, needed)
    return needed


def _read(statements) -> set[str]:
    out: set[str] = set()
    for e in _expressions(statements):
        out |= e.names
    return out


class _Scope(Mapping):
    """Locals of ``eval``: the variables, then the caller's lookup."""

    def __init__(self, env, lookup):
        self.env, self.lookup = env, lookup

    def __getitem__(self, key):
        if key in self.env:
            return self.env[key]
        return self.lookup[key]

    def __iter__(self):
        return iter(self.env)

    def __len__(self):
        return len(self.env)


_GLOBALS = {
    "__builtins__": {},
    "_LAND": jnp.logical_and,
    "_LOR": jnp.logical_or,
    "_LNOT": jnp.logical_not,
    **FUNCTIONS,
}


def evaluate(expr: Expr, env, lookup):
    try:
        return eval(expr.code, _GLOBALS, _Scope(env, lookup))  # noqa: S307
    except NameError as e:
        raise ControlStreamError(
            f"{expr.record} line {expr.line.number}: {expr.source!r} reads "
            f"{e.name or e} which is neither a variable assigned before it nor a data item"
        ) from None


def _run(statements, env, lookup):
    for s in statements:
        if isinstance(s, Assign):
            env[s.name] = jnp.asarray(evaluate(s.expr, env, lookup), dtype=float)
            continue
        conditions, results = [], []
        for cond, body in s.branches:
            conditions.append(jnp.asarray(evaluate(cond, env, lookup), dtype=bool))
            results.append(_run(body, dict(env), lookup))
        fallback = _run(s.otherwise, dict(env), lookup) if s.otherwise is not None else env
        names = _assigned([s])
        merged = {}
        for name in names:
            value = fallback.get(name, env.get(name, jnp.asarray(0.0)))
            for cond, result in reversed(list(zip(conditions, results, strict=True))):
                value = jnp.where(cond, result.get(name, env.get(name, 0.0)), value)
            merged[name] = value
        env.update(merged)
    return env


# -- parsing ------------------------------------------------------------------


def _split_condition(text: str, line: Line, record: str) -> tuple[str, str]:
    """``(cond) rest`` -> (cond, rest), with balanced parentheses."""
    text = text.strip()
    if not text.startswith("("):
        raise ControlStreamError(f"{record} line {line.number}: IF needs (condition): {text!r}")
    depth = 0
    for i, c in enumerate(text):
        depth += c == "("
        depth -= c == ")"
        if depth == 0:
            return text[1:i], text[i + 1 :].strip()
    raise ControlStreamError(f"{record} line {line.number}: unbalanced parentheses: {text!r}")


_IF_RE = re.compile(r"^IF\s*(\(.*)$", re.IGNORECASE)
_ELSEIF_RE = re.compile(r"^ELSE\s*IF\s*(\(.*)$", re.IGNORECASE)
_ELSE_RE = re.compile(r"^ELSE$", re.IGNORECASE)
_ENDIF_RE = re.compile(r"^END\s*IF$", re.IGNORECASE)
_ASSIGN_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(.*)$")


def _assignment(text: str, line: Line, record: str) -> Assign:
    m = _ASSIGN_RE.match(text)
    if not m:
        raise ControlStreamError(
            f"{record} line {line.number}: unsupported statement {text!r} (only "
            "assignments and IF/ELSE IF/ELSE/ENDIF are read)"
        )
    name = m.group(1).upper()
    if name in INDEXED or name in FUNCTIONS:
        raise ControlStreamError(f"{record} line {line.number}: cannot assign to {name}")
    return Assign(name, compile_expression(m.group(2), line, record))


def parse_program(lines: list[Line], record: str) -> Program:
    # stack of open blocks: (IfBlock, current body list)
    top: list[Any] = []
    stack: list[tuple[IfBlock, list[Any]]] = []

    def current() -> list[Any]:
        return stack[-1][1] if stack else top

    for line in lines:
        text = line.text.strip()
        if not text:
            continue
        if _REFUSED_STATEMENTS.match(text):
            raise ControlStreamError(f"{record} line {line.number}: unsupported statement {text!r}")
        if m := _ELSEIF_RE.match(text):
            cond, rest = _split_condition(m.group(1), line, record)
            if not stack or stack[-1][0].otherwise is not None or rest.upper() != "THEN":
                raise ControlStreamError(f"{record} line {line.number}: misplaced {text!r}")
            block = stack[-1][0]
            body: list[Any] = []
            block.branches.append((compile_expression(cond, line, record), body))
            stack[-1] = (block, body)
        elif _ELSE_RE.match(text):
            if not stack or stack[-1][0].otherwise is not None:
                raise ControlStreamError(f"{record} line {line.number}: ELSE without IF")
            block = stack[-1][0]
            block.otherwise = []
            stack[-1] = (block, block.otherwise)
        elif _ENDIF_RE.match(text):
            if not stack:
                raise ControlStreamError(f"{record} line {line.number}: ENDIF without IF")
            stack.pop()
        elif m := _IF_RE.match(text):
            cond, rest = _split_condition(m.group(1), line, record)
            condition = compile_expression(cond, line, record)
            if rest.upper() == "THEN":
                body = []
                block = IfBlock([(condition, body)], None, line)
                current().append(block)
                stack.append((block, body))
            else:
                current().append(
                    IfBlock([(condition, [_assignment(rest, line, record)])], None, line)
                )
        else:
            current().append(_assignment(text, line, record))
    if stack:
        raise ControlStreamError(
            f"{record} line {stack[-1][0].line.number}: IF block without ENDIF"
        )
    return Program(record, top)
