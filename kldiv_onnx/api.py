"""The user-facing loss: ``KLDivLoss`` and ``kl_div`` on numpy, PyTorch or MindSpore arrays.

A call costs little more than onnxruntime's own run: everything that depends only on the
variant, the backend, the dtypes and the shapes is done once and kept in a *prepared call*
(the session, an ``IOBinding`` with buffers bound once, the output buffer), cached per thread
and per (dtypes, shapes) in each :class:`KLDivLoss`. ``kl_div`` keeps one :class:`KLDivLoss`
per (reduction, log_target, backend, threads). What a call then does:

- numpy arrays of a (dtypes, shapes) already seen: a dict lookup, the inputs copied into the
  bound buffers (up to :data:`COPY_BYTES` each; larger ones are bound in place by address, no
  copy, and only when the address changed), the run, and a copy of the output buffer (larger
  outputs are written straight into a new array). Nothing touches the file system: the
  backend (and so the native library's path) is resolved once per process.
- anything else (tensors, a first call, another thread): validation and conversion as before,
  then the same prepared call.

The cached objects follow the session cache of :mod:`kldiv_onnx.runtime`: once
``kldiv_onnx.clear_cache()`` (or the cache's eviction) drops a session, the prepared calls over
it are let go of at once and rebuilt on their next use.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from . import native, runtime
from ._contract import DTYPES, ONNX_TYPES, Variant, dtype_name
from ._ort_fast import bound_run, cpu_device
from .arrays import to_numpy, to_ortvalue
from .export import variant_model
from .reference import kl_div as _reference

BACKENDS = ("auto", "fused", "composite", "numpy")
COPY_BYTES = 32 << 10
"""An input (or output) of at most this many bytes is copied into a buffer bound once;
larger ones are bound by address (no copy; rebound only when the address changes)."""
CALLS_PER_THREAD = 64
"""Prepared calls a :class:`KLDivLoss` keeps per thread (dropped all at once beyond this)."""


def _check_arrays(input: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """numpy views of the two arguments (masked arrays refused: their mask would be lost)."""
    # no masked array exists before numpy.ma is imported (`np.ma` would import it: 0.1 s)
    ma = sys.modules.get("numpy.ma")
    for name, value in (("input", input), ("target", target)):
        if ma is not None and isinstance(value, ma.MaskedArray):
            raise TypeError(
                f"{name} is a numpy masked array: the loss would ignore its mask; pass "
                "`.filled(...)` or `.data` explicitly"
            )
    return to_numpy(input, "input"), to_numpy(target, "target")


def _validate(input: Any, target: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    x, t = _check_arrays(input, target)
    allowed = tuple(DTYPES)
    for name, array in (("input", x), ("target", t)):
        if array.dtype not in DTYPES.values():
            raise TypeError(f"{name} dtype must be one of {allowed}, got {array.dtype}")
    if x.dtype != t.dtype:
        raise TypeError(f"target dtype {t.dtype} differs from input dtype {x.dtype}")
    try:
        shape = np.broadcast_shapes(x.shape, t.shape)
    except ValueError:
        raise ValueError(
            f"input shape {x.shape} and target shape {t.shape} are not broadcastable"
        ) from None
    return x, t, shape


def _check_backend(backend: str) -> str:
    """The backend a name stands for, looked up now ('auto': fused when the library is
    there); ``FileNotFoundError`` for 'fused' without the library."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "fused" if native.available() else "composite"
    if backend == "fused":
        native.library_path()  # FileNotFoundError naming where it looked
    return backend


def _resolve_backend(backend: str) -> str:
    """:func:`_check_backend`, once per name and value of ``KLDIV_ONNX_LIBRARY`` (reading the
    environment touches no file; a failure is not remembered, so a library built later is
    found). The native library's path is resolved here and nowhere on the call path."""
    return _resolved_backend(backend, os.environ.get(native.ENV_VAR))


@functools.cache
def _resolved_backend(backend: str, library_override: str | None) -> str:
    """``library_override`` is only part of the cache key: ``native`` reads the variable."""
    del library_override
    return _check_backend(backend)


def _check_threads(threads: object) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(
            f"threads must be None or an int >= 0 (0: onnxruntime's default), got {threads!r}"
        )
    return int(threads)


@functools.lru_cache(maxsize=256)
def _model_bytes(variant: Variant, dtype: str, ranks: tuple[int, int], body: bool = True) -> bytes:
    """A model for inputs of the given ranks, every dim symbolic (onnx needs known ranks).
    ``body=False`` (the fused backend, whose session registers the native kernel): the node
    alone, so that a first call neither builds the function body (onnxscript) nor has
    onnxruntime load it."""
    shapes = [[f"{side}{i}" for i in range(rank)] for side, rank in zip("xt", ranks, strict=True)]
    model = variant_model(variant, dtype, *shapes, body=body)
    return model.SerializeToString()


# ----------------------------------------------------------------------------- prepared calls


def _always() -> bool:
    return True


def _purger(*caches: dict[Any, Any]) -> Callable[[Any], None]:
    """A function that removes the prepared calls whose session is gone from ``caches``; it
    is also the weak-reference callback of each session they were built over, so that a
    session the session cache drops is let go of at once, not on some later call."""

    def purge(_ref: Any) -> None:
        for cache in caches:
            for key, prepared in list(cache.items()):  # one step: safe against other threads
                if prepared.alive() is None and cache.get(key) is prepared:
                    cache.pop(key, None)

    return purge


class _NumpyCall:
    """The float64 reference (backend 'numpy'), its arguments checked once."""

    __slots__ = ("alive", "dtype", "variant")

    def __init__(self, variant: Variant, dtype: np.dtype) -> None:
        self.alive: Callable[[], Any] = _always
        self.dtype = dtype
        self.variant = variant

    def __call__(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        v = self.variant
        return np.asarray(_reference(x, t, v.reduction, v.log_target).astype(x.dtype))


class _RunCall:
    """A session run through :func:`kldiv_onnx.runtime.run`, for empty arrays (nothing to
    bind); used once, not cached."""

    __slots__ = ("sess",)

    def __init__(self, sess: ort.InferenceSession) -> None:
        self.sess = sess

    def __call__(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return runtime.run(self.sess, {"input": x, "target": t})[0]


class _SessionCall:
    """One session with an ``IOBinding`` set up for one (dtype, input shape, target shape).

    Small inputs are copied into buffers bound once (an ``OrtValue`` over each); large ones
    are bound by address (again only when the address changed). A small output is written by
    onnxruntime into a buffer bound once and copied out; a large one into a new array bound
    by address. Only the session's Python wrapper is held weakly (``alive``), so that
    dropping it from the session cache retires this object (``on_drop`` then removes it from
    its cache, and with it the native session it kept alive for its binding).

    Not thread-safe: every thread has its own (see :class:`KLDivLoss`).
    """

    __slots__ = (
        "_binding",
        "_bound",
        "_device",
        "_keep",
        "_names",
        "_oname",
        "_oshape",
        "_otype",
        "_out",
        "_run",
        "_tbuf",
        "_tname",
        "_xbuf",
        "_xname",
        "alive",
        "dtype",
    )

    def __init__(
        self,
        sess: ort.InferenceSession,
        x: np.ndarray,
        t: np.ndarray,
        out_shape: tuple[int, ...],
        on_drop: Callable[[Any], None] | None = None,
    ) -> None:
        self.alive = weakref.ref(sess, on_drop)
        self.dtype = x.dtype
        binding = sess.io_binding()
        self._names = [i.name for i in sess.get_inputs()]
        self._xname, self._tname = self._names
        self._bound = [0, 0, 0]  # the address bound by _bind to input 0, 1 and output 2
        self._oname = sess.get_outputs()[0].name
        self._otype = ONNX_TYPES[dtype_name(x.dtype)]
        self._device = cpu_device()
        self._keep: list[Any] = [binding]  # what the binding points at, and the binding
        self._xbuf = self._bound_buffer(binding, self._xname, x)
        self._tbuf = self._bound_buffer(binding, self._tname, t)
        self._oshape = out_shape
        self._out: np.ndarray | None = None
        if x.itemsize * int(np.prod(out_shape, dtype=np.int64)) <= COPY_BYTES:
            self._out = np.empty(out_shape, x.dtype)
            value = to_ortvalue(self._out)
            binding.bind_ortvalue_output(self._oname, value)
            self._keep.append(value)
        self._run, self._binding = bound_run(sess, binding)  # no per-call Python checks

    def _bound_buffer(self, binding: Any, name: str, like: np.ndarray) -> np.ndarray | None:
        if like.nbytes > COPY_BYTES:
            return None
        buffer = np.empty(like.shape, like.dtype)
        value = to_ortvalue(buffer)
        binding.bind_ortvalue_input(name, value)
        self._keep.append(value)
        return buffer

    def __call__(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        # x and t stay referenced until the run ends, so the addresses bound stay valid.
        if self._xbuf is not None:
            self._xbuf[...] = x
        else:
            x = self._bind(0, x)
        if self._tbuf is not None:
            self._tbuf[...] = t
        else:
            t = self._bind(1, t)
        out = self._out
        if out is not None:
            self._run()
            return out.copy()
        out = self._bind(2, np.empty(self._oshape, self.dtype))
        self._run()
        return out

    def _bind(self, slot: int, array: np.ndarray) -> np.ndarray:
        """Bind ``array`` (made C-contiguous) by address as input 0, 1 or output 2, unless that
        address is what the slot holds already: the binding records only (address, shape,
        type), and shape and type are fixed here, so the same address is the same binding
        (an array at the address of a freed one included). Returns the array bound."""
        array = np.ascontiguousarray(array)
        address = array.ctypes.data
        if self._bound[slot] != address:
            if slot == 2:
                bind, name, shape = self._binding.bind_output, self._oname, self._oshape
            else:
                bind, name, shape = self._binding.bind_input, self._names[slot], array.shape
            self._bound[slot] = 0  # a failed bind must not leave the old address recorded
            bind(name, self._device, self._otype, shape, address)
            self._bound[slot] = address
        return array


# ----------------------------------------------------------------------------- public API


class KLDivLoss:
    """``mindspore.mint.nn.KLDivLoss`` on ONNX: ``KLDivLoss(reduction)(input, target)``.

    ``backend``: ``'fused'`` (native kernel in onnxruntime), ``'composite'`` (the ONNX
    function body in onnxruntime), ``'numpy'`` (the float64 reference) or ``'auto'`` (fused
    when the native library is built, else composite; decided at the first call and kept
    for the process). ``threads``: onnxruntime's intra-op threads for the session (None or
    0: onnxruntime's default, one per core).

    Calls are cheap after the first one for given dtypes and shapes (see the module
    docstring); an instance may be called from several threads at once. Its configuration
    (``reduction``, ``log_target``, ``backend``, ``threads``) is read-only: what was prepared
    for it would otherwise go on running the old one.
    """

    def __init__(
        self,
        reduction: str = "mean",
        log_target: bool = False,
        *,
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        self._variant = Variant(reduction, log_target)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._backend = backend
        self._threads = _check_threads(threads)
        self._local = threading.local()

    @property
    def reduction(self) -> str:
        return self._variant.reduction

    @property
    def log_target(self) -> bool:
        return self._variant.log_target

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def threads(self) -> int | None:
        return self._threads

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_local"]  # prepared calls hold sessions: rebuilt where unpickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __call__(self, input: Any, target: Any) -> np.ndarray:
        if type(input) is not np.ndarray or type(target) is not np.ndarray:
            input, target = _check_arrays(input, target)  # tensors: numpy views
        try:
            prepared = self._local.calls.get((input.shape, target.shape))
        except AttributeError:
            prepared = None
        # a prepared call exists only for validated (dtype, shapes): equal dtypes suffice
        if prepared is not None and prepared.alive() is not None:
            dtype = prepared.dtype
            if (input.dtype is dtype or input.dtype == dtype) and (
                target.dtype is dtype or target.dtype == dtype
            ):
                return prepared(input, target)
        prepared, x, t = self._prepare(input, target)
        return prepared(x, t)

    def _prepare(
        self, input: Any, target: Any
    ) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], np.ndarray, np.ndarray]:
        """The slow path: resolve the backend, validate and convert the arguments, and find
        or build (and cache) the prepared call for them."""
        backend = _resolve_backend(self._backend)
        x, t, shape = _validate(input, target)
        if backend != "numpy" and (x.size == 0 or t.size == 0):
            return _RunCall(self._session(backend, x, t)), x, t  # nothing to bind: not kept
        local = self._local
        try:
            calls, by_dtype = local.calls, local.by_dtype
        except AttributeError:
            calls, by_dtype = local.calls, local.by_dtype = {}, {}
            local.purge = _purger(calls, by_dtype)
        key = (x.shape, t.shape)
        prepared = by_dtype.get((x.dtype, key))
        if prepared is None or prepared.alive() is None:
            local.purge(None)
            if len(by_dtype) >= CALLS_PER_THREAD:
                calls.clear()
                by_dtype.clear()
            prepared = self._build(backend, x, t, shape, local.purge)
            by_dtype[(x.dtype, key)] = prepared
        calls[key] = prepared
        return prepared, x, t

    def _session(self, backend: str, x: np.ndarray, t: np.ndarray) -> ort.InferenceSession:
        return runtime.session(
            _model_bytes(self._variant, dtype_name(x.dtype), (x.ndim, t.ndim), backend != "fused"),
            providers=["CPUExecutionProvider"],
            fused=backend == "fused",
            threads=self._threads,
        )

    def _build(
        self,
        backend: str,
        x: np.ndarray,
        t: np.ndarray,
        shape: tuple[int, ...],
        on_drop: Callable[[Any], None],
    ) -> _NumpyCall | _SessionCall:
        if backend == "numpy":
            return _NumpyCall(self._variant, x.dtype)
        out_shape = shape if self.reduction == "none" else ()
        return _SessionCall(self._session(backend, x, t), x, t, out_shape, on_drop)

    def __repr__(self) -> str:
        threads = "" if self.threads is None else f", threads={self.threads}"
        return (
            f"KLDivLoss(reduction={self.reduction!r}, log_target={self.log_target}, "
            f"backend={self.backend!r}{threads})"
        )


@functools.lru_cache(maxsize=64, typed=True)
def _loss_for(reduction: str, log_target: bool, backend: str, threads: int | None) -> KLDivLoss:
    return KLDivLoss(reduction, log_target, backend=backend, threads=threads)


def kl_div(
    input: Any,
    target: Any,
    reduction: str = "mean",
    log_target: bool = False,
    *,
    backend: str = "auto",
    threads: int | None = None,
) -> np.ndarray:
    """KLDivLoss of ``input`` (log-probabilities) and ``target``, in the input's dtype.

    ``backend``: ``'fused'`` (native kernel in onnxruntime), ``'composite'`` (the ONNX
    function body in onnxruntime), ``'numpy'`` (the float64 reference) or ``'auto'`` (fused
    when the native library is built, else composite). ``threads``: onnxruntime's intra-op
    threads (None or 0: its default). Returns a numpy array, 0-d for a reduction.

    The same as ``KLDivLoss(reduction, log_target, backend=..., threads=...)(input, target)``,
    with one such object kept per set of arguments.
    """
    try:
        loss = _loss_for(reduction, log_target, backend, threads)
    except TypeError:  # an unhashable argument: let KLDivLoss say what is wrong with it
        loss = KLDivLoss(reduction, log_target, backend=backend, threads=threads)
    return loss(input, target)
