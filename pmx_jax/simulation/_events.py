"""Simulated event times of time-to-event endpoints.

The cumulative hazard ``H`` and hazard ``h = dH/dt`` of the endpoint are known
at every record of the design (the hazard may follow the dynamics: exposure,
a cumulative-hazard compartment).  An event happens when ``H`` has grown by
an exponential(1) draw since the previous event (or the start of the
subject, or the last reset: ``H`` counts from 0 there, as in the
likelihood); between two records ``H`` is the cubic Hermite interpolant of
its values and slopes at both ends (error O(dt^4) for a smooth hazard), and
the event time solves ``H(T) = level`` on it by bisection.  The design's
record grid therefore sets the accuracy: give a time-to-event design records
often enough that the hazard is smooth between them (daily records for a
hazard that changes over days).  A design with one record per subject, at the
end of follow-up, simulates whether the event happened by then, at that time.

Each record of the endpoint reports the first event since the previous
record of the endpoint (DV 1, with its exact time) or none (DV 0, event-free
at the record's time); later events in the same interval advance the
process but are not reported (repeated events need records at least as
often as events).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

# Bisection steps on the unit interval: 2^-50 of the record spacing.
_BISECTION_STEPS = 50
# Events per record interval that advance the process (further ones in the
# same interval are not simulated: a hazard that fast needs a finer grid).
_MAX_EVENTS_PER_INTERVAL = 64


def _hermite(s, h_start, h_end, slope_start, slope_end, span):
    """Cubic Hermite interpolant at ``s`` in [0, 1] of a function with values
    ``h_start``/``h_end`` and derivatives ``slope_*`` over an interval of
    length ``span``."""
    s2, s3 = s * s, s * s * s
    return (
        (2 * s3 - 3 * s2 + 1) * h_start
        + (s3 - 2 * s2 + s) * span * slope_start
        + (-2 * s3 + 3 * s2) * h_end
        + (s3 - s2) * span * slope_end
    )


def _crossing(level, t0, t1, h0, h1, slope0, slope1):
    """The time in ``[t0, t1]`` where the interpolated cumulative hazard
    reaches ``level`` (``h0 < level <= h1``)."""
    span = t1 - t0
    smooth = jnp.isfinite(slope0) & jnp.isfinite(slope1) & (slope0 >= 0) & (slope1 >= 0)
    slope0 = jnp.where(smooth, slope0, 0.0)
    slope1 = jnp.where(smooth, slope1, 0.0)

    def value(s):
        cubic = _hermite(s, h0, h1, slope0, slope1, span)
        return jnp.where(smooth, cubic, h0 + s * (h1 - h0))

    def bisect(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        below = value(mid) < level
        return jnp.where(below, mid, low), jnp.where(below, high, mid)

    low, high = jax.lax.fori_loop(0, _BISECTION_STEPS, bisect, (0.0 * t0, 1.0 + 0.0 * t0))
    return t0 + 0.5 * (low + high) * span


def simulate_events(
    key: PRNGKeyArray,
    time: Float[Array, " n_rec"],
    cumulative: Float[Array, " n_rec"],
    hazard: Float[Array, " n_rec"],
    reported: Bool[Array, " n_rec"],
    reset: Bool[Array, " n_rec"],
    usable: Bool[Array, " n_rec"],
) -> tuple[Float[Array, " n_rec"], Float[Array, " n_rec"]]:
    """One endpoint of one subject: ``(dv, event_time)`` per record; at the
    ``reported`` records (the endpoint's observation records) DV is 1 if an
    event happened since the previous reported record and ``event_time`` the
    first such event's time, else DV 0 and the record's time; NaN elsewhere.
    ``usable``: the records whose cumulative hazard is a point of the
    process (not padding, and not dose records, whose amounts are those
    before the dose: the record after the dose has the same time)."""
    dtype = cumulative.dtype
    nan = jnp.asarray(jnp.nan, dtype)

    def step(carry, record):
        t_prev, h_prev, slope_prev, origin, target, first, key = carry
        t, h, slope, report, is_reset, ok = record
        # A reset restarts the process (the cumulative hazard restarts at 0).
        t_prev = jnp.where(is_reset, t, t_prev)
        h_prev = jnp.where(is_reset, 0.0, h_prev)
        origin = jnp.where(is_reset, 0.0, origin)

        def more(state):
            origin, target, first, key, count = state
            return (origin + target <= h) & (count < _MAX_EVENTS_PER_INTERVAL) & ok

        def event(state):
            origin, target, first, key, count = state
            level = origin + target
            when = _crossing(level, t_prev, t, h_prev, h, slope_prev, slope)
            key, draw_key = jax.random.split(key)
            target = jax.random.exponential(draw_key, (), dtype)
            return level, target, jnp.where(jnp.isnan(first), when, first), key, count + 1

        origin, target, first, key, _ = jax.lax.while_loop(
            more, event, (origin, target, first, key, jnp.asarray(0))
        )
        dv = jnp.where(report, jnp.where(jnp.isnan(first), 0.0, 1.0), nan)
        event_time = jnp.where(report, jnp.where(jnp.isnan(first), t, first), nan)
        first = jnp.where(report, nan, first)
        keep = ok
        carry = (
            jnp.where(keep, t, t_prev),
            jnp.where(keep, h, h_prev),
            jnp.where(keep, slope, slope_prev),
            origin,
            target,
            first,
            key,
        )
        return carry, (dv, event_time)

    key, first_key = jax.random.split(key)
    start = (
        time[0],
        jnp.asarray(0.0, dtype),
        hazard[0],
        jnp.asarray(0.0, dtype),
        jax.random.exponential(first_key, (), dtype),
        nan,
        key,
    )
    _, (dv, event_time) = jax.lax.scan(
        step, start, (time, cumulative, hazard, reported, reset, usable)
    )
    return dv, event_time
