"""Sessions: built once per (model content, options), cached, and run with bfloat16 support.

The cache keeps the most recently used sessions within two bounds: :data:`CACHE_SIZE`
sessions, and a memory budget of ``KLDIV_ONNX_SESSION_CACHE_MB`` MiB (default
:data:`DEFAULT_BUDGET_MB`, read at every insertion) over each session's estimate: its model's
bytes (external data included) twice (the parsed model and onnxruntime's copy of the weights)
plus :data:`SESSION_ALLOWANCE` for what a session holds besides (the CPU arena a run of a
million float32 elements grows: 17 MiB measured). The least recently used sessions are dropped
until the cache fits; the newest one stays even when it alone is over. Memory the arena grows
for larger inputs is not measured: lower the budget for such workloads.

onnxruntime's numpy bridge has no bfloat16, so every run goes through an IOBinding: bfloat16
arrays travel as uint16 buffers tagged ``TensorProto.BFLOAT16`` and come back viewed as
``ml_dtypes.bfloat16`` (:mod:`kldiv_onnx.arrays`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from . import native
from . import providers as _providers
from ._ort_fast import set_global_thread_pool_sizes
from .arrays import from_ortvalue, to_ortvalue
from .errors import first_line
from .model_io import ModelLike, all_tensors, check_input_file, uses_external_data

CACHE_SIZE = 32
DEFAULT_BUDGET_MB = 1024
SESSION_ALLOWANCE = 16 * 2**20
"""Bytes counted for every cached session on top of twice its model's size."""
_cache: OrderedDict[tuple, ort.InferenceSession] = OrderedDict()
_cost: dict[tuple, int] = {}
"""The memory estimate of each cached session, in bytes."""
_resolved: dict[tuple, tuple] = {}
"""The arguments of a call → the key of the session they resolved to, so that a cached
session is found without probing providers again."""
_building: dict[tuple, Future] = {}
"""Sessions being built (outside the lock), so that a second caller waits for the first."""
_lock = threading.Lock()


def _model_source(model: ModelLike) -> tuple[tuple, str | bytes, int]:
    """(what identifies the model in the cache key; what onnxruntime loads; its size in bytes,
    external data included). A path is handed to onnxruntime as a path, so that external data
    resolves beside the model; the key is the content's hash, plus, where the model keeps data
    outside the file, the folder and each data file's identity and state (device, inode, size,
    modification and change times): the same bytes in another folder point at other data, and
    a data file rewritten under the same name holds other weights."""
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        return (hashlib.sha256(data).hexdigest(),), data, len(data)
    if isinstance(model, (bytes, bytearray)):
        data = bytes(model)
        return (hashlib.sha256(data).hexdigest(),), data, len(data)
    if isinstance(model, (str, os.PathLike)):
        path = check_input_file(model, "model").resolve()
        data = path.read_bytes()
        identity: tuple = (hashlib.sha256(data).hexdigest(),)
        size = len(data)
        # an external tensor names its file under the key "location": without those bytes the
        # model has none, and need not be parsed here
        proto = onnx.load_from_string(data) if b"location" in data else None
        if proto is not None and uses_external_data(proto):
            identity += (str(path.parent),)
            for location in _data_locations(proto):
                try:
                    info = os.stat(path.parent / location)
                except OSError:  # onnxruntime names it when the session is built
                    identity += ((location, None),)
                    continue
                state = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
                identity += ((location, state),)
                size += info.st_size
        return identity, str(path), size
    raise TypeError(f"model must be a ModelProto, bytes or a path, got {type(model).__name__}")


def _data_locations(model: onnx.ModelProto) -> list[str]:
    """The external data files ``model``'s tensors name, each once, sorted."""
    return sorted(
        {
            entry.value
            for tensor in all_tensors(model)
            if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data
            if entry.key == "location"
        }
    )


def cache_budget() -> int:
    """The cache's memory budget in bytes: ``KLDIV_ONNX_SESSION_CACHE_MB`` (MiB, a number
    >= 0) or :data:`DEFAULT_BUDGET_MB`; ``ValueError`` for a value that is not such a number."""
    text = os.environ.get("KLDIV_ONNX_SESSION_CACHE_MB", "")
    if not text.strip():
        return DEFAULT_BUDGET_MB * 2**20
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"KLDIV_ONNX_SESSION_CACHE_MB must be a number of MiB >= 0, got {text!r}")
    return int(value * 2**20)


_shared_pool = False


def share_thread_pool(threads: int = 0) -> None:
    """Give every session of the process one intra-op thread pool of ``threads`` threads (0:
    one per core) instead of a pool per session: 32 cached sessions then hold one pool, not
    32. Call it before the process builds any onnxruntime session.

    onnxruntime makes this switch process-wide and one-way: once the shared pool exists it
    refuses every session that asks for a pool of its own, so ``session(..., threads=N)``
    raises ``ValueError`` afterwards, and so would other libraries' sessions in the process.
    That is why it is not the default.
    """
    global _shared_pool
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int >= 0, got {threads!r}")
    try:  # the switch is exposed only in onnxruntime's pybind module (no public Python API)
        set_global_thread_pool_sizes(threads, 1)
    except Exception as exc:  # the process already has onnxruntime's environment
        raise RuntimeError(f"cannot share a thread pool: {first_line(exc)}") from exc
    _shared_pool = True


def session_options(
    threads: int | None = None, library: str | None = None, *, arena: bool = True
) -> ort.SessionOptions:
    """The ``SessionOptions`` of every session the package builds: ``threads`` intra-op
    threads (None: onnxruntime's default, or the pool of :func:`share_thread_pool`), one
    inter-op thread, the native ``library`` registered when given, the CPU arena on or off."""
    so = ort.SessionOptions()
    if _shared_pool:  # pool sizes are the shared pools' (setting them here is warned about)
        if threads is not None:
            raise ValueError("threads cannot be set per session after share_thread_pool()")
        so.use_per_session_threads = False
    else:
        if threads is not None:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = arena
    if library is not None:
        so.register_custom_ops_library(library)
    return so


def session(
    model: ModelLike,
    *,
    providers: str | Sequence[str] = "auto",
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    threads: int | None = None,
    fused: bool | None = None,
    strict: bool = False,
) -> ort.InferenceSession:
    """A cached ``InferenceSession`` for ``model`` (a ``ModelProto``, bytes or a path).

    The same model content (and external data) with the same options returns the very same
    session object; the cache holds the most recently used sessions within its count and
    memory bounds (see the module docstring; :func:`clear_cache`).

    ``fused``: register the native library (``None``: whenever the loss runs on CPU and the
    library is built; ``True``: required, ``FileNotFoundError`` if missing; ``False``: never).
    ``providers``/``provider_options``/``strict``: see :func:`kldiv_onnx.providers.resolve`.
    """
    identity, source, size = _model_source(model)
    budget = cache_budget()
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 0
    ):
        raise ValueError(f"threads must be an int >= 0 (0: onnxruntime's default), got {threads!r}")
    asked = (
        identity,
        providers if isinstance(providers, str) else tuple(providers),
        tuple(sorted((p, tuple(sorted(o.items()))) for p, o in (provider_options or {}).items())),
        threads,
        fused,
        strict,
    )
    with _lock:
        cached = _cache.get(_resolved.get(asked, ()))
        if cached is not None:
            _cache.move_to_end(_resolved[asked])
            return cached
    names, options = _providers.resolve(providers, provider_options, strict=strict)
    on_cpu = names[0] == _providers.CPU
    use_library = (on_cpu and native.available()) if fused is None else bool(fused)
    library = native.library_path() if use_library else None
    key = (
        asked[0],
        tuple(names),
        tuple(tuple(sorted(o.items())) for o in options),
        threads,
        library,
    )
    with _lock:
        if len(_resolved) >= 4 * CACHE_SIZE:
            _resolved.clear()
        _resolved[asked] = key
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
        pending = _building.get(key)
        owner = pending is None
        if owner:
            pending = _building[key] = Future()
    if not owner:  # another thread is building this very session: wait for it
        return pending.result()
    try:
        sess = ort.InferenceSession(
            source,
            sess_options=session_options(threads, library),
            providers=names,
            provider_options=options,
        )
        _providers.check_fallback(sess, names, strict=strict)
    except BaseException as exc:
        pending.set_exception(exc)
        raise
    finally:
        with _lock:
            _building.pop(key, None)
    with _lock:
        _cache[key] = sess
        _cost[key] = 2 * size + SESSION_ALLOWANCE
        total = sum(_cost.values())
        while len(_cache) > 1 and (len(_cache) > CACHE_SIZE or total > budget):
            old, _ = _cache.popitem(last=False)
            total -= _cost.pop(old)
    pending.set_result(sess)
    return sess


def clear_cache() -> None:
    """Drop every cached session."""
    with _lock:
        _cache.clear()
        _cost.clear()
        _resolved.clear()


def cache_info() -> int:
    """Number of sessions in the cache."""
    with _lock:
        return len(_cache)


def cache_memory() -> int:
    """The cached sessions' memory estimate in bytes (see the module docstring)."""
    with _lock:
        return sum(_cost.values())


def run(
    sess: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run ``sess`` on numpy ``feeds`` (bfloat16 included) and return numpy outputs."""
    binding = sess.io_binding()
    values = {name: to_ortvalue(array) for name, array in feeds.items()}  # kept alive
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    for name in names:
        binding.bind_output(name, "cpu")
    sess.run_with_iobinding(binding)
    return [from_ortvalue(v) for v in binding.get_outputs()]
