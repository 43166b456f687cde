"""Named, read-only views of the vectors a model block receives.

The numerical layers pass plain vectors (etas, covariates, compartment
amounts); the user's ``individual`` and ``observe`` blocks read them by name
(``eta.cl``, ``cov.WT``, ``amounts.central``).  A view is a static tuple of
names plus the vector: every access is a constant index, so views work on
traced arrays under ``jit``/``vmap``/``grad`` at no cost.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._errors import CompartmentNameError, UnknownEtaError, missing_covariate_error_class


class _NamedVector:
    """Shared machinery: ``view.<name>``, ``view["name"]``, iteration over names."""

    __slots__ = ("_values", "_names", "_index")
    _values: Array
    _names: tuple[str, ...]
    _index: dict[str, int]

    def __init__(self, values: ArrayLike, names: Sequence[str]) -> None:
        names = tuple(names)
        values = jnp.asarray(values)
        if values.shape != (len(names),):
            raise ValueError(
                f"{type(self).__name__}: {len(names)} names {names} for a vector of "
                f"shape {values.shape}"
            )
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    def _lookup(self, name: str) -> int:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Float[Array, ""]:
        # Only called when normal lookup fails; private names (pickling,
        # copying, IPython probes) must not be mistaken for entries.
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values[self._lookup(name)]

    def __getitem__(self, key: str | int) -> Float[Array, ""]:
        if isinstance(key, str):
            return self._values[self._lookup(key)]
        return self._values[key]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._names]

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def values(self) -> Float[Array, " n"]:
        return self._values

    def as_dict(self) -> dict[str, Float[Array, ""]]:
        return {n: self._values[i] for i, n in enumerate(self._names)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._names)})"


class EtaView(_NamedVector):
    """The etas of one record, by name: ``eta.cl`` or ``eta["cl"]``.

    Holds the subject's IIV etas followed by the IOV etas of the record's
    occasion, each under the name its OMEGA block gives it.
    """

    __slots__ = ()

    def _lookup(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise UnknownEtaError(
                f"no eta named {name!r}; the model's OMEGA blocks declare {self._names}. "
                "Add it to an omega(...) field or fix the name."
            ) from None


class CovariateView(_NamedVector):
    """The covariates of one record, by column name: ``cov.WT``.

    Names are matched exactly, then case-insensitively (dataset column names
    are case-insensitive).  Time-varying covariates arrive already carried
    forward by the data layer.
    """

    __slots__ = ()

    def _lookup(self, name: str) -> int:
        if name in self._index:
            return self._index[name]
        folded = [n for n in self._names if n.casefold() == name.casefold()]
        if len(folded) == 1:
            return self._index[folded[0]]
        error = missing_covariate_error_class()
        raise error(
            f"the model reads covariate {name!r} but the dataset has no such column; "
            f"its covariates are {self._names}. Add a {name} column to the data, or map "
            f"an existing column to it with read_nonmem(..., columns={{'{name}': "
            "'<your column>'}})."
        )


class AmountsView(_NamedVector):
    """Compartment amounts by name (``amounts.central``) or by 0-based
    position (``amounts[1]``; NONMEM's CMT number minus one)."""

    __slots__ = ()

    def _lookup(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise CompartmentNameError(
                f"no compartment named {name!r}; the dynamics' compartments are {self._names}"
            ) from None
