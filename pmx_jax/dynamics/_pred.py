"""No compartments: NONMEM's ``$PRED`` models, where the $ERROR block computes
the prediction from parameters, covariates and ``TIME`` alone (dose-response,
exposure given as a covariate, count or categorical outcome models, parametric
survival)."""

from typing import ClassVar

from jaxtyping import Array, Float

from ._base import AbstractDynamics, Params


class Pred(AbstractDynamics):
    """Dynamics without compartments (``amounts`` is empty).  The dataset
    has no doses (or its doses move nothing); ``observe`` reads ``params``.

    Example
    -------
    >>> Pred().n_compartments
    0
    """

    compartments: ClassVar[tuple[str, ...]] = ()
    is_linear: ClassVar[bool] = True

    def propagate(
        self,
        params: Params,
        amounts: Float[Array, " n_cmt"],
        dt: Float[Array, ""],
        rates: Float[Array, " n_cmt"],
    ) -> Float[Array, " n_cmt"]:
        del params, dt, rates
        return amounts
