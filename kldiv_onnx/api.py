"""The user-facing loss: ``KLDivLoss`` and ``kl_div`` on numpy, PyTorch or MindSpore arrays."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from . import native, runtime
from ._contract import DTYPES, Variant, dtype_name
from .arrays import to_numpy
from .export import build_model
from .reference import kl_div as _reference

BACKENDS = ("auto", "fused", "composite", "numpy")


def _validate(input: Any, target: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    x = to_numpy(input, "input")
    t = to_numpy(target, "target")
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
def _model_bytes(variant: Variant, dtype: str, ranks: tuple[int, int]) -> bytes:
    """A model for inputs of the given ranks, every dim symbolic (onnx needs known ranks)."""
    shapes = [[f"{side}{i}" for i in range(rank)] for side, rank in zip("xt", ranks, strict=True)]
    model = build_model(variant.reduction, variant.log_target, dtype, *shapes)
    return model.SerializeToString()


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
    variant = Variant(reduction, log_target)
    backend = _check_backend(backend)
    x, t, _ = _validate(input, target)
    if backend == "numpy":
        return np.asarray(_reference(x, t, variant.reduction, variant.log_target).astype(x.dtype))
    sess = runtime.session(
        _model_bytes(variant, dtype_name(x.dtype), (x.ndim, t.ndim)),
        providers=["CPUExecutionProvider"],
        fused=backend == "fused",
    )
    return runtime.run(sess, {"input": x, "target": t})[0]


class KLDivLoss:
    """``mindspore.mint.nn.KLDivLoss`` on ONNX: ``KLDivLoss(reduction)(input, target)``."""

    def __init__(
        self, reduction: str = "mean", log_target: bool = False, *, backend: str = "auto"
    ) -> None:
        variant = Variant(reduction, log_target)
        self.reduction = variant.reduction
        self.log_target = variant.log_target
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
