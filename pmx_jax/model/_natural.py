"""The free population parameters on NONMEM's scale, as one named vector.

THETAs on their natural scale and OMEGA elements as variances and
covariances (the unconstrained vector of :meth:`Model.to_unconstrained` is
what estimators move; this is what they report, in the order of
``FitResult.estimates()``)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array

from ._model import Model


def natural_names(model: Model) -> tuple[str, ...]:
    """Names of the free parameters on NONMEM's scale (order of
    :meth:`FitResult.estimates`)."""
    names = [n for n, t in model.thetas().items() if not t.fixed]
    for field, block in model.omega_blocks():
        if block.fixed:
            continue
        for i, eta_i in enumerate(block.names):
            for j in range(i + 1):
                if i == j:
                    names.append(f"{field}.{eta_i}")
                elif not block.diagonal:
                    names.append(f"{field}.{block.names[j]},{eta_i}")
    return tuple(names)


def natural_vector(model: Model) -> Array:
    """Free THETAs and OMEGA elements as one vector (order of :func:`natural_names`)."""
    values = [jnp.asarray(t.value).reshape(()) for t in model.thetas().values() if not t.fixed]
    for _, block in model.omega_blocks():
        if block.fixed:
            continue
        matrix = jnp.asarray(block.matrix)
        for i in range(block.n_eta):
            for j in range(i + 1):
                if i == j or not block.diagonal:
                    values.append(matrix[i, j])
    return jnp.stack(values) if values else jnp.zeros(0)
