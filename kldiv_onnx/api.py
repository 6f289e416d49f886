"""The user-facing loss: ``KLDivLoss`` and ``kl_div`` on numpy, PyTorch or MindSpore arrays."""

from __future__ import annotations

import functools
from typing import Any

import ml_dtypes
import numpy as np

from . import native, runtime
from ._contract import DTYPES, check_reduction, dtype_name
from .export import build_model
from .reference import kl_div as _reference

BACKENDS = ("auto", "fused", "composite", "numpy")


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """An ndarray view of a numpy, PyTorch or MindSpore array (no copy where possible)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    module = type(value).__module__
    if module.startswith("torch"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # numpy has no bfloat16: reinterpret bits
            import torch

            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()
    if module.startswith("mindspore"):
        if str(value.dtype) == "BFloat16":
            # Tensor.view(int16) is unreliable in MindSpore 2.10's CPU build under numpy 2;
            # bfloat16 → float32 → bfloat16 is exact (one copy).
            import mindspore

            return value.astype(mindspore.float32).asnumpy().astype(ml_dtypes.bfloat16)
        return value.asnumpy()
    raise TypeError(
        f"{name} must be a numpy array or a PyTorch/MindSpore tensor, got {type(value).__name__}"
    )


def _validate(input: Any, target: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    x = _to_numpy(input, "input")
    t = _to_numpy(target, "target")
    allowed = tuple(DTYPES)
    for name, array in (("input", x), ("target", t)):
        if array.dtype not in DTYPES.values():
            raise TypeError(f"{name} dtype must be one of {allowed}, got {array.dtype}")
    if x.dtype != t.dtype:
        raise TypeError(f"target dtype {t.dtype} differs from input dtype {x.dtype}")
    try:
        shape = np.broadcast_shapes(x.shape, t.shape)
    except ValueError:
        raise ValueError(
            f"input shape {x.shape} and target shape {t.shape} are not broadcastable"
        ) from None
    return x, t, shape


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "fused" if native.available() else "composite"
    if backend == "fused":
        native.library_path()  # FileNotFoundError naming where it looked
    return backend


@functools.lru_cache(maxsize=256)
def _model_bytes(reduction: str, log_target: bool, dtype: str, ranks: tuple[int, int]) -> bytes:
    """A model for inputs of the given ranks, every dim symbolic (onnx needs known ranks)."""
    shapes = [[f"{side}{i}" for i in range(rank)] for side, rank in zip("xt", ranks, strict=True)]
    return build_model(reduction, log_target, dtype, *shapes).SerializeToString()


def kl_div(
    input: Any,
    target: Any,
    reduction: str = "mean",
    log_target: bool = False,
    *,
    backend: str = "auto",
) -> np.ndarray:
    """KLDivLoss of ``input`` (log-probabilities) and ``target``, in the input's dtype.

    ``backend``: ``'fused'`` (native kernel in onnxruntime), ``'composite'`` (the ONNX
    function body in onnxruntime), ``'numpy'`` (the float64 reference) or ``'auto'`` (fused
    when the native library is built, else composite). Returns a numpy array, 0-d for a
    reduction.
    """
    check_reduction(reduction)
    backend = _check_backend(backend)
    x, t, _ = _validate(input, target)
    if backend == "numpy":
        return np.asarray(_reference(x, t, reduction, log_target).astype(x.dtype))
    name = dtype_name(x.dtype)
    sess = runtime.session(
        _model_bytes(reduction, bool(log_target), name, (x.ndim, t.ndim)),
        providers=["CPUExecutionProvider"],
        fused=backend == "fused",
    )
    return runtime.run(sess, {"input": x, "target": t})[0]


class KLDivLoss:
    """``mindspore.mint.nn.KLDivLoss`` on ONNX: ``KLDivLoss(reduction)(input, target)``."""

    def __init__(
        self, reduction: str = "mean", log_target: bool = False, *, backend: str = "auto"
    ) -> None:
        self.reduction = check_reduction(reduction)
        self.log_target = bool(log_target)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend

    def __call__(self, input: Any, target: Any) -> np.ndarray:
        return kl_div(input, target, self.reduction, self.log_target, backend=self.backend)

    def __repr__(self) -> str:
        return (
            f"KLDivLoss(reduction={self.reduction!r}, log_target={self.log_target}, "
            f"backend={self.backend!r})"
        )
