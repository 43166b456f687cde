"""Run specifications (TOML files in ``configs/``) for the ``pmx`` command line.

A run specification names a model, its data or a dosing design, and the settings
of the job::

    name = "theophylline"        # prefix of the output files (default: the file's name)
    output_dir = "runs"          # where outputs go (relative to the working directory)

    [model]
    use = "pmx_jax.library:Theophylline"
    fix = ["add_sd"]             # THETAs and OMEGA blocks held at their value (NONMEM's FIX)

    [model.theta]                # initial estimates; residual error SDs are THETAs here
    tcl = 1.0                    # (NONMEM's SIGMA is their square: $SIGMA 0.49 is add_sd = 0.7)

    [model.bounds]               # THETA bounds as [lower, upper]; inf for an open side
    tcl = [-5, 5]

    [model.omega]                # variances by eta name, or a whole block by its field name:
    cl = 0.3                     #   iiv = [0.6, 0.3, 0.1]   (a diagonal block's variances)
                                 #   iiv = [0.6, 0.01, 0.3, 0.0, 0.0, 0.1]   (lower triangle:
                                 #   a BLOCK(3) with covariances)

    [data]                       # a bundled dataset, or a CSV file
    dataset = "theophylline"     # or: path = "study.csv" (relative to this file)

    [data.options]               # keyword arguments of pmx_jax.data.read_nonmem
    covariates = ["WT"]

    [regimen]                    # a designed trial instead of (or besides) [data]
    route = "oral"               # oral, bolus or infusion (with duration)
    dose = 320
    every = 24
    n = 7
    sample_times = { start = 0, stop = 168, step = 4 }   # or a list of times

    [simulate]                   # n_subjects, seed, chunk_size
    [simulate.covariates.WT]     # per-subject covariates of a virtual trial
    distribution = "lognormal"   # with median and sd_log; or "normal" with mean and sd

    [fit]                        # keyword arguments of pmx_jax.estimation.fit
    method = "focei"

Every key is checked when the file is read: an unknown key, text where a number
belongs, a missing file or a misspelt dataset name raise :class:`ConfigError`
naming the file, the section and the key, with the valid keys and the closest
match.  The keys of ``[fit]`` and ``[data.options]`` are those of
:func:`pmx_jax.estimation.fit` and :func:`pmx_jax.data.read_nonmem`, read from
their signatures, so a new keyword argument is accepted without a change here.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import os
import re
import tempfile
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .data import Dataset, read_nonmem
from .model import Model
from .simulation import Regimen


class ConfigError(ValueError):
    """A run specification that cannot be carried out; the message names the
    file, the section and the key, and says what to change."""


@dataclass
class RunConfig:
    """A checked run specification: the model with the file's parameter values,
    the dataset read, the regimen built, and the checked [simulate]/[fit] settings."""

    path: Path
    name: str
    model: Model
    data: Dataset | None
    regimen: Regimen | None
    simulate: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    output_dir: Path = Path("runs")


_TOP_LEVEL = ("name", "output_dir", "model", "data", "regimen", "simulate", "fit")
_MODEL_KEYS = ("use", "theta", "bounds", "omega", "fix")
_DATA_KEYS = ("dataset", "path", "options")
_REGIMEN_KEYS = (
    "route",
    "dose",
    "every",
    "n",
    "start",
    "cmt",
    "duration",
    "sample_times",
    "sample_cmt",
    "covariates",
)
_ROUTES = ("oral", "bolus", "infusion")
_SAMPLE_GRID_KEYS = ("start", "stop", "step")
_SIMULATE_KEYS = ("n_subjects", "seed", "chunk_size", "covariates")
# Per-subject covariate distributions of a virtual trial and their parameters.
_DISTRIBUTIONS = {"normal": ("mean", "sd"), "lognormal": ("median", "sd_log")}
# fit() arguments the command line sets itself: it always shows progress.
_FIT_SET_BY_CLI = ("progress",)
# quinidine's documented extra option of pmx_jax.datasets.load.
_BUNDLED_EXTRA_OPTIONS = {"quinidine": {"steady_state": bool}}


# -- reading the file ---------------------------------------------------------------


def load_config(path: str | Path) -> RunConfig:
    """Read and check a run specification (see the module docstring for its keys).

    Raises:
        ConfigError: naming the file, the section and the key, for anything that
            cannot be carried out as written.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a run specification (a .toml file)")
    if not path.is_file():
        raise ConfigError(f"no run specification at {path}")
    with path.open("rb") as f:
        try:
            spec = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
    _check_keys(spec, _TOP_LEVEL, "the top level", path)
    if "model" not in spec:
        raise ConfigError(f"{path}: missing [model] section")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: name = {name!r} must be text, e.g. name = {path.stem!r}")
    output_dir = spec.get("output_dir", "runs")
    if not isinstance(output_dir, str):
        raise ConfigError(f"{path}: output_dir = {output_dir!r} must be a folder name (text)")
    return RunConfig(
        path=path,
        name=name,
        model=_resolve_model(_section(spec, "model", path), path),
        data=_resolve_data(_section(spec, "data", path), path),
        regimen=_resolve_regimen(_section(spec, "regimen", path), path),
        simulate=_resolve_simulate(_section(spec, "simulate", path) or {}, path),
        fit=_resolve_fit(_section(spec, "fit", path) or {}, path),
        output_dir=Path(output_dir),
    )


def output_folder(path: str | Path, given_by: str) -> Path:
    """Create the output folder and check it is writable, before a run starts
    (so that a long fit is not lost to a typo in ``--output``).

    ``given_by`` says where the folder was named (``"--output"``, or the run
    specification's ``output_dir``), for the message.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise ConfigError(
            f"output folder {path} ({given_by}) is a file; name a folder instead"
        ) from e
    except OSError as e:
        raise ConfigError(
            f"cannot create the output folder {path} ({given_by}): {e.strerror}; "
            f"name a folder you can write to"
        ) from e
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot write to the output folder {path} ({given_by}): {e.strerror}; "
            f"name a folder you can write to"
        ) from e
    return path


# -- generic checks --------------------------------------------------------------------


def _section(spec: Mapping[str, Any], key: str, where: Path) -> dict[str, Any] | None:
    """The table ``[key]``, or None when the file has no such section."""
    if key not in spec:
        return None
    value = spec[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} = {value!r} must be a section, [{key}]")
    return value


def _check_keys(
    table: Mapping[str, Any], valid: Iterable[str], label: str, where: Path, hint: str = ""
) -> None:
    """Refuse keys not in ``valid``, naming each with its closest valid key;
    ``label`` is where they were found, e.g. ``"[data]"``."""
    valid = list(valid)
    unknown = [key for key in table if key not in valid]
    if not unknown:
        return
    by_lower = {v.lower(): v for v in valid}
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1) or [
            by_lower[v] for v in difflib.get_close_matches(key.lower(), by_lower, n=1)
        ]
        named.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigError(
        f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(named)} in {label}; "
        f"valid keys: {', '.join(valid) or '(none)'}{hint}"
    )


_LEADING_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def _number(
    value: Any, key: str, section: str, where: Path, *, whole: bool = False, finite: bool = True
) -> Any:
    """A TOML number (an int when ``whole``), refusing text such as ``"320mg"``."""
    kind = "a whole number" if whole else "a number"
    if isinstance(value, str):
        found = _LEADING_NUMBER.match(value)
        example = f"{key} = {found.group(1)}" if found else f"{key} = 1"
        raise ConfigError(
            f"{where}: [{section}] {key} = {value!r} is text; it must be {kind}, written "
            f"without quotes or units, e.g. {example}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: [{section}] {key} = {value!r} must be {kind}")
    if finite and not math.isfinite(value):
        raise ConfigError(f"{where}: [{section}] {key} = {value!r} must be a finite number")
    if whole:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: [{section}] {key} = {value!r} must be a whole number")
        return int(value)
    return value


def _positive(value: Any, key: str, section: str, where: Path, *, whole: bool = False) -> Any:
    number = _number(value, key, section, where, whole=whole)
    if number <= 0:
        raise ConfigError(f"{where}: [{section}] {key} = {value!r} must be > 0")
    return number


def _text(value: Any, key: str, section: str, where: Path, example: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: [{section}] {key} = {value!r} must be text, e.g. {example}")
    return value


# -- keyword arguments read from a function's signature ------------------------------


class _Mismatch(Exception):
    """A TOML value that does not fit a parameter's annotation."""


def _signature_options(function: Callable[..., Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """The keyword arguments of ``function`` a TOML file can give: name ->
    annotation.  Arguments without a default (the data a function works on) and
    those whose type TOML cannot write (callbacks, arrays) are left out."""
    try:
        signature = inspect.signature(function, eval_str=True)
    except Exception:  # an annotation that cannot be evaluated: accept any value
        signature = inspect.signature(function)
    options = {}
    for name, parameter in signature.parameters.items():
        if parameter.default is inspect.Parameter.empty or name in skip:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = parameter.annotation
        if isinstance(annotation, str) or _describe(annotation) is not None:
            options[name] = annotation
    return options


def _describe(annotation: Any) -> str | None:
    """What a TOML value for ``annotation`` must be, in words; None when TOML
    cannot write it."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return "any value"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        if any(p is None for p in parts):
            return None
        text = " or ".join(dict.fromkeys(p for p in parts if p is not None))
        return text + (", or false for none" if type(None) in args and bool not in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Mapping, dict):
        value = _describe(args[1]) if len(args) == 2 else "any value"
        return None if value is None else f"a table of {value}"
    if origin in (Sequence, list, tuple):
        item = _describe(args[0]) if args else "any value"
        return None if item is None else f"a list of {item}"
    simple = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "text",
        os.PathLike: "a path (text)",
    }
    return simple.get(annotation)


def _coerce(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` wants it, or :class:`_Mismatch`.  TOML has no
    null, so ``false`` stands for None where None is allowed and bool is not."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is False and type(None) in args and bool not in args:
            return None
        for option in args:
            try:
                return _coerce(value, option)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Mismatch
    if origin in (Mapping, dict):
        if not isinstance(value, dict):
            raise _Mismatch
        key_type, value_type = args if len(args) == 2 else (str, Any)
        return {_table_key(k, key_type): _coerce(v, value_type) for k, v in value.items()}
    if origin in (Sequence, list, tuple):
        if not isinstance(value, list):
            raise _Mismatch
        return [_coerce(v, args[0] if args else Any) for v in value]
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation in (str, os.PathLike) and isinstance(value, str):
        return value
    raise _Mismatch


def _table_key(key: str, key_type: Any) -> Any:
    """TOML table keys are text; a mapping keyed by numbers (read_nonmem's
    ``ss_codes = {"99" = 0}``) gets them as numbers."""
    if key_type in (int, float):
        try:
            number = float(key)
        except ValueError:
            raise _Mismatch from None
        if key_type is int and not number.is_integer():
            raise _Mismatch
        return int(number) if key_type is int else number
    return _coerce(key, key_type)


def _keyword_options(
    table: Mapping[str, Any],
    valid: Mapping[str, Any],
    label: str,
    where: Path,
    hint: str = "",
) -> dict[str, Any]:
    """Check ``table`` against a function's keyword arguments: known keys and
    values of the annotated type.  ``label`` is where they were given, e.g. ``"[fit]"``."""
    _check_keys(table, valid, label, where, hint)
    options = {}
    for key, value in table.items():
        try:
            options[key] = _coerce(value, valid[key])
        except _Mismatch:
            raise ConfigError(
                f"{where}: {label} {key} = {value!r} must be {_describe(valid[key])}"
            ) from None
    return options


def read_options(table: Mapping[str, Any], label: str, where: Path | str) -> dict[str, Any]:
    """Check keyword arguments for :func:`pmx_jax.data.read_nonmem` (``pmx check
    --option``; a run specification's ``[data.options]`` is checked the same way)."""
    hint = " (the keyword arguments of pmx_jax.data.read_nonmem)"
    return _keyword_options(table, _signature_options(read_nonmem), label, Path(where), hint)


# -- [model] ------------------------------------------------------------------------------


def model_class(target: Any, where: str | Path, label: str = "[model] use") -> type[Model]:
    """The model class named ``'module:Class'`` (``[model] use``, ``pmx check --model``)."""
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(
            f"{where}: {label} = {target!r} must be 'module:Class', "
            "e.g. 'pmx_jax.library:Theophylline'"
        )
    module_name, class_name = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{where}: {label}: cannot import {module_name!r} ({e})") from e
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        models = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, Model) and v is not Model
        )
        close = difflib.get_close_matches(class_name, models, n=1)
        raise ConfigError(
            f"{where}: {label}: {target!r} is not a pmx_jax.Model subclass"
            + (f" (did you mean {module_name}:{close[0]}?)" if close else "")
            + (f"; {module_name} has {', '.join(models)}" if models else "")
        )
    return cls


def _resolve_model(spec: dict[str, Any] | None, where: Path) -> Model:
    assert spec is not None  # load_config has checked that [model] is there
    hint = (
        "; residual error parameters (NONMEM's SIGMA) are THETAs in pmx_jax (e.g. add_sd): "
        "set them in [model.theta]" + _sigma_hint(spec.get("use"), where)
        if any(key.lower() in ("sigma", "sigmas") for key in spec)
        else ""
    )
    _check_keys(spec, _MODEL_KEYS, "[model]", where, hint)
    if "use" not in spec:
        raise ConfigError(
            f"{where}: [model] needs use = 'module:Class', e.g. 'pmx_jax.library:Theophylline'"
        )
    model = model_class(spec["use"], where)()
    return _apply_parameters(model, spec, where)


def _sigma_hint(use: Any, where: Path) -> str:
    """Which THETAs of the model stand for NONMEM's SIGMA, for the message that
    refuses a [model.sigma] section ("" when the model cannot be named)."""
    from .nonmem._listing import sigma_thetas

    try:
        model = model_class(use, where)()
        found = sigma_thetas(model)
    except Exception:  # the [model] use error is reported on its own
        return ""
    if not found:
        return ""
    named = ", ".join(f"{name} ({kind})" for name, kind in found.items())
    return (
        f", as standard deviations: {type(model).__name__}'s are {named}; NONMEM's "
        "$SIGMA is their square (SIGMA 0.49 is an SD of 0.7)"
    )


def _apply_parameters(model: Model, spec: dict[str, Any], where: Path) -> Model:
    """The model with the file's initial estimates, bounds, OMEGA values and FIX."""
    thetas = model.thetas()
    blocks = dict(model.omega_blocks())
    # field name -> dataclass fields to replace, and the sections that asked for them
    changes: dict[str, dict[str, Any]] = {}
    asked_by: dict[str, list[str]] = {}

    def change(name: str, label: str, **fields: Any) -> None:
        changes.setdefault(name, {}).update(fields)
        asked_by.setdefault(name, []).append(label)

    cls_name = type(model).__name__
    theta_hint = f" (the THETAs of {cls_name})"
    values = _subsection(spec, "theta", where)
    _check_keys(values, thetas, "[model.theta]", where, theta_hint)
    for name, value in values.items():
        change(name, "[model.theta]", value=float(_number(value, name, "model.theta", where)))

    bounds = _subsection(spec, "bounds", where)
    _check_keys(bounds, thetas, "[model.bounds]", where, theta_hint)
    for name, value in bounds.items():
        if not (isinstance(value, list) and len(value) == 2):
            raise ConfigError(
                f"{where}: [model.bounds] {name} = {value!r} must be [lower, upper], "
                f"e.g. {name} = [0, inf] (inf for an open side)"
            )
        lower, upper = (
            float(_number(v, f"{name}[{i}]", "model.bounds", where, finite=False))
            for i, v in enumerate(value)
        )
        change(name, "[model.bounds]", lower=lower, upper=upper)

    for name, fields in _omega_changes(model, _subsection(spec, "omega", where), where).items():
        change(name, "[model.omega]", **fields)

    for name in _fix_names(model, spec.get("fix", []), where):
        change(name, "[model] fix", fixed=True)

    params = {**thetas, **blocks}
    for name, fields in changes.items():
        sections = " and ".join(dict.fromkeys(asked_by[name]))
        try:
            model = model.with_values(**{name: dataclasses.replace(params[name], **fields)})
        except ValueError as e:  # the model's bound and OMEGA checks, which name the etas
            raise ConfigError(f"{where}: {sections} {name}: {e}") from e
    return model


def _subsection(spec: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [model] {key} = {value!r} must be a section, [model.{key}]")
    return value


def _omega_changes(model: Model, spec: dict[str, Any], where: Path) -> dict[str, dict[str, Any]]:
    """``[model.omega]``: a variance by eta name, or a whole block by field name."""
    blocks = dict(model.omega_blocks())
    owner = {eta: name for name, block in blocks.items() for eta in block.names}
    valid = list(blocks) + [eta for eta in owner if eta not in blocks]
    _check_keys(
        spec,
        valid,
        "[model.omega]",
        where,
        f" (OMEGA blocks {', '.join(blocks)} of {type(model).__name__}, or their etas)",
    )
    changes: dict[str, dict[str, Any]] = {}
    for key, value in spec.items():
        if key in blocks:
            matrix, diagonal = _omega_block_matrix(blocks[key], key, value, where)
            changes[key] = dict(matrix=matrix, diagonal=diagonal)
    for key, value in spec.items():
        if key in blocks:
            continue
        block_name = owner[key]
        if block_name in spec:
            raise ConfigError(
                f"{where}: [model.omega] sets both block {block_name!r} and its eta {key!r}; "
                f"give one of them"
            )
        block = blocks[block_name]
        edited = changes.setdefault(
            block_name,
            dict(matrix=np.array(block.matrix, dtype=np.float64), diagonal=block.diagonal),
        )
        i = block.names.index(key)
        edited["matrix"][i, i] = _number(value, key, "model.omega", where)
    return changes


def _omega_block_matrix(block: Any, key: str, value: Any, where: Path) -> tuple[np.ndarray, bool]:
    """A block's matrix from its variances (a diagonal block), its lower triangle
    row by row as NONMEM writes it, or the full matrix.  Covariances make a
    diagonal block a BLOCK(n), whose covariances are then estimated."""
    n = block.n_eta
    etas = ", ".join(block.names)
    triangle = n * (n + 1) // 2
    forms = f"{n} variances ({etas})" if block.diagonal else ""
    if n > 1:
        forms += (" or " if forms else "") + f"its lower triangle ({triangle} numbers)"
    expected = f"[model.omega] {key} must be {forms or 'a variance'}"
    section = "model.omega"
    if not isinstance(value, list):
        if n == 1:
            matrix = np.array([[_number(value, key, section, where)]], dtype=np.float64)
            return matrix, block.diagonal
        raise ConfigError(f"{where}: {expected}; got {value!r}")
    if value and all(isinstance(row, list) for row in value):
        if len(value) != n or any(len(row) != n for row in value):
            raise ConfigError(f"{where}: [model.omega] {key} as a matrix must be {n}x{n} ({etas})")
        matrix = np.array(
            [
                [_number(v, f"{key}[{i}][{j}]", section, where) for j, v in enumerate(row)]
                for i, row in enumerate(value)
            ],
            dtype=np.float64,
        )
    else:
        numbers = [_number(v, f"{key}[{i}]", section, where) for i, v in enumerate(value)]
        if len(numbers) == n and (block.diagonal or n == 1):
            return np.diag(np.asarray(numbers, dtype=np.float64)), block.diagonal
        if len(numbers) != triangle or n == 1:
            raise ConfigError(f"{where}: {expected}; got {len(numbers)} numbers")
        matrix = np.zeros((n, n))
        matrix[np.tril_indices(n)] = numbers
        matrix = matrix + np.tril(matrix, -1).T
    has_covariances = bool(np.any(matrix[~np.eye(n, dtype=bool)] != 0))
    return matrix, block.diagonal and not has_covariances


def _fix_names(model: Model, value: Any, where: Path) -> list[str]:
    """``[model] fix``: THETA and OMEGA block names to hold fixed."""
    params = list(model.thetas()) + [name for name, _ in model.omega_blocks()]
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(
            f"{where}: [model] fix = {value!r} must be a list of parameter names, "
            f'e.g. fix = ["{params[0]}"]'
        )
    owner = {eta: name for name, block in model.omega_blocks() for eta in block.names}
    for name in value:
        if name in params:
            continue
        if name in owner:
            raise ConfigError(
                f"{where}: [model] fix: {name!r} is an eta of OMEGA block {owner[name]!r}; "
                f"FIX applies to whole blocks: fix = [{owner[name]!r}]"
            )
        close = difflib.get_close_matches(name, params, n=1)
        raise ConfigError(
            f"{where}: [model] fix: {type(model).__name__} has no parameter {name!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; its THETAs and OMEGA blocks are {', '.join(params)}"
        )
    return value


# -- [data] --------------------------------------------------------------------------------


def _resolve_data(spec: dict[str, Any] | None, where: Path) -> Dataset | None:
    if spec is None:
        return None
    _check_keys(spec, _DATA_KEYS, "[data]", where)
    if "dataset" in spec and "path" in spec:
        raise ConfigError(f"{where}: [data] has both dataset and path; give one of them")
    raw_options = spec.get("options", {})
    if not isinstance(raw_options, dict):
        raise ConfigError(f"{where}: [data] options = {raw_options!r} must be [data.options]")
    valid = _signature_options(read_nonmem)
    hint = " (the keyword arguments of pmx_jax.data.read_nonmem)"
    if "dataset" in spec:
        from . import datasets

        name = _bundled_name(spec["dataset"], where)
        valid.update(_BUNDLED_EXTRA_OPTIONS.get(name, {}))
        options = _keyword_options(raw_options, valid, "[data.options]", where, hint)
        return datasets.load(name, **options)
    if "path" in spec:
        options = _keyword_options(raw_options, valid, "[data.options]", where, hint)
        return read_nonmem(_data_path(spec["path"], where), **options)
    raise ConfigError(
        f"{where}: [data] needs dataset = 'NAME' (a bundled dataset) or path = 'FILE.csv'"
    )


def _bundled_name(name: Any, where: Path) -> str:
    from .datasets import names
    from .datasets._registry import _canonical

    bundled = names()
    if isinstance(name, str):
        try:
            return _canonical(name)
        except KeyError:
            pass
    close = (
        difflib.get_close_matches(name.strip().lower(), bundled, n=1)
        if isinstance(name, str)
        else []
    )
    raise ConfigError(
        f"{where}: [data] dataset = {name!r} is not a bundled dataset"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; the bundled datasets are {', '.join(bundled)}; for your own file write "
        "path = 'FILE.csv'"
    )


def _data_path(raw: Any, where: Path) -> Path:
    """``[data] path``: an existing file; relative paths start at the run specification."""
    raw = _text(raw, "path", "data", where, "path = 'data/study.csv'")
    path = Path(raw).expanduser()
    relative = not path.is_absolute()
    if relative:
        path = where.parent / path
    if path.is_dir():
        raise ConfigError(
            f"{where}: [data] path = {raw!r} is the folder {path}; name the data file in it"
        )
    if not path.exists():
        close = []
        if path.parent.is_dir():
            siblings = [p.name for p in path.parent.iterdir()]
            close = difflib.get_close_matches(path.name, siblings, n=1)
        start = " (a relative path starts at the run specification's folder)" if relative else ""
        raise ConfigError(
            f"{where}: [data] path = {raw!r}: no such file {path}{start}"
            + (f"; did you mean {close[0]!r}?" if close else "")
        )
    return path


# -- [regimen] ------------------------------------------------------------------------------


def _resolve_regimen(spec: dict[str, Any] | None, where: Path) -> Regimen | None:
    if spec is None:
        return None
    section = "regimen"
    _check_keys(spec, _REGIMEN_KEYS, "[regimen]", where)
    route = spec.get("route", "oral")
    if route not in _ROUTES:
        raise ConfigError(
            f"{where}: [regimen] route = {route!r} must be one of {', '.join(_ROUTES)}"
        )
    for required in ("dose", "sample_times"):
        if required not in spec:
            raise ConfigError(f"{where}: [regimen] needs {required!r}")
    if route == "infusion" and "duration" not in spec:
        raise ConfigError(f"{where}: [regimen] route = 'infusion' needs 'duration'")
    if route != "infusion" and "duration" in spec:
        raise ConfigError(
            f"{where}: [regimen] duration is for route = 'infusion'; this regimen is {route!r}"
        )
    amount = _number(spec["dose"], "dose", section, where)
    common = dict(
        every=_number(spec.get("every", 0.0), "every", section, where),
        n=_number(spec.get("n", 1), "n", section, where, whole=True),
        start=_number(spec.get("start", 0.0), "start", section, where),
        cmt=_number(spec.get("cmt", 1), "cmt", section, where, whole=True),
    )
    times = _sample_times(spec["sample_times"], where)
    sample_cmt = _number(spec.get("sample_cmt", 0), "sample_cmt", section, where, whole=True)
    covariates = _number_table(spec.get("covariates", {}), "regimen.covariates", where)
    try:
        if route == "infusion":
            duration = _number(spec["duration"], "duration", section, where)
            regimen = Regimen.infusion(amount, duration=duration, **common)
        else:
            regimen = getattr(Regimen, route)(amount, **common)
        regimen = regimen.sample(times, cmt=sample_cmt)
    except ValueError as e:
        raise ConfigError(f"{where}: [regimen]: {e}") from e
    return regimen.with_covariates(**covariates)


def _sample_times(value: Any, where: Path) -> list[float]:
    """A list of times, or a grid ``{start, stop, step}`` (stop included)."""
    section = "regimen"
    if isinstance(value, list):
        return [_number(t, f"sample_times[{i}]", section, where) for i, t in enumerate(value)]
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: [regimen] sample_times = {value!r} must be a list of times or "
            "{ start = 0, stop = 24, step = 1 }"
        )
    _check_keys(value, _SAMPLE_GRID_KEYS, "[regimen] sample_times", where)
    missing = [k for k in _SAMPLE_GRID_KEYS if k not in value]
    if missing:
        raise ConfigError(f"{where}: [regimen] sample_times needs {', '.join(missing)}")
    start = _number(value["start"], "sample_times.start", section, where)
    stop = _number(value["stop"], "sample_times.stop", section, where)
    step = _positive(value["step"], "sample_times.step", section, where)
    if stop < start:
        raise ConfigError(f"{where}: [regimen] sample_times: stop {stop} is before start {start}")
    return np.arange(start, stop + 1e-9 * max(1.0, abs(stop)), step).tolist()


def _number_table(value: Any, section: str, where: Path) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {section} = {value!r} must be a table of numbers")
    return {k: _number(v, k, section, where) for k, v in value.items()}


# -- [simulate] and [fit] -------------------------------------------------------------------


def _resolve_simulate(spec: dict[str, Any], where: Path) -> dict[str, Any]:
    section = "simulate"
    _check_keys(spec, _SIMULATE_KEYS, "[simulate]", where)
    options: dict[str, Any] = {}
    for key in ("n_subjects", "chunk_size"):
        if key in spec:
            options[key] = _positive(spec[key], key, section, where, whole=True)
    if "seed" in spec:
        options["seed"] = _number(spec["seed"], "seed", section, where, whole=True)
    if "covariates" in spec:
        covariates = spec["covariates"]
        if not isinstance(covariates, dict):
            raise ConfigError(f"{where}: [simulate] covariates must be [simulate.covariates.NAME]")
        options["covariates"] = {
            name: _distribution(dist, f"simulate.covariates.{name}", where)
            for name, dist in covariates.items()
        }
    return options


def _distribution(spec: Any, section: str, where: Path) -> dict[str, Any]:
    """A virtual-trial covariate distribution: normal (mean, sd) or lognormal
    (median, sd_log)."""
    kinds = ", ".join(f"{k} ({', '.join(p)})" for k, p in _DISTRIBUTIONS.items())
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: [{section}] must be a section with distribution = {kinds}")
    kind = spec.get("distribution")
    if kind not in _DISTRIBUTIONS:
        raise ConfigError(
            f"{where}: [{section}] distribution = {kind!r} must be one of {kinds}"
            if kind is not None
            else f"{where}: [{section}] needs distribution = one of {kinds}"
        )
    location, spread = _DISTRIBUTIONS[kind]
    _check_keys(spec, ("distribution", location, spread), f"[{section}]", where)
    missing = [k for k in (location, spread) if k not in spec]
    if missing:
        raise ConfigError(f"{where}: [{section}] a {kind} distribution needs {', '.join(missing)}")
    if kind == "lognormal":
        median = _positive(spec[location], location, section, where)
    else:
        median = _number(spec[location], location, section, where)
    return {
        "distribution": kind,
        location: median,
        spread: _positive(spec[spread], spread, section, where),
    }


def _resolve_fit(spec: dict[str, Any], where: Path) -> dict[str, Any]:
    from .estimation import fit
    from .estimation._covariance import KINDS
    from .likelihood._objective import EBE_SEARCHES

    valid = _signature_options(fit, skip=_FIT_SET_BY_CLI)
    hint = " (the keyword arguments of pmx_jax.estimation.fit)"
    if spec.get("method") == "saem":
        from .estimation import saem

        valid |= _signature_options(saem, skip=_FIT_SET_BY_CLI)
        hint = " (the keyword arguments of pmx_jax.estimation.fit and .saem)"
    options = _keyword_options(spec, valid, "[fit]", where, hint)
    # Text settings fit() checks only when it gets to them (the covariance step
    # runs after the minimisation): check them before the run.
    choices = {"covariance": KINDS, "ebe_search": EBE_SEARCHES}
    for key, allowed in choices.items():
        value = options.get(key)
        if value is not None and value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            raise ConfigError(
                f"{where}: [fit] {key} = {value!r} must be one of {', '.join(map(repr, allowed))}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + (", or false to skip the covariance step" if key == "covariance" else "")
            )
    return options
