"""Running the benchmark: machine info, the peak-memory probe, each backend's call, timing
and the runner behind :func:`run_benchmark` (what is timed and how memory is measured: see the
package docstring)."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import hashlib
import importlib.metadata
import io
import itertools
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import api, native
from .._contract import DTYPES
from .._version import __version__
from ..arrays import to_ortvalue, to_torch
from ..export import build_model
from ..reference import sample
from ..runtime import session_options
from .config import CLASSES, OVERHEAD_SHAPES, OVERHEAD_TARGETS, SCHEMA, Config, shape_of
from .kernel_log import kernel_vs_log
from .report import fmt_size, summarize

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
        "simd": native.simd_level(),
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

    so = session_options(threads, library, arena=arena)
    so.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


class _OrtCall:
    """One session with pre-bound inputs; ``__call__`` runs it once, the output bound to the
    CPU device (allocated by onnxruntime in the run) and released after. The run goes to the
    native session and binding directly: the Python wrapper's per-run checks (WebGPU graph
    capture) cost a few microseconds, which would be counted against the session at small
    sizes."""

    def __init__(self, sess: Any, x: np.ndarray, t: np.ndarray) -> None:
        names = [i.name for i in sess.get_inputs()]
        self.sess = sess
        self.values = [to_ortvalue(x), to_ortvalue(t)]  # kept alive: the binding points at them
        self.binding = sess.io_binding()
        for name, value in zip(names, self.values, strict=True):
            self.binding.bind_ortvalue_input(name, value)
        self.output = sess.get_outputs()[0].name
        self._run = sess._sess.run_with_iobinding
        self._native = self.binding._iobinding

    def prepare(self) -> None:
        self.binding.clear_binding_outputs()
        self.binding.bind_output(self.output, "cpu")

    def __call__(self) -> None:
        self._run(self._native, None)

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


_TORCH_BACKENDS = ("torch-export", "torch-eager", "torch-read")


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


def _inputs(size: int, dtypes: Sequence[str], seed: int) -> dict[str, tuple[np.ndarray, ...]]:
    x, t = sample(shape_of(size), np.dtype(np.float32), seed)
    return {
        d: (x, t) if d == "float32" else (x.astype(DTYPES[d]), t.astype(DTYPES[d])) for d in dtypes
    }


class _Failed(RuntimeError):
    """A backend that cannot run a point; the message is the reason, already formatted."""


class _Runner:
    """State of one benchmark run: what is available, models and sessions' failures, pools."""

    def __init__(self, cfg: Config) -> None:
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
        if set(_TORCH_BACKENDS) & set(cfg.backends):
            self.torch, why = _import_torch()
            if self.torch is None:
                for name in _TORCH_BACKENDS:
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
        if point.backend == "torch-read":
            self.torch.set_num_threads(point.threads)
            xt, tt = to_torch(x), to_torch(t)

            def torch_read() -> None:  # the other read bound: torch's sums of both inputs
                xt.sum()
                tt.sum()

            point.fill(_time(torch_read, None, cfg))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(torch_read)
            return
        if point.backend == "api":
            loss = api.KLDivLoss(point.reduction, threads=point.threads)

            def user_call() -> None:
                loss(x, t)

            point.fill(_time(user_call, None, cfg))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(user_call)
            return
        if point.backend == "torch-eager":
            import torch.nn.functional as F

            self.torch.set_num_threads(point.threads)
            xt, tt = to_torch(x), to_torch(t)

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
            progress.step(f"{backend} {dtype} {reduction} t{threads} {fmt_size(size)}")
        return out


# ----------------------------------------------------------------------------- call overhead

OVERHEAD_BATCH_S = 0.5e-3
"""Each contestant of the call-overhead section is timed over batches of calls lasting about
this long (a (2, 2) call takes a few microseconds, close to the clock's own cost)."""


def _per_call(call: Callable[[], Any], inner: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(inner):
        call()
    return (time.perf_counter_ns() - start) * 1e-9 / inner


def _overhead_contestants(
    runner: _Runner, x: np.ndarray, t: np.ndarray
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """The calls side by side at one shape (float32 batchmean, 1 thread), and why any is
    missing."""
    loss = api.KLDivLoss("batchmean", threads=1)
    calls: dict[str, Callable[[], Any]] = {
        "api": lambda: loss(x, t),
        "kl_div": lambda: api.kl_div(x, t, "batchmean", threads=1),
    }
    missing: dict[str, str] = {}
    if runner.torch is not None:
        import torch.nn.functional as F

        xt, tt = to_torch(x), to_torch(t)
        calls["torch-eager"] = lambda: F.kl_div(xt, tt, reduction="batchmean")
    else:
        missing["torch-eager"] = runner.skipped.get("torch-eager", "torch not installed")
    library = runner.library
    if library is None and native.available():
        library = native.library_path()
    backend = "fused" if library is not None else "composite"
    try:
        sess = _ort_session(runner.model(backend, "batchmean", "float32"), 1, library, True)
        bare = _OrtCall(sess, x, t)
        bare.prepare()  # the output stays bound: onnxruntime reuses it from the second run
        calls["session"] = bare
    except Exception as exc:
        missing["session"] = _first_line(exc)
    return calls, missing


def call_overhead(runner: _Runner) -> dict[str, Any]:
    """The "call overhead" section: ``KLDivLoss('batchmean', threads=1)(x, t)`` ("api") and
    ``kl_div(x, t, 'batchmean', threads=1)`` against torch eager ``F.kl_div`` (1 thread) and the
    bare pre-bound session, float32, at each of :data:`OVERHEAD_SHAPES`. Rounds alternate the
    contestants (in a new random order each), each timed over a batch of calls; the medians over
    the rounds are kept, and the API's time over torch eager's is checked against
    :data:`OVERHEAD_TARGETS`."""
    cfg = runner.cfg
    if runner.torch is not None:
        runner.torch.set_num_threads(1)
    section: dict[str, Any] = {
        "dtype": "float32",
        "reduction": "batchmean",
        "threads": 1,
        "rounds": cfg.overhead_rounds,
        "api_backend": None,
        "rows": [],
    }
    with contextlib.suppress(Exception):
        section["api_backend"] = api._resolve_backend("auto")
    rng = np.random.default_rng(cfg.seed)
    for shape in OVERHEAD_SHAPES:
        x, t = sample(shape, np.dtype(np.float32), cfg.seed)
        calls, missing = _overhead_contestants(runner, x, t)
        inner: dict[str, int] = {}
        for name, call in list(calls.items()):
            try:
                for _ in range(20):  # warm-up: sessions, prepared calls, caches
                    call()
                single = _per_call(call, 20)
            except Exception as exc:
                missing[name] = _first_line(exc)
                del calls[name]
                continue
            inner[name] = max(1, min(10_000, int(OVERHEAD_BATCH_S / max(single, 1e-9))))
        times: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(cfg.overhead_rounds):
                for i in rng.permutation(len(names)):  # no contestant always follows another
                    times[names[i]].append(_per_call(calls[names[i]], inner[names[i]]))
        finally:
            if was_enabled:
                gc.enable()
        us = {name: float(np.median(v)) * 1e6 for name, v in times.items()}
        eager = us.get("torch-eager")
        row: dict[str, Any] = {
            "shape": list(shape),
            "us": {name: us.get(name) for name in ("api", "kl_div", "torch-eager", "session")},
            "missing": missing,
            "target": OVERHEAD_TARGETS[shape],
        }
        for name in ("api", "kl_div"):
            row[f"{name}_over_eager"] = (
                us[name] / eager if eager and us.get(name) is not None else None
            )
        worst = [row[k] for k in ("api_over_eager", "kl_div_over_eager")]
        row["met"] = None if None in worst else max(worst) <= row["target"]
        section["rows"].append(row)
    return section


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
    bar = _Progress(len(cfg.sizes) * per_size if cfg.points else 0, enabled=progress)
    overhead: dict[str, Any] | None = None
    kernel_log: dict[str, Any] | None = None
    try:
        if cfg.kernel_log:  # subprocesses: before this process's pools and sessions exist
            kernel_log = kernel_vs_log(cfg.kernel_log_rounds)
        if cfg.overhead and "api" in cfg.backends:
            overhead = call_overhead(runner)
        for size in cfg.sizes if cfg.points else ():
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
            "torch-read": "x.sum(); t.sum() on torch.from_numpy views, torch.set_num_threads(n)",
            "api": "KLDivLoss(reduction, threads=n)(x, t) on the numpy inputs, as a user calls "
            "it (backend 'auto'; its session from the package's cache, CPU arena on)",
            "call_overhead": "float32 batchmean, 1 thread; rounds alternate the contestants, "
            f"each timed over a batch of calls of about {OVERHEAD_BATCH_S * 1e3:g} ms; "
            "median over the rounds",
        },
        "skipped": [{"backend": b, "reason": r} for b, r in runner.skipped.items()],
        "notes": runner.notes,
        "points": [asdict(p) for p in points],
        "call_overhead": overhead,
        "kernel_log": kernel_log,
    }
    result["summary"] = summarize(result)
    return result
