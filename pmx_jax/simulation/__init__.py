"""Prediction and simulation: PRED/IPRED for a dataset, virtual trials at scale.

(Data preparation and per-subject predictions are the likelihood layer's:
:mod:`pmx_jax.likelihood`.)"""

from ._regimen import Dose, Regimen
from ._simulate import SimulationResult, predict, simulate

__all__ = ["Dose", "Regimen", "SimulationResult", "predict", "simulate"]
