"""Population parameters: THETA (fixed effects) and OMEGA (random-effect blocks).

Both are small :class:`equinox.Module` s whose only numeric leaf is the
parameter value on its natural scale (a THETA value, an OMEGA
variance-covariance matrix).  Bounds, eta names and flags are static, so a model
built from them is a pytree that ``jit``, ``vmap`` and ``grad`` see directly.

Estimators never move these values directly: they work on an unconstrained
vector (``to_unconstrained`` / ``from_unconstrained``), as NONMEM does with its
internal scaling of bounded THETAs and its Cholesky parametrisation of OMEGA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import OmegaNotPositiveDefiniteError, ThetaBoundsError

# Relative tolerance for the symmetry check of OMEGA blocks typed by hand.
_SYMMETRY_RTOL = 1e-10


def _as_leaf(x: Any) -> Any:
    """Store user numbers as float64 NumPy arrays.

    Parameters are usually created in a class body, i.e. at import time, which
    may come before ``jax_enable_x64`` is switched on; a NumPy leaf defers the
    choice of JAX dtype to the first use.  JAX arrays (and tracers) are kept
    as they are.
    """
    if isinstance(x, jax.Array):
        return x
    return np.asarray(x, dtype=np.float64)


def is_traced(x: Any) -> bool:
    """True when ``x`` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


class PriorSpec:
    """A prior distribution held by a parameter declaration.

    Parameters keep their prior as a static (non-numeric) field; a NumPyro
    distribution is itself a pytree of arrays, so it is wrapped here to stay
    out of the model's leaves.  ``distribution`` is the wrapped object.
    """

    __slots__ = ("distribution",)

    def __init__(self, distribution: Any) -> None:
        self.distribution = distribution

    def __repr__(self) -> str:
        return repr(self.distribution)


def _as_prior(prior: Any) -> Any:
    if prior is None or isinstance(prior, PriorSpec):
        return prior
    return PriorSpec(prior)


def _unwrap(x: Any) -> Any:
    return x.__jax_array__() if isinstance(x, Theta) else x


class Theta(eqx.Module):
    """A fixed-effect parameter (NONMEM's THETA), usable as a number.

    Inside a model's ``individual`` or ``observe`` block, ``self.tcl`` is a
    ``Theta``; it behaves as its (natural-scale) value in arithmetic and in
    ``jax.numpy`` functions, so ``jnp.exp(self.tcl + eta.cl)`` reads as in
    NONMEM.  Create it with :func:`theta`.

    Fields
    ------
    value: the parameter value (a scalar leaf; gradients land here).
    lower, upper: bounds (static); ``-inf``/``inf`` when absent.
    fixed: excluded from estimation (NONMEM's FIX).
    prior: an optional NumPyro-like distribution on the natural scale, used by
        Bayesian estimation (static; stored, not interpreted here).
    label, unit: what the parameter is and its unit, for reports (static;
        NONMEM's ``$THETA`` comment, e.g. ``"KA"`` and ``"1/h"``).  The unit is
        that of the quantity the THETA stands for: for ``tka`` in ``ka =
        exp(tka + eta.ka)`` the unit of KA, printed next to the back-transformed
        value.
    """

    value: Float[ArrayLike, ""] = eqx.field(converter=_as_leaf)
    lower: float = eqx.field(static=True, default=-math.inf, converter=float)
    upper: float = eqx.field(static=True, default=math.inf, converter=float)
    fixed: bool = eqx.field(static=True, default=False, converter=bool)
    prior: Any = eqx.field(static=True, default=None, converter=_as_prior)
    label: str | None = eqx.field(static=True, default=None)
    unit: str | None = eqx.field(static=True, default=None)

    # NumPy must defer to our reflected operators (``np_array * theta``), which
    # also work on tracers.
    __array_priority__ = 100

    # -- array behaviour -------------------------------------------------
    def __jax_array__(self) -> Array:
        return jnp.asarray(self.value)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        del copy
        return np.asarray(self.value, dtype=dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return jnp.shape(self.value)

    @property
    def ndim(self) -> int:
        return jnp.ndim(self.value)

    @property
    def dtype(self) -> Any:
        return jnp.asarray(self.value).dtype

    def __float__(self) -> float:
        return float(np.asarray(self.value))

    def __format__(self, spec: str) -> str:
        if is_traced(self.value):
            return repr(self)
        return format(float(np.asarray(self.value)), spec)

    def __add__(self, other: Any) -> Array:
        return self.__jax_array__() + _unwrap(other)

    def __radd__(self, other: Any) -> Array:
        return _unwrap(other) + self.__jax_array__()

    def __sub__(self, other: Any) -> Array:
        return self.__jax_array__() - _unwrap(other)

    def __rsub__(self, other: Any) -> Array:
        return _unwrap(other) - self.__jax_array__()

    def __mul__(self, other: Any) -> Array:
        return self.__jax_array__() * _unwrap(other)

    def __rmul__(self, other: Any) -> Array:
        return _unwrap(other) * self.__jax_array__()

    def __truediv__(self, other: Any) -> Array:
        return self.__jax_array__() / _unwrap(other)

    def __rtruediv__(self, other: Any) -> Array:
        return _unwrap(other) / self.__jax_array__()

    def __pow__(self, other: Any) -> Array:
        return self.__jax_array__() ** _unwrap(other)

    def __rpow__(self, other: Any) -> Array:
        return _unwrap(other) ** self.__jax_array__()

    def __neg__(self) -> Array:
        return -self.__jax_array__()

    def __pos__(self) -> Array:
        return self.__jax_array__()

    def __abs__(self) -> Array:
        return jnp.abs(self.__jax_array__())

    def __lt__(self, other: Any) -> Array:
        return self.__jax_array__() < _unwrap(other)

    def __le__(self, other: Any) -> Array:
        return self.__jax_array__() <= _unwrap(other)

    def __gt__(self, other: Any) -> Array:
        return self.__jax_array__() > _unwrap(other)

    def __ge__(self, other: Any) -> Array:
        return self.__jax_array__() >= _unwrap(other)

    # -- estimation scale ------------------------------------------------
    @property
    def transform_kind(self) -> str:
        """``"identity"`` (unbounded), ``"log"`` (one bound) or ``"logit"`` (two)."""
        lo, hi = math.isfinite(self.lower), math.isfinite(self.upper)
        if lo and hi:
            return "logit"
        if lo or hi:
            return "log"
        return "identity"

    def to_unconstrained(self, value: Float[ArrayLike, ""] | None = None) -> Float[Array, ""]:
        """Map a natural-scale value (default: this THETA's) to the real line.

        Unbounded: identity; lower bound only: ``log(value - lower)``; upper
        only: ``log(upper - value)``; both: ``logit((value - lower) / (upper -
        lower))``.  Fixed THETAs are not estimated, so estimators never call
        this for them (at a bound it would give an infinite value).
        """
        x = jnp.asarray(self.value if value is None else _unwrap(value))
        lo, hi = self.lower, self.upper
        kind = self.transform_kind
        if kind == "logit":
            p = (x - lo) / (hi - lo)
            return jnp.log(p) - jnp.log1p(-p)
        if kind == "log":
            return jnp.log(x - lo) if math.isfinite(lo) else jnp.log(hi - x)
        return x

    def from_unconstrained(self, u: Float[ArrayLike, ""]) -> Float[Array, ""]:
        """Inverse of :meth:`to_unconstrained`: a natural-scale value inside the
        bounds for any real ``u``."""
        u = jnp.asarray(u)
        lo, hi = self.lower, self.upper
        kind = self.transform_kind
        if kind == "logit":
            return lo + (hi - lo) * jax.nn.sigmoid(u)
        if kind == "log":
            return lo + jnp.exp(u) if math.isfinite(lo) else hi - jnp.exp(u)
        return u

    def __repr__(self) -> str:
        parts = [_format_value(self.value)]
        if math.isfinite(self.lower):
            parts.append(f"lower={self.lower:g}")
        if math.isfinite(self.upper):
            parts.append(f"upper={self.upper:g}")
        if self.fixed:
            parts.append("fixed=True")
        if self.prior is not None:
            parts.append(f"prior={self.prior!r}")
        if self.label is not None:
            parts.append(f"label={self.label!r}")
        if self.unit is not None:
            parts.append(f"unit={self.unit!r}")
        return f"Theta({', '.join(parts)})"


def _format_value(x: Any) -> str:
    if is_traced(x):
        return f"<traced {jnp.shape(x)}>"
    arr = np.asarray(x)
    return f"{float(arr):.6g}" if arr.ndim == 0 else np.array2string(arr, precision=4)


def theta(
    init: float,
    lower: float = -math.inf,
    upper: float = math.inf,
    *,
    fixed: bool = False,
    prior: Any = None,
    label: str | None = None,
    unit: str | None = None,
) -> Theta:
    """Declare a THETA with its initial estimate and optional bounds.

    ``lower < init < upper`` must hold strictly (``<=`` for a fixed THETA); this
    is checked with the parameter's name when the THETA is attached to a
    :class:`~pmx_jax.Model` class.  ``label`` and ``unit`` are for reports
    (NONMEM's ``$THETA 0.45 ; KA (1/h)``): the unit of the quantity the THETA
    stands for, e.g. of KA for a log-scale ``tka``.

    Example
    -------
    >>> t = theta(0.7, lower=0.0)
    >>> float(t * 2)
    1.4
    >>> t.transform_kind
    'log'
    >>> theta(0.45, label="KA", unit="1/h").unit
    '1/h'
    """
    if isinstance(init, bool) or not isinstance(init, int | float | np.number | np.ndarray):
        raise TypeError(f"theta(init=...) must be a number, got {type(init).__name__}")
    if np.ndim(init) != 0:
        raise TypeError(f"theta(init=...) must be a scalar, got shape {np.shape(init)}")
    for name, text in (("label", label), ("unit", unit)):
        if text is not None and not isinstance(text, str):
            raise TypeError(f"theta({name}=...) must be text, got {type(text).__name__}")
    return Theta(init, lower, upper, fixed, prior, label, unit)


def check_theta(theta: Theta, where: str) -> None:
    """Python-time checks of a THETA, with ``where`` (e.g. ``"OneCptOral.tv"``)
    in the message.  Skipped for traced values (a model rebuilt inside jit)."""
    if not isinstance(theta, Theta):
        raise TypeError(f"{where} must be a Theta (use pmx.theta(...)), got {type(theta).__name__}")
    lo, hi = theta.lower, theta.upper
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ThetaBoundsError(f"{where}: lower bound {lo:g} must be below upper bound {hi:g}")
    if is_traced(theta.value):
        return
    value = np.asarray(theta.value)
    if value.ndim != 0:
        raise ThetaBoundsError(f"{where}: a THETA is a scalar, got shape {value.shape}")
    x = float(value)
    if not math.isfinite(x):
        raise ThetaBoundsError(f"{where}: initial value must be finite, got {x}")
    if theta.fixed:
        if not lo <= x <= hi:
            raise ThetaBoundsError(
                f"{where}: fixed value {x:g} is outside its bounds ({lo:g}, {hi:g})"
            )
    elif not lo < x < hi:
        raise ThetaBoundsError(
            f"{where}: initial value {x:g} must lie strictly inside its bounds "
            f"({lo:g}, {hi:g}); move the initial estimate or the bound"
        )


class Omega(eqx.Module):
    """A block of etas (NONMEM's $OMEGA record): their names and their
    variance-covariance matrix.

    Build it with :func:`omega` (diagonal) or :func:`omega_block`.  Values are
    variances, as in NONMEM (not standard deviations).  ``occasion=True`` makes
    it an inter-occasion (IOV) block: one independent eta vector per occasion
    (OCC), each with this same matrix.

    Fields
    ------
    names: eta names, in order (static).
    matrix: the ``(n, n)`` variance-covariance matrix (the numeric leaf).  For a
        diagonal block the off-diagonal entries are zero and stay so on the
        estimation scale (only the variances are parametrised).
    diagonal, fixed, occasion: static flags.
    prior: optional prior for Bayesian estimation (static, stored only).
    """

    names: tuple[str, ...] = eqx.field(static=True, converter=tuple)
    matrix: Float[ArrayLike, "n_eta n_eta"] = eqx.field(converter=_as_leaf)
    diagonal: bool = eqx.field(static=True, default=True, converter=bool)
    fixed: bool = eqx.field(static=True, default=False, converter=bool)
    occasion: bool = eqx.field(static=True, default=False, converter=bool)
    prior: Any = eqx.field(static=True, default=None, converter=_as_prior)

    def __check_init__(self) -> None:
        check_omega(self.names, self.matrix, diagonal=self.diagonal)

    @property
    def n_eta(self) -> int:
        return len(self.names)

    @property
    def variances(self) -> Float[Array, " n_eta"]:
        return jnp.diagonal(jnp.asarray(self.matrix))

    @property
    def n_unconstrained(self) -> int:
        n = self.n_eta
        return n if self.diagonal else n * (n + 1) // 2

    def to_unconstrained(
        self, matrix: Float[ArrayLike, "n_eta n_eta"] | None = None
    ) -> Float[Array, " n_free"]:
        """The block on the real line: log variances (diagonal block), or the
        log-Cholesky vector (full block): the lower-triangular Cholesky factor
        row by row, with its diagonal on the log scale."""
        m = jnp.asarray(self.matrix if matrix is None else matrix)
        if self.diagonal:
            return jnp.log(jnp.diagonal(m))
        chol = jnp.linalg.cholesky(m)
        n = self.n_eta
        chol = chol.at[jnp.diag_indices(n)].set(jnp.log(jnp.diagonal(chol)))
        return chol[jnp.tril_indices(n)]

    def from_unconstrained(self, u: Float[ArrayLike, " n_free"]) -> Float[Array, "n_eta n_eta"]:
        """Inverse of :meth:`to_unconstrained`; always a symmetric positive
        definite matrix."""
        u = jnp.asarray(u)
        if self.diagonal:
            return jnp.diag(jnp.exp(u))
        n = self.n_eta
        chol = jnp.zeros((n, n), dtype=u.dtype).at[jnp.tril_indices(n)].set(u)
        chol = chol.at[jnp.diag_indices(n)].set(jnp.exp(jnp.diagonal(chol)))
        return chol @ chol.T

    def __repr__(self) -> str:
        flags = [] if self.diagonal else ["block"]
        flags += ["fixed"] * self.fixed + ["occasion"] * self.occasion
        if is_traced(self.matrix):
            body = ", ".join(self.names) + " <traced>"
        elif self.diagonal:
            var = np.diagonal(np.asarray(self.matrix))
            body = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.names, var, strict=True))
        else:
            rows = np.asarray(self.matrix).round(6).tolist()
            body = f"{', '.join(self.names)}, matrix={rows}"
        return f"Omega({body}{''.join(', ' + f for f in flags)})"


def check_omega(
    names: Sequence[str], matrix: Any, *, diagonal: bool = False, where: str = ""
) -> None:
    """Python-time checks of an OMEGA block: valid distinct eta names, a
    square symmetric positive-definite matrix (diagonal when declared so).
    Value checks are skipped for traced matrices."""
    prefix = f"{where}: " if where else ""
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(
                f"{prefix}eta name {name!r} must be a Python identifier not starting "
                "with '_' (it is read as eta.<name>)"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{prefix}duplicated eta names in OMEGA block {tuple(names)}")
    n = len(names)
    if n == 0:
        raise ValueError(f"{prefix}an OMEGA block needs at least one eta")
    if is_traced(matrix):
        return
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (n, n):
        raise ValueError(
            f"{prefix}OMEGA block for etas {tuple(names)} must be {n}x{n}, got shape {m.shape}"
        )
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{prefix}OMEGA block for etas {tuple(names)} has non-finite entries")
    if not np.allclose(m, m.T, rtol=_SYMMETRY_RTOL, atol=0.0):
        raise ValueError(f"{prefix}OMEGA block for etas {tuple(names)} is not symmetric:\n{m}")
    if diagonal and np.any(m[~np.eye(n, dtype=bool)] != 0):
        raise ValueError(f"{prefix}diagonal OMEGA for etas {tuple(names)} has covariances")
    bad = [nm for nm, v in zip(names, np.diagonal(m), strict=True) if not v > 0]
    if bad:
        raise OmegaNotPositiveDefiniteError(
            f"{prefix}OMEGA variances must be > 0; not so for eta(s) {bad}. "
            "To switch an eta off, remove it from the model."
        )
    smallest = float(np.linalg.eigvalsh(m)[0])
    if not smallest > 0:
        raise OmegaNotPositiveDefiniteError(
            f"{prefix}OMEGA block for etas {tuple(names)} is not positive definite "
            f"(smallest eigenvalue {smallest:.3g}); every covariance must satisfy "
            "|cov(i, j)| < sqrt(var(i) * var(j)), and jointly so for larger blocks"
        )


def omega(
    *, fixed: bool = False, occasion: bool = False, prior: Any = None, **variances: float
) -> Omega:
    """A diagonal OMEGA block: independent etas given by their VARIANCES.

    ``fixed``, ``occasion`` and ``prior`` are options, so they cannot be eta
    names.

    Example
    -------
    >>> iiv = omega(ka=0.6, cl=0.3, v=0.1)
    >>> iiv.names
    ('ka', 'cl', 'v')
    >>> [float(x) for x in iiv.variances]
    [0.6, 0.3, 0.1]
    """
    if not variances:
        raise ValueError("omega() needs at least one eta, e.g. omega(cl=0.1)")
    names = tuple(variances)
    values = [float(_unwrap(v)) for v in variances.values()]
    return Omega(names, np.diag(values), True, fixed, occasion, prior)


def omega_block(
    names: Sequence[str],
    matrix: ArrayLike | Sequence[float] | Mapping[Any, Any],
    *,
    fixed: bool = False,
    occasion: bool = False,
    prior: Any = None,
) -> Omega:
    """A full OMEGA block (correlated etas), NONMEM's ``$OMEGA BLOCK(n)``.

    ``matrix`` is the ``(n, n)`` variance-covariance matrix, or its lower
    triangle row by row as NONMEM writes it (``n (n + 1) / 2`` numbers).

    Example
    -------
    >>> block = omega_block(("cl", "v"), [0.1, 0.01, 0.1])  # var(cl), cov, var(v)
    >>> block.matrix.tolist()
    [[0.1, 0.01], [0.01, 0.1]]
    """
    names = tuple(names)
    n = len(names)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 1 and m.size == n * (n + 1) // 2:
        full = np.zeros((n, n))
        full[np.tril_indices(n)] = m
        m = full + np.tril(full, -1).T
    elif m.ndim == 0 and n == 1:
        m = m.reshape(1, 1)
    return Omega(names, m, False, fixed, occasion, prior)
