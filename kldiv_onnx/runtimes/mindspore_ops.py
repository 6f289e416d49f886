"""MindSpore (CPU): ``mindspore.ops.kl_div``, which takes equal shapes, ``log_target=False``
and float16/float32 only (``mint.nn.KLDivLoss`` is Ascend-only); other cases are "not
supported"."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import onnx

from .._contract import DTYPES, Variant
from .framework import Framework, single_kldiv


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence a library writing to fd 2 (MindSpore 2.10 under NumPy 2 prints a traceback)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


class MindSporeOps(Framework):
    name = "MindSpore"
    module = "mindspore"
    distribution = "mindspore"

    def unsupported(self, model: onnx.ModelProto) -> str | None:
        single = single_kldiv(model)
        if single is None:
            return super().unsupported(model)
        return "ops.kl_div has no log_target" if single[0].log_target else None

    def declines(self, x: np.ndarray, t: np.ndarray, variant: Variant) -> str | None:
        if x.shape != t.shape:
            return "ops.kl_div takes equal shapes only"
        if x.dtype == DTYPES["bfloat16"]:
            return "ops.kl_div on CPU takes float16/float32 only"
        if x.ndim == 0 or x.size == 0:
            return "0-d or empty inputs"
        return None

    def kl_div(self, x: np.ndarray, t: np.ndarray, variant: Variant) -> np.ndarray:
        with _quiet_stderr():
            from mindspore import Tensor, ops

            out = ops.kl_div(Tensor(x), Tensor(t), variant.reduction)
            if variant.reduction != "none" and out.ndim:
                out = out.reshape(())
            return out.asnumpy()
