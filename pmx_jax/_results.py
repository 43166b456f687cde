"""One vocabulary of outcomes, shared by every layer.

The EBE search (one code per subject), the event engine, the population fit
and the covariance step report what happened with the members of
:class:`RESULTS`, each with a message that says what to change.  The members
are integers, so they travel through ``jit`` and ``vmap`` as plain integer
arrays (``jnp.where(ok, RESULTS.successful, RESULTS.ebe_nonfinite)``) and
compare with them after (``status == RESULTS.successful``); ``RESULTS(code)``
turns an array element back into a member with its message.

>>> RESULTS.successful.label
'converged'
>>> RESULTS(2).name
'ebe_nonfinite'
"""

from __future__ import annotations

import enum


class RESULTS(enum.IntEnum):
    """What a search, a solve, a fit or a covariance step ended with."""

    successful = 0
    # EBE search, per subject
    ebe_max_steps = 1
    ebe_nonfinite = 2
    ebe_line_search_failed = 3
    # event engine, per subject
    nonfinite_amounts = 4
    # population fit
    max_iterations = 10
    line_search_failed = 11
    nonfinite_ofv = 12
    suspect_point = 13
    # covariance step
    r_not_positive_definite = 20
    s_not_positive_definite = 21
    nonfinite_gradient = 22

    @property
    def message(self) -> str:
        """What it means and what to change."""
        return _MESSAGES[self]

    @property
    def label(self) -> str:
        """A word or two for tables and reports."""
        return _LABELS.get(self, self.name.replace("_", " "))


_LABELS = {
    RESULTS.successful: "converged",
    RESULTS.ebe_max_steps: "max_steps",
    RESULTS.ebe_nonfinite: "nonfinite",
    RESULTS.ebe_line_search_failed: "line_search_failed",
    RESULTS.suspect_point: "converged at a suspect point",
}

_MESSAGES = {
    RESULTS.successful: "",
    RESULTS.ebe_max_steps: (
        "the EBE search reached its step limit before its tolerance: raise ebe_max_steps, "
        "or look at this subject's data and individual parameters (a prediction that "
        "barely depends on an eta makes the search crawl)"
    ),
    RESULTS.ebe_nonfinite: (
        "the individual objective is not finite at any EBE start: the model cannot "
        "predict this subject at these parameters (predictions that underflow to 0 "
        "under a log-scale or proportional error, a failed ODE solve, a covariate "
        "value outside the model's domain); check the initial estimates and the data"
    ),
    RESULTS.ebe_line_search_failed: (
        "no step of the EBE search decreases the individual objective: the objective is "
        "not smooth there (a lag time or a dose time crossing a sample, a discontinuous "
        "covariate model); the EBE is the last point reached"
    ),
    RESULTS.nonfinite_amounts: (
        "the event engine produced non-finite amounts (an ODE solve that failed or hit "
        "max_steps, an overflow): check the individual parameters, or pass stiff=True "
        "for a stiff ODE model"
    ),
    RESULTS.max_iterations: (
        "the maximum number of iterations was reached: continue with "
        "pmx.fit(result.model, data, ..., ebe_init=result.ebe_matrix) or raise "
        "max_iterations"
    ),
    RESULTS.line_search_failed: (
        "the line search found no decrease of the OFV along the quasi-Newton direction: "
        "the OFV is not smooth here (EBEs jumping between modes, a parameter at a "
        "bound, an ODE tolerance too loose for the gradient); try other initial "
        "estimates or pmx.fit(..., starts=k)"
    ),
    RESULTS.nonfinite_ofv: (
        "the OFV is not finite: some subjects cannot be predicted at these parameters "
        "(see the EBE status of each subject)"
    ),
    RESULTS.suspect_point: (
        "the minimisation stopped, but the point is suspect (see the reasons): do not "
        "take the estimates at face value; try other initial estimates, look at the "
        "data of the subjects named, or simplify the model"
    ),
    RESULTS.r_not_positive_definite: (
        "the R matrix (Hessian of the OFV) is not positive definite: the estimates are "
        "not at a strict minimum (a saddle point, or a direction in which the OFV is "
        "flat: parameters that the data cannot tell apart)"
    ),
    RESULTS.s_not_positive_definite: (
        "the S matrix (sum of per-subject score products) is not positive definite: "
        "fewer informative subjects than parameters, or a parameter no subject's "
        "OFV depends on"
    ),
    RESULTS.nonfinite_gradient: (
        "a gradient near the estimates is not finite (an EBE search failed there)"
    ),
}
