"""NONMEM-style datasets: reading, validation and batching into padded pytrees."""

from ._checks import check_compartments
from ._dataset import Dataset
from ._errors import (
    CensoringError,
    DatasetError,
    DatasetWarning,
    InvalidDoseError,
    InvalidValueError,
    MissingColumnError,
    MissingCovariateError,
    MissingObservationError,
    NegativeDoseError,
    NonContiguousIdError,
    NonNumericValueError,
    SteadyStateError,
    UnknownCompartmentError,
    UnknownEvidError,
    UnsortedTimeError,
)
from ._nesting import nest
from ._read import read_nonmem
from ._subjects import Subjects

__all__ = [
    "CensoringError",
    "Dataset",
    "DatasetError",
    "DatasetWarning",
    "InvalidDoseError",
    "InvalidValueError",
    "MissingColumnError",
    "MissingCovariateError",
    "MissingObservationError",
    "NegativeDoseError",
    "NonContiguousIdError",
    "NonNumericValueError",
    "SteadyStateError",
    "Subjects",
    "UnknownCompartmentError",
    "UnknownEvidError",
    "UnsortedTimeError",
    "check_compartments",
    "nest",
    "read_nonmem",
]
