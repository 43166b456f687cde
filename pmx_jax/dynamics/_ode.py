"""ODE dynamics: the user writes ``rhs``, diffrax integrates between events.

A pharmacometrician writes the right-hand side of the compartment system in
amounts (NONMEM's ``$DES``), as a method of an :class:`AbstractODE` subclass::

    class OneCptOralMM(AbstractODE):
        compartments = ("depot", "central")

        def rhs(self, t, amounts, p):
            depot, central = amounts
            conc = central / p["v"]
            return jnp.stack([
                -p["ka"] * depot,
                p["ka"] * depot - p["vm"] * conc / (p["km"] + conc),
            ])

The event engine adds zero-order inputs (infusions) to ``rhs`` and calls
:meth:`AbstractODE.propagate` over each interval between events.

Derivatives.  By default (``adjoint=None``) the solve carries its own
derivative rule: forward sensitivities, as in CVODES or NONMEM's ADVAN13.  When
a derivative is asked for, the variational equations

    S' = (d rhs / d amounts) S + d rhs / d theta,    S(0) = d amounts(0) / d theta

are integrated together with the amounts (one column per differentiated input,
on the steps the amounts' error control takes: ``error_control``), and the
derivative with respect to the interval length is the exact ``rhs`` at the end
point.  The tangent is then a matrix-vector product with ``S``, which JAX can
transpose, so one rule serves ``jax.jvp``/``jax.jacfwd`` and
``jax.grad``/``jax.jacrev`` alike, and it nests (Hessians: the variational
system is itself solved by the same rule).  No
derivative ever flows through the adaptive step-size logic, so ``dt == 0`` has
finite derivatives.  Passing a diffrax adjoint instead (e.g.
``diffrax.RecursiveCheckpointAdjoint()`` for reverse mode only, or
``diffrax.ForwardMode()`` for forward mode only) hands differentiation to
diffrax, which differentiates through the solver's internals.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Bool, Float, PyTree

from ._base import AbstractDynamics, Params

if TYPE_CHECKING:  # imported where a model integrates (diffrax takes 0.3 s to import)
    import diffrax

VectorField = Callable[[Float[Array, ""], PyTree, PyTree], PyTree]


class _SolveOptions(eqx.Module):
    """Static configuration of one ODE solve (hashable, never traced)."""

    solver: diffrax.AbstractSolver
    rtol: float
    atol: float
    dt0: float | None
    max_steps: int
    throw: bool
    error_control: str
    # How deep the amounts sit in the state (0: the state is the amounts; each
    # level of the variational system wraps it as ``(state, sensitivities)``);
    # with error_control "amounts" the step size is controlled on them alone.
    nesting: int = 0


def _diffeqsolve(
    vector_field: VectorField,
    y0: PyTree,
    args: PyTree,
    dt: Float[Array, ""],
    options: _SolveOptions,
    adjoint: diffrax.AbstractAdjoint,
) -> tuple[PyTree, Bool[Array, ""]]:
    """``y(dt)`` for ``y' = vector_field(t, y, args)``, ``y(0) = y0``, and
    whether the solver reached ``dt`` (``y0`` itself for ``dt == 0``;
    integration backwards for a negative ``dt``).

    An explicit solver (the default ``Tsit5``) integrates in the scaled time
    ``s = t / dt`` from 0 to 1, where ``dy/ds = dt * vector_field(s dt, y,
    args)``: its steps, error estimates and step-size control are those in
    ``t`` up to rounding (``dt0`` is scaled too; only the size of diffrax's
    first step where it picks one differs), and its end points are
    constants.  diffrax computes the threshold at which a step is rounded to
    the end point (``t1`` minus 100 ULPs) by 100 chained ``nextafter``
    operations: constant end points evaluate them once at trace time, where
    a traced ``t1`` put about 1,500 lines of HLO into every ODE solve of a
    program and ran them at every solve.  For ``dt == 0`` the scaled field is
    zero (also where ``vector_field`` is not finite): diffrax takes three
    steps of growing size that leave ``y0`` as it is, and ``y0`` is returned
    as reached whatever ``max_steps``.  Implicit solvers
    (``stiff=True``) integrate in ``t``: their stage iterations test
    convergence on vector-field values in absolute terms, which the scaling
    would change (the minimal PBPK model over 100 h took 32,924 steps
    instead of 286)."""
    import diffrax

    def scaled_field(s, y, scaled_args):
        inner_args, span = scaled_args

        def scale(f):
            return span * jnp.where((span == 0) & ~jnp.isfinite(f), 0.0, f)

        return jtu.tree_map(scale, vector_field(s * span, y, inner_args))

    dt = jnp.asarray(dt)
    scaled = not isinstance(options.solver, diffrax.AbstractImplicitSolver)
    if scaled:
        term, t0, t1, solve_args = scaled_field, 0.0, 1.0, (args, dt)
        dt0 = None if options.dt0 is None else options.dt0 / jnp.where(dt == 0, 1.0, jnp.abs(dt))
    else:
        term, t0, t1, dt0, solve_args = vector_field, jnp.zeros_like(dt), dt, options.dt0, args
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(term),
        options.solver,
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=y0,
        args=solve_args,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(
            rtol=options.rtol, atol=options.atol, norm=_controller_norm(options)
        ),
        max_steps=options.max_steps,
        adjoint=adjoint,
        throw=options.throw,
    )
    y1 = jtu.tree_map(lambda ys: ys[-1], solution.ys)
    reached = solution.result == diffrax.RESULTS.successful
    if scaled:
        y1 = jtu.tree_map(lambda a, b: jnp.where(dt == 0, a, b), y0, y1)
        reached = reached | (dt == 0)
    return y1, reached


_ERROR_CONTROLS = ("amounts", "all")


def _check_error_control(owner: str, error_control: str) -> None:
    if error_control not in _ERROR_CONTROLS:
        raise ValueError(
            f"{owner}: error_control must be {' or '.join(map(repr, _ERROR_CONTROLS))}, "
            f"got {error_control!r}"
        )


def _controller_norm(options: _SolveOptions) -> Callable[[PyTree], Array]:
    """The step-size controller's norm of a scaled error estimate: the RMS
    over the whole state, or over the amounts alone (``nesting`` levels down
    a state that carries sensitivities)."""
    from optimistix import rms_norm  # diffrax's default norm

    if options.nesting == 0 or options.error_control == "all":
        return rms_norm

    def norm(error):
        for _ in range(options.nesting):
            error = error[0]
        return rms_norm(error)

    return norm


def strongly_typed(tree: PyTree) -> PyTree:
    """Make every JAX array leaf strongly typed (other leaves untouched).

    Weakly typed arrays come from Python scalars (``jax.grad(f)(2.0)``).  Inside
    a custom derivative rule JAX may hand a concrete weakly typed scalar back
    as a plain Python ``float``, which equinox then takes for static data; a
    strongly typed array stays an array.
    """

    def convert(x):
        if isinstance(x, jax.Array):
            return jnp.asarray(x, dtype=x.dtype)
        return x

    return jtu.tree_map(convert, tree)


def _arrays_where_moving(leaves: list[Any], tangents: list[Any]) -> list[Any]:
    """Primal leaves as arrays wherever a tangent arrives (see strongly_typed)."""
    return [x if t is None else jnp.asarray(x) for x, t in zip(leaves, tangents, strict=True)]


def _leaves_up_to(treedef: jtu.PyTreeDef, tangents: PyTree) -> list[Any]:
    """Tangent leaves aligned with the primal leaves (``None``: symbolic zero)."""
    if tangents is None:
        return [None] * treedef.num_leaves
    return treedef.flatten_up_to(tangents)


def _unit_directions(leaves: list[Array], start: int, k: int) -> tuple[list[Any], int]:
    """For each leaf (``None`` = not differentiated) an array ``(k, *shape)``
    holding the unit directions of its elements in rows ``start...``."""
    directions = []
    for leaf in leaves:
        if leaf is None:
            directions.append(None)
            continue
        size = int(np.prod(leaf.shape))
        block = np.zeros((k, size), dtype=leaf.dtype)
        block[start : start + size] = np.eye(size, dtype=leaf.dtype)
        directions.append(block.reshape((k, *leaf.shape)))
        start += size
    return directions, start


@eqx.filter_custom_jvp
def _solve_with_sensitivities(y0, args, dt, *, vector_field, options):
    import diffrax

    # Never differentiated itself (the rule below is), so the cheapest loop does.
    return _diffeqsolve(vector_field, y0, args, dt, options, diffrax.ForwardMode())


@_solve_with_sensitivities.def_jvp
def _solve_with_sensitivities_jvp(primals, tangents, *, vector_field, options):
    y0, args, dt = primals
    t_y0, t_args, t_dt = tangents
    y_leaves, y_def = jtu.tree_flatten(y0)
    a_leaves, a_def = jtu.tree_flatten(args)
    ty_leaves = _leaves_up_to(y_def, t_y0)
    ta_leaves = _leaves_up_to(a_def, t_args)
    y_leaves = _arrays_where_moving(y_leaves, ty_leaves)
    a_leaves = _arrays_where_moving(a_leaves, ta_leaves)
    y0, args = y_def.unflatten(y_leaves), a_def.unflatten(a_leaves)
    dt = dt if t_dt is None else jnp.asarray(dt)
    # One sensitivity direction per element of every differentiated input; inputs
    # with a symbolic-zero tangent (e.g. constant infusion rates) cost nothing.
    y_moving = [y if t is not None else None for y, t in zip(y_leaves, ty_leaves, strict=True)]
    a_moving = [a if t is not None else None for a, t in zip(a_leaves, ta_leaves, strict=True)]
    k = sum(int(np.prod(x.shape)) for x in y_moving + a_moving if x is not None)

    if k == 0:
        y1, ok = _solve_with_sensitivities(y0, args, dt, vector_field=vector_field, options=options)
    else:
        y_dirs, start = _unit_directions(y_moving, 0, k)
        a_dirs, _ = _unit_directions(a_moving, start, k)
        s0 = y_def.unflatten(
            [
                jnp.zeros((k, *y.shape), y.dtype) if d is None else jnp.asarray(d)
                for y, d in zip(y_leaves, y_dirs, strict=True)
            ]
        )
        moving = [d is not None for d in a_dirs]
        arg_directions = a_def.unflatten(a_dirs)

        def variational_field(t, state, args_):
            y, s = state
            leaves = a_def.flatten_up_to(args_)
            diff = a_def.unflatten([x if m else None for x, m in zip(leaves, moving, strict=True)])

            def field(y_, diff_):
                merged = [
                    d if m else x
                    for x, d, m in zip(leaves, a_def.flatten_up_to(diff_), moving, strict=True)
                ]
                return vector_field(t, y_, a_def.unflatten(merged))

            def column(s_i, v_i):
                return jax.jvp(field, (y, diff), (s_i, v_i))[1]

            return field(y, diff), jax.vmap(column)(s, arg_directions)

        # The variational system goes through this same rule, which is what makes
        # second derivatives (Hessians for FOCEI/Laplace) work.
        (y1, s1), ok = _solve_with_sensitivities(
            (y0, s0), args, dt, vector_field=variational_field,
            options=eqx.tree_at(lambda o: o.nesting, options, options.nesting + 1),
        )  # fmt: skip
    tangent_leaves = [t for t in ty_leaves + ta_leaves if t is not None]
    if tangent_leaves:
        weights = jnp.concatenate([jnp.ravel(t) for t in tangent_leaves])
        t_y1 = jtu.tree_map(lambda s: jnp.tensordot(weights, s, axes=1), s1)
    else:
        t_y1 = jtu.tree_map(jnp.zeros_like, y1)
    if t_dt is not None:
        # d y(dt) / d dt is the vector field at the end of the interval, exactly.
        end_slope = vector_field(dt, y1, args)
        t_y1 = jtu.tree_map(lambda a, f: a + f * t_dt, t_y1, end_slope)
    return (y1, ok), (t_y1, None)


def _solve(
    vector_field: VectorField,
    y0: PyTree,
    args: PyTree,
    dt: Float[Array, ""],
    *,
    options: _SolveOptions,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> tuple[PyTree, Bool[Array, ""]]:
    """Solve ``y' = vector_field(t, y, args)`` from ``t = 0`` to ``dt``.

    Returns ``(y(dt), reached)``; ``reached`` is False when the solver stopped
    early (``max_steps``, step size underflow, failed implicit solve).
    ``adjoint=None`` differentiates by forward sensitivities (see module docs).
    """
    if adjoint is None:
        return _solve_with_sensitivities(y0, args, dt, vector_field=vector_field, options=options)
    return _diffeqsolve(vector_field, y0, args, dt, options, adjoint)


def _ode_vector_field(t, amounts, args):
    model, params, rates = args
    return model._checked_rhs(t, amounts, params) + rates


class AbstractODE(AbstractDynamics):
    """Base class of compartment models written as ODEs (NONMEM ``$DES``).

    Subclass it, set ``compartments`` (CMT 1 is the first name) and write
    :meth:`rhs`.  The amounts are integrated with diffrax between events, with
    the infusion rates of the event engine added to ``rhs``.

    Configuration (static, keyword-only, all with defaults):

    - ``solver``: a diffrax solver; default ``Tsit5()``, or ``Kvaerno5()`` when
      ``stiff=True`` (e.g. TMDD with fast binding, PBPK with fast tissues),
      whose stage solves use the block-triangular structure of a state that
      carries sensitivities (``_stiff.py``: ``n`` Jacobian columns and an
      ``n x n`` LU per step instead of ``N = n (1 + k)`` and an ``N x N`` one).
    - ``rtol``, ``atol``: step-size control on amounts (and on sensitivities
      when derivatives are taken).  The defaults (1e-8, 1e-10) make the ODE path
      agree with closed-form solutions to ~1e-7 relative; ``atol`` is in amount
      units, so lower it if doses are tiny (ng in mg units).
    - ``error_control``: what the step-size control tests when derivatives
      are taken: ``"amounts"`` (default) the amounts alone, the sensitivities
      being integrated on the amounts' steps (CVODES with ``errconS`` false);
      ``"all"`` the sensitivities too, as a state of their own.  On the
      warfarin turnover model (rtol 1e-6), first and second derivatives take
      106 steps with ``"amounts"`` (as many as the amounts alone) and 240 and
      256 with ``"all"``; they are good to about 1e-6 of their largest value
      with ``"amounts"`` and 3e-8 with ``"all"``, the amounts to 1e-7 either
      way.  Jacobians taken where the amounts are all zero (transition
      matrices of linear ODEs) always use ``"all"``.
    - ``max_steps``: per interval; an interval that needs more is reported as
      failed, not silently truncated (see :meth:`propagate_with_status`).
    - ``dt0``: initial step (time units); ``None`` lets diffrax choose.
    - ``adjoint``: ``None`` (default) for pmx_jax's forward-sensitivity rule,
      which supports forward and reverse mode and higher derivatives; or a
      diffrax adjoint to differentiate through the solver instead.
    - ``throw``: raise (via ``eqx.error_if``) when a solve fails, for debugging;
      by default failures are returned as data.

    Set ``is_linear = True`` on a subclass whose ``rhs`` is linear in the
    amounts (first-order processes only): steady state is then one linear
    solve instead of a Newton iteration.
    """

    is_linear: ClassVar[bool] = False

    solver: diffrax.AbstractSolver | None = eqx.field(default=None, static=True, kw_only=True)
    stiff: bool = eqx.field(default=False, static=True, kw_only=True)
    rtol: float = eqx.field(default=1e-8, static=True, kw_only=True)
    atol: float = eqx.field(default=1e-10, static=True, kw_only=True)
    error_control: str = eqx.field(default="amounts", static=True, kw_only=True)
    max_steps: int = eqx.field(default=4096, static=True, kw_only=True)
    dt0: float | None = eqx.field(default=None, static=True, kw_only=True)
    adjoint: diffrax.AbstractAdjoint | None = eqx.field(default=None, static=True, kw_only=True)
    throw: bool = eqx.field(default=False, static=True, kw_only=True)

    def __init_subclass__(cls, **kwargs):
        # Let a model say ``compartments = ("depot", "central")`` like a NONMEM
        # $MODEL block: without a ClassVar annotation, dataclasses would take the
        # abstract declaration in AbstractDynamics for a required field.  This
        # runs before equinox turns the class into a dataclass.
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        declared = {"compartments": ClassVar[tuple[str, ...]], "is_linear": ClassVar[bool]}
        for name, annotation in declared.items():
            if name in cls.__dict__ and name not in annotations:
                annotations[name] = annotation
        cls.__annotations__ = annotations
        super().__init_subclass__(**kwargs)

    def __check_init__(self):
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(
                f"{type(self).__name__}: rtol and atol must be positive, "
                f"got rtol={self.rtol}, atol={self.atol}"
            )
        _check_error_control(type(self).__name__, self.error_control)
        if self.max_steps < 1:
            raise ValueError(f"{type(self).__name__}: max_steps must be >= 1")

    @abc.abstractmethod
    def rhs(
        self, t: Float[Array, ""], amounts: Float[Array, " n_cmt"], params: Params
    ) -> Float[Array, " n_cmt"]:
        """Rate of change of the compartment amounts (amount/time), without the
        infusion rates (the event engine adds those).

        ``t`` is the time since the start of the current interval between
        events, not the time since the first record: models are autonomous
        between events (parameters are constant on an interval), as NONMEM's
        ``$DES`` with time-constant ``$PK`` output.  ``amounts`` is a plain
        vector ordered as ``compartments``; :meth:`by_compartment` and
        :meth:`derivatives` convert to and from names.
        """

    def by_compartment(self, amounts: Float[Array, " n_cmt"]) -> dict[str, Float[Array, ""]]:
        """``{"depot": amounts[0], "central": amounts[1], ...}``."""
        return {name: amounts[i] for i, name in enumerate(self.compartments)}

    def derivatives(self, **rates_of_change: Float[Array, ""]) -> Float[Array, " n_cmt"]:
        """Stack per-compartment rates of change given by name, in compartment
        order; a compartment that is not named has rate zero."""
        unknown = set(rates_of_change) - set(self.compartments)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.derivatives got {sorted(unknown)}, which are not "
                f"compartments; the compartments are {self.compartments}"
            )
        values = [jnp.asarray(v) for v in rates_of_change.values()]
        zero = jnp.zeros((), jnp.result_type(*values) if values else float)
        return jnp.stack([rates_of_change.get(name, zero) for name in self.compartments])

    def _checked_rhs(self, t, amounts, params):
        derivative = jnp.asarray(self.rhs(t, amounts, params))
        if derivative.shape != amounts.shape:
            raise ValueError(
                f"{type(self).__name__}.rhs returned shape {derivative.shape}; expected "
                f"{amounts.shape}, one rate of change per compartment {self.compartments}"
            )
        return derivative.astype(amounts.dtype)

    def with_error_control(self, error_control: str) -> AbstractODE:
        """This model with another ``error_control`` (a copy; works for
        subclasses with their own ``__init__``, which ``dataclasses.replace``
        would call with the wrong arguments)."""
        _check_error_control(type(self).__name__, error_control)
        other = copy.copy(self)
        object.__setattr__(other, "error_control", error_control)
        return other

    def _options(self) -> _SolveOptions:
        import diffrax

        if self.solver is not None:
            solver = self.solver
        else:
            solver = diffrax.Tsit5()
            if self.stiff:
                # With pmx_jax's own derivative rule the state carries sensitivity
                # columns, whose stage equations share the amounts' Jacobian
                # block (see _stiff.py); a diffrax adjoint differentiates through
                # the solver, which keeps diffrax's full-Jacobian default.
                from ._stiff import block_chord_kvaerno5

                solver = block_chord_kvaerno5() if self.adjoint is None else diffrax.Kvaerno5()
        return _SolveOptions(
            solver, self.rtol, self.atol, self.dt0, self.max_steps, self.throw, self.error_control
        )

    def propagate_with_status(
        self,
        params: Params,
        amounts: Float[Array, " n_cmt"],
        dt: Float[Array, ""],
        rates: Float[Array, " n_cmt"] | None = None,
    ) -> tuple[Float[Array, " n_cmt"], Bool[Array, ""]]:
        """Amounts after ``dt`` and whether the solve succeeded.

        ``ok`` is False when the solver did not reach ``dt`` (too many steps,
        step-size underflow, failed Newton iteration of an implicit solver) or
        the amounts are not finite.  The amounts are then those where the solver
        stopped, not a NaN: the caller decides (the event engine turns ``ok``
        into a per-subject status).  ``dt == 0`` returns ``amounts``; negative
        ``dt`` integrates backwards.  ``rates=None`` means no infusion.
        """
        amounts = jnp.asarray(amounts)
        dtype = amounts.dtype if jnp.issubdtype(amounts.dtype, jnp.inexact) else jnp.dtype(float)
        amounts = jnp.asarray(amounts, dtype)  # strongly typed, see strongly_typed
        n = self.n_compartments
        if amounts.shape != (n,):
            raise ValueError(
                f"{type(self).__name__}.propagate: amounts have shape {amounts.shape}, "
                f"expected ({n},) for compartments {self.compartments}"
            )
        rates = jnp.zeros(n, dtype) if rates is None else jnp.asarray(rates, dtype)
        if rates.shape != (n,):
            raise ValueError(
                f"{type(self).__name__}.propagate: rates have shape {rates.shape}, "
                f"expected ({n},) for compartments {self.compartments}"
            )
        dt = jnp.asarray(dt, dtype)
        params = strongly_typed(jtu.tree_map(jnp.asarray, params))
        amounts_end, reached = _solve(
            _ode_vector_field,
            amounts,
            (self, params, rates),
            dt,
            options=self._options(),
            adjoint=self.adjoint,
        )
        return amounts_end, reached & jnp.all(jnp.isfinite(amounts_end))

    def propagate(
        self,
        params: Params,
        amounts: Float[Array, " n_cmt"],
        dt: Float[Array, ""],
        rates: Float[Array, " n_cmt"] | None = None,
    ) -> Float[Array, " n_cmt"]:
        """Amounts after ``dt`` with infusion ``rates``; the status is dropped
        (use :meth:`propagate_with_status` to read it)."""
        return self.propagate_with_status(params, amounts, dt, rates)[0]
