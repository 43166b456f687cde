"""The :class:`Model` base class: THETA/OMEGA fields, a dynamics, and the
user's $PK (``individual``) and $ERROR (``observe``) blocks.

A model is an :class:`equinox.Module`: its pytree leaves are the THETA values
and OMEGA matrices, everything else (bounds, names, flags, the dynamics) is
static.  The record-level methods at the end of the class are what the event
and likelihood layers call, for one record of one subject; they are pure and
``jit``/``vmap``/``grad`` compatible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ..dynamics._base import AbstractDynamics
from ._endpoints import SelectedEndpoint, normalise_endpoints
from ._error import AbstractErrorModel
from ._errors import IndividualParametersError, ModelDefinitionError, ObservationError
from ._parameters import Omega, Theta, _as_leaf, check_omega, check_theta, is_traced
from ._views import AmountsView, CovariateView, EtaView

Params = dict[str, Float[Array, ""]]


class Model(eqx.Module):
    """Base class of population models.

    Subclass it with THETA fields (``tcl: pmx.Theta = pmx.theta(1.0)``), OMEGA
    fields (``iiv: pmx.Omega = pmx.omega(cl=0.1)``), a ``dynamics`` class
    attribute, and two methods:

    - ``individual(self, eta, cov) -> dict``: the $PK block.  ``eta.<name>``
      reads an eta (IIV, and IOV of the record's occasion), ``cov.<NAME>`` a
      covariate of the record; ``self.<theta>`` behaves as the THETA value.
      Returns the individual parameters the dynamics uses (scalars).
    - ``observe(self, amounts, params)``: the $ERROR block.  ``amounts.<cmt>``
      reads a compartment amount, ``params`` is what ``individual`` returned.
      Returns an error model (``pmx.Additive(prediction, sd)``...), or a
      tuple/dict of error models, one per DVID endpoint.

    Fields must be annotated (``tka: pmx.Theta = ...``) to be parameters;
    other annotated fields are allowed and ignored by the introspection below.
    Instantiating the class gives the initial estimates; ``Model(tcl=pmx.theta(2.0))``
    overrides one, as does :meth:`with_values`.
    """

    if TYPE_CHECKING:
        dynamics: ClassVar[AbstractDynamics]

    # -- class checks ------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        annotations = cls.__dict__.get("__annotations__", {})
        for name in annotations:
            if name in _RESERVED:
                raise ModelDefinitionError(
                    f"{cls.__name__}.{name}: this name is a Model method; rename the field"
                )
        for name, value in cls.__dict__.items():
            if isinstance(value, Theta | Omega):
                if name not in annotations:
                    kind = "Theta" if isinstance(value, Theta) else "Omega"
                    raise ModelDefinitionError(
                        f"{cls.__name__}.{name} is a {kind} without a type annotation, so it "
                        f"would be a constant rather than a parameter; write "
                        f"`{name}: pmx.{kind} = ...`"
                    )
                if isinstance(value, Theta):
                    check_theta(value, f"{cls.__name__}.{name}")

    def __check_init__(self) -> None:
        cls = type(self)
        dynamics = getattr(self, "dynamics", None)
        if not isinstance(dynamics, AbstractDynamics):
            raise ModelDefinitionError(
                f"{cls.__name__} has no dynamics; add a class attribute such as "
                "`dynamics = pmx.pk.OneCompartmentOral()`"
                + ("" if dynamics is None else f" (got {type(dynamics).__name__})")
            )
        for hook, block in (("individual", "$PK"), ("observe", "$ERROR")):
            if getattr(cls, hook) is getattr(Model, hook):
                raise ModelDefinitionError(
                    f"{cls.__name__} does not define `{hook}`, its {block} block; "
                    f"see help(pmx.Model.{hook})"
                )
        for name, kind in _parameter_annotations(cls).items():
            value = getattr(self, name, None)
            if not isinstance(value, kind):
                what = "a THETA" if kind is Theta else "an OMEGA block"
                raise ModelDefinitionError(
                    f"{cls.__name__}: field {name!r} is {what} but was given a "
                    f"{type(value).__name__}, which would make it a constant; pass "
                    f"pmx.{kind.__name__.lower()}(...) or use "
                    f"{cls.__name__}().with_values({name}=...)"
                )
        for name, theta in self.thetas().items():
            check_theta(theta, f"{cls.__name__}.{name}")
        owner: dict[str, str] = {}
        for field, omega in self.omega_blocks():
            for eta in omega.names:
                if eta in owner:
                    raise ModelDefinitionError(
                        f"{cls.__name__}: eta {eta!r} is declared in OMEGA blocks "
                        f"{owner[eta]!r} and {field!r}; eta names must be unique"
                    )
                owner[eta] = field

    # -- the user's blocks ---------------------------------------------------
    def individual(self, eta: EtaView, cov: CovariateView) -> Mapping[str, Any]:
        """The $PK block: individual parameters of one record from the etas
        and covariates.  Override it in the model class."""
        raise NotImplementedError

    def observe(self, amounts: AmountsView, params: Params) -> Any:
        """The $ERROR block: the error model(s) of one record from the
        compartment amounts and the individual parameters.  Override it."""
        raise NotImplementedError

    # -- introspection (static structure) ------------------------------------
    def _fields_of(self, kind: Any) -> list[tuple[str, Any]]:
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name, None)
            if isinstance(value, kind):
                out.append((f.name, value))
        return out

    def thetas(self) -> dict[str, Theta]:
        """THETAs by field name, in field order (NONMEM's THETA(1), THETA(2)...)."""
        return dict(self._fields_of(Theta))

    @property
    def theta_names(self) -> tuple[str, ...]:
        return tuple(self.thetas())

    def omega_blocks(self) -> list[tuple[str, Omega]]:
        """All OMEGA blocks (IIV and IOV) as ``(field name, Omega)``, in field order."""
        return self._fields_of(Omega)

    def _iiv_blocks(self) -> list[Omega]:
        return [b for _, b in self.omega_blocks() if not b.occasion]

    def _iov_blocks(self) -> list[Omega]:
        return [b for _, b in self.omega_blocks() if b.occasion]

    @property
    def eta_names(self) -> tuple[str, ...]:
        """Names of the between-subject (IIV) etas, in block order."""
        return tuple(n for b in self._iiv_blocks() for n in b.names)

    @property
    def iov_eta_names(self) -> tuple[str, ...]:
        """Names of the between-occasion (IOV) etas of one occasion."""
        return tuple(n for b in self._iov_blocks() for n in b.names)

    @property
    def n_eta(self) -> int:
        return len(self.eta_names)

    @property
    def n_iov_eta(self) -> int:
        return len(self.iov_eta_names)

    def omega_matrix(self) -> Float[Array, "n_eta n_eta"]:
        """The block-diagonal IIV variance-covariance matrix (order of :attr:`eta_names`)."""
        return _block_diagonal(self._iiv_blocks())

    def iov_omega_matrix(self) -> Float[Array, "n_iov_eta n_iov_eta"]:
        """The IOV variance-covariance matrix of one occasion (order of
        :attr:`iov_eta_names`); occasions are independent and share it."""
        return _block_diagonal(self._iov_blocks())

    # -- new models with other values ------------------------------------------
    def with_values(self, **values: Any) -> Model:
        """A copy with some parameters replaced, by field name.

        A THETA takes a number (or a whole ``pmx.theta(...)``); an OMEGA block
        takes a matrix, a vector of variances for a diagonal block, or a whole
        ``pmx.omega(...)``.  Concrete values are checked against bounds.

        >>> # model.with_values(tcl=1.2, iiv=[0.5, 0.2, 0.1])
        """
        return self._replace(values, allowed=(Theta, Omega), validate=True)

    def replace_thetas(self, **values: Any) -> Model:
        """Like :meth:`with_values`, for THETAs only."""
        return self._replace(values, allowed=(Theta,), validate=True)

    def fix(self, *names: str) -> Model:
        """A copy with these THETAs / OMEGA blocks fixed at their current values
        (NONMEM's ``FIX``): they are no longer estimated.

        >>> # model.fix("tkdeg", "iiv_ka")
        """
        return self._set_fixed(names, True)

    def unfix(self, *names: str) -> Model:
        """A copy with these THETAs / OMEGA blocks estimated again."""
        return self._set_fixed(names, False)

    def _set_fixed(self, names: tuple[str, ...], fixed: bool) -> Model:
        params = {n: p for kind in (Theta, Omega) for n, p in self._fields_of(kind)}
        # An unknown name is left for _replace to report (with the known names).
        nodes = {
            n: dataclasses.replace(params[n], fixed=fixed) if n in params else n for n in names
        }
        return self._replace(nodes, allowed=(Theta, Omega), validate=True)

    def _replace(
        self, values: Mapping[str, Any], *, allowed: tuple[type, ...], validate: bool
    ) -> Model:
        cls_name = type(self).__name__
        params = {n: p for kind in allowed for n, p in self._fields_of(kind)}
        names, nodes = [], []
        for name, new in values.items():
            if name not in params:
                raise KeyError(
                    f"{cls_name} has no parameter {name!r}; its parameters are {tuple(params)}"
                )
            old = params[name]
            if isinstance(new, Theta | Omega):
                node = new
            elif isinstance(old, Theta):
                node = eqx.tree_at(lambda t: t.value, old, _as_leaf(new))
            else:
                matrix = _as_leaf(new)
                if old.diagonal and jnp.ndim(matrix) == 1:
                    matrix = jnp.diag(matrix) if is_traced(matrix) else np.diag(matrix)
                node = eqx.tree_at(lambda o: o.matrix, old, matrix)
            if validate:
                where = f"{cls_name}.{name}"
                if isinstance(node, Theta):
                    check_theta(node, where)
                else:
                    check_omega(node.names, node.matrix, diagonal=node.diagonal, where=where)
            names.append(name)
            nodes.append(node)
        if not names:
            return self
        new_model = eqx.tree_at(lambda m: [getattr(m, n) for n in names], self, nodes)
        if validate:
            new_model.__check_init__()
        return new_model

    # -- estimation scale ---------------------------------------------------------
    def to_unconstrained(self) -> dict[str, Float[Array, "..."]]:
        """The estimated (not fixed) THETAs and OMEGA blocks on the real line,
        by field name: the vector an estimator optimises (``jax.flatten_util``
        ravels it)."""
        out: dict[str, Array] = {}
        for name, p in self._fields_of(Theta | Omega):
            if not p.fixed:
                out[name] = p.to_unconstrained()
        return out

    def from_unconstrained(self, unconstrained: Mapping[str, ArrayLike]) -> Model:
        """Inverse of :meth:`to_unconstrained`: the model at those values
        (names not given keep their current value).  No Python-time checks,
        so it can run inside ``jit``."""
        params = dict(self._fields_of(Theta | Omega))
        natural = {n: params[n].from_unconstrained(u) for n, u in unconstrained.items()}
        return self._replace(natural, allowed=(Theta, Omega), validate=False)

    # -- record-level evaluation (called by the event and likelihood layers) ------
    def individual_parameters(
        self,
        eta: Float[ArrayLike, " n_eta"],
        cov: Float[ArrayLike, " n_cov"],
        covariate_names: Sequence[str],
        iov_eta: Float[ArrayLike, " n_iov_eta"] | None = None,
    ) -> Params:
        """Run the $PK block for one record.

        Arguments: the subject's IIV etas (order of :attr:`eta_names`), the
        record's covariates and their (static) names, and the IOV etas of the
        record's occasion (order of :attr:`iov_eta_names`; zeros, the typical
        occasion, when omitted).  Returns the individual parameters as a dict
        of scalar arrays.
        """
        cls_name = type(self).__name__
        eta = jnp.asarray(eta)
        if eta.shape != (self.n_eta,):
            raise ValueError(
                f"{cls_name}: expected {self.n_eta} IIV etas {self.eta_names}, "
                f"got shape {eta.shape}"
            )
        if iov_eta is None:
            iov_eta = jnp.zeros(self.n_iov_eta, dtype=eta.dtype)
        iov_eta = jnp.asarray(iov_eta)
        if iov_eta.shape != (self.n_iov_eta,):
            raise ValueError(
                f"{cls_name}: expected {self.n_iov_eta} IOV etas {self.iov_eta_names}, "
                f"got shape {iov_eta.shape}"
            )
        eta_view = EtaView(
            jnp.concatenate([eta, iov_eta.astype(eta.dtype)]),
            self.eta_names + self.iov_eta_names,
        )
        result = self._as_numbers().individual(eta_view, CovariateView(cov, covariate_names))
        if not isinstance(result, Mapping):
            raise IndividualParametersError(
                f"{cls_name}.individual must return a dict of individual parameters, "
                f"e.g. dict(cl=..., v=...); got {type(result).__name__}"
            )
        params: Params = {}
        for key, value in result.items():
            if not isinstance(key, str):
                raise IndividualParametersError(
                    f"{cls_name}.individual returned a non-string key {key!r}"
                )
            try:
                array = jnp.asarray(value)
            except TypeError as e:
                raise IndividualParametersError(
                    f"{cls_name}.individual returned {type(value).__name__} for {key!r}; "
                    "individual parameters must be numbers"
                ) from e
            if array.shape != ():
                raise IndividualParametersError(
                    f"{cls_name}.individual returned shape {array.shape} for {key!r}; "
                    "individual parameters are scalars for one record"
                )
            params[key] = array
        return params

    def _as_numbers(self) -> Model:
        """This model with every THETA field replaced by its value (an array),
        for the user's blocks: ``self.tcl`` is then a plain JAX array there, so
        every JAX function takes it (``jax.nn.sigmoid(self.logit)``; JAX no
        longer converts objects through ``__jax_array__`` everywhere)."""
        names = [name for name, _ in self._fields_of(Theta)]
        if not names:
            return self
        values = [jnp.asarray(getattr(self, name).value) for name in names]
        return eqx.tree_at(lambda m: [getattr(m, n) for n in names], self, values)

    def endpoints(
        self, amounts: Float[ArrayLike, " n_cmt"], params: Params
    ) -> dict[Any, AbstractErrorModel]:
        """Run the $ERROR block: every endpoint's error model, keyed as the
        ``observe`` block keyed them (0, 1, ... for a single model or a tuple),
        in DVID level order."""
        keys, models = self._observe(amounts, params)
        return dict(zip(keys, models, strict=True))

    def _observe(
        self, amounts: ArrayLike, params: Params
    ) -> tuple[tuple[Any, ...], tuple[AbstractErrorModel, ...]]:
        view = AmountsView(amounts, self.dynamics.compartments)
        observed = self._as_numbers().observe(view, params)
        return normalise_endpoints(observed, f"{type(self).__name__}.observe")

    def observation(
        self,
        amounts: Float[ArrayLike, " n_cmt"],
        params: Params,
        dvid: Int[ArrayLike, ""] | None = None,
    ) -> AbstractErrorModel:
        """The error model of one record: the $ERROR block's single error
        model, or, with several endpoints, a :class:`SelectedEndpoint` picking
        the one at DVID level index ``dvid`` (may be traced)."""
        _, models = self._observe(amounts, params)
        if len(models) == 1:
            return models[0]
        if dvid is None:
            raise ObservationError(
                f"{type(self).__name__} has {len(models)} endpoints; pass the record's "
                "DVID level index"
            )
        # (mypy's dataclass plugin takes the abstract ``prediction`` for a field)
        return SelectedEndpoint(models, dvid)  # type: ignore[call-arg, arg-type]

    def record_log_likelihood(
        self,
        amounts: Float[ArrayLike, " n_cmt"],
        params: Params,
        dvid: Int[ArrayLike, ""] | None,
        y: Float[ArrayLike, ""],
        cens: Int[ArrayLike, ""],
        limit: Float[ArrayLike, ""],
        bound: Float[ArrayLike, ""] | None = None,
    ) -> Float[Array, ""]:
        """Log-likelihood of one observation record, with BLQ censoring (M3,
        or M4 with a finite ``bound``; see
        :meth:`AbstractErrorModel.censored_log_likelihood`)."""
        observation = self.observation(amounts, params, dvid)
        return observation.censored_log_likelihood(y, cens, limit, bound)

    def record_prediction(
        self,
        amounts: Float[ArrayLike, " n_cmt"],
        params: Params,
        dvid: Int[ArrayLike, ""] | None = None,
    ) -> Float[Array, ""]:
        """IPRED of one record (natural scale)."""
        return self.observation(amounts, params, dvid).prediction

    def record_variance(
        self,
        amounts: Float[ArrayLike, " n_cmt"],
        params: Params,
        dvid: Int[ArrayLike, ""] | None = None,
    ) -> Float[Array, ""]:
        """Residual variance of one record, on its error model's transformed scale."""
        return self.observation(amounts, params, dvid).variance()

    def record_sample(
        self,
        key: PRNGKeyArray,
        amounts: Float[ArrayLike, " n_cmt"],
        params: Params,
        dvid: Int[ArrayLike, ""] | None = None,
    ) -> Float[Array, ""]:
        """A simulated observation (DV) for one record."""
        return self.observation(amounts, params, dvid).sample(key)

    def __repr__(self) -> str:
        from ._summary import model_summary

        return model_summary(self)


def _parameter_annotations(cls: type) -> dict[str, type]:
    """Fields annotated ``Theta`` or ``Omega`` (also as strings, e.g.
    ``"pmx.Theta"`` under postponed annotations), over the class hierarchy."""
    kinds = {"Theta": Theta, "Omega": Omega}
    found: dict[str, type] = {}
    for klass in reversed(cls.__mro__):
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            key = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
            kind = kinds.get(key.rsplit(".", 1)[-1].strip())
            if kind is not None:
                found[name] = kind
    return found


_RESERVED = frozenset(n for n in vars(Model) if not n.startswith("__")) - {"dynamics"}


def _block_diagonal(blocks: Sequence[Omega]) -> Array:
    if not blocks:
        return jnp.zeros((0, 0))
    return jax.scipy.linalg.block_diag(*[jnp.asarray(b.matrix) for b in blocks])
