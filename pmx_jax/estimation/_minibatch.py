"""A stochastic-gradient phase over subjects before the quasi-Newton fit
(``pmx.fit(..., minibatch=...)``), for populations whose every evaluation is
expensive (10^5-10^6 subjects and more).

The OFV is a sum over subjects, so ``n / m`` times the OFV gradient of ``m``
subjects drawn without replacement is an unbiased estimate of the whole
gradient (given each subject's EBE, which every evaluation finds afresh from
its last one).  Adam (optax) takes one step per minibatch on the unconstrained
parameters, with a cosine-decaying learning rate; an epoch visits every
subject once (the last minibatch of an epoch is completed from the start of
that epoch's permutation).  Each minibatch is a problem of the same shape
bucket, so the fit's compiled evaluation (:class:`._engine.Engine`) is
compiled once for all of them, and no more than ``m`` subjects' intermediates
exist at once.

The phase only finds a good starting point: the fit that follows is the
ordinary full-data quasi-Newton minimisation from it (and from the EBEs the
phase left, as ``ebe_init``), whose convergence test and OFV are the ones
reported.  ``FitResult.minibatch`` keeps one row per step.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from ..likelihood._problem import Problem, make_problem
from ..model._model import Model
from ._engine import Engine

DEFAULTS = dict(batch_size="auto", epochs=3, learning_rate=0.05, seed=0)


def auto_batch_size(n_subjects: int) -> int:
    """``n / 64`` subjects, within 256 and 8,192: at least 64 Adam steps per
    epoch up to half a million subjects (Adam moves each parameter by about
    the learning rate per step, so a start 50% off on the log scale needs
    tens of steps), and minibatches large enough to keep a device busy."""
    return int(np.clip(n_subjects // 64, 256, 8192))


def minibatch_options(value: Any) -> dict | None:
    """``pmx.fit``'s ``minibatch`` argument as a complete dict of options:
    ``None``/``False`` (no phase), ``True`` (the defaults), an ``int`` (the
    batch size) or a dict of some of ``batch_size``, ``epochs``,
    ``learning_rate`` and ``seed``."""
    if value is None or value is False:
        return None
    if value is True:
        return dict(DEFAULTS)
    if isinstance(value, int | np.integer):
        value = dict(batch_size=int(value))
    if not isinstance(value, dict):
        raise TypeError(f"minibatch must be None, True, a batch size or a dict, got {value!r}")
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"minibatch: unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
    options = dict(DEFAULTS, **value)
    size = options["batch_size"]
    if size != "auto" and (not isinstance(size, int | np.integer) or int(size) < 1):
        raise ValueError(
            f"minibatch batch_size must be 'auto' or an integer >= 1, got {options['batch_size']!r}"
        )
    if int(options["epochs"]) < 1:
        raise ValueError(f"minibatch epochs must be >= 1, got {options['epochs']}")
    if not float(options["learning_rate"]) > 0:
        raise ValueError(f"minibatch learning_rate must be > 0, got {options['learning_rate']}")
    return options


def minibatch_phase(
    model: Model,
    problem: Problem,
    method: str,
    *,
    batch_size: int | str,
    epochs: int,
    learning_rate: float,
    seed: int,
    ebe_max_steps: int,
    ebe_tolerance: float,
    say=None,
) -> tuple[Model, np.ndarray, pd.DataFrame]:
    """Adam over minibatches of subjects from ``model``'s values.  Returns the
    model at the last step, every subject's last EBE (dataset order) and the
    steps (``epoch``, ``step``, ``ofv_estimate`` = ``n / m`` times the
    minibatch OFV, ``gradient_max`` of that estimate, ``seconds``)."""
    import optax  # only here: a plain fit does not pay for importing it

    source = jax.tree_util.tree_map(np.asarray, problem.source)
    n = problem.n_subjects
    m = min(auto_batch_size(n) if batch_size == "auto" else int(batch_size), n)
    per_epoch = -(-n // m)
    scale = n / m
    y, unravel = ravel_pytree(model.to_unconstrained())
    y = np.asarray(y, problem.dtype)
    schedule = optax.cosine_decay_schedule(float(learning_rate), epochs * per_epoch, alpha=0.01)
    optimiser = optax.adam(schedule)
    state = optimiser.init(jnp.asarray(y))
    ebes = np.zeros((n, problem.layout.size), problem.dtype)
    rng = np.random.default_rng(seed)
    engine: Engine | None = None
    rows = []
    for epoch in range(int(epochs)):
        order = rng.permutation(n)
        order = np.concatenate([order, order[: per_epoch * m - n]])
        for k in range(per_epoch):
            tic = time.perf_counter()
            chosen = order[k * m : (k + 1) * m]
            subset = jax.tree_util.tree_map(lambda x, c=chosen: x[c], source)
            batch = make_problem(model, subset, method, laplace_floor=problem.laplace_floor)
            if engine is None:
                engine = Engine(model, batch, ebe_max_steps, ebe_tolerance)
            else:
                engine = engine.on(batch)
            done = engine.at(y, batch.place(ebes[chosen]))
            usable = np.isfinite(done.ofv) and np.all(np.isfinite(done.grad))
            if usable:
                updates, state = optimiser.update(jnp.asarray(scale * done.grad), state)
                y = np.asarray(optax.apply_updates(jnp.asarray(y), updates))
                ebes[chosen] = np.asarray(batch.take(done.result.ebes))
            rows.append(
                dict(
                    epoch=epoch + 1,
                    step=epoch * per_epoch + k + 1,
                    ofv_estimate=scale * done.ofv,
                    gradient_max=float(np.max(np.abs(scale * done.grad))),
                    usable=bool(usable),
                    seconds=time.perf_counter() - tic,
                )
            )
        if say:
            last = pd.DataFrame(rows[-per_epoch:])
            say(
                f"  minibatch epoch {epoch + 1}/{epochs}: {per_epoch} steps of {m:,} subjects, "
                f"mean OFV estimate {last['ofv_estimate'].mean():.3f}, "
                f"{last['seconds'].sum():.1f} s"
            )
    fitted = model.from_unconstrained(unravel(jnp.asarray(y)))
    return fitted, ebes, pd.DataFrame(rows)
