"""``kldiv-onnx bench``: every KLDivLoss backend measured side by side in one run.

Backends (each skipped with a note when it cannot run here, never faked):

- ``fused``: onnxruntime running the one-node model with the native library registered;
- ``composite``: onnxruntime running the same model's function body (no library);
- ``torch-export``: onnxruntime running ``F.kl_div`` as ``torch.onnx.export(dynamo=True)``
  writes it (needs torch; a model onnxruntime cannot load, e.g. bfloat16, is reported as
  failed with onnxruntime's message);
- ``torch-eager``: PyTorch eager ``F.kl_div`` (``torch.set_num_threads`` = the thread count);
- ``numpy-read``: numpy reading both inputs once (an integer sum over their raw bytes, split
  over the same number of threads): the memory-bound reference line.

What is timed: one call with the inputs already in place. onnxruntime runs through an IOBinding
whose inputs are pre-bound ``OrtValue``s over the numpy buffers (no copy, no dtype conversion)
and whose output is bound to the CPU device, so onnxruntime allocates it in each run as torch
does; torch gets zero-copy ``from_numpy`` tensors. Per point: warm-up runs, then repeats until
both a minimum count and a time budget are reached; the median, quartiles and min/max are kept.

Peak extra memory (``peak_extra_bytes``): the kernel's peak resident set size (``VmHWM`` in
``/proc/self/status``) during one call, minus the resident size just before it, after
resetting the peak with ``/proc/self/clear_refs`` (Linux >= 4.0). So it counts every page the
call touches beyond what was resident — its output, its temporaries, onnxruntime's and torch's
allocations alike — and not the inputs. Just before, glibc's ``malloc_trim(0)`` returns freed
heap pages to the kernel, so pages an earlier call freed are counted again when this call
reuses them. onnxruntime is measured on a twin session with its CPU arena off (warmed up by one
call on the first row): with the arena on, the intermediates of earlier calls stay resident
and a call shows no growth. Where the kernel cannot do this, the field is ``None``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import hashlib
import importlib.metadata
import io
import itertools
import json
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "kldiv-onnx-bench/1"
BACKENDS = ("fused", "composite", "torch-export", "torch-eager", "numpy-read")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
BENCH_REDUCTIONS = ("none", "batchmean")
FULL_SIZES = tuple(2**k for k in range(10, 27, 2))
QUICK_SIZES = (2**10, 2**14)
CLASSES = 1024
"""Elements per row: a size of n elements is benchmarked as an (n // 1024, 1024) tensor."""

TARGET = {"size": 2**24, "dtype": "float32", "reduction": "batchmean"}
"""The point at which issue 4's speed targets are stated (with the most threads measured)."""
TARGET_SPEEDUP = 10.0
TARGET_READ_RATIO = 2.0
HALF_SLACK = 1.05
"""float16/bfloat16 count as 'no slower per element' up to 5 % above float32 (run-to-run noise)."""


@dataclass
class Config:
    """What to measure. ``budget_s``: timed seconds per point after ``min_repeats``."""

    sizes: tuple[int, ...] = FULL_SIZES
    dtypes: tuple[str, ...] = DTYPE_NAMES
    reductions: tuple[str, ...] = BENCH_REDUCTIONS
    threads: tuple[int, ...] = (1, 2)
    backends: tuple[str, ...] = BACKENDS
    warmup: int = 1
    min_repeats: int = 5
    max_repeats: int = 200
    budget_s: float = 0.25
    memory: bool = True
    seed: int = 0

    def validate(self) -> None:
        """``ValueError`` naming the first bad field."""
        from ._contract import REDUCTIONS

        checks: list[tuple[str, Iterable[Any], Callable[[Any], bool]]] = [
            ("sizes", self.sizes, lambda v: isinstance(v, int) and v >= 1),
            ("dtypes", self.dtypes, lambda v: v in DTYPE_NAMES),
            ("reductions", self.reductions, lambda v: v in REDUCTIONS),
            ("threads", self.threads, lambda v: isinstance(v, int) and v >= 1),
            ("backends", self.backends, lambda v: v in BACKENDS),
        ]
        for name, values, ok in checks:
            values = tuple(values)
            if not values:
                raise ValueError(f"{name}: give at least one")
            for value in values:
                if not ok(value) or isinstance(value, bool):
                    raise ValueError(f"{name}: bad value {value!r}")
        if self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ValueError("need warmup >= 0 and 1 <= min_repeats <= max_repeats")


def quick_config() -> Config:
    """The CI set: two small sizes, every dtype, reduction, thread count and backend."""
    return Config(sizes=QUICK_SIZES, min_repeats=3, max_repeats=20, budget_s=0.01)


# ----------------------------------------------------------------------------- memory


def _status_kib(*keys: str) -> dict[str, int]:
    found: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0])
    return found


class PeakMemory:
    """Peak RSS growth of a call: ``VmHWM`` after it minus ``VmRSS`` before it, after
    resetting ``VmHWM`` through ``/proc/self/clear_refs``. Before each measurement glibc's
    ``malloc_trim(0)`` hands freed heap pages back to the kernel, so memory an earlier call
    freed and this call reuses is counted again. ``available`` is False off Linux or where the
    reset is refused."""

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        try:
            self._reset()
            if "VmHWM" not in _status_kib("VmHWM"):
                raise KeyError("VmHWM not in /proc/self/status")
        except (OSError, KeyError) as exc:
            self.reason = f"peak RSS reset unavailable: {exc}"
            return
        self._trim: Callable[[int], int] | None = None
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError) as exc:  # not glibc: reused heap pages go unseen
            self.reason = f"malloc_trim unavailable ({exc}); peaks may read low"
        self.available = True

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")

    def measure(self, call: Callable[[], Any]) -> int | None:
        """Bytes of resident memory ``call`` added at its peak (its result is dropped inside)."""
        if not self.available:
            return None
        if self._trim is not None:
            self._trim(0)
        self._reset()
        before = _status_kib("VmRSS")["VmRSS"]
        call()
        peak = _status_kib("VmHWM")["VmHWM"]
        return max(peak - before, 0) * 1024


# ----------------------------------------------------------------------------- machine


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, SIMD level, cores, memory, load, versions and the native library used."""
    from . import __version__, native
    from .doctor import simd_level

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next(
            (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model
        )
    memory = None
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        memory = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal"))
    library: dict[str, Any] | None = None
    if native.available():
        path = Path(native.library_path())
        stat = path.stat()
        library = {
            "path": str(path),
            "modified": datetime.datetime.fromtimestamp(
                stat.st_mtime, datetime.timezone.utc
            ).isoformat(timespec="seconds"),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    versions = {"python": platform.python_version(), "kldiv-onnx": __version__}
    for package in ("numpy", "onnxruntime", "onnx", "onnxscript", "ml_dtypes", "torch"):
        versions[package] = _version(package)
    return {
        "cpu_model": model,
        "simd": simd_level(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "native_library": library,
    }


# ----------------------------------------------------------------------------- backends


def _import_torch() -> tuple[Any, str]:
    """``(torch, '')``, or ``(None, why)`` when it cannot be imported."""
    try:
        import torch
    except ImportError as exc:  # also: sys.modules['torch'] = None in tests
        return None, f"torch not installed ({exc})"
    return torch, ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def _ort_session(model: bytes, threads: int, library: str | None, arena: bool) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = arena
    so.log_severity_level = 3
    if library is not None:
        so.register_custom_ops_library(library)
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def _ortvalue(array: np.ndarray) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto

    from ._contract import DTYPES

    if array.dtype == DTYPES["bfloat16"]:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            array.view(np.uint16), TensorProto.BFLOAT16
        )
    return ort.OrtValue.ortvalue_from_numpy(array)


class _OrtCall:
    """One session with pre-bound inputs; ``__call__`` runs it once, the output bound to the
    CPU device (allocated by onnxruntime in the run) and released after."""

    def __init__(self, sess: Any, x: np.ndarray, t: np.ndarray) -> None:
        names = [i.name for i in sess.get_inputs()]
        self.sess = sess
        self.values = [_ortvalue(x), _ortvalue(t)]  # kept alive: the binding points at them
        self.binding = sess.io_binding()
        for name, value in zip(names, self.values, strict=True):
            self.binding.bind_ortvalue_input(name, value)
        self.output = sess.get_outputs()[0].name

    def prepare(self) -> None:
        self.binding.clear_binding_outputs()
        self.binding.bind_output(self.output, "cpu")

    def __call__(self) -> None:
        self.sess.run_with_iobinding(self.binding)

    def once(self) -> None:
        self.prepare()
        self()
        self.binding.clear_binding_outputs()


def torch_export_model(reduction: str, dtype: str) -> bytes:
    """``F.kl_div(input, target, reduction)`` as ``torch.onnx.export(dynamo=True)`` writes it,
    with both dims of both inputs dynamic."""
    import torch
    import torch.nn.functional as F

    class Loss(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.kl_div(x, t, reduction=reduction, log_target=False)

    tdtype = getattr(torch, dtype)
    x = torch.log_softmax(torch.randn(4, 8), dim=-1).to(tdtype)
    t = torch.softmax(torch.randn(4, 8), dim=-1).to(tdtype)
    batch, classes = torch.export.Dim("batch"), torch.export.Dim("classes")
    dims = ({0: batch, 1: classes}, {0: batch, 1: classes})
    quiet = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the exporter's chatter (torchvision ops missing, ...)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(quiet),
            contextlib.redirect_stderr(quiet),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(Loss().eval(), (x, t), dynamo=True, dynamic_shapes=dims)
    finally:
        logging.disable(previous)
    return program.model_proto.SerializeToString()


def _torch_tensor(torch: Any, array: np.ndarray) -> Any:
    from ._contract import DTYPES

    if array.dtype == DTYPES["bfloat16"]:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _raw_view(array: np.ndarray) -> np.ndarray:
    """The array's bytes as the widest unsigned integers that tile them."""
    raw = array.reshape(-1).view(np.uint8)
    for width in (np.uint64, np.uint32, np.uint16):
        if raw.size % np.dtype(width).itemsize == 0:
            return raw.view(width)
    return raw


READ_CHUNK_BYTES = 1 << 20
"""numpy-read hands a thread no less than this (as onnxruntime and torch keep small work on one
thread): below it, dispatch to a pool would cost more than the read."""


class _ReadBoth:
    """numpy summing the raw bytes of both inputs (wrapping integer sums: vectorised, no
    temporaries), each input split into up to ``threads`` chunks of at least
    :data:`READ_CHUNK_BYTES` run on a thread pool (numpy releases the GIL in reductions)."""

    def __init__(self, x: np.ndarray, t: np.ndarray, pool: ThreadPoolExecutor | None) -> None:
        threads = pool._max_workers if pool is not None else 1
        parts = max(1, min(threads, x.nbytes // READ_CHUNK_BYTES))
        self.pool = pool if parts > 1 else None
        self.chunks = [c for a in (x, t) for c in np.array_split(_raw_view(a), parts)]

    def __call__(self) -> None:
        if self.pool is None:
            for chunk in self.chunks:
                np.add.reduce(chunk)
        else:
            for future in [self.pool.submit(np.add.reduce, c) for c in self.chunks]:
                future.result()


# ----------------------------------------------------------------------------- timing


def _time(call: Callable[[], Any], prepare: Callable[[], Any] | None, cfg: Config) -> list[float]:
    """Warm-up, then repeats until ``min_repeats`` and the time budget (or ``max_repeats``)."""
    for _ in range(cfg.warmup):
        if prepare is not None:
            prepare()
        call()
    times: list[float] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        spent = 0.0
        while len(times) < cfg.max_repeats and (
            len(times) < cfg.min_repeats or spent < cfg.budget_s
        ):
            if prepare is not None:
                prepare()
            start = time.perf_counter_ns()
            call()
            elapsed = (time.perf_counter_ns() - start) * 1e-9
            times.append(elapsed)
            spent += elapsed
    finally:
        if was_enabled:
            gc.enable()
    return times


@dataclass
class Point:
    """One measurement: a backend at a (size, dtype, reduction, threads)."""

    backend: str
    dtype: str
    reduction: str
    threads: int
    size: int
    shape: list[int]
    input_bytes: int
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    repeats: int = 0
    median_s: float | None = None
    q1_s: float | None = None
    q3_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    ns_per_element: float | None = None
    input_gb_per_s: float | None = None
    peak_extra_bytes: int | None = None

    def fill(self, times: Sequence[float]) -> None:
        """Statistics of the repeat times (seconds)."""
        arr = np.asarray(times, dtype=np.float64)
        self.repeats = int(arr.size)
        self.median_s = float(np.median(arr))
        self.q1_s, self.q3_s = (float(v) for v in np.percentile(arr, [25, 75]))
        self.min_s, self.max_s = float(arr.min()), float(arr.max())
        self.ns_per_element = self.median_s * 1e9 / self.size
        self.input_gb_per_s = self.input_bytes / self.median_s / 1e9


@dataclass
class _Progress:
    """tqdm on stderr when installed, else a counter (in place on a terminal, a line every
    10 s otherwise)."""

    total: int
    bar: Any = None
    done: int = 0
    enabled: bool = True
    _last: float = field(default=0.0)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=self.total, unit="pt", desc="bench", file=sys.stderr)

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)
            return
        now = time.monotonic()
        if sys.stderr.isatty():
            if now - self._last > 0.1 or self.done == self.total:
                print(f"\rbench {self.done}/{self.total} {label:<48}", end="", file=sys.stderr)
                self._last = now
        elif now - self._last > 10 or self.done == self.total:
            print(f"bench {self.done}/{self.total} {label}", file=sys.stderr)
            self._last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and sys.stderr.isatty():
            print(file=sys.stderr)


def shape_of(size: int) -> tuple[int, int]:
    """(rows, classes) of a size: rows of 1024 elements where it divides, else one row."""
    return (size // CLASSES, CLASSES) if size % CLASSES == 0 else (1, size)


def _inputs(size: int, dtypes: Sequence[str], seed: int) -> dict[str, tuple[np.ndarray, ...]]:
    from ._contract import DTYPES
    from .demo import sample

    x, t = sample(shape_of(size), np.dtype(np.float32), seed)
    return {
        d: (x, t) if d == "float32" else (x.astype(DTYPES[d]), t.astype(DTYPES[d])) for d in dtypes
    }


class _Failed(RuntimeError):
    """A backend that cannot run a point; the message is the reason, already formatted."""


class _Runner:
    """State of one benchmark run: what is available, models and sessions' failures, pools."""

    def __init__(self, cfg: Config) -> None:
        from . import native

        self.cfg = cfg
        self.memory = PeakMemory() if cfg.memory else None
        self.notes: list[str] = []
        if self.memory is not None and self.memory.reason:
            self.notes.append(self.memory.reason)
        self.skipped: dict[str, str] = {}
        self.library: str | None = None
        if "fused" in cfg.backends:
            try:
                self.library = native.library_path()
            except FileNotFoundError as exc:
                self.skipped["fused"] = f"native library not available: {exc}"
        self.torch: Any = None
        if {"torch-export", "torch-eager"} & set(cfg.backends):
            self.torch, why = _import_torch()
            if self.torch is None:
                for name in ("torch-export", "torch-eager"):
                    if name in cfg.backends:
                        self.skipped[name] = why
        self.torch_threads = self.torch.get_num_threads() if self.torch is not None else None
        self.models: dict[tuple[str, str, str], bytes] = {}
        self.errors: dict[tuple, str] = {}  # (backend, reduction, dtype[, threads]) → why
        self.pools = {n: ThreadPoolExecutor(n) for n in cfg.threads if n > 1}

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()
        if self.torch_threads is not None:
            self.torch.set_num_threads(self.torch_threads)

    def model(self, backend: str, reduction: str, dtype: str) -> bytes:
        """The ONNX model of an onnxruntime backend, built once; a failure is remembered."""
        from .export import build_model

        key = (backend, reduction, dtype)
        if key in self.errors:
            raise _Failed(self.errors[key])
        if key not in self.models:
            try:
                if backend == "torch-export":
                    self.models[key] = torch_export_model(reduction, dtype)
                else:
                    proto = build_model(reduction, False, dtype, ["batch", "classes"])
                    self.models[key] = proto.SerializeToString()
            except Exception as exc:
                self.errors[key] = f"export failed: {_first_line(exc)}"
                raise _Failed(self.errors[key]) from exc
        return self.models[key]

    def sessions(self, point: Point) -> tuple[Any, Any]:
        """(timed session with the arena, arena-off twin for memory or None), built per point
        so that no arena outlives its point; a load failure is remembered."""
        key = (point.backend, point.reduction, point.dtype, point.threads)
        if key in self.errors:
            raise _Failed(self.errors[key])
        model = self.model(point.backend, point.reduction, point.dtype)
        library = self.library if point.backend == "fused" else None
        try:
            sess = _ort_session(model, point.threads, library, arena=True)
            twin = None
            if self.memory is not None:
                twin = _ort_session(model, point.threads, library, arena=False)
        except Exception as exc:
            self.errors[key] = f"session: {_first_line(exc)}"
            raise _Failed(self.errors[key]) from exc
        return sess, twin

    def measure(self, point: Point, x: np.ndarray, t: np.ndarray) -> None:
        """Fill ``point`` (times, memory); raises on a backend failure."""
        cfg, memory = self.cfg, self.memory
        if point.backend == "numpy-read":
            call: Callable[[], Any] = _ReadBoth(x, t, self.pools.get(point.threads))
            point.fill(_time(call, None, cfg))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(call)
            return
        if point.backend == "torch-eager":
            import torch.nn.functional as F

            self.torch.set_num_threads(point.threads)
            xt, tt = _torch_tensor(self.torch, x), _torch_tensor(self.torch, t)

            def eager() -> None:
                F.kl_div(xt, tt, reduction=point.reduction, log_target=False)

            point.fill(_time(eager, None, cfg))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(eager)
            return
        sess, twin = self.sessions(point)  # fused, composite, torch-export
        timed = _OrtCall(sess, x, t)
        point.fill(_time(timed, timed.prepare, cfg))
        timed.binding.clear_binding_outputs()
        if twin is not None and memory is not None:
            _OrtCall(twin, x[:1], t[:1]).once()  # the twin's one-time set-up, on one row
            other = _OrtCall(twin, x, t)
            point.peak_extra_bytes = memory.measure(other.once)

    def points(self, size: int, progress: _Progress) -> list[Point]:
        """Every point of one size, backends side by side for each (dtype, reduction,
        threads)."""
        cfg = self.cfg
        data = _inputs(size, cfg.dtypes, cfg.seed)
        out: list[Point] = []
        combos = itertools.product(cfg.dtypes, cfg.reductions, cfg.threads, cfg.backends)
        for dtype, reduction, threads, backend in combos:
            x, t = data[dtype]
            point = Point(
                backend, dtype, reduction, threads, size, list(x.shape), x.nbytes + t.nbytes
            )
            if backend in self.skipped:
                point.status, point.error = "skipped", self.skipped[backend]
            else:
                try:
                    self.measure(point, x, t)
                except Exception as exc:
                    point.status = "failed"
                    point.error = str(exc) if isinstance(exc, _Failed) else _first_line(exc)
            out.append(point)
            progress.step(f"{backend} {dtype} {reduction} t{threads} {_fmt_size(size)}")
        return out


def run_benchmark(cfg: Config | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure every point of ``cfg``; return the JSON-ready result (machine, config, notes,
    skipped backends, points, summary). Backends that cannot run here are listed under
    ``skipped`` and their points carry ``status='skipped'``; a backend that fails at a point
    (e.g. onnxruntime cannot load its model) carries ``status='failed'`` and the error."""
    cfg = cfg or Config()
    cfg.validate()
    started = time.time()
    machine = machine_info()
    runner = _Runner(cfg)
    points: list[Point] = []
    per_size = len(cfg.dtypes) * len(cfg.reductions) * len(cfg.threads) * len(cfg.backends)
    bar = _Progress(len(cfg.sizes) * per_size, enabled=progress)
    try:
        for size in cfg.sizes:
            points += runner.points(size, bar)
            gc.collect()
    finally:
        bar.close()
        runner.close()
    machine["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "config": asdict(cfg),
        "method": {
            "time": "median of repeated calls after warm-up; inputs pre-bound (onnxruntime "
            "IOBinding over the numpy buffers, torch.from_numpy), output allocated by the call",
            "memory": "peak RSS growth during one call (VmHWM after a clear_refs reset minus "
            "VmRSS before); onnxruntime on a twin session with the CPU arena off",
            "shape": f"(size // {CLASSES}, {CLASSES})",
            "numpy-read": "np.add.reduce over each input's bytes viewed as uint64, one chunk "
            f"per thread (chunks of at least {READ_CHUNK_BYTES} bytes)",
        },
        "skipped": [{"backend": b, "reason": r} for b, r in runner.skipped.items()],
        "notes": runner.notes,
        "points": [asdict(p) for p in points],
    }
    result["summary"] = summarize(result)
    return result


# ----------------------------------------------------------------------------- summary


def _index(points: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {(p["backend"], p["dtype"], p["reduction"], p["threads"], p["size"]): p for p in points}


def _ratio(num: dict[str, Any] | None, den: dict[str, Any] | None) -> float | None:
    if not num or not den or num["status"] != "ok" or den["status"] != "ok":
        return None
    return num["median_s"] / den["median_s"]


def ratios(result: dict[str, Any], dtype: str, reduction: str, threads: int, size: int) -> dict:
    """torch-export / fused, torch-eager / fused (speed-ups) and fused / numpy-read at a point."""
    idx = _index(result["points"])
    fused = idx.get(("fused", dtype, reduction, threads, size))
    return {
        "export_over_fused": _ratio(
            idx.get(("torch-export", dtype, reduction, threads, size)), fused
        ),
        "eager_over_fused": _ratio(
            idx.get(("torch-eager", dtype, reduction, threads, size)), fused
        ),
        "composite_over_fused": _ratio(
            idx.get(("composite", dtype, reduction, threads, size)), fused
        ),
        "fused_over_read": _ratio(fused, idx.get(("numpy-read", dtype, reduction, threads, size))),
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 4's targets at its point (or the nearest measured one), each with pass/fail."""
    cfg = result["config"]
    size = TARGET["size"] if TARGET["size"] in cfg["sizes"] else max(cfg["sizes"])
    threads = max(cfg["threads"])
    dtype = TARGET["dtype"] if TARGET["dtype"] in cfg["dtypes"] else cfg["dtypes"][0]
    reduction = (
        TARGET["reduction"] if TARGET["reduction"] in cfg["reductions"] else cfg["reductions"][-1]
    )
    idx = _index(result["points"])
    r = ratios(result, dtype, reduction, threads, size)
    checks: dict[str, Any] = {
        "fused_vs_torch_export": _check(r["export_over_fused"], TARGET_SPEEDUP, ">="),
        "fused_vs_torch_eager": _check(r["eager_over_fused"], TARGET_SPEEDUP, ">="),
        "fused_vs_read_both": _check(r["fused_over_read"], TARGET_READ_RATIO, "<="),
    }
    base = idx.get(("fused", dtype, reduction, threads, size))
    f32 = idx.get(("fused", "float32", reduction, threads, size))
    for half in ("float16", "bfloat16"):
        other = idx.get(("fused", half, reduction, threads, size))
        value = None
        if f32 and other and f32["status"] == other["status"] == "ok":
            value = other["ns_per_element"] / f32["ns_per_element"]
        checks[f"{half}_per_element_vs_float32"] = _check(value, HALF_SLACK, "<=")
    fused = base if base and base["status"] == "ok" else None
    peak = fused["peak_extra_bytes"] if fused else None
    bound = max(4 << 20, 0.01 * fused["input_bytes"]) if fused else None
    checks["fused_peak_extra_bytes"] = {
        "value": peak,
        "target": bound,
        "op": "<=",
        "met": None if peak is None else peak <= bound,
    }
    return {
        "at": {"size": size, "dtype": dtype, "reduction": reduction, "threads": threads},
        "exact_target_point": size == TARGET["size"] and threads == 2,
        "ratios": r,
        "targets": checks,
    }


def _check(value: float | None, target: float, op: str) -> dict[str, Any]:
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": target, "op": op, "met": met}


# ----------------------------------------------------------------------------- output


def _fmt_ns(p: dict[str, Any] | None) -> str:
    if p is None:
        return ""
    if p["status"] == "skipped":
        return "-"
    if p["status"] == "failed":
        return "failed"
    return f"{p['ns_per_element']:.3g}"


def _fmt_x(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}x"


def _fmt_size(size: int) -> str:
    exp = size.bit_length() - 1
    return f"2**{exp}" if size == 1 << exp else str(size)


def _fmt_load(value: Sequence[float] | None) -> str:
    return "n/a" if not value else " / ".join(f"{v:.2f}" for v in value)


def _fmt_mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The terminal table: median ns/element per backend and the ratios that matter."""
    cfg = result["config"]
    idx = _index(result["points"])
    backends = cfg["backends"]
    head = ["size", *backends, "export/fused", "eager/fused", "fused/read", "fused MiB"]
    widths = [7, *[max(len(b), 9) for b in backends], 12, 11, 10, 9]
    lines = []
    for dtype in cfg["dtypes"]:
        for reduction in cfg["reductions"]:
            for threads in cfg["threads"]:
                lines.append("")
                lines.append(
                    f"{dtype}, reduction={reduction}, {threads} thread(s) - median ns/element "
                    "(ratios: time over time)"
                )
                lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
                for size in cfg["sizes"]:
                    r = ratios(result, dtype, reduction, threads, size)
                    fused = idx.get(("fused", dtype, reduction, threads, size))
                    cells = [
                        _fmt_size(size),
                        *[_fmt_ns(idx.get((b, dtype, reduction, threads, size))) for b in backends],
                        _fmt_x(r["export_over_fused"]),
                        _fmt_x(r["eager_over_fused"]),
                        _fmt_x(r["fused_over_read"]),
                        _fmt_mib(fused["peak_extra_bytes"] if fused else None),
                    ]
                    lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    lines.append("")
    lines.append(format_memory(result))
    lines.append("")
    lines.append(format_summary(result))
    for item in result["skipped"]:
        lines.append(f"skipped {item['backend']}: {item['reason']}")
    failures = sorted(
        {
            (p["backend"], p["dtype"], p["error"])
            for p in result["points"]
            if p["status"] == "failed"
        }
    )
    for backend, dtype, error in failures:
        lines.append(f"failed {backend} {dtype}: {error}")
    lines.extend(f"note: {n}" for n in result["notes"])
    return "\n".join(lines).lstrip("\n")


def format_memory(result: dict[str, Any]) -> str:
    """Peak extra MiB per backend at the largest size, most threads."""
    cfg = result["config"]
    size, threads = max(cfg["sizes"]), max(cfg["threads"])
    idx = _index(result["points"])
    lines = [f"peak extra memory (MiB) at {_fmt_size(size)} elements, {threads} thread(s):"]
    head = ["dtype", "reduction", "inputs", *cfg["backends"]]
    lines.append("  ".join(h.rjust(12) for h in head))
    for dtype in cfg["dtypes"]:
        for reduction in cfg["reductions"]:
            row = [idx.get((b, dtype, reduction, threads, size)) for b in cfg["backends"]]
            inputs = next((p["input_bytes"] for p in row if p), None)
            cells = [dtype, reduction, _fmt_mib(inputs)]
            cells += [
                _fmt_mib(p["peak_extra_bytes"]) if p and p["status"] == "ok" else "-" for p in row
            ]
            lines.append("  ".join(c.rjust(12) for c in cells))
    return "\n".join(lines)


_TARGET_LABELS = {
    "fused_vs_torch_export": "torch export on ORT / fused (time)",
    "fused_vs_torch_eager": "torch eager / fused (time)",
    "fused_vs_read_both": "fused / numpy read-both (time)",
    "float16_per_element_vs_float32": "fused float16 / float32 per element",
    "bfloat16_per_element_vs_float32": "fused bfloat16 / float32 per element",
    "fused_peak_extra_bytes": "fused peak extra memory (MiB)",
}


def target_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, measured, goal, verdict) for each of issue 4's targets."""
    rows = []
    for key, label in _TARGET_LABELS.items():
        c = result["summary"]["targets"][key]
        if key == "fused_peak_extra_bytes":
            value = _fmt_mib(c["value"]) or "n/a"
            goal = f"{c['op']} {_fmt_mib(c['target']) or 'n/a'}"
        else:
            value = "n/a" if c["value"] is None else f"{c['value']:.3g}"
            goal = f"{c['op']} {c['target']:g}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[c["met"]]
        rows.append((label, value, goal, verdict))
    return rows


def format_summary(result: dict[str, Any]) -> str:
    """Issue 4's targets, measured."""
    s = result["summary"]
    at = s["at"]
    lines = [
        f"targets at {_fmt_size(at['size'])} {at['dtype']} {at['reduction']}, "
        f"{at['threads']} thread(s)"
        + ("" if s["exact_target_point"] else " (not the target point 2**24, 2 threads)")
        + ":"
    ]
    for label, value, goal, verdict in target_rows(result):
        lines.append(f"  {label:<38} {value:>10}  target {goal:<10} {verdict}")
    return "\n".join(lines)


def markdown(result: dict[str, Any], command: str) -> str:
    """A README "Performance" section from one run: machine, command, the target point's
    table and the ratios."""
    m = result["machine"]
    s = result["summary"]
    at = s["at"]
    v = m["versions"]
    idx = _index(result["points"])
    out = [
        "## Performance",
        "",
        f"Measured with `{command}` ({result['duration_s']:.0f} s) on {m['cpu_model']} "
        f"({m['cores']} cores, {m['simd']}), onnxruntime {v['onnxruntime']}, torch {v['torch']}, "
        f"numpy {v['numpy']}, Python {v['python']}. Median of repeated calls after warm-up, "
        "inputs already in place (onnxruntime through an IOBinding over the numpy buffers), "
        "output allocated by the call. Peak extra memory: the call's peak resident-set growth "
        "(`VmHWM` after a `clear_refs` reset), onnxruntime with its CPU arena off. "
        f"Load average {_fmt_load(m.get('loadavg'))} at the start, "
        f"{_fmt_load(m.get('loadavg_end'))} at the end.",
        "",
        f"{_fmt_size(at['size'])} elements ({at['size'] // CLASSES} x {CLASSES}), "
        f"`{at['reduction']}`, {at['threads']} intra-op threads:",
        "",
        "| backend | dtype | median ms | ns/element | input GB/s | peak extra MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for dtype in result["config"]["dtypes"]:
        for backend in result["config"]["backends"]:
            p = idx.get((backend, dtype, at["reduction"], at["threads"], at["size"]))
            if p is None:
                continue
            if p["status"] != "ok":
                why = "skipped" if p["status"] == "skipped" else "failed"
                out.append(f"| {backend} | {dtype} | {why} | | | |")
                continue
            out.append(
                f"| {backend} | {dtype} | {p['median_s'] * 1e3:.3g} | {p['ns_per_element']:.3f} "
                f"| {p['input_gb_per_s']:.1f} | {_fmt_mib(p['peak_extra_bytes'])} |"
            )
    out += [
        "",
        f"Across sizes ({at['dtype']}, `{at['reduction']}`, {at['threads']} threads; ratios of "
        "median times):",
        "",
        "| elements | fused GB/s | torch export on ORT / fused | torch eager / fused "
        "| fused / numpy read-both |",
        "|---|---:|---:|---:|---:|",
    ]
    for size in result["config"]["sizes"]:
        p = idx.get(("fused", at["dtype"], at["reduction"], at["threads"], size))
        r = ratios(result, at["dtype"], at["reduction"], at["threads"], size)
        gbs = f"{p['input_gb_per_s']:.1f}" if p and p["status"] == "ok" else "-"
        out.append(
            f"| {_fmt_size(size)} | {gbs} | {_fmt_x(r['export_over_fused']) or '-'} "
            f"| {_fmt_x(r['eager_over_fused']) or '-'} | {_fmt_x(r['fused_over_read']) or '-'} |"
        )
    out += [
        "",
        "Against issue 4's targets:",
        "",
        "| target | measured | goal | |",
        "|---|---:|---|---|",
    ]
    out += [
        f"| {label} | {value} | {goal} | {verdict} |"
        for label, value, goal, verdict in target_rows(result)
    ]
    errors = sorted(
        {
            (p["backend"], p["dtype"], p["error"])
            for p in result["points"]
            if p["status"] == "failed"
        }
    )
    if errors:
        out.append("")
    for backend, dtype, error in errors:
        out.append(f"- {backend} {dtype} fails: {error}")
    out += [
        "",
        "Every size, dtype, reduction and thread count is in the JSON (`--json`); the plot "
        "(`--plot`) shows input throughput against size per backend and dtype.",
        "",
    ]
    return "\n".join(out)


def plot(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Input GB/s against size, one line per backend (solid: most threads, dashed: one
    thread), a row per reduction and a column per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    idx = _index(result["points"])
    rows, cols = len(cfg["reductions"]), len(cfg["dtypes"])
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, sharex=True, sharey=True
    )
    colors = dict(zip(BACKENDS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    most = max(cfg["threads"])
    for i, reduction in enumerate(cfg["reductions"]):
        for j, dtype in enumerate(cfg["dtypes"]):
            ax = axes[i][j]
            for backend in cfg["backends"]:
                for threads in sorted(set(cfg["threads"]) & {1, most}, reverse=True):
                    pts = [idx.get((backend, dtype, reduction, threads, s)) for s in cfg["sizes"]]
                    xy = [
                        (p["size"], p["input_gb_per_s"]) for p in pts if p and p["status"] == "ok"
                    ]
                    if not xy:
                        continue
                    xs, ys = zip(*xy, strict=True)
                    ax.plot(
                        xs,
                        ys,
                        marker="o" if threads == most else None,
                        markersize=3,
                        linestyle="-" if threads == most else "--",
                        alpha=1.0 if threads == most else 0.5,
                        color=colors.get(backend),
                        label=f"{backend} ({threads}t)",
                    )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{dtype}, {reduction}")
            ax.grid(True, which="both", alpha=0.3)
            if i == rows - 1:
                ax.set_xlabel("elements")
            if j == 0:
                ax.set_ylabel("input GB/s")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    m = result["machine"]
    fig.suptitle(f"KLDivLoss: input throughput ({m['cpu_model']}, {m['cores']} cores)")
    fig.tight_layout(rect=(0, 0.05 + 0.03 * (len(labels) // 5), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from exc


def _log2_sizes(text: str) -> tuple[int, ...]:
    """'10,16,24' or '10:26:2' (inclusive, step) → sizes 2**k."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            lo, hi, step = [*parts, 1] if len(parts) == 2 else parts
            exps = list(range(lo, hi + 1, step))
        else:
            exps = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected '10,16,24' or '10:26:2', got {text!r}") from exc
    if not exps or any(not 0 <= e <= 40 for e in exps):
        raise argparse.ArgumentTypeError(f"log2 sizes must lie in [0, 40], got {text!r}")
    return tuple(1 << e for e in exps)


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _cmd_bench(args: argparse.Namespace) -> int:
    from .cli import UsageError

    cfg = quick_config() if args.quick else Config()
    for name in ("sizes", "dtypes", "reductions", "threads", "backends"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    for name in ("min_repeats", "budget_s"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    cfg.max_repeats = max(cfg.max_repeats, cfg.min_repeats)
    if args.no_memory:
        cfg.memory = False
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for target in (args.json, args.plot, args.markdown):
        if target and not Path(target).resolve().parent.is_dir():
            raise UsageError(f"no folder for {target}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"--plot needs matplotlib ({exc})") from exc

    result = run_benchmark(cfg, progress=not args.no_progress)
    command = _command_line(args)
    result["command"] = command
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}: {len(result['points'])} points")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result, command), encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``kldiv-onnx bench``."""
    p = subparsers.add_parser(
        "bench", help="every backend side by side: time, throughput, memory (issue 7)"
    )
    p.add_argument("--quick", action="store_true", help="the small CI set (seconds)")
    p.add_argument(
        "--log2-sizes",
        dest="sizes",
        type=_log2_sizes,
        default=None,
        help="sizes as powers of two: '10,16,24' or '10:26:2' (default 10:26:2; quick 10,14)",
    )
    p.add_argument("--dtypes", type=_str_list, default=None, help="default: all three")
    p.add_argument("--reductions", type=_str_list, default=None, help="default: none,batchmean")
    p.add_argument("--threads", type=_int_list, default=None, help="intra-op threads; default 1,2")
    p.add_argument(
        "--backends", type=_str_list, default=None, help=f"default: {','.join(BACKENDS)}"
    )
    p.add_argument("--min-repeats", type=int, default=None, help="timed calls per point, at least")
    p.add_argument(
        "--budget-s", type=float, default=None, help="timed seconds per point beyond the minimum"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", metavar="FILE", help="write every point and the machine as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write the throughput plot (matplotlib)")
    p.add_argument("--markdown", metavar="FILE.md", help="write a README Performance section")
    p.set_defaults(func=_cmd_bench)


def _command_line(args: argparse.Namespace) -> str:
    """The options given, spelled back (for the JSON and the README snippet)."""
    from . import native

    words = ["kldiv-onnx", "bench"]
    env = getattr(native, "ENV_VAR", "KLDIV_ONNX_LIBRARY")
    if os.environ.get(env):  # where the library came from is part of how the figures were made
        words.insert(0, f"{env}={os.environ[env]}")
    if args.quick:
        words.append("--quick")
    if args.sizes is not None:
        words += ["--log2-sizes", ",".join(str(s.bit_length() - 1) for s in args.sizes)]
    for name in ("dtypes", "reductions", "threads", "backends"):
        value = getattr(args, name)
        if value is not None:
            words += [f"--{name}", ",".join(str(v) for v in value)]
    for name in ("min_repeats", "budget_s"):
        value = getattr(args, name)
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    for name in ("no_memory", "no_progress"):
        if getattr(args, name):
            words.append(f"--{name.replace('_', '-')}")
    for name in ("json", "plot", "markdown"):
        value = getattr(args, name)
        if value:
            words += [f"--{name}", str(value)]
    return " ".join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kldiv_onnx.bench ...`` (same as ``kldiv-onnx bench ...``)."""
    from .cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
