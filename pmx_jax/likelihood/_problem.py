"""The data side of a population objective, laid out for the devices.

A :class:`Problem` holds what stays fixed while the parameters change (the
batched subjects and their event plans, the random-effect layout, the method)
with the subject axis arranged as ``(n_chunks, chunk)``:

- the ``chunk`` axis is split over all local devices (a ``NamedSharding`` over
  a one-axis mesh, as for simulation): ``jit`` runs each device's share of the
  per-subject work and adds the per-subject objectives across devices;
- the ``n_chunks`` axis bounds memory: with more than one chunk the objective
  runs the chunks one after another (``lax.map``, each chunk's intermediates
  recomputed in the backward pass rather than stored: ``jax.checkpoint``), so
  memory grows with the chunk size, not with the number of subjects.

Subjects are padded (copies of the last subject) to the size ladder of
:mod:`pmx_jax._shapes` (records per subject and dose slots too), to fill the
last chunk and to a multiple of the device count; padding subjects are dropped
from the OFV (the ``real`` mask, an array: not a constant of the program) and
from every per-subject output.  Compiled programs take
:meth:`Problem.program`, the problem without its host-side parts (the
unpadded data and the subject count), so that every dataset of one bucket
runs the same program.  Nothing here depends on the number of devices
but speed: the OFV and the estimates are those of one device (up to the order
of a floating-point sum).

Across several machines, call ``jax.distributed.initialize()`` on every host
first (before anything else touches JAX): ``jax.devices()`` then lists the
devices of all hosts, and the same mesh spans them (see the README).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array

from .._shapes import subjects_bucket
from .._sharding import SUBJECT_AXIS, subject_mesh
from ..data._dataset import Dataset
from ..model._error import censoring_kinds
from ..model._model import Model
from ._kernel import Layout
from ._prepare import Prepared, prepare

# Subjects per chunk when the caller does not choose: everything at once up to
# this many subjects (fastest), chunks of it above; on a CPU, chunks of
# CPU_CHUNK above it.  Measured on a 2-core CPU (FOCEI objective + gradient of
# benchmarks/fit.py's design at 100,000 subjects, warm-started): chunks of
# 65,536 took 20.8 s, 16,384 17.6 s, 4,096 12.5 s, 1,024 8.75 s, one chunk
# of all 114,688 (the bucket) 10 s; at 10,000 subjects one chunk 0.78 s and
# chunks of 1,024 0.91 s.
AUTO_CHUNK = 65536
CPU_CHUNK = 1024
# Laplace: the exact curvature of a subject's individual objective is floored
# at this fraction of its expected information (see estimation/_curvature.py).
LAPLACE_FLOOR = 0.25


class Problem(eqx.Module):
    """Subjects laid out as ``(n_chunks, chunk, ...)`` and sharded over devices.

    ``source`` is the unpadded, unsharded :class:`Prepared` data (subject order
    of the dataset) for per-record tables; ``real`` marks the real subjects
    of the layout.  ``source`` and ``n_subjects`` are ``None`` in
    :meth:`program`'s copy.
    """

    prepared: Prepared
    real: Array
    source: Prepared | None
    layout: Layout
    method: str = eqx.field(static=True)
    # The kinds of censored observation in the data (empty: none).
    has_censoring: tuple[str, ...] = eqx.field(static=True)
    n_subjects: int | None = eqx.field(static=True)
    n_chunks: int = eqx.field(static=True)
    chunk: int = eqx.field(static=True)
    laplace_floor: float = eqx.field(static=True, default=LAPLACE_FLOOR)

    @property
    def dtype(self):
        return self.prepared.subjects.time.dtype

    def program(self) -> Problem:
        """What a compiled program takes: this problem without the unpadded
        data and the subject count (host-side; both set the program apart from
        that of another dataset of the same bucket).  Code that runs inside a
        program reads neither: it sums with ``real``."""
        if self.source is None:
            return self
        return dataclasses.replace(self, source=None, n_subjects=None)

    @property
    def n_padded(self) -> int:
        return self.n_chunks * self.chunk

    def place(self, per_subject: Array) -> Array:
        """``(n_subjects, ...)`` -> the problem's padded ``(n_chunks, chunk, ...)``
        layout on the devices (e.g. an EBE warm start)."""
        return _layout(jnp.asarray(per_subject), self.n_chunks, self.chunk)

    def take(self, laid_out: Array) -> Array:
        """The inverse of :meth:`place`: real subjects only, dataset order."""
        if self.n_subjects is None:
            raise ValueError("Problem.take needs the host-side problem, not its program() copy")
        # Concrete arrays are sliced on the host (an eager slice compiles a
        # program per size), traced ones in jnp.
        concrete = not isinstance(laid_out, jax.core.Tracer)
        xp = np if concrete else jnp
        shape = (self.n_padded,) + tuple(laid_out.shape[2:])
        flat = xp.reshape(xp.asarray(laid_out), shape)[: self.n_subjects]
        return jax.device_put(flat) if concrete else flat


def _sharding(ndim: int) -> NamedSharding | None:
    mesh = subject_mesh()
    if mesh.size == 1:
        return None
    return NamedSharding(mesh, PartitionSpec(None, SUBJECT_AXIS, *([None] * (ndim - 2))))


def _layout(x, n_chunks: int, chunk: int):
    """Pad the subject axis of ``x`` to ``n_chunks * chunk`` (repeating the last
    subject), reshape to ``(n_chunks, chunk, ...)`` and shard the chunk axis."""
    if not isinstance(x, jax.Array | np.ndarray) or np.ndim(x) == 0:
        return x
    # Concrete data are padded on the host and transferred once (eager jnp
    # calls would compile a small program per array shape); traced data in jnp.
    concrete = not isinstance(x, jax.core.Tracer)
    xp = np if concrete else jnp
    x = xp.asarray(x)
    extra = n_chunks * chunk - x.shape[0]
    if extra > 0:
        x = xp.concatenate([x, xp.repeat(x[-1:], extra, axis=0)], axis=0)
    x = x.reshape((n_chunks, chunk) + x.shape[1:])
    sharding = _sharding(x.ndim)
    return x if sharding is None and not concrete else jax.device_put(x, sharding)


def make_problem(
    model: Model,
    data: Dataset | Prepared | Problem,
    method: str,
    *,
    chunk_size: int | None = None,
    laplace_floor: float | None = None,
) -> Problem:
    """Lay out ``data`` for ``model`` and ``method`` (see the module notes).

    ``chunk_size``: subjects evaluated at once (memory is proportional to it);
    default: all of them up to 65,536 subjects, chunks of 65,536 above (of
    1,024 on a CPU, where they are faster: see ``CPU_CHUNK``).  It is
    rounded up to a multiple of the local device count.  ``laplace_floor``:
    for ``method="laplace"``, the fraction of the expected information below
    which a subject's exact curvature is floored (default 0.25; 0: the
    textbook Laplace approximation; see ``estimation/_curvature.py``).
    """
    if isinstance(data, Problem):
        if (
            data.method == method
            and (chunk_size is None or chunk_size == data.chunk)
            and (laplace_floor is None or laplace_floor == data.laplace_floor)
        ):
            return data
        if laplace_floor is None:
            laplace_floor = data.laplace_floor
        data = data.source
    if laplace_floor is None:
        laplace_floor = LAPLACE_FLOOR
    if not 0.0 <= laplace_floor < 1.0:
        raise ValueError(f"laplace_floor must be in [0, 1), got {laplace_floor}")
    source = data if isinstance(data, Prepared) else prepare(model, data, buckets=True)
    if source.has_general and method in ("fo", "foce", "focei"):
        raise ValueError(non_gaussian_message(model, source, method))
    subjects = source.subjects
    n = subjects.n_subjects
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    padded = subjects_bucket(n)
    if chunk_size is None:
        large = CPU_CHUNK if jax.default_backend() == "cpu" else AUTO_CHUNK
        chunk = padded if padded <= AUTO_CHUNK else large
    else:
        chunk = min(int(chunk_size), padded)
    n_devices = subject_mesh().size
    chunk = -(-chunk // n_devices) * n_devices
    n_chunks = -(-n // chunk)
    has_censoring = censoring_kinds(subjects.cens, subjects.bound, subjects.is_obs)
    prepared = jax.tree_util.tree_map(lambda x: _layout(x, n_chunks, chunk), source)
    real = _layout(np.arange(n_chunks * chunk) < n, n_chunks, chunk)
    return Problem(
        prepared=prepared,
        real=real,
        source=source,
        layout=Layout.of(model, source.n_occasions),
        method=method,
        has_censoring=has_censoring,
        n_subjects=n,
        n_chunks=n_chunks,
        chunk=chunk,
        laplace_floor=float(laplace_floor),
    )


def non_gaussian_message(model: Model, source: Prepared, method: str) -> str:
    """Why ``method`` cannot fit a model with non-Gaussian endpoints, and what can."""
    levels = [k for k, gaussian in enumerate(source.gaussian_levels) if not gaussian]
    which = "endpoint" if len(source.gaussian_levels) == 1 else f"DVID level(s) {levels}"
    return (
        f"{type(model).__name__} observes {which} with a non-Gaussian model (counts, "
        f"categories, binary or time-to-event data); {method.upper()} linearises a normal "
        "residual and cannot fit it. Use method='laplace' (exact eta-Hessian), or "
        "pmx.sample for NUTS."
    )


def map_subjects(problem: Problem, one, *inputs):
    """``one(data: SubjectData, *per_subject_inputs)`` over all subjects of the
    problem, chunk after chunk; outputs keep the ``(n_chunks, chunk, ...)``
    layout."""
    args = (problem.prepared.subject_data(), *inputs)
    batched = jax.vmap(one)
    if problem.n_chunks == 1:
        squeezed = jax.tree_util.tree_map(lambda x: x[0], args)
        return jax.tree_util.tree_map(lambda x: x[None], batched(*squeezed))
    return jax.lax.map(jax.checkpoint(lambda a: batched(*a)), args)
