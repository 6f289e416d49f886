"""The engines that run a comparison's batches: ``local`` (this process, cached sessions) and
``ray`` (Ray Data: one task per batch of the plan, run by a pool of actors that each build the
sessions once).

Both run the same :class:`BatchRunner` on the same batches (the data set's plan), and the
statistics are computed afterwards from the per-sample values in sample order, so both give the
same figures.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .. import native, runtime
from .. import providers as _providers
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
    library: str | None = None
    """The native library the KL runs on (the driver's), or None for numpy's float64
    (:func:`.models.kl_rows`): every process of a comparison computes the KL the same way."""


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

    def run(self, feeds: Mapping[str, np.ndarray], output: str) -> np.ndarray:
        if self.sess is not None:
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
            name: np.asarray(feeds[name]).astype(t, copy=False)
            for name, t in job.feed_types.items()
        }
        t0 = time.perf_counter()
        base = _run_model(self.base, feeds, job.outputs[0], "base")
        t1 = time.perf_counter()
        candidate = _run_model(self.candidate, feeds, job.outputs[1], "candidate")
        t2 = time.perf_counter()
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


def _user_error(exc: BaseException) -> str | None:
    """The message of the ``ValueError`` a Ray worker raised: Ray Data re-raises it as a
    ``UserCodeException`` that keeps only the text of its traceback."""
    match = re.search(r"^(?:\w+\.)*ValueError: (.+)$", str(exc), re.MULTILINE)
    return match.group(1).strip() if match else None


class Results:
    """Per-sample values gathered in sample order (allocated once the samples per row are
    known), the count of agreeing non-NaN samples and the summed timings."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.values: np.ndarray | None = None
        self.per_row = 0
        self.agree = 0
        self.timings = dict.fromkeys(TIMERS, 0.0)

    def add(self, first_row: int, kl: np.ndarray, agree: np.ndarray, per_row: int) -> None:
        """The samples of the batch that starts at data row ``first_row``."""
        start = first_row * per_row
        self.add_at(np.arange(start, start + kl.size), kl, agree, per_row)

    def add_at(self, index: np.ndarray, kl: np.ndarray, agree: np.ndarray, per_row: int) -> None:
        """Samples by their indices."""
        if self.values is None:
            self.per_row = per_row
            self.values = np.full(self.rows * per_row, np.nan)
        elif per_row != self.per_row:
            raise ValueError(
                f"the output's shape changed between batches: {per_row} samples per row, "
                f"{self.per_row} before"
            )
        self.values[index] = kl
        self.agree += int(np.count_nonzero(agree & ~np.isnan(kl)))


class Progress:
    """A one-line progress bar with an ETA on stderr, drawn only on a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()
        self.last = 0.0
        self.done = 0

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        frac = self.done / self.total if self.total else 1.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        bar = "#" * int(30 * frac)
        sys.stderr.write(
            f"\rcompare [{bar:<30}] {self.done}/{self.total} rows {100 * frac:5.1f}% "
            f"ETA {int(eta) // 60}:{int(eta) % 60:02d} "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# local


def run_local(job: Job, dataset: Dataset, progress: Progress) -> tuple[Results, list[list[str]]]:
    """Every batch of the plan in this process; the results and each model's providers."""
    runner = BatchRunner(job)
    results = Results(job.rows)
    names = list(job.feed_types)
    row = 0
    for pieces in dataset.plan(job.batch_size, job.rows):
        t0 = time.perf_counter()
        feeds = dataset.read(pieces, names)
        results.timings["read_s"] += time.perf_counter() - t0
        kl, agree, per_row = runner(feeds, results.timings)
        results.add(row, kl, agree, per_row)
        count = sum(b - a for _, a, b in pieces)
        row += count
        progress.update(count)
    return results, [runner.base.providers, runner.candidate.providers]


# ---------------------------------------------------------------------------------------------
# Ray


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            "the ray engine needs Ray Data, which is not installed: pip install 'kldiv-onnx[ray]'"
        ) from exc
    return ray


class RayWorker:
    """A Ray Data actor: opens the data set and builds the sessions once, then runs the batches
    of the plan it is handed (one batch number per call)."""

    def __init__(self, job: Job) -> None:
        import ray

        blobs = {k: getattr(job, k) for k in ("base", "candidate", "kl")}
        refs = {k: v for k, v in blobs.items() if isinstance(v, ray.ObjectRef)}
        job = _with(job, **dict(zip(refs, ray.get(list(refs.values())), strict=True)))
        if job.library is not None and os.path.isfile(job.library):
            # A worker of a local cluster imports kldiv_onnx from the driver's working directory
            # when that is a source checkout (Ray puts it first on the path): the driver's own
            # library, on this very machine, keeps its KL the driver's.
            os.environ[native.ENV_VAR] = job.library
        self.job = job
        self.runner = BatchRunner(job)
        self.dataset = Dataset(job.data)
        self.plan = self.dataset.plan(job.batch_size, job.rows)
        sizes = [sum(b - a for _, a, b in pieces) for pieces in self.plan]
        self.starts = np.concatenate([[0], np.cumsum(sizes)])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = ("sample", "kl", "agree", "per_row", *TIMERS)
        out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for number in batch["batch"]:
            timings = dict.fromkeys(TIMERS, 0.0)
            t0 = time.perf_counter()
            feeds = self.dataset.read(self.plan[number], list(self.job.feed_types))
            timings["read_s"] = time.perf_counter() - t0
            kl, agree, per_row = self.runner(feeds, timings)
            n = kl.size
            first = int(self.starts[number]) * per_row
            out["sample"].append(np.arange(first, first + n, dtype=np.int64))
            out["kl"].append(kl)
            out["agree"].append(agree)
            out["per_row"].append(np.full(n, per_row, dtype=np.int64))
            for key in TIMERS:  # carried by the batch's first sample
                column = np.zeros(n)
                column[:1] = timings[key]
                out[key].append(column)
        return {k: np.concatenate(v) for k, v in out.items()}


def run_ray(
    job: Job, dataset: Dataset, progress: Progress, workers: int | None = None
) -> tuple[Results, list[list[str]]]:
    """Every batch of the plan on Ray Data: ``ray.data.from_items`` of the batch numbers →
    ``map_batches(RayWorker)`` on a pool of actors (one CPU and one intra-op thread each) →
    the per-sample results gathered here as they stream back.

    Uses the cluster ``ray.init`` finds (``RAY_ADDRESS`` names an existing one), starting a
    local one (and stopping it afterwards) when Ray is not initialised yet.
    """
    ray = _ray()
    ray_data_logger = logging.getLogger("ray.data")
    level = ray_data_logger.level
    started = False
    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        if hasattr(context, "print_on_execution_start"):
            context.print_on_execution_start = False
        # a worker's error is raised here as one line: Ray Data's own report of it is noise
        ray_data_logger.setLevel(logging.CRITICAL)
        plan = dataset.plan(job.batch_size, job.rows)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = max(1, min(workers, len(plan)))
        # the models travel once through the object store, not inside each actor's arguments
        job = _with(
            job,
            threads=1,
            base=ray.put(job.base),
            candidate=ray.put(job.candidate),
            kl=ray.put(job.kl),
        )
        items = ray.data.from_items(
            [{"batch": i} for i in range(len(plan))], override_num_blocks=len(plan)
        )
        mapped = items.map_batches(
            RayWorker,
            fn_constructor_kwargs={"job": job},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        results = Results(job.rows)
        try:
            for block in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                if not block["kl"].size:
                    continue
                per_row = int(block["per_row"][0])
                results.add_at(block["sample"], block["kl"], block["agree"], per_row)
                progress.update(block["kl"].size // per_row)
                for key in TIMERS:
                    results.timings[key] += float(block[key].sum())
        except Exception as exc:
            message = _user_error(exc)
            if message is None:
                raise
            raise ValueError(message) from None
    finally:
        ray_data_logger.setLevel(level)
        if started:
            ray.shutdown()
    names = [resolved_providers(p) for p in job.providers]
    return results, names


def _with(job: Job, **changes: Any) -> Job:
    return Job(**{**job.__dict__, **changes})


EngineFn = Callable[[Job, Dataset, Progress], tuple[Results, list[list[str]]]]
RUNNERS: dict[str, EngineFn] = {"local": run_local, "ray": run_ray}
