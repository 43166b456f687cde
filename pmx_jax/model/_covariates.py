"""Covariate-effect helpers for the ``individual`` ($PK) block.

Each returns the factor by which a covariate moves a typical value, with the
reference (centring) value giving 1.  They are plain ``jax.numpy`` expressions,
so THETAs can be passed directly and everything works traced.

>>> import jax.numpy as jnp
>>> wt, crcl, sex = 80.0, 60.0, 1
>>> cl = 1.2 * allometric(wt, 70.0) * linear(crcl, 90.0, 0.01) * categorical(sex, [1.0, 0.8])
>>> round(float(cl), 4)
0.7428
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def power(
    value: Float[ArrayLike, "*shape"],
    reference: Float[ArrayLike, ""],
    exponent: Float[ArrayLike, ""],
) -> Float[Array, "*shape"]:
    """Power model ``(value / reference) ** exponent`` (e.g. age on maturation,
    creatinine clearance on renal clearance).

    >>> float(power(value=35.0, reference=70.0, exponent=1.0))
    0.5
    """
    return (jnp.asarray(value) / jnp.asarray(reference)) ** jnp.asarray(exponent)


def allometric(
    value: Float[ArrayLike, "*shape"],
    reference: Float[ArrayLike, ""] = 70.0,
    exponent: Float[ArrayLike, ""] = 0.75,
) -> Float[Array, "*shape"]:
    """Allometric scaling on body size: ``(value / reference) ** exponent``,
    by default on a 70 kg adult with exponent 0.75 (clearances; use 1 for
    volumes).

    >>> round(float(allometric(35.0)), 4)
    0.5946
    >>> float(allometric(35.0, 70.0, 1.0))
    0.5
    """
    return power(value, reference, exponent)


def linear(
    value: Float[ArrayLike, "*shape"],
    reference: Float[ArrayLike, ""],
    slope: Float[ArrayLike, ""],
) -> Float[Array, "*shape"]:
    """Linear model ``1 + slope * (value - reference)``: ``slope`` is the
    fractional change per unit of covariate.

    >>> float(linear(50.0, 40.0, 0.02))
    1.2
    """
    return 1.0 + jnp.asarray(slope) * (jnp.asarray(value) - jnp.asarray(reference))


def exponential(
    value: Float[ArrayLike, "*shape"],
    reference: Float[ArrayLike, ""],
    coef: Float[ArrayLike, ""],
) -> Float[Array, "*shape"]:
    """Exponential model ``exp(coef * (value - reference))`` (always positive;
    additive on the log scale, like the etas).

    >>> float(exponential(70.0, 70.0, 0.3))
    1.0
    """
    return jnp.exp(jnp.asarray(coef) * (jnp.asarray(value) - jnp.asarray(reference)))


def categorical(
    code: ArrayLike,
    effects: Sequence[Float[ArrayLike, ""]] | Mapping[int, Float[ArrayLike, ""]],
) -> Float[Array, "*shape"]:
    """Effect of a categorical covariate (SEX, formulation, genotype...).

    ``effects`` is either a sequence indexed by the category code (codes
    ``0, 1, ...``; put ``1.0`` for the reference category, usually first), or
    a dict from code to effect, where codes not listed are the reference
    (effect 1).  Entries may be THETAs.  Codes are rounded to the nearest
    integer (covariates arrive as floats); with a sequence, a code outside
    ``0 .. len(effects) - 1`` gives NaN, so that a miscoded dataset shows
    rather than silently taking another category's effect.

    >>> float(categorical(1.0, [1.0, 0.8]))
    0.8
    >>> float(categorical(2, {2: 1.3}))  # codes 1 (reference) and 2
    1.3
    >>> float(categorical(1, {2: 1.3}))
    1.0
    """
    code = jnp.round(jnp.asarray(code)).astype(jnp.int32)
    if isinstance(effects, Mapping):
        result = jnp.ones(code.shape)
        for level, effect in effects.items():
            result = jnp.where(code == int(level), jnp.asarray(effect), result)
        return result
    table = jnp.stack([jnp.asarray(e) for e in effects])
    return jnp.take(table, code, mode="fill", fill_value=jnp.nan)
