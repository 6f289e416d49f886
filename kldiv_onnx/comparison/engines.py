"""The engines that run a comparison's batches: ``local`` (this process, cached sessions) and
``ray`` (Ray Data: one task per batch of the plan, run by a pool of actors that each build the
sessions once).

Both run the same :class:`BatchRunner` on the same batches (the data set's plan), and the
statistics are computed afterwards from the per-sample values in sample order, so both give the
same figures.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import mmap
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .. import native, runtime
from .. import providers as _providers
from ..data_files import cast_feed
from ..errors import ort_message
from ..runtimes import OpenVINO
from .data import Dataset
from .models import KLStage, check_probs

ENGINES = ("local", "ray")
TIMERS = ("read_s", "base_s", "candidate_s", "kl_s")


@dataclass
class Job:
    """Everything a worker needs, in picklable form."""

    data: str
    rows: int
    batch_size: int
    base: bytes
    candidate: bytes
    kl: bytes
    kind: str
    temperature: float
    outputs: tuple[str, str]
    feed_types: dict[str, np.dtype]
    providers: tuple[Any, Any]
    threads: int | None = None
    layout: Any = None
    """The data set's :class:`.data.Layout` (Ray: a reference to it in the object store)."""
    verbose: bool = False
    """Show Ray's own log lines."""
    library: str | None = None
    """The native library the KL runs on (the driver's), or None for numpy's float64
    (:func:`.models.kl_rows`): every process of a comparison computes the KL the same way."""
    cast: str = "no"
    """How data of another dtype is fed (:data:`kldiv_onnx.data_files.CASTS`)."""
    ray_timeout: float = 30.0
    """Seconds to wait for the cluster ``RAY_ADDRESS`` names to answer (:func:`check_cluster`)."""


OPENVINO = "OpenVINO"
"""The provider name that runs a model on OpenVINO's CPU device instead of onnxruntime."""


class ModelRunner:
    """One compared model on its providers: an onnxruntime session through the session
    policy, or OpenVINO's CPU device (the ``kldiv_onnx`` ops through its registration)."""

    def __init__(self, model: bytes, providers: Any, threads: int | None) -> None:
        self.outputs = [o.name for o in onnx.load_from_string(model).graph.output]
        if providers == [OPENVINO]:
            adapter = OpenVINO()
            reason = adapter.unavailable()
            if reason is not None:
                raise ValueError(f"provider {OPENVINO}: {reason}")
            self.sess = None
            self._run = adapter.load(onnx.load_from_string(model))
            self.providers = [OPENVINO]
        else:
            self.sess = runtime.session(model, providers=providers, threads=threads)
            self.providers = self.sess.get_providers()
            # numpy feeds onnxruntime directly but for bfloat16 (runtime.run's IOBinding): the
            # plain run costs less per batch
            types = [v.type for v in (*self.sess.get_inputs(), *self.sess.get_outputs())]
            self._plain = "tensor(bfloat16)" not in types

    def run(self, feeds: Mapping[str, np.ndarray], output: str) -> np.ndarray:
        if self.sess is not None:
            if self._plain:
                return self.sess.run([output], dict(feeds))[0]
            return runtime.run(self.sess, feeds, [output])[0]
        return self._run(feeds)[self.outputs.index(output)]


def _model_runner(model: bytes, providers: Any, threads: int | None, role: str) -> ModelRunner:
    """A :class:`ModelRunner`, or a ``ValueError`` naming ``role`` where the runtime refuses
    the model (an op it lacks, mismatched types)."""
    try:
        return ModelRunner(model, providers, threads)
    except ValueError:
        raise
    except Exception as exc:  # the runtime's own error types
        runtime_name = OPENVINO if providers == [OPENVINO] else "onnxruntime"
        raise ValueError(
            f"the {role} model is refused by {runtime_name}: {ort_message(exc)}"
        ) from exc


def resolved_providers(providers: Any) -> list[str]:
    """The providers a model's session would run on (OpenVINO as it is)."""
    return [OPENVINO] if providers == [OPENVINO] else _providers.resolve(providers)[0]


class BatchRunner:
    """The sessions of a comparison (both models and the KL stage), and one batch through
    them."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.base = _model_runner(job.base, job.providers[0], job.threads, "base")
        self.candidate = _model_runner(job.candidate, job.providers[1], job.threads, "candidate")
        self.kl = KLStage(job.kl, job.kind, job.temperature, job.library, job.threads)
        self.checked = False

    def __call__(
        self, feeds: Mapping[str, np.ndarray], timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-sample KL (float64) and top-1 agreement of one batch of feeds, and the samples
        per data row (the product of the output's middle axes)."""
        job = self.job
        feeds = {
            name: cast_feed(name, feeds[name], t, job.cast) for name, t in job.feed_types.items()
        }
        t0 = time.perf_counter()
        base = _run_model(self.base, feeds, job.outputs[0], "base")
        t1 = time.perf_counter()
        candidate = _run_model(self.candidate, feeds, job.outputs[1], "candidate")
        t2 = time.perf_counter()
        fed = len(next(iter(feeds.values()))) if feeds else None
        for role, name, out in (
            ("base", job.outputs[0], base),
            ("candidate", job.outputs[1], candidate),
        ):
            _check_rows(role, name, out, fed)
        if base.shape != candidate.shape:
            raise ValueError(
                f"the models' outputs differ in shape: base {job.outputs[0]!r} {base.shape}, "
                f"candidate {job.outputs[1]!r} {candidate.shape}"
            )
        if base.ndim < 2:
            raise ValueError(
                f"output {job.outputs[0]!r} has shape {base.shape}: it needs a batch axis and "
                "a class axis (the last)"
            )
        classes = base.shape[-1]
        if classes == 0:
            raise ValueError(
                f"output {job.outputs[0]!r} has shape {base.shape}: its class axis (the last) is "
                "empty"
            )
        per_row = int(np.prod(base.shape[1:-1], dtype=np.int64))
        base = base.reshape(-1, classes).astype(np.float32, copy=False)
        candidate = candidate.reshape(-1, classes).astype(np.float32, copy=False)
        if job.kind == "probs" and not self.checked:  # the first batch tells logits apart
            self.checked = True
            check_probs(base, candidate, job.outputs)
        kl, agree = self.kl(base, candidate)
        t3 = time.perf_counter()
        timings["base_s"] += t1 - t0
        timings["candidate_s"] += t2 - t1
        timings["kl_s"] += t3 - t2
        return kl, agree, per_row


def _run_model(
    model: ModelRunner, feeds: Mapping[str, np.ndarray], output: str, role: str
) -> np.ndarray:
    try:
        return model.run(feeds, output)
    except Exception as exc:  # the runtime's errors: the data does not fit the model
        text = str(exc).strip().splitlines()
        raise ValueError(
            f"the {role} model failed on the data: {text[0] if text else exc!r}"
        ) from exc


def _check_rows(role: str, output: str, out: np.ndarray, fed: int | None) -> None:
    """A compared output holds one row per data row fed: its first axis is the batch."""
    if fed is not None and out.ndim >= 1 and out.shape[0] != fed:
        raise ValueError(
            f"the {role} model's output {output!r} returned {out.shape[0]} rows for {fed} rows "
            "fed: the compared output's first axis must be the batch (one row per input row)"
        )


def _user_error(exc: BaseException) -> str | None:
    """The message of the ``ValueError`` a Ray worker raised: Ray Data re-raises it as a
    ``UserCodeException`` that keeps only the text of its traceback."""
    match = re.search(r"^(?:\w+\.)*ValueError: (.+)$", str(exc), re.MULTILINE)
    return match.group(1).strip() if match else None


class Results:
    """Per-sample values gathered in sample order, the count of agreeing non-NaN samples, the
    summed timings and the start-up (the seconds until the sessions were built and the first
    batch could run).

    The values (float64, 8 bytes a sample: the exact quantiles need them all) are written to an
    unlinked temporary file as they come, not kept in this process's memory: the kernel's page
    cache holds them while memory allows, so a run's resident memory does not grow with its
    sample count. :attr:`values` maps the file read-only once the run is over; the statistics
    read it in chunks (:mod:`.report`)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.per_row = 0
        self.agree = 0
        self.timings = dict.fromkeys(TIMERS, 0.0)
        self.startup_s = 0.0
        self._file: Any = None

    def add(self, first_row: int, kl: np.ndarray, agree: np.ndarray, per_row: int) -> None:
        """The samples of the batch that starts at data row ``first_row``."""
        self.add_at(first_row * per_row, kl, agree, per_row)

    def add_at(self, first: int, kl: np.ndarray, agree: np.ndarray, per_row: int) -> None:
        """Consecutive samples from sample ``first`` on."""
        if self._file is None:
            self.per_row = per_row
            try:
                # open for the whole run, closed by close()
                self._file = tempfile.TemporaryFile(prefix="kldiv-onnx-values-")  # noqa: SIM115
                os.ftruncate(self._file.fileno(), 8 * self.rows * per_row)
            except OSError as exc:
                raise _store_error(exc) from None
        elif per_row != self.per_row:
            raise ValueError(
                f"the output's shape changed between batches: {per_row} samples per row, "
                f"{self.per_row} before"
            )
        self._write(first, kl)
        self.agree += int(np.count_nonzero(agree & ~np.isnan(kl)))

    def _write(self, first: int, kl: np.ndarray) -> None:
        data = np.ascontiguousarray(kl, dtype=np.float64).data
        try:
            if os.pwrite(self._file.fileno(), data, 8 * first) != data.nbytes:
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            raise _store_error(exc) from None

    @property
    def values(self) -> np.ndarray | None:
        """Every sample's KL in sample order, a read-only map of the file (None before the
        first batch)."""
        if self._file is None:
            return None
        size = 8 * self.rows * self.per_row
        if size == 0:  # an output with an empty middle axis
            return np.empty(0)
        view = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ)
        return np.frombuffer(view, dtype=np.float64)

    def close(self) -> None:
        """Close the file (a map of it made by :attr:`values` stays valid)."""
        if self._file is not None:
            self._file.close()


def _store_error(exc: OSError) -> ValueError:
    return ValueError(
        f"cannot keep the per-sample values in {tempfile.gettempdir()!r} (TMPDIR): "
        f"{exc.strerror or exc}"
    )


PROGRESS_SECONDS_VAR = "KLDIV_ONNX_PROGRESS_SECONDS"
"""Seconds between progress lines when stderr is not a terminal (default 5)."""


class Progress:
    """Progress on stderr: a bar redrawn in place on a terminal; elsewhere (a CI log, a file) a
    plain line every few seconds (:data:`PROGRESS_SECONDS_VAR`) and one at the end (none for a
    run shorter than the interval). The rate and
    the ETA count from :meth:`begin` (the sessions built), not from the start."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.terminal = enabled and sys.stderr.isatty()
        self.interval = 0.2
        if enabled and not self.terminal:
            try:
                self.interval = float(os.environ.get(PROGRESS_SECONDS_VAR, "5"))
            except ValueError:
                self.interval = 5.0
        self.start = time.perf_counter()
        self.began: float | None = None
        self.done_at_begin = 0
        self.last = self.start
        self.done = 0
        self.printed = False

    def begin(self) -> None:
        """The sessions are built: the rate and ETA count from here (called once)."""
        if self.began is None:
            self.began = time.perf_counter()
            self.done_at_begin = self.done

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        now = time.perf_counter()
        # the bar is drawn at the end too; off a terminal a run shorter than the interval
        # prints nothing
        due = now - self.last >= self.interval or (self.terminal and self.done >= self.total)
        if not due:
            return
        self.last = now
        self.printed = True
        frac = self.done / self.total if self.total else 1.0
        rate = self._rate(now)
        eta = "-:--" if rate is None else _clock((self.total - self.done) / rate if rate else 0)
        if self.terminal:
            bar = "#" * int(30 * frac)
            sys.stderr.write(
                f"\rcompare [{bar:<30}] {self.done}/{self.total} rows {100 * frac:5.1f}% ETA {eta} "
            )
        else:
            speed = "-" if rate is None else f"{rate:.0f}"
            sys.stderr.write(
                f"compare: {self.done}/{self.total} rows ({100 * frac:.1f} %), {speed} rows/s, "
                f"ETA {eta}\n"
            )
        sys.stderr.flush()

    def _rate(self, now: float) -> float | None:
        """Rows/s since :meth:`begin` (None before it, or before any row after it)."""
        if self.began is None or now <= self.began or self.done <= self.done_at_begin:
            return None
        return (self.done - self.done_at_begin) / (now - self.began)

    def close(self, finished: bool = True) -> None:
        """Clear the bar; off a terminal, a closing line after the progress lines of a run that
        ``finished`` (a failed one ends with its error line alone)."""
        if not self.enabled or not self.printed:
            return
        if self.terminal:
            sys.stderr.write("\r" + " " * 79 + "\r")
        elif finished:
            wall = time.perf_counter() - self.start
            sys.stderr.write(f"compare: {self.done}/{self.total} rows in {wall:.1f} s\n")
        sys.stderr.flush()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


# ---------------------------------------------------------------------------------------------
# local


def run_local(job: Job, dataset: Dataset, progress: Progress) -> tuple[Results, list[list[str]]]:
    """Every batch of the plan in this process; the results and each model's providers."""
    t0 = time.perf_counter()
    runner = BatchRunner(job)
    results = Results(job.rows)
    results.startup_s = time.perf_counter() - t0
    progress.begin()
    names = list(job.feed_types)
    row = 0
    timings = results.timings
    for pieces in dataset.plan(job.batch_size, job.rows):
        t0 = time.perf_counter()
        feeds = dataset.read(pieces, names)
        timings["read_s"] += time.perf_counter() - t0
        kl, agree, per_row = runner(feeds, timings)
        results.add(row, kl, agree, per_row)
        count = kl.size // per_row
        row += count
        progress.update(count)
    return results, [runner.base.providers, runner.candidate.providers]


# ---------------------------------------------------------------------------------------------
# Ray

BACKEND_LOG_VAR = "RAY_BACKEND_LOG_LEVEL"
BACKEND_LOG_NOTE = "Set ray log level from environment variable"
"""What Ray's C++ side says on stderr whenever :data:`BACKEND_LOG_VAR` is set."""


@contextlib.contextmanager
def _without_line(text: str) -> Iterator[None]:
    """Everything written to this process's stderr (file descriptor 2, C++ included) inside the
    block is written out again after it, except lines that contain ``text``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(True) if text.encode() not in line]
            if kept:
                os.write(2, b"".join(kept))


TASK_BATCHES = 256
"""At most this many batches in one Ray task (one block of results): large enough that Ray's
cost per block is small against the work, small enough to spread the batches over the actors
and to report progress."""


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            "the ray engine needs Ray Data, which is not installed: pip install 'kldiv-onnx[ray]'"
        ) from exc
    return ray


RAY_CLIENT_PORT = 10001
"""The port of a ``ray://`` address that names none: Ray's client server's default."""


def check_cluster(address: str | None, timeout: float) -> None:
    """``ValueError`` (one line) unless the cluster at ``address`` (``RAY_ADDRESS``: ``ray://host
    [:port]`` or ``host:port``; others, such as ``auto``, are Ray's to resolve) answers within
    ``timeout`` seconds: its port accepts a connection and, for ``ray://``, speaks gRPC. Ray's
    own connect retries an unreachable ``ray://`` address for about 45 s, then raises a
    traceback; ``ImportError`` where ``ray://`` lacks Ray's client (``ray[client]``)."""
    match = re.fullmatch(r"(ray://)?(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+))?/?", (address or "").strip())
    if match is None or (match[1] is None and match[3] is None):
        return
    client, host, port = match[1] is not None, match[2].strip("[]"), match[3]
    port = int(port) if port else RAY_CLIENT_PORT
    if client:
        try:
            import grpc
        except ImportError as exc:
            raise ImportError(
                f"RAY_ADDRESS {address!r} needs Ray's client, which is not installed: "
                "pip install 'kldiv-onnx[ray]' (it brings ray[client])"
            ) from exc
    deadline = time.monotonic() + timeout
    what = f"the Ray cluster at RAY_ADDRESS {address!r}"
    hint = "start it, correct RAY_ADDRESS, or wait longer with --ray-timeout"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ValueError(f"cannot reach {what} ({reason} within {timeout:g} s): {hint}") from None
    if client:
        channel = grpc.insecure_channel(f"{host}:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=max(0.0, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            raise ValueError(
                f"{what} accepts connections but does not answer as a Ray client server within "
                f"{timeout:g} s: {hint}"
            ) from None
        finally:
            channel.close()


def tasks(batches: int, workers: int) -> list[tuple[int, int]]:
    """The plan's batches cut into (first batch, count) runs of consecutive batches: about eight
    per worker, at most :data:`TASK_BATCHES` batches each."""
    size = max(1, min(TASK_BATCHES, -(-batches // (8 * workers))))
    return [(first, min(size, batches - first)) for first in range(0, batches, size)]


class RayWorker:
    """A Ray Data actor: builds the sessions once, then runs the runs of consecutive batches it
    is handed, reading only their rows (the data set planned by the driver, not again here)."""

    def __init__(self, job: Job) -> None:
        import ray

        blobs = {k: getattr(job, k) for k in ("base", "candidate", "kl", "layout")}
        refs = {k: v for k, v in blobs.items() if isinstance(v, ray.ObjectRef)}
        job = _with(job, **dict(zip(refs, ray.get(list(refs.values())), strict=True)))
        if job.library is not None and os.path.isfile(job.library):
            # A worker of a local cluster imports kldiv_onnx from the driver's working directory
            # when that is a source checkout (Ray puts it first on the path): the driver's own
            # library, on this very machine, keeps its KL the driver's.
            os.environ[native.ENV_VAR] = job.library
        self.job = job
        self.runner = BatchRunner(job)
        self.dataset = Dataset(job.data, layout=job.layout)
        self.ready: float | None = time.time()  # reported with the first results

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        job = self.job
        names = list(job.feed_types)
        kls, agrees, per_rows = [], [], set()
        timings = dict.fromkeys(TIMERS, 0.0)
        (first,) = batch["first"]
        (count,) = batch["count"]
        for pieces in self.dataset.plan(job.batch_size, job.rows, int(first), int(count)):
            t0 = time.perf_counter()
            feeds = self.dataset.read(pieces, names)
            timings["read_s"] += time.perf_counter() - t0
            kl, agree, per_row = self.runner(feeds, timings)
            kls.append(kl)
            agrees.append(agree)
            per_rows.add(per_row)
        if len(per_rows) != 1:
            raise ValueError(
                f"the output's shape changed between batches: {sorted(per_rows)} samples per row"
            )
        kl = np.concatenate(kls)
        per_row = per_rows.pop()
        out = {"kl": kl, "agree": np.concatenate(agrees)}
        # per task, carried by its first sample: where its samples start, the samples per row,
        # the summed timings and, once per actor, when its sessions were ready
        task = {
            "sample0": int(first) * job.batch_size * per_row,
            "per_row": per_row,
            **timings,
            "ready": self.ready or 0.0,
        }
        for key, value in task.items():
            column = np.zeros(kl.size, dtype=np.int64 if isinstance(value, int) else np.float64)
            column[:1] = value
            out[key] = column
        self.ready = None
        return out


def run_ray(
    job: Job, dataset: Dataset, progress: Progress, workers: int | None = None
) -> tuple[Results, list[list[str]]]:
    """Every batch of the plan on Ray Data: ``ray.data.from_items`` of runs of consecutive
    batches (:func:`tasks`, one block each) → ``map_batches(RayWorker)`` on a pool of actors
    (one CPU and one intra-op thread each) → the per-sample results gathered here as they
    stream back. The driver's plan (:class:`.data.Layout`) and the models travel once through
    the object store.

    Uses the cluster ``ray.init`` finds (``RAY_ADDRESS`` names an existing one), starting a
    local one (and stopping it afterwards) when Ray is not initialised yet. Ray's own log lines
    are shown only with ``job.verbose``.
    """
    t_start = time.time()
    ray = _ray()
    loggers = {name: logging.getLogger(name) for name in ("ray", "ray.data")}
    levels = {name: logger.level for name, logger in loggers.items()}
    started = False
    if not job.verbose:
        for logger in loggers.values():
            logger.setLevel(logging.CRITICAL)
    if not ray.is_initialized():
        check_cluster(os.environ.get("RAY_ADDRESS"), job.ray_timeout)
        # Ray's C++ side (this process's core worker, and the cluster it starts) logs at the
        # level this variable names when it starts: its warnings and errors about its own
        # workings (such as an actor's constructor arguments kept in the object store) are
        # noise in a normal run
        quiet = not job.verbose and BACKEND_LOG_VAR not in os.environ
        if quiet:
            os.environ[BACKEND_LOG_VAR] = "fatal"
        try:
            with _without_line(BACKEND_LOG_NOTE) if quiet else contextlib.nullcontext():
                ray.init(
                    address=os.environ.get("RAY_ADDRESS") or None,
                    include_dashboard=False,
                    logging_level=logging.WARNING if job.verbose else logging.CRITICAL,
                    log_to_driver=job.verbose,
                )
        except ConnectionError as exc:  # Ray's client gave up on the cluster
            raise ValueError(
                f"cannot connect to the Ray cluster at RAY_ADDRESS "
                f"{os.environ.get('RAY_ADDRESS')!r}: {exc}"
            ) from None
        finally:
            if quiet:
                del os.environ[BACKEND_LOG_VAR]
        started = True
    sigterm = _exit_on_sigterm()
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        if hasattr(context, "print_on_execution_start"):
            context.print_on_execution_start = False
        # a worker's error is raised here as one line: Ray Data's own report of it is noise
        loggers["ray.data"].setLevel(logging.CRITICAL)
        batches = dataset.batches(job.batch_size, job.rows)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        runs = tasks(batches, workers)
        workers = max(1, min(workers, len(runs)))
        # the models and the plan travel once through the object store, not inside each
        # actor's arguments
        job = _with(
            job,
            threads=1,
            base=ray.put(job.base),
            candidate=ray.put(job.candidate),
            kl=ray.put(job.kl),
            layout=ray.put(dataset.layout),
        )
        items = ray.data.from_items(
            [{"first": first, "count": count} for first, count in runs],
            override_num_blocks=len(runs),
        )
        mapped = items.map_batches(
            RayWorker,
            fn_constructor_kwargs={"job": job},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        results = Results(job.rows)
        ready = []
        try:
            for block in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                kl = block["kl"]
                if not kl.size:
                    continue
                starts = np.flatnonzero(block["per_row"])  # each task's first sample
                bounds = [*starts.tolist(), kl.size]
                for a, b in itertools.pairwise(bounds):
                    per_row = int(block["per_row"][a])
                    first = int(block["sample0"][a])
                    results.add_at(first, kl[a:b], block["agree"][a:b], per_row)
                    progress.update((b - a) // per_row)
                    progress.begin()  # the rate counts from the first results
                for key in TIMERS:
                    results.timings[key] += float(block[key][starts].sum())
                ready += [t for t in block["ready"][starts].tolist() if t]
        except Exception as exc:
            message = _user_error(exc)
            if message is None:
                raise
            raise ValueError(message) from None
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        if started:
            ray.shutdown()
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    results.startup_s = max(0.0, min(ready) - t_start) if ready else 0.0
    names = [resolved_providers(p) for p in job.providers]
    return results, names


def _exit_on_sigterm() -> Any:
    """Make SIGTERM raise ``SystemExit(143)`` (later ones ignored while the run unwinds and Ray
    shuts down): Ray's C++ side replaces the driver's handler with a failure handler that ends
    the process in SIGABRT and a core dump. The handler it replaced, to restore afterwards
    (None off the main thread, where Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    return signal.SIG_DFL if previous is None else previous


def _with(job: Job, **changes: Any) -> Job:
    return Job(**{**job.__dict__, **changes})


EngineFn = Callable[[Job, Dataset, Progress], tuple[Results, list[list[str]]]]
RUNNERS: dict[str, EngineFn] = {"local": run_local, "ray": run_ray}
