"""Run specifications (TOML files in ``configs/``) for the ``pmx`` command line."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import Dataset, read_nonmem
from .model import Model
from .simulation import Regimen


class ConfigError(ValueError):
    """A run specification that cannot be carried out; the message names the key."""


@dataclass
class RunConfig:
    path: Path
    name: str
    model: Model
    data: Dataset | None
    regimen: Regimen | None
    simulate: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    output_dir: Path = Path("runs")


def _resolve_model(spec: dict[str, Any], where: Path) -> Model:
    target = spec.get("use")
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(
            f"{where}: [model] use must be 'module:Class', e.g. 'pmx_jax.library:Theophylline'"
        )
    module_name, class_name = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{where}: [model] use: cannot import {module_name!r} ({e})") from e
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ConfigError(f"{where}: [model] use: {target!r} is not a pmx_jax.Model subclass")
    model = cls()
    values = dict(spec.get("theta", {}))
    unknown = sorted(set(values) - set(model.theta_names))
    if unknown:
        raise ConfigError(
            f"{where}: [model.theta] has {unknown}, which {class_name} does not have; "
            f"its THETAs are {model.theta_names}"
        )
    return model.with_values(**values) if values else model


def _resolve_data(spec: dict[str, Any], where: Path) -> Dataset | None:
    if not spec:
        return None
    if "dataset" in spec:
        from . import datasets

        return datasets.load(spec["dataset"])
    if "path" in spec:
        path = Path(spec["path"])
        if not path.is_absolute():
            path = where.parent / path
        return read_nonmem(path, **spec.get("options", {}))
    raise ConfigError(f"{where}: [data] needs 'dataset' (bundled name) or 'path'")


def _resolve_regimen(spec: dict[str, Any], where: Path) -> Regimen | None:
    if not spec:
        return None
    kind = spec.get("route", "oral")
    amount = spec.get("dose")
    if amount is None:
        raise ConfigError(f"{where}: [regimen] needs 'dose'")
    common = dict(
        every=spec.get("every", 0.0), n=int(spec.get("n", 1)), cmt=int(spec.get("cmt", 1))
    )
    if kind == "oral":
        regimen = Regimen.oral(amount, **common)
    elif kind == "bolus":
        regimen = Regimen.bolus(amount, **common)
    elif kind == "infusion":
        regimen = Regimen.infusion(amount, duration=spec["duration"], **common)
    else:
        raise ConfigError(f"{where}: [regimen] route must be oral, bolus or infusion; got {kind!r}")
    times = spec.get("sample_times")
    if times is None:
        raise ConfigError(f"{where}: [regimen] needs 'sample_times'")
    if isinstance(times, dict):
        import numpy as np

        times = np.arange(times["start"], times["stop"] + 1e-9, times["step"]).tolist()
    regimen = regimen.sample(times, cmt=int(spec.get("sample_cmt", 0)))
    return regimen.with_covariates(**spec.get("covariates", {}))


def load_config(path: str | Path) -> RunConfig:
    """Read and check a run specification."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no run specification at {path}")
    with path.open("rb") as f:
        try:
            spec = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
    known = {"name", "model", "data", "regimen", "simulate", "fit", "output_dir"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown sections/keys {unknown}; expected {sorted(known)}")
    if "model" not in spec:
        raise ConfigError(f"{path}: missing [model] section")
    return RunConfig(
        path=path,
        name=spec.get("name", path.stem),
        model=_resolve_model(spec["model"], path),
        data=_resolve_data(spec.get("data", {}), path),
        regimen=_resolve_regimen(spec.get("regimen", {}), path),
        simulate=dict(spec.get("simulate", {})),
        fit=dict(spec.get("fit", {})),
        output_dir=Path(spec.get("output_dir", "runs")),
    )
