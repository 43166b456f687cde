"""Exceptions raised while defining or evaluating a model.

All of them are raised at Python time (class creation, instantiation or
tracing), never from inside compiled code, and their messages say what to
change.
"""

from __future__ import annotations


class ModelDefinitionError(TypeError):
    """A model class is incomplete or inconsistent (no ``dynamics``, no
    ``individual`` block, duplicated eta names, a field shadowing a method)."""


class ThetaBoundsError(ValueError):
    """A THETA's initial value is not strictly inside its bounds, or the bounds
    are not ordered."""


class OmegaNotPositiveDefiniteError(ValueError):
    """An OMEGA block is not a valid variance-covariance matrix."""


class UnknownEtaError(AttributeError):
    """``eta.<name>`` asked for an eta that no OMEGA block declares."""


class CompartmentNameError(AttributeError):
    """``amounts.<name>`` asked for a compartment the dynamics does not have."""


class IndividualParametersError(TypeError):
    """The ``individual`` ($PK) block did not return a dict of scalars."""


class ObservationError(TypeError):
    """The ``observe`` ($ERROR) block did not return error models, or the
    endpoint (DVID) of a record cannot be resolved."""


class _LocalMissingCovariateError(ValueError):
    """Stand-in for :class:`pmx_jax.data.MissingCovariateError` while the data
    layer does not define it."""


def missing_covariate_error_class() -> type[Exception]:
    """The exception raised when the model reads a covariate the dataset lacks.

    The data layer owns this error (it is also raised when a dataset is matched
    against a model); it is looked up at raise time so that the model layer does
    not import the data layer at import time.
    """
    try:
        from pmx_jax.data._errors import MissingCovariateError
    except ImportError:
        return _LocalMissingCovariateError
    return MissingCovariateError
