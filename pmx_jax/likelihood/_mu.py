"""Mu-referencing: which THETA each random effect shifts.

An eta is *mu-referenced* when it enters the model only through
``THETA_j + eta`` (``exp(tcl + eta.cl)``): the individual's own value of that
sum is then a quantity the data pin down, whose population mean is the THETA.
The Bayesian backend's centred parametrisation and SAEM's closed-form M-step
are built on it.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..model._model import Model
from ..model._parameters import Theta
from ._predictions import record_parameters
from ._problem import Problem


def checked_subjects(n_subjects: int, at_most: int = 32) -> np.ndarray:
    """Indices of up to ``at_most`` subjects spread evenly over the dataset."""
    return np.unique(np.linspace(0, n_subjects - 1, min(at_most, n_subjects)).astype(int))


def mu_referenced_thetas(
    model: Model, problem: Problem, b: Any = None, *, unconstrained: bool = False
) -> tuple[str | None, ...]:
    """For each IIV eta, the THETA it is mu-referenced to, or None.

    Eta ``k`` is mu-referenced to THETA ``j`` when the individual parameters of
    every record depend on them only through ``THETA_j + eta_k``, i.e. their
    derivatives with respect to both are equal.  Checked on the records of up
    to 32 subjects spread over the dataset (:func:`checked_subjects`: a
    covariate effect such as ``THETA * SEX`` looks like a mean shift on subjects
    who all share SEX = 1) at the given values of ``b`` (EBEs) and at ``b = 0``.

    ``unconstrained=True`` compares on the THETAs' estimation scale
    (:meth:`Theta.to_unconstrained`) instead: ``CL = THETA * exp(eta)`` with
    ``THETA > 0`` is then mu-referenced through ``log THETA + eta``.
    """
    thetas = {n: t for n, t in model.thetas().items() if not t.fixed}
    if not model.n_eta or not thetas:
        return (None,) * model.n_eta
    names = list(thetas)
    source = problem.source
    chosen = checked_subjects(source.subjects.n_subjects)
    n_check = chosen.size
    subjects = jax.tree_util.tree_map(lambda x: x[chosen], source.subjects)
    dtype = problem.dtype
    points = [np.zeros((n_check, model.n_eta))]
    if b is not None:
        points.append(np.asarray(b)[chosen, : model.n_eta])

    def params_of(theta_values, eta):
        if unconstrained:
            pairs = zip(names, theta_values, strict=True)
            theta_values = [thetas[n].from_unconstrained(v) for n, v in pairs]
        values = {
            n: eqx.tree_at(lambda t: t.value, thetas[n], v)
            for n, v in zip(names, theta_values, strict=True)
        }
        m = model._replace(values, allowed=(Theta,), validate=False)

        def one(subject, eta_i):
            p = record_parameters(m, subject, eta_i, None)
            return jnp.concatenate([jnp.ravel(v) for _, v in sorted(p.items())])

        return jax.vmap(one)(subjects, eta).ravel()

    theta0 = [thetas[n].to_unconstrained() if unconstrained else thetas[n].value for n in names]
    theta0 = jnp.asarray([float(v) for v in theta0], dtype)
    result: list[str | None] = [None] * model.n_eta
    candidates = [set(range(len(names))) for _ in range(model.n_eta)]
    for point in points:
        eta = jnp.asarray(point, dtype)
        j_theta = np.asarray(jax.jacfwd(params_of, argnums=0)(theta0, eta))
        j_eta = np.asarray(jax.jacfwd(params_of, argnums=1)(theta0, eta)).reshape(
            j_theta.shape[0], n_check, model.n_eta
        )
        for k in range(model.n_eta):
            d_eta = j_eta[:, :, k].sum(axis=1)  # each record depends on its own subject only
            scale = np.max(np.abs(d_eta))
            for j in list(candidates[k]):
                if not scale > 0 or not np.allclose(
                    j_theta[:, j], d_eta, rtol=1e-8, atol=1e-10 * scale
                ):
                    candidates[k].discard(j)
    used: set[int] = set()
    for k in range(model.n_eta):
        options = sorted(candidates[k] - used)
        if len(options) == 1:
            result[k] = names[options[0]]
            used.add(options[0])
    return tuple(result)
