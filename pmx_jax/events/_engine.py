"""NONMEM (PREDPP) event semantics for one subject, as a pure JAX function.

A subject's history becomes a list of *points* in time:

* one point per data record (observations, resets, the dose records themselves,
  where steady state is imposed);
* for every dose, the moment it enters its compartment (record time + lag) and,
  for zero-order inputs, the moment the infusion stops;
* for steady-state infusions, the moments the infusions of earlier (virtual)
  doses that are still running stop.

Points are sorted by time; ties keep data order, and a dose's own points come
right after its record, so a sample at the dose time sees the dose.  A single
``lax.scan`` moves the amounts from point to point with the dynamics'
``propagate`` (closed form or ODE, the same code path for both), applying each
point's event.  Lag times, bioavailability, modelled rates and durations enter
only through times and amounts, so derivatives with respect to them are exact.

Per-compartment dose modifiers are read from the individual parameters under
NONMEM's names: ``F1``/``f1`` (bioavailability), ``ALAG1``/``alag1`` (lag time),
``R1``/``r1`` (modelled rate, RATE = -1), ``D1``/``d1`` (modelled duration,
RATE = -2), where the digit is the compartment number.

Which parameters move the system between two points follows NONMEM: the
interval that ends at a data record uses that record's parameters, and events in
between (lagged doses, infusion ends) use those of the next data record.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._results import RESULTS
from ..data._subjects import Subjects
from ..dynamics._base import AbstractDynamics, Params
from ..dynamics._closed_form import AbstractLinearCompartments, _exp_difference, _phi
from ._plan import EventPlan

# Point kinds.
_RECORD, _START, _END, _NOOP = 0, 1, 2, 3


def dose_modifier(params: Params, prefix: str, n_cmt: int, default: float, like: Array) -> Array:
    """Stack ``PREFIX<k>`` (either case) for compartments k = 1..n_cmt into an
    array of shape ``like.shape + (n_cmt,)``; absent ones take ``default``."""
    columns = []
    for k in range(1, n_cmt + 1):
        value = params.get(f"{prefix.upper()}{k}", params.get(f"{prefix.lower()}{k}"))
        if value is None:
            value = jnp.full(like.shape, default, dtype=like.dtype)
        columns.append(jnp.broadcast_to(value, like.shape).astype(like.dtype))
    return jnp.stack(columns, axis=-1)


class _Doses(eqx.Module):
    """Everything about each dose slot that does not depend on the history."""

    record: Int[Array, " n_dose"]
    valid: Bool[Array, " n_dose"]
    cmt: Int[Array, " n_dose"]
    amount: Float[Array, " n_dose"]  # F * AMT
    rate: Float[Array, " n_dose"]  # zero-order input rate (0 for a bolus)
    duration: Float[Array, " n_dose"]
    is_infusion: Bool[Array, " n_dose"]
    is_constant: Bool[Array, " n_dose"]  # SS with AMT 0, RATE > 0: infusion to steady state
    start: Float[Array, " n_dose"]  # record time + lag
    ss: Int[Array, " n_dose"]
    ii: Float[Array, " n_dose"]
    lag: Float[Array, " n_dose"]


def _dose_table(subject: Subjects, plan_record, plan_valid, params: Params, n_cmt: int) -> _Doses:
    r = plan_record
    dtype = subject.time.dtype
    cmt = jnp.where(subject.cmt[r] > 0, subject.cmt[r] - 1, 0)
    like = subject.time
    bioav = jnp.take_along_axis(dose_modifier(params, "F", n_cmt, 1.0, like)[r], cmt[:, None], 1)[
        :, 0
    ]
    lag = jnp.take_along_axis(dose_modifier(params, "ALAG", n_cmt, 0.0, like)[r], cmt[:, None], 1)[
        :, 0
    ]
    modelled_rate = jnp.take_along_axis(
        dose_modifier(params, "R", n_cmt, 1.0, like)[r], cmt[:, None], 1
    )[:, 0]
    modelled_duration = jnp.take_along_axis(
        dose_modifier(params, "D", n_cmt, 1.0, like)[r], cmt[:, None], 1
    )[:, 0]
    amt = subject.amt[r]
    rate_column = subject.rate[r]
    amount = bioav * amt
    is_infusion = plan_valid & (rate_column != 0)
    is_constant = is_infusion & (subject.ss[r] > 0) & (amt == 0)
    rate = jnp.where(
        rate_column > 0,
        rate_column,
        jnp.where(
            rate_column == -1,
            modelled_rate,
            amount / jnp.where(rate_column == -2, modelled_duration, 1.0),
        ),
    )
    rate = jnp.where(is_infusion, rate, 0.0)
    safe_rate = jnp.where(is_infusion & (rate != 0), rate, 1.0)
    duration = jnp.where(
        rate_column == -2, modelled_duration, jnp.where(is_infusion, amount / safe_rate, 0.0)
    )
    duration = jnp.where(is_constant, 0.0, duration)
    return _Doses(
        record=r,
        valid=plan_valid,
        cmt=cmt,
        amount=jnp.where(plan_valid, amount, 0.0),
        rate=rate,
        duration=duration.astype(dtype),
        is_infusion=is_infusion,
        is_constant=is_constant,
        start=subject.time[r] + lag,
        ss=jnp.where(plan_valid, subject.ss[r], 0),
        ii=subject.ii[r],
        lag=lag,
    )


def _tree_index(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _steady_state(dynamics: AbstractDynamics, params: Params, dose: _Doses, n_overlap: int):
    """Amounts and running infusion rates at a steady-state dose *record* (one slot).

    The periodic steady state is taken just before a dose (the trough), found
    from the map "trough -> next trough" over one interval II; for a constant
    infusion to steady state (AMT 0, RATE > 0) the map over any interval has the
    same fixed point.  The record time lies ``lag`` before the dose enters, so
    NONMEM moves the steady-state profile by ``II - lag`` from the dose instant
    (backwards when the lag exceeds the interval, which is what NONMEM does).
    """
    n_cmt = dynamics.n_compartments
    unit = jax.nn.one_hot(dose.cmt, n_cmt, dtype=dose.amount.dtype)
    bolus = jnp.where(dose.is_infusion, 0.0, dose.amount) * unit
    rate = dose.rate * unit
    ii = jnp.where(dose.ii > 0, dose.ii, 1.0)

    def profile(trough, phase):
        # Amounts ``phase`` after a dose given on top of ``trough``; doses every ii
        # before it whose infusions still run: dose j (0 = this one) runs until
        # D - j*ii, so on (e_{k+1}, e_k] exactly k+1 infusions are running.
        amounts = trough + bolus
        if n_overlap == 0:
            constant = jnp.where(dose.is_constant, rate, 0.0 * rate)
            return dynamics.propagate(params, amounts, phase, constant)

        def segment(carry, k):
            forward, previous = carry
            edge = jnp.clip(dose.duration - k * ii, 0.0, jnp.maximum(phase, 0.0))
            count = jnp.where(dose.is_constant, 1.0, k + 1.0)
            forward = dynamics.propagate(params, forward, edge - previous, count * rate)
            return (forward, edge), None

        # A loop rather than unrolled code keeps the compiled graph small (one
        # propagate, not n_overlap + 1 of them, which matters for ODE models).
        ks = jnp.arange(n_overlap, -1, -1, dtype=ii.dtype)
        (forward, previous), _ = jax.lax.scan(segment, (amounts, jnp.zeros_like(phase)), ks)
        tail_rate = jnp.where(dose.is_constant, 1.0, 0.0) * rate
        forward = dynamics.propagate(params, forward, jnp.maximum(phase, 0.0) - previous, tail_rate)
        # NONMEM moves backwards (lag longer than the interval) in one step at the
        # input rate running just after the dose.
        ks = jnp.arange(0, n_overlap + 1, dtype=ii.dtype)
        count0 = jnp.sum(ks * ii < dose.duration)
        backward = dynamics.propagate(params, amounts, jnp.minimum(phase, 0.0), count0 * rate)
        return jnp.where(phase >= 0, forward, backward)

    def period_map(trough):
        return profile(trough, ii)

    zero = jnp.zeros(n_cmt, dtype=dose.amount.dtype)
    if dynamics.is_linear:
        offset = period_map(zero)
        transition = jax.jacfwd(period_map)(zero)
        trough = jnp.linalg.solve(jnp.eye(n_cmt, dtype=offset.dtype) - transition, offset)
    else:
        from ..dynamics._steady_state import periodic_steady_state

        trough, _ = periodic_steady_state(lambda x, _: period_map(x), zero, None, linear=False)
    amounts = profile(trough, ii - dose.lag)
    # Infusions of earlier doses still running at the record time: dose k
    # (k >= 1 intervals before the one at record time + lag) runs while
    # k*ii < lag + duration.
    ks = jnp.arange(1, max(n_overlap, 1) + 1, dtype=ii.dtype)
    running = jnp.sum(
        (ks * ii < dose.lag + dose.duration) & ((ks - 1) * ii < dose.duration) & (n_overlap > 0)
    )
    # A steady state reached by constant infusion (AMT 0) leaves no infusion running
    # after the record: NONMEM 7 (reference case nmtest ID 26) lets the system decay.
    running = jnp.where(dose.is_constant, 0.0, running)
    return amounts, running * rate


class _DosePoints(eqx.Module):
    """The points the dose slots create, sorted by time (ties in data order):
    each dose's entry into its compartment (``_START``), the end of its infusion
    and, for steady-state infusions, the ends of earlier virtual doses (``_END``).
    Points that do nothing (a bolus has no end, a padding slot no start) are
    ``_NOOP``, which keeps the number of points fixed."""

    time: Float[Array, " n_points"]
    seq: Int[Array, " n_points"]  # 3 * record + 1 (start) or + 2 (end): data order
    kind: Int[Array, " n_points"]
    slot: Int[Array, " n_points"]

    @property
    def record(self) -> Int[Array, " n_points"]:
        return self.seq // 3


def _check_overlap(doses: _Doses, n_virtual: int) -> _Doses:
    if not n_virtual:
        return doses
    # The last virtual dose may outlast an interval but never n_virtual of them.
    return eqx.error_if(
        doses,
        jnp.any(
            doses.valid
            & (doses.ss > 0)
            & doses.is_infusion
            & ~doses.is_constant
            & (doses.duration >= n_virtual * doses.ii)
        ),
        "a steady-state infusion lasts longer than max_ss_overlap dosing intervals; "
        "raise max_ss_overlap",
    )


def _dose_points(doses: _Doses, n_virtual: int, has_infusions: bool = True) -> _DosePoints:
    """``has_infusions=False`` (no dose has a RATE, known from the data):
    no infusion ends, so no end points at all (each would be ``_NOOP``)."""
    n_dose = doses.record.shape[0]
    dose_seq = 3 * doses.record
    times = [doses.start]
    seqs = [dose_seq + 1]
    kinds = [jnp.where(doses.valid & ~doses.is_constant, _START, _NOOP)]
    slots = [jnp.arange(n_dose)]
    if has_infusions:
        times.append(doses.start + doses.duration)
        seqs.append(dose_seq + 2)
        kinds.append(jnp.where(doses.valid & doses.is_infusion & ~doses.is_constant, _END, _NOOP))
        slots.append(jnp.arange(n_dose))
    if n_virtual and has_infusions:
        k = jnp.arange(1, n_virtual + 1, dtype=doses.ii.dtype)
        ends = doses.start[:, None] + doses.duration[:, None] - k[None, :] * doses.ii[:, None]
        running = (
            (doses.ss[:, None] > 0)
            & doses.is_infusion[:, None]
            & ~doses.is_constant[:, None]
            & (k[None, :] * doses.ii[:, None] < doses.lag[:, None] + doses.duration[:, None])
            & ((k[None, :] - 1) * doses.ii[:, None] < doses.duration[:, None])
        )
        times.append(ends.reshape(-1))
        seqs.append(jnp.repeat(dose_seq + 2, n_virtual))
        kinds.append(jnp.where(running, _END, _NOOP).reshape(-1))
        slots.append(jnp.repeat(jnp.arange(n_dose), n_virtual))
    time, seq = jnp.concatenate(times), jnp.concatenate(seqs)
    order = jnp.lexsort((seq, time))
    return _DosePoints(
        time=time[order],
        seq=seq[order],
        kind=jnp.concatenate(kinds)[order],
        slot=jnp.concatenate(slots)[order],
    )


class _Merge(eqx.Module):
    """How the records and the dose points interleave in event order."""

    records_before: Int[Array, " n_dose_points"]  # records preceding each dose point
    record_position: Int[Array, " n_rec"]  # point index of each record
    order: Int[Array, " n_points"]  # index into [records, dose points] of each point


def _merge(record_time: Float[Array, " n_rec"], dose_points: _DosePoints) -> _Merge:
    """Merge the records (already in event order) with the sorted dose points.

    Event order is by time, ties in data order: the order a full sort by (time,
    seq) would give.  Merging two sorted lists costs far less than sorting all
    points again for every subject, which dominated the engine's run time in
    large simulations.
    """
    n_rec = record_time.shape[0]
    n_dose_points = dose_points.time.shape[0]
    n_points = n_rec + n_dose_points
    # Records before a dose point: the earlier ones and, at the same time, those
    # up to and including the dose's own record.
    first_same = jnp.searchsorted(record_time, dose_points.time, side="left")
    after_same = jnp.searchsorted(record_time, dose_points.time, side="right")
    records_before = first_same + jnp.clip(
        dose_points.record + 1 - first_same, 0, after_same - first_same
    )
    positions = jnp.arange(n_points)
    is_dose_point = (
        jnp.zeros(n_points, dtype=bool)
        .at[jnp.arange(n_dose_points) + records_before]
        .set(True, unique_indices=True)
    )
    # Dose points are placed in their own order, so the one at a position is
    # number (dose points before it); records fill the other positions in order.
    doses_before = _running(jnp.add, is_dose_point.astype(jnp.int32)) - is_dose_point
    order = jnp.where(is_dose_point, n_rec + doses_before, positions - doses_before)
    record_position = (
        jnp.zeros(n_points, dtype=order.dtype).at[order].set(positions, unique_indices=True)
    )[:n_rec]
    return _Merge(records_before=records_before, record_position=record_position, order=order)


def _running(op, values: Array, *, reverse: bool = False) -> Array:
    """Running ``op`` (jnp.add, jnp.maximum, ...) along the last axis.

    ``lax.associative_scan`` rather than ``lax.cumsum``/``cummax``: on CPU those
    lower to a windowed reduction that is several times slower per subject.
    """
    return jax.lax.associative_scan(op, values, reverse=reverse, axis=values.ndim - 1)


def _transition(dynamics: AbstractDynamics, params: Params, dt):
    """``(to_amounts, to_rates)`` with ``propagate(params, a, dt, r) == to_amounts @ a
    + to_rates @ r`` for a linear dynamics: its own ``transition`` method where it
    has one (the closed forms), else the Jacobians of ``propagate`` (linear ODEs)."""
    transition = getattr(dynamics, "transition", None)
    if transition is not None:
        return transition(params, dt)
    if getattr(dynamics, "error_control", "all") != "all":
        # From zero amounts the amounts carry no error to control the steps:
        # the Jacobian (the sensitivities) must be controlled itself.
        dynamics = dynamics.with_error_control("all")
    zero = jnp.zeros(dynamics.n_compartments, dtype=jnp.result_type(dt))
    return jax.jacfwd(lambda a, r: dynamics.propagate(params, a, dt, r), argnums=(0, 1))(zero, zero)


def _affine(matrices, amounts, rates, has_infusions: bool):
    """``matrices[0] @ amounts (+ matrices[1] @ rates)``, over any leading axes.

    Broadcast-and-sum rather than ``@``: vmapped over subjects, a batched dot
    of tiny matrices is a separate, slow kernel per loop step on CPU."""
    moved = jnp.sum(matrices[0] * amounts[..., None, :], axis=-1)
    if has_infusions:
        moved = moved + jnp.sum(matrices[1] * rates[..., None, :], axis=-1)
    return moved


class EngineResult(eqx.Module):
    """Amounts in every compartment right after each record was processed, and
    the outcome: :class:`pmx_jax.RESULTS` ``successful`` or
    ``nonfinite_amounts`` (an ODE solve that failed, an overflow)."""

    amounts: Float[Array, "n_rec n_cmt"]
    status: Int[Array, ""]

    @classmethod
    def of(cls, amounts: Float[Array, "n_rec n_cmt"], valid: Bool[Array, " n_rec"]):
        """The result for ``amounts``: ``nonfinite_amounts`` where a valid
        (not padding) record has one that is not finite."""
        ok = jnp.all(jnp.isfinite(amounts) | ~valid[:, None])
        status = jnp.where(ok, RESULTS.successful, RESULTS.nonfinite_amounts).astype(jnp.int32)
        return cls(amounts=amounts, status=status)

    @property
    def ok(self) -> Bool[Array, ""]:
        return self.status == RESULTS.successful


def record_amounts(
    dynamics: AbstractDynamics,
    subject: Subjects,
    params: Params,
    dose_record: Int[Array, " n_dose"],
    dose_valid: Bool[Array, " n_dose"],
    *,
    has_ss: bool,
    max_ss_overlap: int,
    has_infusions: bool = True,
    constant_parameters: bool = False,
    derivatives: bool = True,
    has_resets: bool = True,
) -> EngineResult:
    """Compartment amounts at each record of one subject (un-batched arrays).

    ``params`` maps parameter names to per-record values (shape ``(n_rec,)``).
    The records must be in event order, as :class:`Subjects` keeps them (time
    never decreases within a subject).  ``has_infusions=False`` says that no
    dose record has a non-zero RATE (known from the data before tracing): no
    zero-order input ever runs, so the engine neither carries input rates nor
    computes how they enter, about a third of the work for oral dosing.
    ``constant_parameters=True`` says that the parameters are the same at
    every record (known from the data): a linear system's transitions then
    share one eigen-decomposition per subject instead of one per interval.
    ``derivatives=False`` (prediction, simulation) says that no derivative
    will be taken: with constant parameters and linear dynamics the loop then
    computes each interval's transitions itself and keeps them while the
    interval's length repeats (a ``lax.cond`` on the data, which reverse mode
    cannot go through here), rather than precomputing them for every interval.
    ``has_resets=False`` says that no record is a reset (EVID 3/4).  With
    constant parameters, linear dynamics, no steady state and no reset, only
    the dose points change the course of the amounts: the loop then runs over
    the dose points alone and every record is moved from the last one before
    it (:func:`_from_dose_points`).
    """
    n_rec = subject.time.shape[0]
    n_cmt = dynamics.n_compartments
    dtype = subject.time.dtype
    if n_cmt == 0:
        # $PRED: nothing to move (a dose into no compartment is refused by
        # the data checks: its CMT is out of range).
        return EngineResult(
            jnp.zeros((n_rec, 0), dtype), jnp.asarray(RESULTS.successful, jnp.int32)
        )
    doses = _dose_table(subject, dose_record, dose_valid, params, n_cmt)
    n_virtual = max_ss_overlap if has_ss else 0
    doses = _check_overlap(doses, n_virtual)
    dose_points = _dose_points(doses, n_virtual, has_infusions)
    merge = _merge(subject.time, dose_points)
    record_ids = jnp.arange(n_rec)

    def in_event_order(at_records, at_dose_points):
        """One array over all points, from its record part and dose-point part."""
        return jnp.concatenate([at_records, at_dose_points])[merge.order]

    # Parameters for the interval ending at each point: the next data record's.
    # Doses generated from ADDL are not data records: NONMEM does not call $PK there.
    is_data = subject.valid & ~subject.is_addl
    next_data = _running(jnp.minimum, jnp.where(is_data, record_ids, n_rec - 1), reverse=True)
    next_data_or_last = jnp.append(next_data, n_rec - 1)
    next_record = in_event_order(next_data, next_data_or_last[merge.records_before])
    point_params = jax.tree_util.tree_map(lambda v: v[next_record], params)
    time = in_event_order(subject.time, dose_points.time)
    dt = jnp.diff(time, prepend=time[:1])

    # --- what each record does ----------------------------------------------------
    # A reset (EVID 3/4) or an SS=1 dose record restarts the system: the amounts
    # are replaced and running infusions stop.  Either way the record's effect is
    # ``keep * moved + added``; an SS=2 dose adds its steady state on top.
    evid = subject.evid
    is_reset = subject.valid & ((evid == 3) | (evid == 4))
    # axis_size: a model may have no individual parameters at all.
    reset_amounts = jax.vmap(dynamics.initial_amounts, axis_size=n_rec)(
        jax.tree_util.tree_map(lambda v: v[next_data], params)
    ).astype(dtype)
    added_amounts = jnp.where(is_reset[:, None], reset_amounts, 0.0)
    added_rates = jnp.zeros((n_rec, n_cmt), dtype=dtype)
    restart = is_reset
    if has_ss:
        ss_amounts, ss_rates = jax.vmap(lambda p, d: _steady_state(dynamics, p, d, max_ss_overlap))(
            _tree_index(params, doses.record), doses
        )
        n_dose = dose_record.shape[0]
        # A record that is itself an SS dose: map record -> its dose slot.
        record_slot = (
            jnp.zeros(n_rec, dtype=jnp.int32)
            .at[doses.record]
            .set(jnp.where(doses.valid, jnp.arange(n_dose, dtype=jnp.int32), jnp.int32(0)))
        )
        ss_kind = (
            jnp.zeros(n_rec, dtype=doses.ss.dtype)
            .at[doses.record]
            .max(jnp.where(doses.valid, doses.ss, 0))
        )
        ss_kind = jnp.where(subject.valid, ss_kind, 0)
        is_ss = (ss_kind > 0)[:, None]
        added_amounts = jnp.where((ss_kind == 1)[:, None], 0.0, added_amounts) + jnp.where(
            is_ss, ss_amounts[record_slot], 0.0
        )
        added_rates = jnp.where(is_ss, ss_rates[record_slot], 0.0)
        restart = restart | (ss_kind == 1)

    # --- what each dose point does ------------------------------------------------
    # A dose acts only if no restart came between its record and now: the last
    # restart among the records that precede the dose point.
    last_restart = _running(jnp.maximum, jnp.where(restart, record_ids, -1))
    last_restart = jnp.append(-1, last_restart)[merge.records_before]
    alive = dose_points.record >= last_restart
    slot = dose_points.slot
    unit = jax.nn.one_hot(doses.cmt[slot], n_cmt, dtype=dtype)
    is_start = dose_points.kind == _START
    bolus = jnp.where(is_start & ~doses.is_infusion[slot], doses.amount[slot], 0.0)
    rate_change = jnp.where(is_start, doses.rate[slot], 0.0) - jnp.where(
        dose_points.kind == _END, doses.rate[slot], 0.0
    )
    dose_amounts = jnp.where(alive, bolus, 0.0)[:, None] * unit
    dose_rates = jnp.where(alive, rate_change, 0.0)[:, None] * unit

    if derivatives and constant_parameters and dynamics.is_linear and not (has_ss or has_resets):
        return _from_dose_points(
            dynamics, subject, params, dose_points, merge, dose_amounts, dose_rates, has_infusions
        )

    # --- the sequential part --------------------------------------------------------
    def affine(matrices, amounts, rates):
        return _affine(matrices, amounts, rates, has_infusions)

    memo, unroll = None, 1
    closed_form = isinstance(dynamics, AbstractLinearCompartments)
    if not derivatives and constant_parameters and dynamics.is_linear:
        # The transitions depend on the interval's length alone: computed in the
        # loop (closed forms: from one spectrum per subject; linear ODEs: an ODE
        # solve and its Jacobian) and kept while the length repeats (regular
        # sampling).  Where the lengths are the same for every subject of a
        # batch (one design simulated for many subjects) the test for a repeat
        # is not batched and a repeat skips the work; otherwise ``cond``
        # becomes a select and computes them at every point, as the
        # precomputed transitions do.
        constant = jax.tree_util.tree_map(lambda v: v[0], params)
        spectrum = dynamics.spectrum(constant) if closed_form else None

        def transitions(h):
            if closed_form:
                to_amounts, to_rates = dynamics.transition(constant, h, spectrum)
            else:
                to_amounts, to_rates = _transition(dynamics, constant, h)
            return (to_amounts, to_rates) if has_infusions else (to_amounts,)

        def move(amounts, rates, point, kept):
            matrices = jax.lax.cond(point["repeat"], lambda: kept, lambda: transitions(point["dt"]))
            return affine(matrices, amounts, rates), matrices

        motion = dict(dt=dt, repeat=jnp.append(False, dt[1:] == dt[:-1]))
        memo = transitions(dt[0])
        # A small step: four per loop iteration halve the loop's fixed costs
        # (10,000 x 757 points: 0.16 s against 0.19-0.20 s with one).  Not an
        # ODE solve: four copies of it in the loop take seconds to compile.
        unroll = 4 if closed_form else 1
    elif dynamics.is_linear:
        # Affine in (amounts, rates): precompute each interval's transition
        # matrices, vectorised over points, so the sequential part is two matvecs.
        if constant_parameters:
            constant = jax.tree_util.tree_map(lambda v: v[0], params)
            to_amounts, to_rates = jax.vmap(lambda h: _transition(dynamics, constant, h))(dt)
        else:
            to_amounts, to_rates = jax.vmap(lambda p, h: _transition(dynamics, p, h))(
                point_params, dt
            )

        def move(amounts, rates, point, memo):
            return affine(point["matrices"], amounts, rates), memo

        motion = dict(matrices=(to_amounts, to_rates) if has_infusions else (to_amounts,))
    else:

        def move(amounts, rates, point, memo):
            rates = jnp.zeros_like(amounts) if rates is None else rates
            return dynamics.propagate(point["params"], amounts, point["dt"], rates), memo

        motion = dict(params=point_params, dt=dt)

    def step(carry, point):
        amounts, rates, memo = carry
        # ``where``, not a multiplication by 0/1: a restart also recovers from
        # amounts that had become non-finite.  The casts keep the records' dtype
        # when parameters come in wider (float32 data, float64 THETAs).
        moved, memo = move(amounts, rates, point, memo)
        amounts = (jnp.where(point["keep"], moved, 0.0) + point["amounts"]).astype(dtype)
        if has_infusions:
            rates = (jnp.where(point["keep"], rates, 0.0) + point["rates"]).astype(dtype)
        return (amounts, rates, memo), amounts

    n_dose_points = dose_points.time.shape[0]
    points = dict(
        motion,
        keep=in_event_order(~restart, jnp.ones(n_dose_points, dtype=bool)),
        amounts=in_event_order(added_amounts, dose_amounts),
    )
    if has_infusions:
        points.update(rates=in_event_order(added_rates, dose_rates))
    first_params = jax.tree_util.tree_map(lambda v: v[next_record[0]], params)
    init = (
        dynamics.initial_amounts(first_params).astype(dtype),
        jnp.zeros(n_cmt, dtype=dtype) if has_infusions else None,
        memo,
    )
    _, trajectory = jax.lax.scan(step, init, points, unroll=unroll)
    amounts = trajectory[merge.record_position]
    return EngineResult.of(amounts, subject.valid)


def _from_dose_points(
    dynamics: AbstractDynamics,
    subject: Subjects,
    params: Params,
    dose_points: _DosePoints,
    merge: _Merge,
    dose_amounts: Float[Array, "n_dose_points n_cmt"],
    dose_rates: Float[Array, "n_dose_points n_cmt"],
    has_infusions: bool,
) -> EngineResult:
    """:func:`record_amounts` for a linear time-invariant subject with no
    steady state and no reset, where only the dose points (a dose entering, an
    infusion ending) change the course of the amounts.

    The loop runs over the dose points alone, moving the amounts and input
    rates from one to the next; a record's amounts are those after the last
    dose point before it in event order (the initial amounts if none),
    moved over the time since.  Both kinds of interval take their transitions
    from one vectorised computation.  The sequential part is as long as the
    dosing history, not as the records and doses together: for 48 records
    and 7 doses, 7 steps instead of 55, which is what the loop's time goes
    to when the work per step is a few small matrix-vector products.  The
    amounts equal the full loop's to rounding (``exp(A (s + t)) = exp(A s)
    exp(A t)``; tests/test_superposition.py).
    """
    dtype = subject.time.dtype
    n_cmt = dynamics.n_compartments
    constant = jax.tree_util.tree_map(lambda v: v[0], params)
    # Anchor 0: the initial amounts at the first point; anchor j + 1: after dose point j.
    start = jnp.minimum(subject.time[0], dose_points.time[0])
    anchor_time = jnp.concatenate([start[None], dose_points.time])
    # Dose point j precedes record r in event order when r >= records_before[j].
    record_ids = jnp.arange(subject.time.shape[0])
    anchor = jnp.searchsorted(merge.records_before, record_ids, side="right")
    n_points = dose_points.time.shape[0]
    intervals = jnp.concatenate([jnp.diff(anchor_time), subject.time - anchor_time[anchor]])
    to_amounts, to_rates = jax.vmap(lambda h: _transition(dynamics, constant, h))(intervals)

    def step(carry, point):
        amounts, rates = carry
        moved = _affine(point["matrices"], amounts, rates, has_infusions)
        amounts = (moved + point["amounts"]).astype(dtype)
        if has_infusions:
            rates = (rates + point["rates"]).astype(dtype)
        return (amounts, rates), (amounts, rates)

    init = (
        dynamics.initial_amounts(constant).astype(dtype),
        jnp.zeros(n_cmt, dtype=dtype),
    )
    points = dict(
        matrices=(to_amounts[:n_points], to_rates[:n_points]),
        amounts=dose_amounts,
        rates=dose_rates,
    )
    _, (after_amounts, after_rates) = jax.lax.scan(step, init, points)
    at_anchor = jnp.concatenate([init[0][None], after_amounts])[anchor]
    rates_at_anchor = jnp.concatenate([init[1][None], after_rates])[anchor]
    matrices = (to_amounts[n_points:], to_rates[n_points:])
    amounts = _affine(matrices, at_anchor, rates_at_anchor, has_infusions).astype(dtype)
    return EngineResult.of(amounts, subject.valid)


def superposed_amounts(
    dynamics: AbstractLinearCompartments,
    subject: Subjects,
    params: Params,
    dose_record: Int[Array, " n_dose"],
    dose_valid: Bool[Array, " n_dose"],
    *,
    has_infusions: bool = True,
) -> EngineResult:
    """:func:`record_amounts` by superposition, for a linear time-invariant
    subject: closed-form dynamics whose individual parameters are the same at
    every record, no steady state and no reset (decided from the data before
    tracing: :func:`pmx_jax.likelihood._prepare.can_superpose`).

    The amounts at a record are then the sum, over the doses that precede it
    in event order, of each dose's own response.  With the spectral
    decomposition ``exp(A t) = sum_i exp(l_i t) P_i`` of the disposition
    matrix (computed once per subject), a dose's response is a few scalar
    weights per eigenvalue (``exp(l_i dt)`` for a bolus into the system,
    ``ka (exp(l_i dt) - exp(-ka dt)) / (l_i + ka)`` through the depot, their
    integrals for an infusion) times a column of ``P_i``.  Every (record,
    dose) pair is independent: no sequential loop and no sort of the events.
    The results equal the event loop's to rounding (tests/test_superposition.py).
    """
    n_rec = subject.time.shape[0]
    n_cmt = dynamics.n_compartments
    dtype = subject.time.dtype
    # Every record carries the same parameters; the first is never padding.
    constant = jax.tree_util.tree_map(lambda v: v[0], params)
    doses = _dose_table(subject, dose_record, dose_valid, params, n_cmt)
    time = subject.time
    # Event order: a dose enters before a record when it is earlier, or at the
    # same time from an earlier record (a sample at the dose time sees it).
    before = doses.valid[None, :] & (
        (doses.start[None, :] < time[:, None])
        | (
            (doses.start[None, :] == time[:, None])
            & (doses.record[None, :] < jnp.arange(n_rec)[:, None])
        )
    )
    lam, projectors = dynamics.spectrum(constant)  # projectors: (i, row, column)
    wide = jnp.result_type(time, lam)
    since = jnp.where(before, time[:, None] - doses.start[None, :], 0.0).astype(wide)
    depot = dynamics.has_depot
    # The compartment of the disposition matrix a dose enters: its own, or the
    # central one (0) through the depot.
    into_depot = (doses.cmt == 0) if depot else jnp.zeros_like(doses.valid)
    column = jnp.maximum(doses.cmt - int(depot), 0)
    columns = jnp.moveaxis(projectors[:, :, column], -1, 0)  # (dose, i, row)
    ka = constant["ka"] if depot else jnp.zeros((), wide)

    def through_depot(dt):
        """(depot amount, weight per eigenvalue) a unit amount in the depot
        leaves after ``dt``."""
        left = jnp.exp(-ka * dt)
        return left, ka * _exp_difference(lam, -ka, dt[..., None], left[..., None])

    def bolus(dt):
        direct = jnp.exp(lam * dt[..., None])
        if not depot:
            return jnp.zeros_like(dt), direct
        left, weight = through_depot(dt)
        return (
            jnp.where(into_depot, left, 0.0),
            jnp.where(into_depot[:, None], weight, direct),
        )

    amount = jnp.where(doses.is_infusion, 0.0, doses.amount)
    in_depot, weights = bolus(since)
    in_depot, weights = amount * in_depot, amount[:, None] * weights
    if has_infusions:
        # An infusion that has run for ``running`` and stopped ``stopped`` ago.
        # A record exactly at the end of an infusion comes after its end in
        # event order (the loop's side of the kink, for derivatives in F,
        # ALAG, R and D): ``where``, not ``minimum``, whose derivative splits.
        duration = doses.duration[None, :].astype(wide)
        running = jnp.where(since >= duration, duration, since)
        stopped = since - running
        rate = jnp.where(doses.is_infusion, doses.rate, 0.0)
        infused = _phi(lam, running[..., None]) * jnp.exp(lam * stopped[..., None])
        if depot:
            # Amounts at the end of an infusion into the depot, then moved on.
            at_end = _phi(-ka, running)
            left, weight = through_depot(stopped)
            via_depot = (
                _phi(lam, running[..., None]) - _exp_difference(lam, -ka, running[..., None])
            ) * jnp.exp(lam * stopped[..., None]) + at_end[..., None] * weight
            in_depot = in_depot + rate * jnp.where(into_depot, at_end * left, 0.0)
            infused = jnp.where(into_depot[:, None], via_depot, infused)
        weights = weights + rate[:, None] * infused
    weights = jnp.where(before[..., None], weights, 0.0)
    system = jnp.einsum("rdi,dij->rj", weights, columns)
    parts = [jnp.sum(jnp.where(before, in_depot, 0.0), axis=1)[:, None]] if depot else []
    amounts = jnp.concatenate([*parts, system], axis=1).astype(dtype)
    return EngineResult.of(amounts, subject.valid)


def batch_record_amounts(dynamics: AbstractDynamics, subjects: Subjects, params, plan: EventPlan):
    """:func:`record_amounts` vmapped over the subject axis."""
    return jax.vmap(
        lambda s, p, r, v: record_amounts(
            dynamics,
            s,
            p,
            r,
            v,
            has_ss=plan.has_ss,
            max_ss_overlap=plan.max_ss_overlap,
            has_resets=plan.has_resets,
        )
    )(subjects, params, plan.dose_record, plan.dose_valid)
