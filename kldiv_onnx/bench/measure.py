"""Running the benchmark: each backend timed at every point, side by side, and the runner
behind :func:`run_benchmark` (what is timed and how memory is measured: see the package
docstring; how the timings are taken and what their figures mean: :mod:`.timer`)."""

from __future__ import annotations

import datetime
import gc
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import api, native
from .._contract import DTYPES
from ..arrays import to_torch
from ..export import build_model
from ..reference import sample
from .backends import (
    READ_CHUNK_BYTES,
    TORCH_BACKENDS,
    OrtCall,
    ReadBoth,
    first_line,
    import_torch,
    ort_session,
    torch_export_model,
)
from .config import CLASSES, SCHEMA, Config, fmt_size, shape_of
from .kernel_log import kernel_vs_log
from .machine import PeakMemory, machine_info
from .overhead import OVERHEAD_BATCH_S, call_overhead
from .timer import Stats, repeat
from .verdicts import summarize


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
        """The figures of the repeat times (seconds; :class:`~.timer.Stats`); throughput from
        the median."""
        stats = Stats.of(times)
        self.repeats = stats.repeats
        self.median_s, self.q1_s, self.q3_s = stats.median_s, stats.q1_s, stats.q3_s
        self.min_s, self.max_s = stats.min_s, stats.max_s
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
        if set(TORCH_BACKENDS) & set(cfg.backends):
            self.torch, why = import_torch()
            if self.torch is None:
                for name in TORCH_BACKENDS:
                    if name in cfg.backends:
                        self.skipped[name] = why
        self.torch_threads = self.torch.get_num_threads() if self.torch is not None else None
        self.models: dict[tuple[str, str, str], bytes] = {}
        self.errors: dict[tuple, str] = {}  # (backend, reduction, dtype[, threads]) → why
        self.pools = {n: ThreadPoolExecutor(n) for n in cfg.threads if n > 1}

    def close(self) -> None:
        """Shut the pools down and give torch its thread count back."""
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
                self.errors[key] = f"export failed: {first_line(exc)}"
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
            sess = ort_session(model, point.threads, library, arena=True)
            twin = None
            if self.memory is not None:
                twin = ort_session(model, point.threads, library, arena=False)
        except Exception as exc:
            self.errors[key] = f"session: {first_line(exc)}"
            raise _Failed(self.errors[key]) from exc
        return sess, twin

    def time(
        self, call: Callable[[], Any], prepare: Callable[[], Any] | None = None
    ) -> list[float]:
        """Seconds of each repeat of ``call`` at one point (:func:`~.timer.repeat` with the
        configuration's warm-up, repeats and budget)."""
        cfg = self.cfg
        return repeat(
            call,
            warmup=cfg.warmup,
            min_repeats=cfg.min_repeats,
            max_repeats=cfg.max_repeats,
            budget_s=cfg.budget_s,
            prepare=prepare,
        )

    def measure(self, point: Point, x: np.ndarray, t: np.ndarray) -> None:
        """Fill ``point`` (times, memory); raises on a backend failure."""
        memory = self.memory
        if point.backend == "numpy-read":
            call: Callable[[], Any] = ReadBoth(x, t, self.pools.get(point.threads))
            point.fill(self.time(call))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(call)
            return
        if point.backend == "torch-read":
            self.torch.set_num_threads(point.threads)
            xt, tt = to_torch(x), to_torch(t)

            def torch_read() -> None:  # the other read bound: torch's sums of both inputs
                xt.sum()
                tt.sum()

            point.fill(self.time(torch_read))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(torch_read)
            return
        if point.backend == "api":
            loss = api.KLDivLoss(point.reduction, threads=point.threads)

            def user_call() -> None:
                loss(x, t)

            point.fill(self.time(user_call))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(user_call)
            return
        if point.backend == "torch-eager":
            import torch.nn.functional as F

            self.torch.set_num_threads(point.threads)
            xt, tt = to_torch(x), to_torch(t)

            def eager() -> None:
                F.kl_div(xt, tt, reduction=point.reduction, log_target=False)

            point.fill(self.time(eager))
            if memory is not None:
                point.peak_extra_bytes = memory.measure(eager)
            return
        sess, twin = self.sessions(point)  # fused, composite, torch-export
        timed = OrtCall(sess, x, t)
        point.fill(self.time(timed, timed.prepare))
        timed.binding.clear_binding_outputs()
        if twin is not None and memory is not None:
            OrtCall(twin, x[:1], t[:1]).once()  # the twin's one-time set-up, on one row
            other = OrtCall(twin, x, t)
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
                    point.error = str(exc) if isinstance(exc, _Failed) else first_line(exc)
            out.append(point)
            progress.step(f"{backend} {dtype} {reduction} t{threads} {fmt_size(size)}")
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
    bar = _Progress(len(cfg.sizes) * per_size if cfg.points else 0, enabled=progress)
    overhead: dict[str, Any] | None = None
    kernel_log: dict[str, Any] | None = None
    try:
        if cfg.kernel_log:  # subprocesses: before this process's pools and sessions exist
            kernel_log = kernel_vs_log(cfg.kernel_log_rounds)
        if cfg.overhead and "api" in cfg.backends:
            overhead = call_overhead(
                cfg,
                lambda backend: runner.model(backend, "batchmean", "float32"),
                runner.torch,
                runner.library,
                runner.skipped.get("torch-eager", "torch not installed"),
            )
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
