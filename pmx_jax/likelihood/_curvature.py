"""The log-determinant of Laplace's curvature, kept away from singularity.

Laplace's OFV carries ``log det(H / 2)`` with ``H`` the exact Hessian of the
individual objective at the EBE.  ``H`` is the expected (Fisher) information
``I`` (what FOCEI uses) plus terms weighted by the residuals.  On sparse data
with several random effects those terms can cancel most of ``I`` in some
direction: the subject's posterior is then far from normal (flat along a
valley, or about to split into two modes), and its exact curvature tends to
zero.  The log-determinant then tends to minus infinity, so the OFV *falls*
as a subject's curvature vanishes: a fit runs after such points, where the
OFV gradient grows without bound (it was 1e9 on the ``ad3tr4`` BLQ design
of REFERENCE_CASES S3, with or without its BLQ records).

So the curvature enters through its eigenvalues ``mu`` in the metric of
``I`` (those of ``I^-1/2 (H/2) I^-1/2``; all 1 where the exact and expected
curvatures agree), each replaced by a smooth maximum with ``floor``:

    ``mu_eff = floor + width * softplus((mu - floor) / width)``,
    ``log det(H/2) = log det I + sum log mu_eff``.

Where every ``mu`` exceeds ``floor + 20 width`` this is the exact Laplace
value to 1e-9 relative (``softplus(x) - x < e^-20``); below ``floor`` the
curvature is held at ``floor`` times the expected information.  A floor of
0 with no width gives the textbook Laplace approximation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# Sharpness of the smooth maximum, in units of the relative curvature.
WIDTH = 0.02


def _effective(mu: Array, floor: float) -> tuple[Array, Array]:
    """``mu_eff`` and ``d mu_eff / d mu``."""
    if floor <= 0.0:
        return mu, jnp.ones_like(mu)
    x = (mu - floor) / WIDTH
    return floor + WIDTH * jax.nn.softplus(x), jax.nn.sigmoid(x)


def floor_acts(relative_curvature: Array, floor: float) -> Array:
    """Where the floor changes a subject's log-determinant by more than about
    1e-6: its smallest relative curvature is within ten widths of ``floor``
    or below."""
    if floor <= 0.0:
        return jnp.zeros(jnp.shape(relative_curvature), bool)
    return jnp.asarray(relative_curvature) < floor + 10 * WIDTH


def _relative(hessian: Array, information: Array) -> tuple[Array, Array]:
    """``L^-1 (H/2) L^-T`` with ``I = L L^T`` (``hessian`` is ``H/2``), and
    ``log det I``."""
    chol = jnp.linalg.cholesky(information)
    half = jax.scipy.linalg.solve_triangular(chol, hessian, lower=True)
    m = jax.scipy.linalg.solve_triangular(chol, half.T, lower=True)
    return 0.5 * (m + m.T), 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def smallest_relative_curvature(
    hessian: Float[Array, "n n"], information: Float[Array, "n n"]
) -> Float[Array, ""]:
    """The smallest eigenvalue of ``I^-1/2 (H/2) I^-1/2``: 1 where the exact
    and expected curvatures agree, near 0 (or negative) where the Laplace
    approximation of the subject breaks down."""
    if hessian.shape[0] == 0:
        return jnp.ones((), hessian.dtype)
    return jnp.linalg.eigvalsh(_relative(hessian, information)[0])[0]


def floored_logdet(
    hessian: Float[Array, "n n"], information: Float[Array, "n n"], floor: float
) -> Float[Array, ""]:
    """``log det`` of the curvature ``hessian`` (``H/2``) with its eigenvalues
    relative to ``information`` floored smoothly at ``floor`` (module notes).
    Differentiable in forward and reverse mode (a spectral function: its
    derivative needs the eigenvalues and eigenvectors only, so repeated
    eigenvalues, e.g. ``H/2 = I`` exactly, are harmless)."""
    if hessian.shape[0] == 0:
        return jnp.zeros((), hessian.dtype)
    m, logdet_information = _relative(hessian, information)
    return logdet_information + _spectral_log(m, float(floor))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _spectral_log(m: Array, floor: float) -> Array:
    return jnp.sum(jnp.log(_effective(jnp.linalg.eigvalsh(m), floor)[0]))


@_spectral_log.defjvp
def _spectral_log_jvp(floor, primals, tangents):
    (m,), (dm,) = primals, tangents
    mu, vectors = jnp.linalg.eigh(m)
    effective, slope = _effective(mu, floor)
    along = jnp.einsum("ji,jk,ki->i", vectors, 0.5 * (dm + dm.T), vectors)
    return jnp.sum(jnp.log(effective)), jnp.sum(slope / effective * along)


@jax.custom_jvp
def positive_part(matrix: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """The positive semidefinite part of a symmetric matrix (its negative
    eigenvalues set to 0).  Its derivative is the Daleckii-Krein formula with
    divided differences of ``max(mu, 0)``, finite where eigenvalues repeat
    (where ``eigh``'s own derivative divides by zero: e.g. a rank-one
    curvature in three dimensions)."""
    mu, vectors = jnp.linalg.eigh(matrix)
    return (vectors * jnp.maximum(mu, 0.0)) @ vectors.T


@positive_part.defjvp
def _positive_part_jvp(primals, tangents):
    (matrix,), (tangent,) = primals, tangents
    mu, vectors = jnp.linalg.eigh(matrix)
    value = jnp.maximum(mu, 0.0)
    gap = mu[:, None] - mu[None, :]
    close = jnp.abs(gap) <= 1e-12 * (1.0 + jnp.abs(mu[:, None]) + jnp.abs(mu[None, :]))
    slope = jnp.where(mu > 0, 1.0, 0.0)
    divided = jnp.where(
        close,
        0.5 * (slope[:, None] + slope[None, :]),
        (value[:, None] - value[None, :]) / jnp.where(close, 1.0, gap),
    )
    rotated = vectors.T @ (0.5 * (tangent + tangent.T)) @ vectors
    return (vectors * value) @ vectors.T, vectors @ (divided * rotated) @ vectors.T
