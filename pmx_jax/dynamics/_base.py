"""The interface every dynamics (closed-form or ODE) implements.

The event engine (:mod:`pmx_jax.events`) only ever asks a dynamics object two
things: the names of its compartments (NONMEM's CMT numbering is their 1-based
position) and how to move the compartment amounts forward by ``dt`` while
zero-order inputs (infusions) run at constant rates.  Everything else (doses,
lag times, bioavailability, steady state, resets) is handled once, in the
event engine, so closed-form and ODE models share the exact same semantics.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

Params = dict[str, Float[Array, ""]]


class AbstractDynamics(eqx.Module):
    """Dynamics of compartment amounts between dosing events.

    Subclasses declare ``compartments`` (a tuple of names, CMT 1 is the first)
    and implement :meth:`propagate`.  ``is_linear`` tells the steady-state solver
    whether the one-interval map is affine in the amounts (it then solves a linear
    system instead of iterating).
    """

    compartments: eqx.AbstractClassVar[tuple[str, ...]]
    is_linear: eqx.AbstractClassVar[bool]

    @property
    def n_compartments(self) -> int:
        return len(self.compartments)

    def compartment_index(self, name: str) -> int:
        try:
            return self.compartments.index(name)
        except ValueError:
            raise ValueError(
                f"{type(self).__name__} has no compartment {name!r}; "
                f"its compartments are {self.compartments}"
            ) from None

    @abc.abstractmethod
    def propagate(
        self,
        params: Params,
        amounts: Float[Array, " n_cmt"],
        dt: Float[Array, ""],
        rates: Float[Array, " n_cmt"],
    ) -> Float[Array, " n_cmt"]:
        """Amounts after ``dt`` time units, starting from ``amounts``, with the
        zero-order input ``rates`` (amount/time into each compartment) held
        constant over the interval.  ``dt`` may be zero (must return ``amounts``
        exactly).  Must be jit/vmap/grad compatible."""

    def initial_amounts(self, params: Params) -> Float[Array, " n_cmt"]:
        """Amounts at the start of the record (and after a reset, EVID 3/4).
        Zero by default; turnover models override this with their baseline."""
        del params
        return jnp.zeros(self.n_compartments)
