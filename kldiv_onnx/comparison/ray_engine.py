"""The ``ray`` engine of a comparison: Ray Data hands runs of consecutive batches of the plan to
a pool of actors, each building the sessions once and running the same :class:`.engines.BatchRunner`
as the local engine; the driver keeps one value per sample (:class:`.engines.Results`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import native
from .data import Dataset
from .engines import TIMERS, BatchRunner, Job, Results, resolved_providers, user_error
from .progress import Progress

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
            message = user_error(exc)
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
