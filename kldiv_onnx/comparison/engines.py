"""What runs a comparison's batches, and the ``local`` engine (this process, cached sessions);
the ``ray`` engine (:mod:`.ray_engine`) runs the same :class:`BatchRunner` on a pool of actors.

Both run the same :class:`BatchRunner` on the same batches (the data set's plan), and the
statistics are computed afterwards from the per-sample values in sample order, so both give the
same figures.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .. import providers as _providers
from .. import runtime
from ..data_files import cast_feed
from ..errors import ort_message
from ..runtimes import OpenVINO
from .data import Dataset
from .models import KLStage, check_probs
from .progress import Progress

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

    def __call__(
        self, feeds: Mapping[str, np.ndarray], timings: dict[str, float], check: bool = False
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Per-sample KL (float64) and top-1 agreement of one batch of feeds, and the samples
        per data row (the product of the output's middle axes). ``check``: for kind probs,
        check the outputs look like probabilities (:func:`.models.check_probs`); both engines
        check the plan's first batch, so they raise and warn alike."""
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
        if job.kind == "probs" and check:  # the first batch tells logits apart
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


def user_error(exc: BaseException) -> str | None:
    """The message of the ``ValueError`` a Ray worker raised: Ray re-raises it as an error
    whose text is the worker's traceback (a ``RayTaskError``; a ``RayActorError`` where the
    actor's constructor raised)."""
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
        self.ray_init_s: float | None = None
        """Ray: the seconds ``ray.init`` took (starting a local cluster or joining one)."""
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
        kl, agree, per_row = runner(feeds, timings, check=row == 0)
        results.add(row, kl, agree, per_row)
        count = kl.size // per_row
        row += count
        progress.update(count)
    return results, [runner.base.providers, runner.candidate.providers]
