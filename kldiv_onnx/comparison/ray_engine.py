"""The ``ray`` engine of a comparison: the driver hands runs of consecutive batches of the plan
to a pool of Ray actors, each building the sessions once and running the same
:class:`.engines.BatchRunner` as the local engine; the driver keeps one value per sample
(:class:`.engines.Results`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
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
"""At most this many batches in one Ray task (one result sent back): large enough that Ray's
cost per task is small against the work, small enough to spread the batches over the actors
and to report progress."""


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "the ray engine needs Ray, which is not installed: pip install 'kldiv-onnx[ray]'"
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
    """A Ray actor: builds the sessions once, then runs the runs of consecutive batches it is
    handed, reading only their rows (the data set planned by the driver, not again here).

    The warnings its sessions and batches raise (kind probs on rows that do not sum to 1, a
    provider's fallback) go back to the driver with the results, which shows each once: a
    worker's own stderr is not the user's."""

    def __init__(self, job: Job) -> None:
        import ray

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            blobs = {k: getattr(job, k) for k in ("base", "candidate", "kl", "layout")}
            refs = {k: v for k, v in blobs.items() if isinstance(v, ray.ObjectRef)}
            job = _with(job, **dict(zip(refs, ray.get(list(refs.values())), strict=True)))
            if job.library is not None and os.path.isfile(job.library):
                # A worker of a local cluster imports kldiv_onnx from the driver's working
                # directory when that is a source checkout (Ray puts it first on the path): the
                # driver's own library, on this very machine, keeps its KL the driver's.
                os.environ[native.ENV_VAR] = job.library
            self.job = job
            self.runner = BatchRunner(job)
            self.dataset = Dataset(job.data, layout=job.layout)
        self.warned = [w.message for w in caught]
        self.ready: float | None = time.time()  # reported with the first results

    def run(self, first: int, count: int) -> dict[str, Any]:
        """The per-sample KL and top-1 agreement of ``count`` batches from batch ``first`` on,
        where its samples start, the samples per row, the summed timings, the warnings raised
        and, once per actor, when its sessions were ready: only what the driver keeps."""
        job = self.job
        names = list(job.feed_types)
        kls, agrees, per_rows = [], [], set()
        timings = dict.fromkeys(TIMERS, 0.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for index, pieces in enumerate(
                self.dataset.plan(job.batch_size, job.rows, first, count)
            ):
                t0 = time.perf_counter()
                feeds = self.dataset.read(pieces, names)
                timings["read_s"] += time.perf_counter() - t0
                # the plan's first batch is checked, as the local engine does
                kl, agree, per_row = self.runner(feeds, timings, check=first + index == 0)
                kls.append(kl)
                agrees.append(agree)
                per_rows.add(per_row)
        if len(per_rows) != 1:
            raise ValueError(
                f"the output's shape changed between batches: {sorted(per_rows)} samples per row"
            )
        per_row = per_rows.pop()
        out = {
            "sample0": first * job.batch_size * per_row,
            "per_row": per_row,
            "kl": np.concatenate(kls),
            "agree": np.concatenate(agrees),
            "timings": timings,
            "ready": self.ready,
            "warnings": [*self.warned, *(w.message for w in caught)],
        }
        self.ready, self.warned = None, []
        return out


INFLIGHT = 2
"""Runs handed to each actor ahead: the next one waits in the actor's queue while the driver
takes in the last one's results, so an actor is never idle for a round trip."""


def run_ray(
    job: Job, dataset: Dataset, progress: Progress, workers: int | None = None
) -> tuple[Results, list[list[str]]]:
    """Every batch of the plan on a pool of Ray actors (one CPU and one intra-op thread each):
    runs of consecutive batches (:func:`tasks`) handed out as actors finish the previous ones,
    the per-sample results written here as they come back. The driver's plan
    (:class:`.data.Layout`) and the models travel once through the object store.

    Plain Ray actors, not Ray Data: Ray Data starts three helper actors of its own (its
    statistics, its autoscaling coordinator, an actor location tracker), each a Python process
    importing Ray Data, which cost more CPU on two cores than the pool's own work on 10^6 rows;
    the runs need none of its streaming.

    Uses the cluster ``ray.init`` finds (``RAY_ADDRESS`` names an existing one), starting a
    local one (and stopping it afterwards) when Ray is not initialised yet. Ray's own log lines
    are shown only with ``job.verbose``.
    """
    t_start = time.time()
    ray = _ray()
    logger = logging.getLogger("ray")
    level = logger.level
    started = False
    if not job.verbose:
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
            # Ray's own processes cost about 3 s of CPU whatever the run; turning off usage
            # stats or metrics collection (RAY_USAGE_STATS_ENABLED=0,
            # RAY_enable_metrics_collection=0) did not measurably lower it on two cores, so
            # nothing more is set (docs/compare-scale.md)
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
    t_init = time.time()
    sigterm = _exit_on_sigterm()
    actors: list[Any] = []
    try:
        batches = dataset.batches(job.batch_size, job.rows)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = collections.deque(tasks(batches, workers))
        workers = max(1, min(workers, len(queue)))
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
        actor = ray.remote(num_cpus=1)(RayWorker)
        actors += [actor.remote(job) for _ in range(workers)]
        pending: dict[Any, Any] = {}

        def hand_out(worker: Any) -> None:
            if queue:
                first, count = queue.popleft()
                pending[worker.run.remote(first, count)] = worker

        for worker in actors:
            for _ in range(INFLIGHT):
                hand_out(worker)
        results = Results(job.rows)
        ready: list[float] = []
        shown: set[tuple[type, str]] = set()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            worker = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as exc:
                message = user_error(exc)
                if message is None:
                    raise
                raise ValueError(message) from None
            hand_out(worker)
            for warning in out["warnings"]:
                key = (type(warning), str(warning))
                if key not in shown:
                    shown.add(key)
                    warnings.warn(warning, stacklevel=2)
            per_row = out["per_row"]
            results.add_at(out["sample0"], out["kl"], out["agree"], per_row)
            for key in TIMERS:
                results.timings[key] += out["timings"][key]
            if out["ready"] is not None:
                ready.append(out["ready"])
            progress.update(out["kl"].size // per_row)
            progress.begin()  # the rate counts from the first results
    finally:
        for worker in actors:  # a cluster that outlives the run keeps none of them
            ray.kill(worker)
        logger.setLevel(level)
        if started:
            ray.shutdown()
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    results.startup_s = max(0.0, min(ready) - t_start) if ready else 0.0
    results.ray_init_s = t_init - t_start
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
