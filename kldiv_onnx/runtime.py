"""Sessions: built once per (model content, options), cached, and run with bfloat16 support.

onnxruntime's numpy bridge has no bfloat16, so every run goes through an IOBinding: bfloat16
arrays travel as uint16 buffers tagged ``TensorProto.BFLOAT16`` and come back viewed as
``ml_dtypes.bfloat16``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from . import native
from . import providers as _providers

ModelLike = onnx.ModelProto | bytes | str | os.PathLike
_BF16 = np.dtype(ml_dtypes.bfloat16)

CACHE_SIZE = 32
_cache: OrderedDict[tuple, ort.InferenceSession] = OrderedDict()
_lock = threading.Lock()


def _model_bytes(model: ModelLike) -> bytes:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    raise TypeError(f"model must be a ModelProto, bytes or a path, got {type(model).__name__}")


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

    The same model content with the same options returns the very same session object; the
    cache holds the :data:`CACHE_SIZE` most recently used sessions (:func:`clear_cache`).

    ``fused``: register the native library (``None``: whenever the loss runs on CPU and the
    library is built; ``True``: required, ``FileNotFoundError`` if missing; ``False``: never).
    ``providers``/``provider_options``/``strict``: see :func:`kldiv_onnx.providers.resolve`.
    """
    data = _model_bytes(model)
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 0
    ):
        raise ValueError(f"threads must be an int >= 0 (0: onnxruntime's default), got {threads!r}")
    names, options = _providers.resolve(providers, provider_options, strict=strict)
    on_cpu = names[0] == "CPUExecutionProvider"
    use_library = (on_cpu and native.available()) if fused is None else bool(fused)
    library = native.library_path() if use_library else None
    key = (
        hashlib.sha256(data).hexdigest(),
        tuple(names),
        tuple(tuple(sorted(o.items())) for o in options),
        threads,
        library,
    )
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
        so = ort.SessionOptions()
        if threads is not None:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        if library is not None:
            so.register_custom_ops_library(library)
        sess = ort.InferenceSession(
            data, sess_options=so, providers=names, provider_options=options
        )
        _providers.check_fallback(sess, names, strict=strict)
        _cache[key] = sess
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return sess


def clear_cache() -> None:
    """Drop every cached session."""
    with _lock:
        _cache.clear()


def cache_info() -> int:
    """Number of sessions in the cache."""
    with _lock:
        return len(_cache)


def _to_ortvalue(array: np.ndarray) -> ort.OrtValue:
    array = np.asarray(array, order="C")  # ascontiguousarray would make a 0-d array 1-d
    if array.dtype == _BF16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            array.view(np.uint16), TensorProto.BFLOAT16
        )
    return ort.OrtValue.ortvalue_from_numpy(array)


def _from_ortvalue(value: ort.OrtValue) -> np.ndarray:
    if value.data_type() != "tensor(bfloat16)":
        return value.numpy()
    shape = tuple(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    out = np.empty(shape, dtype=np.uint16)
    if count:
        ctypes.memmove(out.ctypes.data, value.data_ptr(), count * 2)
    return out.view(_BF16)


def run(
    sess: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run ``sess`` on numpy ``feeds`` (bfloat16 included) and return numpy outputs."""
    binding = sess.io_binding()
    values = {name: _to_ortvalue(array) for name, array in feeds.items()}  # kept alive
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    for name in names:
        binding.bind_output(name, "cpu")
    sess.run_with_iobinding(binding)
    return [_from_ortvalue(v) for v in binding.get_outputs()]
