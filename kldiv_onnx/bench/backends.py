"""The backends' calls, as the benchmark times them: onnxruntime sessions with pre-bound inputs
(:class:`OrtCall`), the model ``torch.onnx.export`` writes (:func:`torch_export_model`) and
numpy's read of both inputs (:class:`ReadBoth`)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import errors
from .._ort_fast import bound_run
from ..arrays import to_ortvalue
from ..runtime import session_options


def import_torch() -> tuple[Any, str]:
    """``(torch, '')``, or ``(None, why)`` when it cannot be imported."""
    try:
        import torch
    except ImportError as exc:  # also: sys.modules['torch'] = None in tests
        return None, f"torch not installed ({exc})"
    return torch, ""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 400 characters (a bench table's note)."""
    return f"{type(exc).__name__}: {errors.first_line(exc)}"[:400]


def ort_session(model: bytes, threads: int, library: str | None, arena: bool) -> Any:
    import onnxruntime as ort

    so = session_options(threads, library, arena=arena)
    so.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


class OrtCall:
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
        self._run, _ = bound_run(sess, self.binding)

    def prepare(self) -> None:
        self.binding.clear_binding_outputs()
        self.binding.bind_output(self.output, "cpu")

    def __call__(self) -> None:
        self._run()

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


TORCH_BACKENDS = ("torch-export", "torch-eager", "torch-read")


class ReadBoth:
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
