"""Population objective function (NONMEM's OFV) for FO, FOCE, FOCEI and Laplace.

Per subject ``i`` with random effects ``b`` (IIV, then IOV, see
:mod:`._kernel`), prior covariance ``Omega``, transformed DV ``y``, transformed
IPRED ``f(b)`` and residual variance ``v(b)`` on the normal (not censored)
observations, all methods are ``-2 log`` of an approximation of
``integral p(y | b) p(b) db`` without NONMEM's ``N log(2 pi)``:

``fo``
    linearise ``f`` around ``b = 0``: ``y ~ N(f(0), G Omega G^T + diag v(0))``
    with ``G = df/db (0)`` (NONMEM METHOD=0).
``foce``
    linearise around the EBE ``b*``, with the residual variance held at its
    ``b = 0`` value ``v0`` (METHOD=1 without INTERACTION; the EBE is the mode with
    that variance too):
    ``sum log v0 + (y - f*)^2 / v0 + b*^T Omega^-1 b* + log det Omega
    + log det(Omega^-1 + G^T diag(1/v0) G)``.
``focei``
    the same around the EBE with ``v* = v(b*)`` (METHOD=1 INTERACTION).  The
    Hessian approximation also carries the information of the variance about the
    etas, ``1/2 sum (dv/db)(dv/db)^T / v^2`` (Almquist et al. 2015; this term is
    what reproduces NONMEM's FOCEI values, Wang 2007).
``laplace``
    ``-2 log p(y, b*) + log det Omega + log det(1/2 d^2 l/db^2)`` with the exact
    Hessian of the individual objective ``l = -2 log p(y, b)``.

For log-scale (``Exponential``) error models, ``f``, ``v`` and ``y`` are on the
log scale, where the residual is normal.

BLQ records (M3) are exact only under ``laplace``.  FOCE and FOCEI add their
``-2 log P(censored)`` at the EBE and the exact Hessian of that term to the
first-order Hessian (a Laplace-style determinant for the censored part; as
NONMEM's LAPLACIAN is required for M3 there, values differ from NONMEM's FOCE
on censored data).  FO adds ``-2 log P(censored)`` at ``b = 0``.

Gradients: the EBE search (a ``while_loop``) is not differentiated; its
result enters the OFV through :func:`._implicit.implicit_ebe`, whose custom JVP
is the implicit-function derivative ``db*/dtheta = -H^-1 dg/dtheta``.  So
``jax.grad`` of the OFV is the total derivative (envelope theorem for the
``l(b*)`` part, implicit differentiation for the determinant and FOCEI
residual terms).  Second derivatives are not exact.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, Int

from .._results import RESULTS
from .._stored import stored
from ..data._dataset import Dataset
from ..dynamics._ode import AbstractODE
from ..model._model import Model
from ..model._parameters import Omega
from ._curvature import floored_logdet, positive_part, smallest_relative_curvature
from ._ebe import EBEResult, EBEStatus, global_ebe, newton_ebe, prior_starts
from ._implicit import forward_only, implicit_ebe
from ._kernel import (
    LOG_2PI,
    Layout,
    Prior,
    RecordTerms,
    SubjectLikelihood,
    logdet,
    moments_and_jacobian,
)
from ._prepare import Prepared
from ._problem import Problem, make_problem, map_subjects

Method = Literal["fo", "foce", "focei", "laplace"]
METHODS: tuple[str, ...] = ("fo", "foce", "focei", "laplace")
EBE_SEARCHES: tuple[str, ...] = ("global", "local")


def check_ebe_search(ebe_search: str) -> None:
    """Refuse an ``ebe_search`` other than ``"global"`` or ``"local"``."""
    if ebe_search not in EBE_SEARCHES:
        raise ValueError(f"ebe_search must be 'global' or 'local', got {ebe_search!r}")


class OFVResult(eqx.Module):
    """The objective function at one set of population parameters.

    ``ofv``: NONMEM's OFV (``-2 log L`` without ``N log(2 pi)``); ``per_subject``
    its per-subject terms (NONMEM's phi-file OBJ); ``ebes``: each subject's
    random effects at the mode, IIV etas then IOV etas by occasion (zeros for
    FO); ``status``: :class:`pmx_jax.RESULTS` codes per subject (those of the
    EBE search, :class:`EBEStatus`, or ``nonfinite_amounts`` where the event
    engine failed at the EBE); ``n_steps``: Newton iterations;
    ``n_vanishing``: normal observations whose prediction at the EBEs is
    below 1e-10 of a non-zero DV (underflowed predictions);
    ``ebe_objective``: the individual objective the EBE search minimised,
    ``-2 log p(y_i, b*)`` up to constants (for FOCE with the residual
    variance at ``b = 0``; NaN for FO, which has no EBEs);
    ``relative_curvature`` (Laplace only, NaN otherwise): the smallest
    eigenvalue of the exact curvature of the individual objective at the EBE
    relative to its expected information (1 where they agree; below
    ``laplace_floor`` the Laplace approximation of the subject breaks down
    and its curvature is floored, see :mod:`._curvature`).
    """

    ofv: Float[Array, ""]
    per_subject: Float[Array, " n_sub"]
    ebes: Float[Array, "n_sub n_b"]
    status: Int[Array, " n_sub"]
    n_steps: Int[Array, " n_sub"]
    n_vanishing: Int[Array, " n_sub"]
    ebe_objective: Float[Array, " n_sub"]
    relative_curvature: Float[Array, " n_sub"]
    layout: Layout

    @property
    def eta(self) -> Float[Array, "n_sub n_eta"]:
        """IIV EBEs (order of ``model.eta_names``)."""
        return self.ebes[:, : self.layout.n_eta]

    @property
    def iov_eta(self) -> Float[Array, "n_sub n_occ n_iov"]:
        """IOV EBEs per occasion (order of ``model.iov_eta_names``)."""
        lay = self.layout
        return self.ebes[:, lay.n_eta :].reshape(-1, lay.n_occasions, lay.n_iov_eta)


def _reaches_the_dynamics(args: tuple) -> tuple:
    """For the implicit derivative's materialised Jacobian (nonlinear ODEs):
    one bool per leaf of ``args``, true for the leaves of the subject's model
    other than its OMEGA matrices (THETAs reach the ODE through
    ``individual``; OMEGA only through ``Prior``, which like FOCE's fixed
    variances enters the EBE gradient without passing through the ODE)."""

    model = jtu.tree_map(
        lambda node: _mark(node, not isinstance(node, Omega)),
        args[0].model,
        is_leaf=lambda node: isinstance(node, Omega),
    )
    subject = eqx.tree_at(lambda s: s.model, _mark(args[0], False), model)
    return (subject, *_mark(args[1:], False))


def _mark(tree, value: bool):
    """``value`` at every leaf of ``tree``, and at its ``None``s (as in a
    tangents' tree)."""
    return jtu.tree_map(lambda _: value, tree, is_leaf=lambda x: x is None)


# -- individual objectives (minimised by the EBE search) ----------------------------


def _censored_m2ll(terms: RecordTerms) -> Array:
    return -2.0 * jnp.sum(jnp.where(terms.censored, terms.log_likelihood, 0.0))


def _normal_m2ll(terms: RecordTerms, variance: Array) -> Array:
    """``sum log v + (y - f)^2 / v`` over normal observations (no ``log 2 pi``)."""
    v = jnp.where(terms.normal, variance, 1.0)
    r = jnp.where(terms.normal, terms.observed - terms.mean, 0.0)
    return jnp.sum(jnp.where(terms.normal, jnp.log(v) + r**2 / v, 0.0))


def _interaction_objective(b, args):
    """FOCEI/Laplace inner objective: ``-2 log p(y, b)`` up to constants."""
    subj, prior = args
    terms = subj.terms(b)
    data = -2.0 * jnp.sum(terms.log_likelihood)
    return jnp.where(terms.ok, data + prior.quadratic(b), jnp.inf)


def _foce_objective(b, args):
    """FOCE inner objective: the residual variance is held at its ``b = 0`` value."""
    subj, prior, v0 = args
    terms = subj.terms(b)
    data = _normal_m2ll(terms, v0) + _censored_m2ll(terms)
    return jnp.where(terms.ok, data + prior.quadratic(b), jnp.inf)


def _first_order_information(prior, terms, g_mean, g_var, variance, interaction):
    """``Omega^-1 + G^T W G`` (``+ 1/2 G_v^T W^2 G_v`` with ``interaction``) over
    the normal observations, ``W = diag(1 / variance)``: half the FOCE/FOCEI
    approximation of the individual objective's Hessian.  Returns it and ``W``'s
    diagonal (0 off the normal observations)."""
    w = jnp.where(terms.normal, 1.0 / jnp.where(terms.normal, variance, 1.0), 0.0)
    info = prior.inverse + (g_mean.T * w) @ g_mean
    if interaction:
        info = info + 0.5 * (g_var.T * w**2) @ g_var
    return info, w


def _scoring(objective, general_products: bool = True):
    """The Fisher-scoring evaluator of an inner objective (see
    :func:`._ebe.newton_ebe`): the objective and its gradient, exact, from one
    forward pass with a tangent per random effect, and the expected
    information ``2 (Omega^-1 + G^T W G + 1/2 G_v^T W^2 G_v)`` (no ``G_v`` term
    for FOCE, whose variance is held) in place of the Hessian, with
    ``2 sum s s^T`` of the censored records' scores ``s`` (and of the
    non-Gaussian endpoints' records, unless ``general_products`` is false:
    their outer products are the BHHH approximation of their information).
    No second
    derivatives of the model: for ODE models, whose exact Hessian integrates a
    second-order variational system, an evaluation costs several times less."""
    foce = objective is _foce_objective

    def evaluate(b, args):
        subj, prior = args[0], args[1]

        def moments(b):
            terms = subj.terms(b)
            return (terms.mean, terms.variance, terms.log_likelihood), terms

        (g_mean, g_var, g_loglik), terms = jax.jacfwd(moments, has_aux=True)(b)
        held = args[2] if foce else terms.variance
        info, w = _first_order_information(prior, terms, g_mean, g_var, held, not foce)
        products = terms.censored | terms.general if general_products else terms.censored
        score = jnp.where(products[:, None], g_loglik, 0.0)
        if foce:
            r = jnp.where(terms.normal, terms.observed - terms.mean, 0.0)
            data = _normal_m2ll(terms, held) + _censored_m2ll(terms)
            grad = -2.0 * (g_mean.T @ (w * r)) - 2.0 * jnp.sum(score, axis=0)
        else:
            data = -2.0 * jnp.sum(terms.log_likelihood)
            grad = -2.0 * jnp.sum(g_loglik, axis=0)
        info = info + score.T @ score
        value = jnp.where(terms.ok, data + prior.quadratic(b), jnp.inf)
        return value, grad + 2.0 * prior.inverse @ b, 2.0 * info

    return evaluate


# -- per-subject OFV at given random effects -----------------------------------------


def _first_order_ofv(subj, prior, b, v0, *, interaction, has_censoring):
    """FOCE/FOCEI per-subject OFV at the EBE ``b`` (see the module notes), and
    the record terms at ``b``."""
    terms, g_mean, g_var = moments_and_jacobian(subj, b)
    variance = terms.variance if interaction else v0
    info, _ = _first_order_information(prior, terms, g_mean, g_var, variance, interaction)
    if has_censoring:
        info = info + 0.5 * jax.hessian(lambda b: _censored_m2ll(subj.terms(b)))(b)
    value = (
        _normal_m2ll(terms, variance)
        + _censored_m2ll(terms)
        + prior.quadratic(b)
        + prior.logdet
        + logdet(info)
    )
    return jnp.where(terms.ok, value, jnp.inf), terms


def _laplace_ofv(subj, prior, b, floor: float, materialize: bool = False):
    """``materialize``: differentiate the log-determinant in forward mode
    (nonlinear ODEs, see :func:`forward_only`); the EBE ``b`` and the THETAs
    are materialised, OMEGA keeps its tangent.  ``floor``: see
    :mod:`._curvature`.  Returns the OFV and the record terms at ``b``."""
    terms = subj.terms(b)
    n_normal = jnp.sum(terms.normal)
    value = _interaction_objective(b, (subj, prior))
    log_det = functools.partial(_log_det_curvature, floor=floor)
    if materialize:
        det = forward_only((b, subj, prior), fn=log_det, materialize=_laplace_select)
    else:
        det = log_det((b, subj, prior))
    return value - n_normal * LOG_2PI + prior.logdet + det, terms


def _curvatures(b, subj, prior):
    """Half the exact Hessian of the interaction objective at ``b`` and the
    expected information it is compared with (that of Fisher scoring, with
    the censored records' score products).  Non-Gaussian endpoints enter the
    information with the positive part of their exact curvature: where it
    is positive definite (a GLM with its canonical link) their records
    leave the relative curvature at 1, and the floor never moves the
    textbook Laplace value."""
    hess = 0.5 * jax.hessian(_interaction_objective)(b, (subj, prior))
    information = (
        0.5 * _scoring(_interaction_objective, general_products=False)(b, (subj, prior))[2]
    )
    if subj.general:

        def general_m2ll(b):
            terms = subj.terms(b)
            return -2.0 * jnp.sum(jnp.where(terms.general, terms.log_likelihood, 0.0))

        curvature = 0.5 * jax.hessian(general_m2ll)(b)
        information = information + positive_part(0.5 * (curvature + curvature.T))
    return 0.5 * (hess + hess.T), information


def _log_det_curvature(args, floor: float):
    """log det of half the Hessian of the interaction objective at ``b``, its
    eigenvalues relative to the expected information floored at ``floor``."""
    return floored_logdet(*_curvatures(*args), floor)


def _laplace_select(args):
    return (_mark(args[0], True), *_reaches_the_dynamics(args[1:]))


def _fo_ofv(subj, prior, b0):
    """FO: marginal normal of the model linearised at ``b = 0``, via Woodbury
    (an ``n_b x n_b`` determinant rather than a records x records one); and
    the record terms at ``b = 0``."""
    terms, g_mean, _ = moments_and_jacobian(subj, b0)
    v = jnp.where(terms.normal, terms.variance, 1.0)
    w = jnp.where(terms.normal, 1.0 / v, 0.0)
    r = jnp.where(terms.normal, terms.observed - terms.mean, 0.0)
    info = prior.inverse + (g_mean.T * w) @ g_mean
    u = g_mean.T @ (w * r)
    quad = jnp.sum(w * r**2)
    if info.shape[0]:
        chol = jnp.linalg.cholesky(info)
        quad = quad - jnp.sum(jax.scipy.linalg.solve_triangular(chol, u, lower=True) ** 2)
    value = (
        jnp.sum(jnp.where(terms.normal, jnp.log(v), 0.0))
        + quad
        + prior.logdet
        + logdet(info)
        + _censored_m2ll(terms)
    )
    return jnp.where(terms.ok, value, jnp.inf), terms


# -- the population objective ----------------------------------------------------------


def _diagnose(terms: RecordTerms, dv: Array) -> tuple[Array, Array]:
    """From the record terms at the EBE: the normal observations predicted as
    ~0 (below 1e-10 of a non-zero ``dv``), and the event engine's outcome.
    The terms are those the OFV formula computed (no further evaluation of
    the model: its program would be one more copy of the model's)."""
    terms = jax.lax.stop_gradient(terms)
    tiny = jnp.abs(terms.prediction) < 1e-10 * jnp.abs(dv)
    return jnp.sum(terms.normal & (dv != 0) & tiny).astype(jnp.int32), terms.status


def population_ofv(
    model: Model,
    problem: Problem,
    ebe_init: Array,
    max_steps: Array,
    tolerance: Array,
    method: str | None = None,
    scoring: bool | None = None,
    search: str = "local",
    warm_start: bool = True,
    try_zero: bool | Array = True,
    copies: tuple[Callable[[Array], Model], Array] | None = None,
    known: tuple[Array, Array] | None = None,
) -> OFVResult:
    """The OFV of ``model`` on a laid-out :class:`Problem` (by ``problem.method``
    unless ``method`` is given).  ``scoring``: Fisher-scoring iterations before
    the exact Newton ones in the EBE search (default: for ODE models, whose
    exact Hessian costs several times their expected information).
    ``search``: ``"local"`` runs one EBE search per subject from ``ebe_init``
    (switching to ``b = 0`` when that starts lower, unless ``try_zero`` is
    false: for the iterations of a fit, warm-started from the last accepted
    point); ``"global"`` searches from ``ebe_init`` (unless ``warm_start`` is
    false: then ``ebe_init`` only gives the shape) and from every start of
    :func:`._ebe.prior_starts` and keeps each subject's lowest mode (see
    :func:`._ebe.global_ebe`).  ``copies = (to_model, y)``: every subject
    evaluates its own copy ``to_model(y[c, i])`` of the model, where ``y``
    holds one copy of the parameter vector per subject (the problem's
    ``(n_chunks, chunk)`` axes in front) and ``to_model(y[c, i])`` equals
    ``model``: the gradient of the OFV with respect to ``y`` is then every
    subject's own gradient (its score), from the same reverse pass as the
    total.  ``known = (etas, objectives)``, laid out as ``ebe_init`` (an
    infinite objective for none): a mode of each subject's individual
    objective found earlier, where a local search stops as soon as it reaches
    that mode's basin (see :func:`._ebe.newton_ebe`; a global search over
    starts one after another, :meth:`pmx_jax.estimation._engine.Engine.global_search`).
    Per-subject outputs keep the problem's ``(n_chunks, chunk)`` layout
    (padding included); the OFV sums the real subjects only.  The compiled
    program takes :meth:`Problem.program`: one program per model, method and
    shape bucket, whatever the dataset."""
    if search not in EBE_SEARCHES:
        raise ValueError(f"search must be 'local' or 'global', got {search!r}")
    return _population_ofv(
        model, problem.program(), ebe_init, max_steps, tolerance, method, scoring, search,
        warm_start, try_zero, copies, known,
    )  # fmt: skip


@stored("population-ofv")
def _population_ofv(
    model, problem, ebe_init, max_steps, tolerance, method, scoring, search, warm_start,
    try_zero, copies, known,
) -> OFVResult:  # fmt: skip
    setup = _Setup(model, problem, method, scoring)
    starts = None
    if search == "global":
        # Once, outside the map over subjects: the same starts for all.
        starts = prior_starts(
            jnp.asarray(setup.model_sg.omega_matrix(), setup.dtype),
            jnp.asarray(setup.model_sg.iov_omega_matrix(), setup.dtype),
            setup.layout.n_occasions if setup.layout.n_iov_eta else 0,
        )

    def one(data, b_init, y_copy, known_one):
        ebe = setup.search(
            data, b_init, known_one, max_steps, tolerance, try_zero, starts, warm_start
        )
        return setup.at_mode(data, ebe, *setup.subject_model(model, copies, y_copy))

    out = map_subjects(problem, one, ebe_init, None if copies is None else copies[1], known)
    return _result(out, problem)


def population_modes(
    model: Model,
    problem: Problem,
    ebe_init: Array,
    max_steps: Array,
    tolerance: Array,
    *,
    try_zero: bool | Array = True,
    known: tuple[Array, Array] | None = None,
) -> EBEResult:
    """The local EBE searches of :func:`population_ofv` alone (arguments as
    there; the problem's method, and its default scoring): each subject's
    :class:`EBEResult`, laid out as ``ebe_init``.
    :func:`population_ofv_at` at them gives the OFV of ``population_ofv``.
    Apart, the search is a program of its own (the lanes of a global search
    need no OFV or gradient; see :class:`pmx_jax.estimation._engine.Engine`).
    ``problem``: :meth:`Problem.program` (as the programs that call this take
    it).  Not jitted: call it in a compiled function."""
    setup = _Setup(model, problem, None, None)

    def one(data, b_init, known_one):
        return setup.search(data, b_init, known_one, max_steps, tolerance, try_zero)

    return map_subjects(problem, one, ebe_init, known)


def population_ofv_at(
    model: Model,
    problem: Problem,
    modes: EBEResult,
    *,
    copies: tuple[Callable[[Array], Model], Array] | None = None,
) -> OFVResult:
    """:func:`population_ofv` from the searches' results ``modes`` (of
    :func:`population_modes`; ``copies`` as in ``population_ofv``): the OFV at
    their modes, with the implicit derivative of each mode.  Not jitted."""
    setup = _Setup(model, problem, None, None)

    def one(data, ebe, y_copy):
        return setup.at_mode(data, ebe, *setup.subject_model(model, copies, y_copy))

    out = map_subjects(problem, one, modes, None if copies is None else copies[1])
    return _result(out, problem)


def no_modes(problem: Problem) -> EBEResult:
    """Searches' results of the shapes :func:`population_modes` gives on
    ``problem`` (numpy; zero random effects, none searched): what FO, which
    has no search, evaluates at, and what a program taking modes is compiled
    for before a search has run."""
    lead = np.shape(problem.real)
    one = _no_search(problem.layout.size, problem.dtype)
    return jax.tree.map(lambda x: np.broadcast_to(x, lead + x.shape).copy(), one)


class _Setup:
    """What a subject's EBE search and its OFV at the mode share, for one
    model, problem and method."""

    def __init__(self, model, problem, method, scoring):
        self.method = problem.method if method is None else method
        self.layout = problem.layout
        self.flags = (problem.has_censoring, problem.prepared.has_general)
        self.laplace_floor = problem.laplace_floor
        self.dtype = problem.dtype
        self.prior = Prior.of(self.layout.omega(model).astype(self.dtype))
        self.prior_sg = jax.lax.stop_gradient(self.prior)
        self.model_sg = jax.lax.stop_gradient(model)
        # Nonlinear ODEs: their derivative rule solves a variational ODE (a
        # while loop) that reverse mode cannot transpose inside the implicit
        # derivative.
        dynamics = model.dynamics
        self.nonlinear_ode = isinstance(dynamics, AbstractODE) and not dynamics.is_linear
        self.scoring = isinstance(dynamics, AbstractODE) if scoring is None else scoring

    def subject(self, model, data) -> SubjectLikelihood:
        return SubjectLikelihood(model, data, self.layout, *self.flags)

    def objective(self, subj, prior):
        """The individual objective the method minimises, and its arguments."""
        if self.method == "foce":
            v0 = subj.terms(jnp.zeros(self.layout.size, self.dtype)).variance
            return _foce_objective, (subj, prior, v0)
        return _interaction_objective, (subj, prior)

    def subject_model(self, model, copies, y_copy):
        """The subject's model and prior: its own copy ``copies[0](y_copy)``
        when given (see :func:`population_ofv`)."""
        if copies is None:
            return model, self.prior
        model_one = copies[0](y_copy)
        if not self.layout.size:
            return model_one, self.prior
        # The subject's OMEGA equals the population's (``delta`` is zero), so
        # the population's factorisation serves; the first-order terms in
        # ``delta`` give the derivatives with respect to the subject's copy
        # (d Omega^-1 = -Omega^-1 dOmega Omega^-1, d log det = tr(Omega^-1
        # dOmega)) by matrix products, not one Cholesky factorisation per
        # subject (a batched LAPACK call, which XLA:CPU was seen to deadlock
        # in at 10,240 subjects).
        omega_one = self.layout.omega(model_one).astype(self.dtype)
        delta = omega_one - jax.lax.stop_gradient(omega_one)
        prior = self.prior_sg
        inverse = prior.inverse - prior.inverse @ delta @ prior.inverse
        log_det = prior.logdet + jnp.sum(prior.inverse * delta.T)
        return model_one, Prior(inverse, log_det)

    def search(
        self, data, b_init, known_one, max_steps, tolerance, try_zero, starts=None, warm_start=True
    ) -> EBEResult:
        """One subject's EBE search (none for FO: zero random effects): local
        from ``b_init``, or global over ``starts`` (:func:`prior_starts`,
        after ``b_init`` if ``warm_start``)."""
        if self.method == "fo":
            return jax.tree.map(jnp.asarray, _no_search(self.layout.size, self.dtype))
        objective, args = self.objective(self.subject(self.model_sg, data), self.prior_sg)
        options = dict(
            max_steps=max_steps,
            tolerance=tolerance,
            scoring=_scoring(objective) if self.scoring else None,
            metric=self.prior_sg.inverse,
        )
        if starts is None:
            return newton_ebe(
                objective, b_init, args, try_zero=try_zero, known=known_one, **options
            )
        if warm_start:
            starts = jnp.concatenate([b_init[None], starts], axis=0)
        return global_ebe(objective, starts, args, **options)[0]

    def at_mode(self, data, ebe: EBEResult, model, prior) -> dict:
        """One subject's OFV at its search's mode ``ebe``, for ``model`` and
        ``prior`` (the population's or the subject's copy), with what the
        :class:`OFVResult` reports of it."""
        subj = self.subject(model, data)
        none = jnp.asarray(jnp.nan, self.dtype)
        curvature = none
        if self.method == "fo":
            b = jnp.zeros(self.layout.size, self.dtype)
            value, terms = _fo_ofv(subj, prior, b)
        else:
            objective, args = self.objective(subj, prior)
            b = implicit_ebe(
                jax.lax.stop_gradient(ebe.eta),
                jax.lax.stop_gradient(ebe.hessian),
                args,
                objective=objective,
                materialize=_reaches_the_dynamics if self.nonlinear_ode else False,
            )
            if self.method == "laplace":
                value, terms = _laplace_ofv(
                    subj, prior, b, self.laplace_floor, materialize=self.nonlinear_ode
                )
                subj_sg = self.subject(self.model_sg, data)
                curvature = smallest_relative_curvature(
                    *_curvatures(ebe.eta, subj_sg, self.prior_sg)
                )
            else:
                value, terms = _first_order_ofv(
                    subj,
                    prior,
                    b,
                    args[2] if self.method == "foce" else None,
                    interaction=self.method == "focei",
                    has_censoring=self.flags[0],
                )
        vanishing, engine = _diagnose(terms, subj.data.records.dv)
        return dict(
            per_subject=value,
            ebes=b,
            status=ebe.status,
            engine=engine,
            n_steps=ebe.n_steps,
            n_vanishing=vanishing,
            ebe_objective=ebe.objective,
            relative_curvature=curvature,
        )


def _no_search(n_b: int, dtype) -> EBEResult:
    """One subject's :func:`no_modes`."""
    return EBEResult(
        eta=np.zeros(n_b, dtype),
        objective=np.asarray(np.nan, dtype),
        gradient=np.zeros(n_b, dtype),
        hessian=np.zeros((n_b, n_b), dtype),
        status=np.asarray(EBEStatus.CONVERGED, np.int32),
        n_steps=np.zeros((), np.int32),
    )


def _result(out: dict, problem: Problem) -> OFVResult:
    """The :class:`OFVResult` of the subjects' :meth:`_Setup.at_mode` outputs."""
    per_subject = out.pop("per_subject")
    engine = out.pop("engine")
    finite = jnp.isfinite(per_subject)
    # A subject without a finite OFV: the event engine's failure where it
    # failed at the EBE, else no finite individual objective.
    failed = jnp.where(engine != RESULTS.successful, engine, EBEStatus.NONFINITE)
    out["status"] = jnp.where(finite, out["status"], failed)
    per_subject = jnp.where(finite, per_subject, jnp.inf)
    total = jnp.sum(jnp.where(problem.real, per_subject, 0.0))
    # Everything but the OFV itself is reported, not differentiated.
    out = jax.lax.stop_gradient(out)
    return OFVResult(ofv=total, per_subject=per_subject, layout=problem.layout, **out)


def ofv(
    model: Model,
    data: Dataset | Prepared | Problem,
    method: Method = "focei",
    *,
    ebe_init: Float[Array, "n_sub n_b"] | None = None,
    ebe_search: Literal["global", "local"] = "global",
    max_steps: int = 100,
    tolerance: float = 1e-12,
    chunk_size: int | None = None,
    laplace_floor: float | None = None,
) -> OFVResult:
    """NONMEM's objective function value of ``model`` (its current THETA,
    OMEGA and SIGMA values) for ``data``, by ``method``.

    Args:
        model: the population model at the parameter values to evaluate.
        data: a Dataset (from :func:`pmx_jax.read_nonmem`) or the result of
            ``prepare(model, data)`` (prepare once when evaluating many times).
        method: ``"fo"``, ``"foce"``, ``"focei"`` or ``"laplace"``.  A model with
            non-Gaussian endpoints (counts, categories, binary, time to
            event) needs ``"laplace"``: the others linearise a normal residual.
        ebe_init: a further EBE start per subject, ``(n_subjects, n_b)`` (e.g.
            the ``ebes`` of a previous call or of a fit); zeros by default.
        ebe_search: ``"global"`` (default): every subject's EBE is the lowest
            mode found from ``b = 0``, from two prior SDs either side of it
            along each principal axis of OMEGA, and from ``ebe_init``: without
            ``ebe_init`` the OFV is a function of the parameters and the data
            alone, and it is the value a fit of the same model reports.
            ``"local"``: one search from ``ebe_init`` (or ``b = 0`` where that
            starts lower), faster and what a fit uses between its iterations,
            but a subject with several modes keeps the one it starts in.
        max_steps, tolerance: Newton iteration limit and Newton-decrement
            tolerance (on the -2LL scale) of the EBE search.
        chunk_size: subjects evaluated at once (memory bound; see
            :func:`pmx_jax.estimation.make_problem`).  Subjects are split over
            all local devices.
        laplace_floor: Laplace only: a subject's exact curvature enters the
            log-determinant floored at this fraction of its expected
            information (default 0.25: exact wherever the two differ by less
            than a factor 0.35; 0 gives the textbook Laplace approximation,
            whose OFV falls without bound where a subject's curvature
            vanishes).  ``OFVResult.relative_curvature`` says where it acts.

    Returns:
        an :class:`OFVResult`.  ``jax.grad`` (or ``eqx.filter_grad``) of
        ``ofv(...).ofv`` with respect to the model is the total derivative
        (see the module notes).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    problem = make_problem(model, data, method, chunk_size=chunk_size, laplace_floor=laplace_floor)
    shape = (problem.n_subjects, problem.layout.size)
    warm_start = ebe_init is not None
    if ebe_init is None:
        ebe_init = jnp.zeros(shape, problem.dtype)
    ebe_init = jnp.asarray(ebe_init, problem.dtype)
    if ebe_init.shape != shape:
        raise ValueError(
            f"ebe_init must have shape {shape} (subjects, random effects), got {ebe_init.shape}"
        )
    # Arrays, not Python numbers: changing them does not recompile.
    options = (jnp.asarray(max_steps, jnp.int32), jnp.asarray(tolerance, problem.dtype))
    check_ebe_search(ebe_search)
    result = population_ofv(
        model, problem, problem.place(ebe_init), *options, search=ebe_search, warm_start=warm_start
    )
    result = dataclasses.replace(
        result,
        **{
            field.name: problem.take(getattr(result, field.name))
            for field in dataclasses.fields(result)
            if field.name not in ("ofv", "layout")
        },
    )
    if not isinstance(result.ofv, jax.core.Tracer):
        _warn_if_not_finite(result, data.ids if isinstance(data, Dataset) else None)
    return result


class NonFiniteOFVWarning(RuntimeWarning):
    """The OFV is not finite: some subjects cannot be predicted at these parameters."""


def _warn_if_not_finite(result: OFVResult, ids: tuple | None) -> None:
    per_subject = np.asarray(result.per_subject)
    bad = np.flatnonzero(~np.isfinite(per_subject))
    if bad.size == 0:
        return
    status = np.asarray(result.status)
    names = [
        f"{ids[i] if ids is not None else f'#{i + 1}'} ({RESULTS(int(status[i])).label})"
        for i in bad[:10]
    ]
    more = f" and {bad.size - 10} more" if bad.size > 10 else ""
    warnings.warn(
        f"the OFV is not finite: {bad.size} subject(s) cannot be evaluated at these "
        f"parameters: ID {', '.join(names)}{more}. {RESULTS.ebe_nonfinite.message}",
        NonFiniteOFVWarning,
        stacklevel=3,
    )
