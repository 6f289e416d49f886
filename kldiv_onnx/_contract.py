"""The op contract, written down once: domain, op names, attributes and dtypes.

Every layer (the onnxscript function, the native kernel's registration, the numpy reference,
the wrappers) reads its names from here. The C++ library mirrors these names in
``custom_ops/ort/kldiv_ops.cc``; ``tests/test_native.py`` checks that the two agree.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto

DOMAIN = "kldiv_onnx"
"""Custom operator domain of every KLDivLoss node (domain version 1)."""
DOMAIN_VERSION = 1

REDUCTIONS = ("none", "mean", "sum", "batchmean")
"""Allowed values of ``reduction``, as in ``mindspore.mint.nn.KLDivLoss``."""

GENERIC_OP = "KLDivLoss"
"""Op with ``reduction`` (string, default 'mean') and ``log_target`` (int 0/1, default 0)
attributes. Only the native library implements it: it has no function body."""

DEFAULT_OPSET = 15
"""ai.onnx opset written by default: the highest the CANN graph mode takes (8-15); >= 13
for bfloat16 Cast and ReduceSum with axes as input."""
MIN_OPSET = 13
IR_VERSION = 8
"""IR version written: model-local functions need 8; onnxruntime >= 1.10 reads it."""

DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
ONNX_TYPES: dict[str, int] = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
}
ONNX_TYPE_NAMES: dict[int, str] = {code: name for name, code in ONNX_TYPES.items()}
"""ONNX element type → dtype name (the inverse of :data:`ONNX_TYPES`)."""


def op_name(reduction: str, log_target: bool) -> str:
    """Op (and function) name of one variant, e.g. ``KLDivLoss_batchmean_logtarget``."""
    check_reduction(reduction)
    return f"{GENERIC_OP}_{reduction}" + ("_logtarget" if log_target else "")


def variant_ops() -> dict[str, tuple[str, bool]]:
    """Every variant op name mapped to its (reduction, log_target)."""
    return {op_name(r, lt): (r, lt) for r in REDUCTIONS for lt in (False, True)}


def check_reduction(reduction: object) -> str:
    """Return ``reduction`` if it is one of :data:`REDUCTIONS`, else raise ``ValueError``."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def dtype_name(dtype: object) -> str:
    """Canonical dtype name ('float32', 'float16', 'bfloat16') or ``TypeError``."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        np_dtype = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise TypeError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}") from exc
    for name, candidate in DTYPES.items():
        if np_dtype == candidate:
            return name
    raise TypeError(f"dtype must be one of {tuple(DTYPES)}, got {np_dtype}")
