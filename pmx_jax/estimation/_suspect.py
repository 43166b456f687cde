"""Is the point a fit stopped at worth reporting as converged?

A quasi-Newton search stops where the OFV gradient is small.  That is also
where predictions have underflowed to zero (the OFV no longer depends on the
structural THETAs), where every random effect has shrunk to nothing, where a
parameter has run to a bound, or at a saddle point.  None of these is a
minimum a pharmacometrician can report; each is named here, with what it
means, so that the fit says "converged at a suspect point" instead of
"converged".

The checks that need only the final point run in the fit; those that need
the curvature of the OFV (a singular or indefinite R matrix, a parameter that
no subject's OFV depends on) run with the covariance step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._results import RESULTS

# A parameter that moved this many times closer to a bound than it started
# (or an OMEGA variance that shrank this many times) sits at the bound.
_AT_BOUND = 1e-6
# Observations whose prediction is below this fraction of |DV| "vanished".
_VANISHING_FRACTION = 0.5
# Eta shrinkage (fraction) at which the EBEs carry no information.
_FULL_SHRINKAGE = 0.99
# OFV sensitivity (OFV units per unit of the unconstrained parameter) below
# which no subject's OFV depends on a parameter.
_FLAT = 1e-8


@dataclass(frozen=True)
class Suspicion:
    """One reason the final point of a fit is suspect; ``source`` is
    ``"point"`` (the estimates and EBEs) or ``"covariance"`` (the step)."""

    reason: str
    source: str = "point"

    def __str__(self) -> str:
        return self.reason


def point_suspicions(
    initial: Any,
    final: Any,
    *,
    eta_shrinkage: Any,
    n_subjects: int,
    n_vanishing: int,
    n_normal: int,
) -> list[Suspicion]:
    """What makes the final estimates of a fit suspect, from the estimates,
    the EBEs and the predictions at the EBEs (``n_vanishing`` of the
    ``n_normal`` observations predicted as ~0)."""
    reasons = []
    if n_normal and n_vanishing / n_normal >= _VANISHING_FRACTION:
        reasons.append(
            Suspicion(
                f"predictions have underflowed: {n_vanishing} of {n_normal} observations are "
                "predicted as 0 (below 1e-10 of the DV), so the OFV no longer depends on the "
                "structural parameters; start from initial estimates that predict the data"
            )
        )
    shrinkage = np.asarray(eta_shrinkage, dtype=float)
    # ``eta_shrinkage`` covers the IIV etas only: with IOV (or nested) etas,
    # which may carry what the subjects differ by, an all-shrunk IIV says
    # nothing of the random effects as a whole (a site variance at 0 when
    # sites are the individuals and subjects their occasions).
    has_iov = final.n_iov_eta > 0
    if n_subjects >= 3 and shrinkage.size and not has_iov and np.all(shrinkage >= _FULL_SHRINKAGE):
        reasons.append(
            Suspicion(
                "eta shrinkage is above 99% on every eta: the EBEs are all ~0 and the "
                "random effects carry no information about the subjects"
            )
        )
    for name, theta in final.thetas().items():
        if theta.fixed:
            continue
        start = float(initial.thetas()[name])
        value = float(theta)
        for bound, side in ((theta.lower, "lower"), (theta.upper, "upper")):
            if math.isfinite(bound) and abs(value - bound) <= _AT_BOUND * abs(start - bound):
                reasons.append(
                    Suspicion(
                        f"THETA {name} is at its {side} bound {bound:g} ({value:.6g}, from "
                        f"{start:.6g}): the optimum lies beyond the bound or the parameter "
                        "is not identifiable"
                    )
                )
    for (field, block), (_, block0) in zip(
        final.omega_blocks(), initial.omega_blocks(), strict=True
    ):
        if block.fixed:
            continue
        matrix, matrix0 = np.asarray(block.matrix), np.asarray(block0.matrix)
        for i, eta in enumerate(block.names):
            if matrix[i, i] <= _AT_BOUND * matrix0[i, i]:
                reasons.append(
                    Suspicion(
                        f"OMEGA {field}.{eta} has collapsed to {matrix[i, i]:.3g} (from "
                        f"{matrix0[i, i]:.3g}): the data carry no information on this "
                        "variability; fix it to a small value or remove the eta"
                    )
                )
        if not block.diagonal:
            sd = np.sqrt(np.diagonal(matrix))
            corr = matrix / np.outer(sd, sd)
            for i in range(block.n_eta):
                for j in range(i):
                    if abs(corr[i, j]) > 0.9999:
                        reasons.append(
                            Suspicion(
                                f"OMEGA {field}: the correlation of {block.names[j]} and "
                                f"{block.names[i]} is {corr[i, j]:+.5f} (at the boundary): "
                                "one eta would do"
                            )
                        )
    return reasons


def covariance_suspicions(covariance: Any, names: tuple[str, ...]) -> list[Suspicion]:
    """What the covariance step says about the point: an R matrix that is not
    positive definite (not a strict minimum), and parameters that no
    subject's OFV depends on."""
    reasons = []
    r_diag = np.abs(np.diagonal(np.asarray(covariance.r_matrix)))
    s_diag = np.diagonal(np.asarray(covariance.s_matrix))
    # R and S are on the unconstrained scale; the Jacobian of the natural
    # parameters names each unconstrained coordinate.
    jacobian = np.abs(np.asarray(covariance.jacobian))
    flat = [
        names[int(np.argmax(jacobian[:, k]))]
        for k in range(r_diag.size)
        if np.sqrt(max(s_diag[k], 0.0)) < _FLAT and r_diag[k] < _FLAT
    ]
    if flat:
        reasons.append(
            Suspicion(
                f"the OFV does not depend on {', '.join(flat)} here (zero gradient for every "
                "subject and zero curvature): the gradient test was met because a term "
                "vanished, not at a minimum",
                "covariance",
            )
        )
    if covariance.status == RESULTS.r_not_positive_definite:
        reasons.append(
            Suspicion(
                f"{covariance.message}: the point is not shown to be a minimum of the OFV",
                "covariance",
            )
        )
    return reasons


def with_covariance(result: Any, covariance: Any) -> Any:
    """``result`` with ``covariance`` and its status re-assessed."""
    from ..model import natural_names

    reasons = [s for s in result.suspect if s.source != "covariance"]
    reasons += covariance_suspicions(covariance, natural_names(result.model))
    status = result.status
    if status in (RESULTS.successful, RESULTS.suspect_point):
        status = RESULTS.suspect_point if reasons else RESULTS.successful
    return result.replace(
        covariance=covariance, covariance_note="", suspect=tuple(reasons), status=status
    )
