"""Placing the subject axis on every local device.

Subjects are independent, so the subject axis is the one to split: inputs are
padded to a multiple of the device count and laid out with a
``NamedSharding`` over a one-axis mesh; ``jit`` then runs each device's share
and gathers the outputs.  On one device this is a no-op.  The same layout works
across hosts once ``jax.distributed.initialize()`` has been called (each host
then sees its devices in ``jax.devices()``).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SUBJECT_AXIS = "subjects"


def subject_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (SUBJECT_AXIS,))


def padded_count(n: int, n_devices: int | None = None) -> int:
    """``n`` rounded up to a multiple of the device count."""
    n_devices = jax.device_count() if n_devices is None else n_devices
    return -(-n // n_devices) * n_devices


def shard_subjects(tree, mesh: Mesh | None = None):
    """Put every array leaf of ``tree`` (leading axis: subjects, a multiple of
    the device count) on the mesh, split along that axis."""
    mesh = subject_mesh() if mesh is None else mesh
    if mesh.size == 1:
        return tree
    spec = NamedSharding(mesh, PartitionSpec(SUBJECT_AXIS))

    def place(x):
        if isinstance(x, jax.Array | np.ndarray) and np.ndim(x) >= 1:
            return jax.device_put(x, spec)
        return x

    return jax.tree_util.tree_map(place, tree)


def pad_subjects(tree, n_to: int):
    """Repeat the last subject so the leading axis has ``n_to`` entries (on the
    host, in numpy: an eager JAX concatenation compiles a program per shape)."""

    def pad(x):
        if not isinstance(x, jax.Array | np.ndarray) or np.ndim(x) == 0:
            return x
        extra = n_to - x.shape[0]
        if extra <= 0:
            return x
        x = np.asarray(x)
        return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)], axis=0)

    return jax.tree_util.tree_map(pad, tree)
