"""Expected Fisher information of a design: which parameters the data can
separate, before any data are collected (as PFIM and PopED compute it).

Population (``individual=False``, FO as in PFIM/PopED): each subject's
transformed observations are linearised around ``eta = 0``,

``y_i ~ N(mu_i, V_i)``,  ``mu_i = f_i(theta, 0)``,
``V_i = G_i Omega G_i^T + diag v_i(theta, 0)``,  ``G_i = df_i/deta (0)``,

and the expected information of a normal with parameter-dependent mean and
covariance is summed over subjects:

``F_jk = dmu_j^T V^-1 dmu_k + 1/2 tr(V^-1 dV_j V^-1 dV_k)``.

Individual (``individual=True``): the etas are held at 0 and OMEGA plays no
role, ``V_i = diag v_i``: the information about the THETAs of one subject's
(or each subject's, summed) curve, ``J^T W J`` plus the residual-variance term
``1/2 sum (dv/dtheta)^2 / v^2`` (which vanishes for an additive error on the
structural THETAs).

``mu``, ``V`` and ``G`` are on the error model's scale (log scale for
:class:`~pmx_jax.Exponential`) and come from the likelihood kernel
(:func:`._kernel.record_terms`), so they are those of the FO objective.  All
derivatives are exact: ``jax.jacfwd`` with respect to the unconstrained
parameters ``u`` (:meth:`Model.to_unconstrained`; through ODE solves by their
forward-sensitivity rule).  The matrix is reported on NONMEM's scale (THETAs
as declared, OMEGA as variances and covariances): ``F_nat = K^-T F_u K^-1``
with ``K = d natural / du``.  Only normal (not censored) observation records
carry information here; BLQ records are left out.

Identifiability is judged on a scaled basis so that units do not dominate the
eigenvalues: ``scale="relative"`` (default) is the information about
``log |p|``, i.e. ``D F D`` with ``D = diag |p|`` (1 where ``p = 0``, e.g. a
THETA that is itself a logarithm); ``scale="unit"`` rescales ``F`` to a unit
diagonal (its eigenvalues are then those of a "correlation of information",
invariant to any rescaling of the parameters).  Eigenvectors of the smallest
eigenvalues of the scaled matrix are the least identifiable combinations: a
near-zero eigenvalue with eigenvector ``(0.7 kg, 0.7 tmax)`` says that
``log kg + log tmax`` is (locally) all the data determine about the two.
"""

from __future__ import annotations

from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from ..data._dataset import Dataset
from ..likelihood import (
    Prepared,
    Problem,
    SubjectLikelihood,
    make_problem,
    map_subjects,
    moments_and_jacobian,
)
from ..model import natural_names, natural_vector
from ..model._model import Model

Scale = Literal["relative", "unit"]


class FisherInformation:
    """The expected Fisher information of a design at given parameter values.

    Attributes:
        names: parameters, in the order of :meth:`FitResult.estimates` (free
            THETAs, then, unless ``individual``, free OMEGA elements).
        values: their values (NONMEM's scale).
        information: ``F`` on NONMEM's scale, ``(n, n)``, summed over subjects.
        per_subject: each subject's contribution, ``(n_sub, n, n)``.
        information_unconstrained: ``F`` in the unconstrained parameters.
        scale: ``"relative"`` or ``"unit"`` (see the module notes);
            ``scaling``: the diagonal ``D`` with ``scaled = D F D``.
        scaled: the scaled information; ``eigenvalues`` (ascending) and
            ``eigenvectors`` (columns, unit length) are those of ``scaled``.
        condition_number: largest / smallest eigenvalue of ``scaled``
            (``inf`` when singular).
        identifiable: whether ``scaled`` is numerically positive definite.
        covariance: ``F^-1`` (the Cramer-Rao lower bound of the estimates'
            covariance, NaN when not identifiable); ``se``, ``rse`` (percent)
            and ``correlation`` follow from it.
        individual: fixed-effects (``True``) or FO population information.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def least_identifiable(self, k: int = 3, threshold: float = 0.1) -> list[dict]:
        """The ``k`` least identifiable parameter combinations, each as
        ``{"eigenvalue": ..., "combination": {name: coefficient}}`` with the
        coefficients (on the scaled basis) of magnitude above ``threshold``,
        largest first."""
        out = []
        for i in range(min(k, len(self.names))):
            vector = self.eigenvectors[:, i]
            vector = vector * np.sign(vector[np.argmax(np.abs(vector))])
            order = np.argsort(-np.abs(vector))
            combination = {
                self.names[j]: float(vector[j]) for j in order if abs(vector[j]) > threshold
            }
            out.append(dict(eigenvalue=float(self.eigenvalues[i]), combination=combination))
        return out

    def table(self) -> pd.DataFrame:
        """One row per parameter: value, expected SE and RSE (%)."""
        return pd.DataFrame(
            dict(parameter=list(self.names), value=self.values, se=self.se, rse=self.rse)
        )

    def report(self, k: int = 3) -> str:
        """A printable summary: eigenvalues, condition number, expected SEs and
        the least identifiable combinations."""
        kind = "individual (fixed effects)" if self.individual else "population (FO)"
        basis = "log-parameter" if self.scale == "relative" else "unit-diagonal"
        lines = [
            f"Expected Fisher information, {kind}, {len(self.names)} parameters",
            f"eigenvalues ({basis} scale): " + " ".join(f"{v:.3g}" for v in self.eigenvalues),
            f"condition number: {self.condition_number:.4g}"
            + ("" if self.identifiable else "  (NOT identifiable: singular information)"),
            self.table().to_string(index=False),
            "least identifiable combinations:",
        ]
        for item in self.least_identifiable(k):
            terms = " ".join(f"{c:+.2f} {n}" for n, c in item["combination"].items())
            lines.append(f"  eigenvalue {item['eigenvalue']:.3g}: {terms}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    __repr__ = __str__


def _normal_moments(subj: SubjectLikelihood, omega: Array | None):
    """Mean and covariance of the FO marginal model on the normal records (the
    other records get mean 0 and unit variance, constant: no information)."""
    zero = jnp.zeros(subj.layout.size, subj.data.records.time.dtype)
    terms, g_mean, _ = moments_and_jacobian(subj, zero)
    normal = terms.normal
    mean = jnp.where(normal, terms.mean, 0.0)
    cov = jnp.diag(jnp.where(normal, terms.variance, 1.0))
    if omega is not None and omega.shape[0]:
        g = jnp.where(normal[:, None], g_mean, 0.0)
        cov = cov + g @ omega @ g.T
    return mean, cov


class _Moments(eqx.Module):
    """The FO marginal moments of one subject as a function of the raveled
    unconstrained parameters."""

    unravel: Any = eqx.field(static=True)
    individual: bool = eqx.field(static=True)

    def __call__(self, y, model, layout, data):
        at = model.from_unconstrained(self.unravel(y))
        subj = SubjectLikelihood(at, data, layout)
        omega = None if self.individual else layout.omega(at).astype(y.dtype)
        return _normal_moments(subj, omega)


@eqx.filter_jit
def _information(fn: _Moments, y, model, problem: Problem):
    layout = problem.layout

    def one(data):
        def moments(y):
            return fn(y, model, layout, data)

        mean, cov = moments(y)
        d_mean, d_cov = jax.jacfwd(moments)(y)  # (n_rec, p), (n_rec, n_rec, p)
        chol = jax.scipy.linalg.cho_factor(cov, lower=True)
        solved_mean = jax.scipy.linalg.cho_solve(chol, d_mean)
        # V^-1 dV_j for every j at once: (p, n_rec, n_rec)
        solved_cov = jax.vmap(lambda d: jax.scipy.linalg.cho_solve(chol, d), in_axes=2)(d_cov)
        fim = d_mean.T @ solved_mean + 0.5 * jnp.einsum("jab,kba->jk", solved_cov, solved_cov)
        return 0.5 * (fim + fim.T), jnp.isfinite(mean).all() & jnp.isfinite(cov).all()

    per_subject, finite = map_subjects(problem, one)
    return problem.take(per_subject), problem.take(finite)


def fisher_information(
    model: Model,
    data: Dataset | Prepared | Problem,
    *,
    individual: bool = False,
    scale: Scale = "relative",
    method: Literal["fo"] = "fo",
    chunk_size: int | None = None,
) -> FisherInformation:
    """Expected Fisher information of the design ``data`` (doses, sampling
    times, covariates; DV is not used) at the parameter values of ``model``.

    Args:
        model: the model at the parameter values of interest (THETA, OMEGA and
            the residual-error THETAs).  Fixed parameters are left out.
        data: the design, as a Dataset (e.g. :func:`pmx_jax.read_nonmem` of a
            table with ``DV = 0``) or prepared.
        individual: ``True``: information about the free THETAs from the
            subjects' typical curves (etas at 0, no OMEGA), summed over
            subjects; ``False``: FO population information about the free THETAs
            and OMEGA elements (see the module notes).
        scale: the basis of the eigen-analysis, ``"relative"`` (log-parameter)
            or ``"unit"`` (unit diagonal).
        method: the linearisation, ``"fo"`` (the only one implemented: PFIM's
            and PopED's default).
        chunk_size: subjects evaluated at once (as in :func:`pmx_jax.fit`).

    Returns:
        a :class:`FisherInformation`; ``print`` it for a report.

    Example:
        >>> info = fisher_information(model, design, individual=True)  # doctest: +SKIP
        >>> info.condition_number, info.least_identifiable(1)  # doctest: +SKIP
    """
    if method != "fo":
        raise ValueError(f"method must be 'fo' (the FO linearisation), got {method!r}")
    if scale not in ("relative", "unit"):
        raise ValueError(f"scale must be 'relative' or 'unit', got {scale!r}")
    problem = make_problem(model, data, "fo", chunk_size=chunk_size)
    unconstrained = model.to_unconstrained()
    names = natural_names(model)
    n_theta = sum(1 for t in model.thetas().values() if not t.fixed)
    if individual:
        thetas = {n for n, t in model.thetas().items() if not t.fixed}
        unconstrained = {k: v for k, v in unconstrained.items() if k in thetas}
        names = names[:n_theta]
    if not names:
        raise ValueError(f"{type(model).__name__} has no free parameters")
    y0, unravel = ravel_pytree(unconstrained)
    y0 = jnp.asarray(y0, problem.dtype)
    per_subject_u, finite = _information(_Moments(unravel, individual), y0, model, problem)
    per_subject_u = np.asarray(per_subject_u)
    if not np.all(np.asarray(finite)):
        bad = np.flatnonzero(~np.asarray(finite))
        raise FloatingPointError(
            f"non-finite predictions for subject(s) at index {bad.tolist()} of the design"
        )

    def to_natural(y):
        return natural_vector(model.from_unconstrained(unravel(y)))[: len(names)]

    values = np.asarray(to_natural(y0))
    k_inverse = np.linalg.inv(np.asarray(jax.jacfwd(to_natural)(y0)))
    per_subject = np.einsum("ij,sjk,kl->sil", k_inverse.T, per_subject_u, k_inverse)
    information = per_subject.sum(axis=0)
    information = 0.5 * (information + information.T)

    if scale == "relative":
        scaling = np.where(np.abs(values) > 1e-12, np.abs(values), 1.0)
    else:
        diagonal = np.diagonal(information)
        scaling = 1.0 / np.sqrt(np.where(diagonal > 0, diagonal, 1.0))
    scaled = scaling[:, None] * information * scaling[None, :]
    eigenvalues, eigenvectors = np.linalg.eigh(scaled)
    largest = max(float(eigenvalues[-1]), 1e-300)
    identifiable = bool(eigenvalues[0] > 1e-13 * largest)
    condition_number = largest / float(eigenvalues[0]) if identifiable else float("inf")

    n = len(names)
    if identifiable:
        covariance = scaling[:, None] * np.linalg.inv(scaled) * scaling[None, :]
        covariance = 0.5 * (covariance + covariance.T)
    else:
        covariance = np.full((n, n), np.nan)
    se = np.sqrt(np.diagonal(covariance))
    with np.errstate(divide="ignore", invalid="ignore"):
        rse = 100.0 * se / np.abs(values)
        correlation = covariance / np.outer(se, se)
    return FisherInformation(
        names=tuple(names),
        values=values,
        information=information,
        per_subject=per_subject,
        information_unconstrained=per_subject_u.sum(axis=0),
        scale=scale,
        scaling=scaling,
        scaled=scaled,
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        condition_number=condition_number,
        identifiable=identifiable,
        covariance=covariance,
        se=se,
        rse=rse,
        correlation=correlation,
        individual=individual,
    )
