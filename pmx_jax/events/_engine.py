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

from ..data._subjects import Subjects
from ..dynamics._base import AbstractDynamics, Params
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
    bioav = jnp.take_along_axis(dose_modifier(params, "F", n_cmt, 1.0, like)[r], cmt[:, None], 1)[:, 0]
    lag = jnp.take_along_axis(dose_modifier(params, "ALAG", n_cmt, 0.0, like)[r], cmt[:, None], 1)[:, 0]
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
            return dynamics.propagate(params, amounts, phase, jnp.where(dose.is_constant, rate, 0.0 * rate))
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


class EngineResult(eqx.Module):
    """Amounts in every compartment right after each record was processed."""

    amounts: Float[Array, "n_rec n_cmt"]
    ok: Bool[Array, ""]


def record_amounts(
    dynamics: AbstractDynamics,
    subject: Subjects,
    params: Params,
    dose_record: Int[Array, " n_dose"],
    dose_valid: Bool[Array, " n_dose"],
    *,
    has_ss: bool,
    max_ss_overlap: int,
) -> EngineResult:
    """Compartment amounts at each record of one subject (un-batched arrays).

    ``params`` maps parameter names to per-record values (shape ``(n_rec,)``).
    """
    n_rec = subject.time.shape[0]
    n_cmt = dynamics.n_compartments
    dtype = subject.time.dtype
    doses = _dose_table(subject, dose_record, dose_valid, params, n_cmt)
    n_dose = dose_record.shape[0]
    n_virtual = max_ss_overlap if has_ss else 0

    # --- points -------------------------------------------------------------------
    record_ids = jnp.arange(n_rec)
    dose_seq = 3 * doses.record
    times = [subject.time, doses.start, doses.start + doses.duration]
    seqs = [3 * record_ids, dose_seq + 1, dose_seq + 2]
    kinds = [
        jnp.where(subject.valid, _RECORD, _NOOP),
        jnp.where(doses.valid & ~doses.is_constant, _START, _NOOP),
        jnp.where(doses.valid & doses.is_infusion & ~doses.is_constant, _END, _NOOP),
    ]
    slots = [record_ids, jnp.arange(n_dose), jnp.arange(n_dose)]
    if n_virtual:
        k = jnp.arange(1, n_virtual + 1, dtype=dtype)
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
        # The last virtual dose may outlast an interval but never n_virtual of them.
        doses = eqx.error_if(
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
    time = jnp.concatenate(times)
    seq = jnp.concatenate(seqs)
    kind = jnp.concatenate(kinds)
    slot = jnp.concatenate(slots)
    order = jnp.lexsort((seq, time))
    time, seq, kind, slot = time[order], seq[order], kind[order], slot[order]

    # Parameters for the interval ending at each point: the next data record's.
    is_record = kind == _RECORD
    # Doses generated from ADDL are not data records: NONMEM does not call $PK there.
    is_data = is_record & ~subject.is_addl[jnp.where(is_record, slot, 0)]
    next_record = jax.lax.cummin(jnp.where(is_data, slot, n_rec - 1), reverse=True)
    point_params = jax.tree_util.tree_map(lambda v: v[next_record], params)

    if has_ss:
        ss_amounts, ss_rates = jax.vmap(
            lambda p, d: _steady_state(dynamics, p, d, max_ss_overlap)
        )(_tree_index(params, doses.record), doses)
        # A record that is itself an SS dose: map record -> its dose slot.
        record_slot = jnp.zeros(n_rec, dtype=jnp.int32).at[doses.record].set(
            jnp.where(doses.valid, jnp.arange(n_dose, dtype=jnp.int32), jnp.int32(0))
        )
        record_ss = jnp.zeros(n_rec, dtype=doses.ss.dtype).at[doses.record].max(
            jnp.where(doses.valid, doses.ss, 0)
        )
    else:
        ss_amounts = ss_rates = record_slot = record_ss = None

    # --- what each point does, computed for all points at once --------------------
    n_points = time.shape[0]
    dose_slot = jnp.where(kind == _RECORD, 0, slot)
    record_slot_of_point = jnp.where(kind == _RECORD, slot, 0)
    evid = subject.evid[record_slot_of_point]
    is_reset = (kind == _RECORD) & ((evid == 3) | (evid == 4))
    unit = jax.nn.one_hot(doses.cmt[dose_slot], n_cmt, dtype=dtype)
    is_start = kind == _START
    bolus = jnp.where(is_start & ~doses.is_infusion[dose_slot], doses.amount[dose_slot], 0.0)
    rate_change = jnp.where(is_start, doses.rate[dose_slot], 0.0) - jnp.where(
        kind == _END, doses.rate[dose_slot], 0.0
    )
    delta_amounts = bolus[:, None] * unit
    delta_rates = rate_change[:, None] * unit
    # A dose point acts only if no reset came between its record and now.
    source_seq = seq - seq % 3
    if has_ss:
        ss_kind = jnp.where(kind == _RECORD, record_ss[record_slot_of_point], 0)
        ss_slot = record_slot[record_slot_of_point]
        point_ss_amounts = ss_amounts[ss_slot]
        point_ss_rates = ss_rates[ss_slot]
    else:
        ss_kind = jnp.zeros(n_points, dtype=jnp.int32)
        point_ss_amounts = point_ss_rates = jnp.zeros((n_points, n_cmt), dtype=dtype)
    reset_amounts = jax.vmap(dynamics.initial_amounts)(point_params).astype(dtype)
    dt = jnp.diff(time, prepend=time[:1])

    if dynamics.is_linear:
        # Affine in (amounts, rates): precompute each interval's transition
        # matrices, vectorised over points, so the sequential part is two matvecs.
        zero = jnp.zeros(n_cmt, dtype=dtype)

        def transition(p, h):
            return jax.jacfwd(lambda a, r: dynamics.propagate(p, a, h, r), argnums=(0, 1))(
                zero, zero
            )

        to_amounts, to_rates = jax.vmap(transition)(point_params, dt)

        def move(amounts, rates, point):
            return point["to_amounts"] @ amounts + point["to_rates"] @ rates

        motion = dict(to_amounts=to_amounts, to_rates=to_rates)
    else:

        def move(amounts, rates, point):
            return dynamics.propagate(point["params"], amounts, point["dt"], rates)

        motion = dict(params=point_params, dt=dt)

    def step(carry, point):
        amounts, rates, last_reset = carry
        amounts = move(amounts, rates, point)
        reset = point["is_reset"]
        amounts = jnp.where(reset, point["reset_amounts"], amounts)
        rates = jnp.where(reset, 0.0, rates)
        last_reset = jnp.where(reset, point["seq"], last_reset)
        if has_ss:
            ss_kind_p = point["ss_kind"]
            amounts = jnp.where(ss_kind_p == 1, 0.0, amounts) + jnp.where(
                ss_kind_p > 0, point["ss_amounts"], 0.0
            )
            rates = jnp.where(ss_kind_p == 1, 0.0, rates) + jnp.where(
                ss_kind_p > 0, point["ss_rates"], 0.0
            )
            last_reset = jnp.where(ss_kind_p == 1, point["seq"], last_reset)
        alive = point["source_seq"] >= last_reset
        amounts = amounts + jnp.where(alive, point["delta_amounts"], 0.0)
        rates = rates + jnp.where(alive, point["delta_rates"], 0.0)
        return (amounts, rates, last_reset), amounts

    points = dict(
        motion,
        is_reset=is_reset,
        reset_amounts=reset_amounts,
        seq=seq,
        source_seq=source_seq,
        delta_amounts=delta_amounts,
        delta_rates=delta_rates,
    )
    if has_ss:
        points.update(ss_kind=ss_kind, ss_amounts=point_ss_amounts, ss_rates=point_ss_rates)
    init = (
        reset_amounts[0],
        jnp.zeros(n_cmt, dtype=dtype),
        jnp.asarray(-1, dtype=seq.dtype),
    )
    _, trajectory = jax.lax.scan(step, init, points)
    # Amounts after each record's own point.
    position = jnp.zeros(n_rec, dtype=jnp.int32).at[jnp.where(is_record, slot, n_rec)].set(
        jnp.arange(time.shape[0], dtype=jnp.int32), mode="drop"
    )
    amounts = trajectory[position]
    ok = jnp.all(jnp.isfinite(amounts) | ~subject.valid[:, None])
    return EngineResult(amounts=amounts, ok=ok)


def batch_record_amounts(dynamics: AbstractDynamics, subjects: Subjects, params, plan: EventPlan):
    """:func:`record_amounts` vmapped over the subject axis."""
    return jax.vmap(
        lambda s, p, r, v: record_amounts(
            dynamics, s, p, r, v, has_ss=plan.has_ss, max_ss_overlap=plan.max_ss_overlap
        )
    )(subjects, params, plan.dose_record, plan.dose_valid)
