"""Linear compartment systems in general (NONMEM's ADVAN5/ADVAN7): any
``dA/dt = K(params) A`` solved exactly by the matrix exponential.

The closed forms of :mod:`._closed_form` cover the mammillary models by their
eigenvalues; a linear system written as an ODE (a control stream's ``$DES``
that is linear in the amounts, a chain of transit compartments, a
metabolite) is solved here instead of by a numerical ODE solver: between
events, with zero-order inputs ``r``,

``A(t + dt) = exp(K dt) A(t) + int_0^dt exp(K s) ds r``

both blocks of one matrix exponential of the augmented matrix
``[[K, I], [0, 0]] dt`` (Van Loan's construction), which
:func:`jax.scipy.linalg.expm` differentiates exactly.  The event engine takes
these matrices from :meth:`LinearSystem.transition` as it does the closed
forms'.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import AbstractDynamics, Params
from ._ode import AbstractODE


class LinearSystem(AbstractDynamics):
    """The exact solution of an ODE model whose right-hand side is linear in
    the amounts (``rhs(t, A, p) = K(p) A``, with no constant term and no
    dependence on ``t``); ``K`` is the Jacobian of the ODE's right-hand side.

    Build it from such an ODE with :meth:`of` (which checks linearity at
    random points); the compartments are the ODE's.
    """

    ode: AbstractODE
    is_linear: ClassVar[bool] = True

    @classmethod
    def of(cls, ode: AbstractODE, parameter_names, *, seed: int = 0) -> LinearSystem | None:
        """``LinearSystem`` for ``ode`` when its right-hand side is linear and
        homogeneous in the amounts at random positive parameter values (three
        draws, two amount vectors each); None otherwise."""
        if not is_linear_rhs(ode, parameter_names, seed=seed):
            return None
        subclass = type(cls)(
            f"Linear{type(ode).__name__}",
            (cls,),
            {"compartments": ode.compartments, "__module__": cls.__module__},
        )
        return subclass(ode)

    def rate_matrix(self, params: Params) -> Float[Array, "n n"]:
        """``K``: ``dA/dt = K A``."""
        zero = jnp.zeros(self.n_compartments, dtype=jnp.result_type(*params.values(), float))
        return jax.jacfwd(lambda a: self.ode.rhs(0.0, a, params))(zero)

    def transition(
        self, params: Params, dt: Float[Array, ""]
    ) -> tuple[Float[Array, "n n"], Float[Array, "n n"]]:
        """``(exp(K dt), int_0^dt exp(K s) ds)``."""
        k = self.rate_matrix(params)
        n = k.shape[0]
        dt = jnp.asarray(dt, k.dtype)
        augmented = jnp.zeros((2 * n, 2 * n), k.dtype)
        augmented = augmented.at[:n, :n].set(k).at[:n, n:].set(jnp.eye(n, dtype=k.dtype))
        exponential = jax.scipy.linalg.expm(augmented * dt)
        return exponential[:n, :n], exponential[:n, n:]

    def propagate(self, params, amounts, dt, rates):
        to_amounts, to_rates = self.transition(params, dt)
        return to_amounts @ amounts + to_rates @ rates

    def initial_amounts(self, params: Params) -> Float[Array, " n_cmt"]:
        return self.ode.initial_amounts(params)


def is_linear_rhs(ode: AbstractODE, parameter_names, *, seed: int = 0) -> bool:
    """Whether ``ode.rhs(t, A, p)`` is ``K(p) A`` at random points: positive
    parameter values over several orders of magnitude, random amounts and
    times; ``K`` the same at every amount and time, no constant term."""
    rng = jax.random.PRNGKey(seed)
    n = len(ode.compartments)
    for _ in range(3):
        rng, k_params, k_amounts, k_times = jax.random.split(rng, 4)
        values = jnp.exp(jax.random.uniform(k_params, (len(parameter_names),), minval=-3, maxval=3))
        params = dict(zip(parameter_names, values, strict=True))
        amounts = jnp.exp(jax.random.uniform(k_amounts, (2, n), minval=-2, maxval=4))
        times = jax.random.uniform(k_times, (2,), maxval=100.0)
        try:
            zero = ode.rhs(times[0], jnp.zeros(n), params)
            jacobians = [
                jax.jacfwd(lambda a, t=t, p=params: ode.rhs(t, a, p))(a)
                for a, t in zip(amounts, times, strict=True)
            ]
            values_at = [ode.rhs(t, a, params) for a, t in zip(amounts, times, strict=True)]
        except Exception:  # noqa: BLE001 - any failure: not a linear system we can use
            return False
        scale = max(float(jnp.max(jnp.abs(jacobians[0]))), 1e-300)
        if not bool(jnp.all(jnp.abs(zero) <= 1e-12 * scale)):
            return False
        if not bool(jnp.allclose(jacobians[0], jacobians[1], rtol=1e-10, atol=1e-12 * scale)):
            return False
        for a, value, jacobian in zip(amounts, values_at, jacobians, strict=True):
            if not bool(jnp.allclose(jacobian @ a, value, rtol=1e-10, atol=1e-12 * scale)):
                return False
    return True
