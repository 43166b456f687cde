"""Closed-form linear compartment models (NONMEM ADVAN1-4, 11, 12).

Between events a mammillary model with first-order absorption is a linear ODE
with constant coefficients, so the amounts after ``dt`` are known exactly:

    depot'  = -ka depot + r_depot
    x'      = A x + ka depot e_central + r_x          (x: central, peripherals)

A (the disposition matrix) has real, distinct, negative eigenvalues for any
positive clearances and volumes, which we get in closed form (linear, quadratic
or cubic characteristic polynomial), and ``exp(A t)`` follows from Sylvester's
formula ``sum_i exp(l_i t) P_i`` with spectral projectors
``P_i = prod_{j != i} (A - l_j I) / (l_i - l_j)``.  The depot enters through
``g(l, -ka, t) = (exp(l t) - exp(-ka t)) / (l + ka)``, evaluated in a form that is
exact and differentiable when ``ka`` equals a disposition rate (the flip-flop
boundary), so no eigenvalue of the full system ever has to be distinct from ka.

Everything is elementwise arithmetic on a handful of numbers: no LAPACK call,
so it vectorises over subjects on CPU and GPU alike, and ``dt`` may be negative
(NONMEM uses that for steady-state doses whose lag time exceeds the interval).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import AbstractDynamics, Params

# Below this |x| the series of expm1(x)/x is used; the switch is smooth to
# rounding error and keeps gradients finite at x == 0.
_SMALL = 1e-8


def _expm1_ratio(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """``expm1(x) / x`` with its limit 1 at x == 0 (finite gradients there)."""
    small = jnp.abs(x) < _SMALL
    x_safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + 0.5 * x, jnp.expm1(x_safe) / x_safe)


def _phi(lam: Float[Array, "..."], t: Float[Array, ""]) -> Float[Array, "..."]:
    """``int_0^t exp(lam s) ds`` = ``(exp(lam t) - 1) / lam``, exact at lam == 0."""
    return t * _expm1_ratio(lam * t)


def _exp_difference(
    a: Float[Array, "..."],
    b: Float[Array, ""],
    t: Float[Array, ""],
    exp_b: Float[Array, "..."] | None = None,
):
    """``int_0^t exp(a (t - s)) exp(b s) ds`` = ``(exp(a t) - exp(b t)) / (a - b)``.

    Near a == b the quotient cancels catastrophically; there we use
    ``exp(b t) t expm1(d)/d`` with ``d = (a - b) t``, which is exact and smooth.
    Far from it the plain quotient avoids the overflow of ``expm1(d)`` when the
    two rates are far apart and ``t`` is long.  ``exp_b``: ``exp(b t)``, when
    the caller has it already (superposition's depot amounts).
    """
    if exp_b is None:
        exp_b = jnp.exp(b * t)
    d = (a - b) * t
    near = jnp.abs(d) < 1.0
    diff_safe = jnp.where(near, 1.0, a - b)
    far_value = (jnp.exp(a * t) - exp_b) / diff_safe
    near_value = exp_b * t * _expm1_ratio(jnp.where(near, d, 0.0))
    return jnp.where(near, near_value, far_value)


def _eigenvalues(matrix: Float[Array, "m m"]) -> Float[Array, " m"]:
    """Eigenvalues of a (diagonally similar to symmetric) disposition matrix,
    m <= 3, from its characteristic polynomial; all real and distinct."""
    m = matrix.shape[0]
    if m == 1:
        return matrix[0]
    trace = jnp.trace(matrix)
    if m == 2:
        det = matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0]
        half = 0.5 * trace
        root = jnp.sqrt(jnp.maximum(half**2 - det, 0.0))
        return jnp.stack([half + root, half - root])
    # m == 3: l^3 - c2 l^2 + c1 l - c0 = 0, three real roots (trigonometric form).
    minors = (
        matrix[0, 0] * matrix[1, 1]
        - matrix[0, 1] * matrix[1, 0]
        + matrix[0, 0] * matrix[2, 2]
        - matrix[0, 2] * matrix[2, 0]
        + matrix[1, 1] * matrix[2, 2]
        - matrix[1, 2] * matrix[2, 1]
    )
    # Cofactor expansion rather than jnp.linalg.det: an LU factorisation (a LAPACK
    # call per subject and event on CPU) for a 3x3 matrix costs far more.
    det = (
        matrix[0, 0] * (matrix[1, 1] * matrix[2, 2] - matrix[1, 2] * matrix[2, 1])
        - matrix[0, 1] * (matrix[1, 0] * matrix[2, 2] - matrix[1, 2] * matrix[2, 0])
        + matrix[0, 2] * (matrix[1, 0] * matrix[2, 1] - matrix[1, 1] * matrix[2, 0])
    )
    shift = trace / 3.0
    p = minors - trace**2 / 3.0  # depressed cubic y^3 + p y + q, l = y + shift
    q = -(2.0 * trace**3 / 27.0) + trace * minors / 3.0 - det
    p_neg = jnp.minimum(p, -1e-300)
    amplitude = 2.0 * jnp.sqrt(-p_neg / 3.0)
    cos_arg = jnp.clip(3.0 * q / (p_neg * amplitude), -1.0, 1.0)
    angle = jnp.arccos(cos_arg) / 3.0
    k = jnp.arange(3)
    return shift + amplitude * jnp.cos(angle - 2.0 * math.pi * k / 3.0)


def _projectors(matrix: Float[Array, "m m"], lam: Float[Array, " m"]) -> Float[Array, "m m m"]:
    """Spectral projectors ``P_i`` of Sylvester's formula (``sum_i P_i == I``)."""
    m = matrix.shape[0]
    if m == 1:
        return jnp.ones((1, 1, 1), dtype=matrix.dtype)
    eye = jnp.eye(m, dtype=matrix.dtype)
    projectors = []
    for i in range(m):
        p = eye
        for j in range(m):
            if j != i:
                p = _matmul(p, (matrix - lam[j] * eye) / (lam[i] - lam[j]))
        projectors.append(p)
    return jnp.stack(projectors)


def _matmul(a: Float[Array, "m m"], b: Float[Array, "m m"]) -> Float[Array, "m m"]:
    """``a @ b`` for tiny matrices as broadcast-and-sum: vmapped over subjects and
    events it fuses with the surrounding arithmetic, where a batched ``dot``
    becomes a separate, slow kernel on CPU."""
    return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)


def _spectral_sum(weights: Float[Array, " m"], projectors: Float[Array, "m m m"]):
    """``sum_i weights_i P_i``: a function of the disposition matrix (e.g.
    ``exp(A t)`` for ``weights = exp(l t)``) by Sylvester's formula."""
    return jnp.sum(weights[:, None, None] * projectors, axis=0)


class AbstractLinearCompartments(AbstractDynamics):
    """Mammillary disposition (central + peripherals), optionally with a depot.

    Subclasses give the compartment names and :meth:`disposition_matrix`.  With
    ``has_depot`` the first compartment is the absorption depot (rate ``ka``).
    """

    has_depot: eqx.AbstractClassVar[bool]
    is_linear: ClassVar[bool] = True

    def disposition_matrix(self, params: Params) -> Float[Array, "m m"]:
        raise NotImplementedError

    def spectrum(self, params: Params) -> tuple[Float[Array, " m"], Float[Array, "m m m"]]:
        """The eigenvalues ``l_i`` of the disposition matrix and their spectral
        projectors ``P_i`` (``exp(A t) = sum_i exp(l_i t) P_i``)."""
        matrix = self.disposition_matrix(params)
        lam = _eigenvalues(matrix)
        return lam, _projectors(matrix, lam)

    def propagate(self, params, amounts, dt, rates):
        lam, projectors = self.spectrum(params)
        dtype = jnp.result_type(amounts, dt, lam)
        dt = jnp.asarray(dt, dtype)
        if self.has_depot:
            ka = params["ka"]
            depot0, x0 = amounts[0], amounts[1:]
            rate_depot, rate_x = rates[0], rates[1:]
        else:
            x0, rate_x = amounts, rates
        decay = jnp.exp(lam * dt)
        # Per eigen-direction i: exp(l_i t) x0 + phi_i * (zero-order input into x).
        direct_input = rate_x
        if self.has_depot:
            direct_input = direct_input.at[0].add(rate_depot)
        weights = decay[:, None] * x0[None, :] + _phi(lam, dt)[:, None] * direct_input[None, :]
        if self.has_depot:
            absorbed = (ka * depot0 - rate_depot) * _exp_difference(lam, -ka, dt)
            weights = weights.at[:, 0].add(absorbed)
        x_new = jnp.sum(projectors * weights[:, None, :], axis=(0, 2))
        if not self.has_depot:
            return x_new
        depot_new = depot0 * jnp.exp(-ka * dt) + rate_depot * _phi(-ka, dt)
        return jnp.concatenate([depot_new[None], x_new])

    def transition(
        self,
        params: Params,
        dt: Float[Array, ""],
        spectrum: tuple[Float[Array, " m"], Float[Array, "m m m"]] | None = None,
    ) -> tuple[Float[Array, "n n"], Float[Array, "n n"]]:
        """The affine map of :meth:`propagate` as two matrices:
        ``propagate(params, a, dt, r) == to_amounts @ a + to_rates @ r``.

        ``spectrum``: :meth:`spectrum` of ``params`` where the caller already
        has it (the event engine's loop, for parameters constant in time).
        Written out rather than obtained by differentiating :meth:`propagate`
        (``jax.jacfwd``), which would evaluate the whole solution once per
        compartment and input.
        """
        lam, projectors = self.spectrum(params) if spectrum is None else spectrum
        dt = jnp.asarray(dt, jnp.result_type(dt, lam))
        # exp(A dt) and int_0^dt exp(A s) ds (constant input into x).
        x_from_x = _spectral_sum(jnp.exp(lam * dt), projectors)
        x_from_input = _spectral_sum(_phi(lam, dt), projectors)
        if not self.has_depot:
            return x_from_x, x_from_input
        # The depot drains at ka into the central compartment (x index 0): a depot
        # amount reaches x through int_0^dt exp(A (dt - s)) ka exp(-ka s) ds, and a
        # depot input first has to pass the depot, hence the difference.
        ka = params["ka"]
        through_depot = _spectral_sum(_exp_difference(lam, -ka, dt), projectors)[:, 0]
        m = lam.shape[0]
        zeros = jnp.zeros((1, m), dtype=x_from_x.dtype)
        to_amounts = jnp.block(
            [[jnp.exp(-ka * dt)[None, None], zeros], [(ka * through_depot)[:, None], x_from_x]]
        )
        to_rates = jnp.block(
            [
                [_phi(-ka, dt)[None, None], zeros],
                [(x_from_input[:, 0] - through_depot)[:, None], x_from_input],
            ]
        )
        return to_amounts, to_rates


def _mammillary(central_elimination, exchanges):
    """Disposition matrix on amounts: central elimination k10 and a list of
    (k_1j, k_j1) exchange rate pairs with each peripheral compartment."""
    m = 1 + len(exchanges)
    rows = [[None] * m for _ in range(m)]
    zero = jnp.zeros_like(central_elimination)
    for a in range(m):
        for b in range(m):
            rows[a][b] = zero
    rows[0][0] = -central_elimination - sum(k_out for k_out, _ in exchanges)
    for j, (k_out, k_back) in enumerate(exchanges, start=1):
        rows[0][j] = k_back
        rows[j][0] = k_out
        rows[j][j] = -k_back
    return jnp.stack([jnp.stack(r) for r in rows])


class _OneCompartmentDisposition(AbstractLinearCompartments):
    def disposition_matrix(self, params):
        return _mammillary(params["cl"] / params["v"], [])


class _TwoCompartmentDisposition(AbstractLinearCompartments):
    def disposition_matrix(self, params):
        v = params["v"]
        return _mammillary(params["cl"] / v, [(params["q"] / v, params["q"] / params["vp"])])


class _ThreeCompartmentDisposition(AbstractLinearCompartments):
    def disposition_matrix(self, params):
        v = params["v"]
        return _mammillary(
            params["cl"] / v,
            [
                (params["q"] / v, params["q"] / params["vp"]),
                (params["q2"] / v, params["q2"] / params["vp2"]),
            ],
        )


class OneCompartment(_OneCompartmentDisposition):
    """One compartment, IV bolus/infusion (ADVAN1). Parameters: ``cl``, ``v``."""

    compartments: ClassVar[tuple[str, ...]] = ("central",)
    has_depot: ClassVar[bool] = False


class OneCompartmentOral(_OneCompartmentDisposition):
    """One compartment, first-order absorption (ADVAN2). Parameters: ``ka``, ``cl``, ``v``."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central")
    has_depot: ClassVar[bool] = True


class TwoCompartment(_TwoCompartmentDisposition):
    """Two compartments, IV (ADVAN3). Parameters: ``cl``, ``v``, ``q``, ``vp``."""

    compartments: ClassVar[tuple[str, ...]] = ("central", "peripheral")
    has_depot: ClassVar[bool] = False


class TwoCompartmentOral(_TwoCompartmentDisposition):
    """Two compartments, first-order absorption (ADVAN4).
    Parameters: ``ka``, ``cl``, ``v``, ``q``, ``vp``."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "peripheral")
    has_depot: ClassVar[bool] = True


class ThreeCompartment(_ThreeCompartmentDisposition):
    """Three compartments, IV (ADVAN11).
    Parameters: ``cl``, ``v``, ``q``, ``vp``, ``q2``, ``vp2``."""

    compartments: ClassVar[tuple[str, ...]] = ("central", "peripheral1", "peripheral2")
    has_depot: ClassVar[bool] = False


class ThreeCompartmentOral(_ThreeCompartmentDisposition):
    """Three compartments, first-order absorption (ADVAN12).
    Parameters: ``ka``, ``cl``, ``v``, ``q``, ``vp``, ``q2``, ``vp2``."""

    compartments: ClassVar[tuple[str, ...]] = ("depot", "central", "peripheral1", "peripheral2")
    has_depot: ClassVar[bool] = True
