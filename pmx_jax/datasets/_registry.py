"""The example datasets shipped with pmx_jax, found with importlib.resources."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from ..data import Dataset, read_nonmem

# name -> CSV file in this package; aliases are what pharmacometricians type.
_FILES: dict[str, str] = {
    "theophylline": "theophylline.csv",
    "phenobarbital": "phenobarbital.csv",
    "quinidine": "quinidine_raw.csv",
}
_ALIASES: dict[str, str] = {"theo": "theophylline", "pheno": "phenobarbital", "quin": "quinidine"}

#: The covariates of nlme::Quinidine, as R names them.
QUINIDINE_COVARIATES: tuple[str, ...] = (
    "Age",
    "Height",
    "Weight",
    "Race",
    "Smoke",
    "Ethanol",
    "Heart",
    "Creatinine",
    "glyco",
)


def names() -> tuple[str, ...]:
    """Names of the bundled datasets (aliases: theo, pheno, quin)."""
    return tuple(_FILES)


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _FILES:
        raise KeyError(f"No bundled dataset {name!r}; choose one of {', '.join(names())}.")
    return key


def load_table(name: str) -> pd.DataFrame:
    """The bundled CSV as a DataFrame, as shipped ('.' read as missing).

    For "quinidine" this is nlme's layout (Subject, time, conc, dose, interval,
    ...), not yet a NONMEM dataset; ``load("quinidine").table`` is the converted one.
    """
    path = resources.files(__package__).joinpath(_FILES[_canonical(name)])
    with resources.as_file(path) as file:
        return pd.read_csv(file, na_values=["."])


def load(name: str, **options: Any) -> Dataset:
    """A bundled dataset, read with :func:`~pmx_jax.data.read_nonmem`.

    * ``"theophylline"`` (``"theo"``): 12 subjects, 132 observations; one oral dose
      into CMT 1 (depot), observations in CMT 2; covariate WT (kg).
    * ``"phenobarbital"`` (``"pheno"``): 59 neonates, 155 observations; repeated IV
      doses; covariates WT (kg) and APGR.
    * ``"quinidine"`` (``"quin"``): 136 patients, 361 observations; routine oral
      dosing, converted to NONMEM layout (see :func:`quinidine_to_nonmem`).
      ``steady_state=True`` reads doses that carry a dosing ``interval`` as
      steady-state doses (SS 1, II = interval), as nlme's ``quinModel`` does.

    Other keyword options go to :func:`~pmx_jax.data.read_nonmem`.

    Example:
        >>> from pmx_jax import datasets
        >>> data = datasets.load("theo")
        >>> data.n_subjects, data.n_observations
        (12, 132)
    """
    key = _canonical(name)
    if key == "quinidine":
        steady_state = bool(options.pop("steady_state", False))
        table = quinidine_to_nonmem(load_table(key), steady_state=steady_state)
        options.setdefault("covariates", QUINIDINE_COVARIATES)
        data = read_nonmem(table, **options)
        regimen = int(table["interval"].notna().sum())
        data.notes.append(
            f"quinidine: {regimen} doses carry a dosing interval (a regular regimen at "
            + (
                "steady state in nlme): read as SS 1 with II = interval"
                if steady_state
                else "steady state in nlme): read as single doses; load('quinidine', "
                "steady_state=True) reads them as SS 1 with II = interval, as nlme's quinModel does"
            )
        )
        return data
    return read_nonmem(load_table(key), **options)


def quinidine_to_nonmem(raw: pd.DataFrame, *, steady_state: bool = False) -> pd.DataFrame:
    """nlme::Quinidine in NONMEM layout.

    Dose rows (``dose`` present, mg of quinidine base, oral) become EVID 1 into
    CMT 1 (depot); concentration rows (``conc``, mg/L) EVID 0 observations of CMT 2
    (central); rows with neither (covariate changes) EVID 2.  Columns: ID TIME DV
    AMT EVID MDV CMT (SS II when ``steady_state``), then the covariates and the
    original ``interval``.
    """
    dose = raw["dose"].notna().to_numpy()
    conc = raw["conc"].notna().to_numpy()
    evid = np.where(dose, 1, np.where(conc, 0, 2))
    table = pd.DataFrame(
        {
            "ID": raw["Subject"].to_numpy(),
            "TIME": raw["time"].to_numpy(dtype=np.float64),
            "DV": raw["conc"].to_numpy(dtype=np.float64),
            "AMT": raw["dose"].fillna(0.0).to_numpy(dtype=np.float64),
            "EVID": evid,
            "MDV": (evid != 0).astype(np.int64),
            "CMT": np.where(dose, 1, 2),
        }
    )
    if steady_state:
        regimen = raw["interval"].notna().to_numpy() & dose
        table["SS"] = regimen.astype(np.int64)
        table["II"] = np.where(regimen, raw["interval"].to_numpy(dtype=np.float64), 0.0)
    for name in QUINIDINE_COVARIATES:
        table[name] = raw[name].to_numpy()
    table["interval"] = raw["interval"].to_numpy()
    return table
