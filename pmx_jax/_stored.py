"""Traced programs kept on disk: a second run of a job neither traces nor
compiles.

JAX's persistent compilation cache (:mod:`pmx_jax._cache`) keeps the compiled
machine code, but finding it needs the program's StableHLO, which a new
process gets only by tracing and lowering the Python code again: for the
theophylline FOCEI objective about 5 s of a warm run's 6 s on a 2-core CPU,
against 0.8 s to load it exported.  :func:`stored` wraps a function like
``equinox.filter_jit`` (arrays are arguments, everything else is static) and
keeps its lowered program (``jax.export``, serialized) in
``<cache folder>/programs``, next to the compiled code.  The next process
deserializes it and calls it: the compilation cache then finds the machine
code, and nothing is traced.

A stored program is used only when it is certain to be the program that
tracing would give now, so only where every class in the arguments (and each
of its base classes) is pmx_jax's own, defined in its source (the model
library, the estimation, simulation and table code), or a class of Python,
JAX, equinox or numpy: a user's model class can depend on more than a
source file shows (class-level values set at run time, closures, module
globals read from files, helper packages), and a model read from a NONMEM
control stream is a class made at run time whose $PK/$DES live in closures.
Those are traced each run, as before (their compiled code still comes from
the compilation cache).  The key is a hash of

- the function's name, the structure of the arguments (pytree with every
  static value, which must have a stable text form: an object printed with a
  memory address turns the store off for that call), the module and name of
  every class in it, and every array's shape and dtype;
- the source of every pmx_jax module, and of every Python module loaded
  from outside the Python installation (a script, a user's modules);
- the versions of Python, jax, jaxlib, equinox, diffrax, lineax, optimistix
  and numpy, the JAX options that change tracing (64-bit mode, matmul
  precision, PRNG implementation, promotion rules, ...) and the backend.

It is not used (the function is traced as by ``filter_jit``) when the cache is
off (``PMX_JAX_CACHE_DIR=off``, or ``PMX_JAX_STORED_PROGRAMS=off`` for this
part alone), inside a trace, with several devices (sharded arguments), for the
classes above, when no key can be made, or when exporting, loading or
running the stored program fails (an effect or custom call that
``jax.export`` does not serialize): a stored program is only ever a faster
way to the same result.  Within a process the code is hashed once: editing a
file while a process runs does not change the programs that process uses (as
with ``jax.jit``'s own cache).  The folder is kept under 256 MB, least
recently used files deleted first.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import pickle
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ._cache import OFF

ENVIRONMENT_VARIABLE = "PMX_JAX_STORED_PROGRAMS"
SUFFIX = ".jaxexport"
MAX_BYTES = 256 * 1024**2
_PACKAGES = ("jax", "jaxlib", "equinox", "diffrax", "lineax", "optimistix", "numpy")


def folder() -> Path | None:
    """Where stored programs go (``programs`` beside the compilation cache), or
    None when they are off."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if setting and setting in OFF:
        return None
    cache = jax.config.jax_compilation_cache_dir
    if not cache or len(jax.devices()) > 1:
        return None
    return Path(cache) / "programs"


def _library_paths() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return tuple(sorted(os.path.realpath(p) + os.sep for p in paths))


def _source(module) -> str | None:
    """The source file of ``module`` (None for a compiled or built-in one)."""
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if path and path.endswith(".py") else None


_sources: dict[str, tuple[int, str | None]] = {}


def _loaded_sources() -> dict[str, str | None]:
    """:func:`_source` of every loaded module by name (each module looked up once)."""
    found = {}
    for name, module in list(sys.modules.items()):
        known = _sources.get(name)
        if known is None or known[0] != id(module):
            known = _sources[name] = (id(module), _source(module))
        found[name] = known[1]
    return found


@functools.cache
def _package_fingerprint() -> str:
    """A hash of every ``pmx_jax`` source file and the versions named in the
    module notes: what changes in a process only when it starts."""
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    for name in _PACKAGES:
        try:
            digest.update(f"{name}={importlib.metadata.version(name)};".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{name}=?;".encode())
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


_hashed_files: dict[str, str] = {}


def _code_fingerprint() -> str:
    """:func:`_package_fingerprint` and the source of every other module loaded
    from outside the Python installation (a user's modules, the script)."""
    library = _library_paths()
    package = str(Path(__file__).resolve().parent) + os.sep
    digest = hashlib.sha256(_package_fingerprint().encode())
    paths = {
        path
        for path in _loaded_sources().values()
        if path is not None and not path.startswith(package) and not path.startswith(library)
    }
    for path in sorted(paths):
        if path not in _hashed_files:
            try:
                _hashed_files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError as error:
                raise LookupError(f"cannot read {path}") from error
        digest.update(f"{path}={_hashed_files[path]};".encode())
    return digest.hexdigest()


def _class_name(kind: type) -> str:
    return f"{kind.__module__}:{kind.__qualname__}"


def _node_types(treedef) -> set[type]:
    """Every pytree node class in ``treedef``."""
    kinds = set()
    stack = [treedef]
    while stack:
        node = stack.pop()
        data = node.node_data()
        if data is not None:
            kinds.add(data[0])
        stack.extend(node.children())
    return kinds


def _made_at_run_time(kind: type) -> bool:
    """Whether ``kind`` is not the class its module defines under its name (one
    made by ``type(...)`` from data, e.g. a model read from a control stream):
    its source file does not describe it."""
    found: Any = sys.modules.get(kind.__module__)
    for part in kind.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is not kind


#: The packages whose classes may appear in a stored program's arguments (see
#: the module notes): their code is pmx_jax's own, hashed, or versioned.
TRUSTED = frozenset(
    {"builtins", "pmx_jax", "equinox", "jax", "jaxlib", "numpy"}
    | {"abc", "collections", "typing", "enum", "types", "functools", "dataclasses"}
)


# Classes of compiled modules, not found by name in a Python module.
_COMPILED = frozenset({"builtins", "jaxlib"})


def _check_classes(kinds: set[type]) -> None:
    """Raise ``LookupError`` unless every class of the arguments (and every
    base class) comes from :data:`TRUSTED` and is the class its module defines
    under its name (not one made at run time, as a model read from a control
    stream)."""
    for kind in kinds:
        for owner in kind.__mro__:
            root = owner.__module__.split(".")[0]
            if root not in TRUSTED or (root not in _COMPILED and _made_at_run_time(owner)):
                raise LookupError(f"{_class_name(owner)} is not one of pmx_jax's classes")


def _structure(name: str, static, treedef, leaves) -> str:
    """The text of everything that determines the traced program besides the
    code: raises ``LookupError`` where a class is not one of :data:`TRUSTED`'s
    or a static value has no stable text."""
    static_leaves, static_def = jax.tree.flatten(static)
    kinds = _node_types(treedef) | _node_types(static_def) | {type(x) for x in static_leaves}
    _check_classes(kinds)
    classes = {_class_name(kind) for kind in kinds}
    parts = [
        name,
        str(treedef),
        str(static_def),
        repr(static_leaves),
        repr(sorted(classes)),
        repr(
            [
                (leaf.shape, str(leaf.dtype), bool(getattr(leaf, "weak_type", False)))
                for leaf in leaves
            ]
        ),
        repr([(name, getattr(jax.config, name, None)) for name in _FLAGS]),
        jax.default_backend(),
    ]
    text = "\n".join(parts)
    if " at 0x" in text:
        raise LookupError("a static value is printed with its memory address")
    if "array(" in text or "..." in text:  # numpy prints 8 digits, and elides
        raise LookupError("a static array is printed in part")
    return text


#: JAX options that change what tracing gives.
_FLAGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_enable_checks",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_disable_jit",
)


class _Program:
    """One exported program: call with the array leaves, get the outputs."""

    def __init__(self, exported, out_structure):
        self.call = jax.jit(exported.call)
        self.out_structure = out_structure
        self.device = jax.devices()[0]

    def __call__(self, leaves):
        # Every argument committed to the device: a program's own outputs are,
        # new arrays are not, and jit compiles a program for each pattern.
        leaves = jax.device_put(leaves, self.device)
        return jax.tree.unflatten(self.out_structure, self.call(*leaves))

    def lower(self, leaves):
        """The call's lowering for ``leaves`` (as ``__call__`` commits them)."""
        return self.call.lower(*jax.device_put(leaves, self.device))


@functools.cache
def _prepare_lapack() -> None:
    """Load jaxlib's LAPACK kernels, as lowering a linear-algebra operation
    does: an exported program that calls them is never lowered here."""
    try:
        from jax._src.lib import lapack

        lapack.prepare_lapack_call("potrf_ffi", np.float64)
    except Exception:  # noqa: BLE001 - an older or newer jaxlib: lowering loads them
        pass


def _read(path: Path) -> _Program | None:
    try:
        blob = path.read_bytes()
        with open(path.with_suffix(".structure"), "rb") as handle:
            skeleton = pickle.load(handle)
        exported = jax.export.deserialize(bytearray(blob))
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged or foreign file: export again
        return None
    _prepare_lapack()
    os.utime(path)  # least recently used last when the folder is trimmed
    return _Program(exported, jax.tree.structure(skeleton))


def _write(path: Path, exported, out_structure) -> None:
    skeleton = jax.tree.unflatten(out_structure, list(range(out_structure.num_leaves)))
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in (
        (path.with_suffix(".structure"), pickle.dumps(skeleton)),
        (path, exported.serialize()),
    ):
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    _trim(path.parent)


def _trim(where: Path, limit: int = MAX_BYTES) -> None:
    files = sorted(where.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
    sizes = {p: p.stat().st_size + _size(p.with_suffix(".structure")) for p in files}
    total = sum(sizes.values())
    for path in files:
        if total <= limit:
            break
        for stale in (path, path.with_suffix(".structure")):
            stale.unlink(missing_ok=True)
        total -= sizes[path]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Stored:
    """``fn`` as by ``equinox.filter_jit``, with its traced program kept on disk
    (see the module notes).  ``hits`` and ``exports`` count, per process, the
    calls served from a stored program read from disk and the programs
    exported."""

    def __init__(self, fn: Callable, name: str):
        self.fn = fn
        self.name = name
        self.jitted = eqx.filter_jit(fn)
        self.programs: dict[str, _Program | None] = {}
        self.hits = 0
        self.exports = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        text, program, leaves = self._find(args)
        if program is not None:
            try:
                return program(leaves)
            except Exception:  # noqa: BLE001 - a program that fails to load or run: trace
                self.programs[text] = None
        return self.jitted(*args)

    def lowered(self, *args) -> Callable[[], Any]:
        """Trace (or read) and lower the program for ``args`` now; return a
        function that compiles it into the caches that a call with arguments
        of the same structure, shapes and placement then uses (nothing runs).  XLA
        releases the GIL while it compiles, so that function can run in a
        thread while Python traces another program."""
        text, program, leaves = self._find(args)
        if program is not None:
            try:
                return program.lower(leaves).compile
            except Exception:  # noqa: BLE001 - traced instead, as __call__ would
                self.programs[text] = None
        return self.jitted.lower(*args).compile

    def _find(self, args) -> tuple[str | None, _Program | None, list]:
        """The key text, stored program and array leaves for ``args``; no
        program where ``jitted`` must trace (see the module notes)."""
        where = folder()
        if where is None or any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
            return None, None, []
        dynamic, static = eqx.partition(args, eqx.is_array)
        leaves, treedef = jax.tree.flatten(dynamic)
        try:
            text = _structure(self.name, static, treedef, leaves)
        except Exception:  # noqa: BLE001 - no certain key (see the module notes): trace
            return None, None, leaves
        if text not in self.programs:
            # The code cannot change the program within a process: hashed once.
            try:
                key = hashlib.sha256((_code_fingerprint() + text).encode()).hexdigest()
            except Exception:  # noqa: BLE001
                self.programs[text] = None
            else:
                path = where / f"{self.name}-{key[:32]}{SUFFIX}"
                self.programs[text] = self._load(path, static, treedef, leaves)
        return text, self.programs.get(text), leaves

    def _load(self, path: Path, static, treedef, leaves) -> _Program | None:
        program = _read(path)
        if program is not None:
            self.hits += 1
            return program
        out: dict[str, Any] = {}

        def flat(*leaves):
            result = self.fn(*eqx.combine(jax.tree.unflatten(treedef, leaves), static))
            out_leaves, out["structure"] = jax.tree.flatten(result)
            return out_leaves

        specs = [
            jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=getattr(x, "weak_type", False))
            for x in leaves
        ]
        try:
            exported = jax.export.export(jax.jit(flat))(*specs)
        except Exception as error:  # noqa: BLE001 - not exportable: trace as usual
            warnings.warn(
                f"pmx_jax: {self.name} cannot be stored ({error}); tracing it each run",
                stacklevel=4,
            )
            return None
        try:
            _write(path, exported, out["structure"])
            self.exports += 1
        except Exception:  # noqa: BLE001 - an unwritable folder or an unpicklable output: not stored
            pass
        return _Program(exported, out["structure"])


def signature(args) -> tuple | None:
    """What sets ``args`` apart for a compiled program, hashable: their
    structure, static values, and the arrays' shapes and dtypes (None where a
    static value cannot be hashed)."""
    dynamic, static = eqx.partition(args, eqx.is_array)
    leaves, treedef = jax.tree.flatten(dynamic)
    static_leaves, static_def = jax.tree.flatten(static)
    key = (
        treedef,
        static_def,
        tuple(static_leaves),
        tuple((x.shape, str(x.dtype), bool(getattr(x, "weak_type", False))) for x in leaves),
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def stored(name: str) -> Callable[[Callable], Stored]:
    """Decorator: :class:`Stored` under ``name`` (a file-name part)."""

    def wrap(fn: Callable) -> Stored:
        return Stored(fn, name)

    return wrap
