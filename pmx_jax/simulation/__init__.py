"""Prediction and simulation: PRED/IPRED for a dataset, virtual trials at scale."""

from ._core import SubjectPrediction, prepare, subject_predictions, used_covariates
from ._regimen import Dose, Regimen
from ._simulate import SimulationResult, predict, simulate

__all__ = [
    "Dose",
    "Regimen",
    "SimulationResult",
    "SubjectPrediction",
    "predict",
    "prepare",
    "simulate",
    "subject_predictions",
    "used_covariates",
]
