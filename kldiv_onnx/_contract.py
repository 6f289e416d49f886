"""The op contract, written down once: domain, op names, attributes and dtypes.

Every layer (the onnxscript function, the native kernel's registration, the numpy reference,
the wrappers) reads its names from here. The C++ library registers the same names;
``tests/test_native_kernel.py`` asks the loaded library for each of them.

A variant of the loss is a :class:`Variant` value, parsed once where a user's arguments enter
(the API, the CLI, ``embed``, ``fuse``); the layers below take the value.
"""

from __future__ import annotations

from dataclasses import dataclass

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

ROWS_OP = "KLDivRows"
"""Op of ``compare``: inputs base and candidate (float32, the same shape, classes last), outputs
``kl`` (float64, one per row: KL(P_base ‖ P_candidate)) and ``agree`` (bool: the same argmax),
attributes ``kind`` ('logits', 'log-probs' or 'probs') and ``temperature`` (float, logits only).
Only the native library implements it."""
ROW_KINDS = ("logits", "log-probs", "probs")
"""What the rows hold, the ``kind`` attribute of :data:`ROWS_OP`."""

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


def check_reduction(reduction: object) -> str:
    """Return ``reduction`` if it is one of :data:`REDUCTIONS`, else raise ``ValueError``."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_log_target(log_target: object) -> bool:
    """``log_target`` as a bool: only a bool or the integers 0 and 1 are accepted
    (``ValueError`` otherwise: ``"no"`` or ``2`` must not run as True)."""
    if isinstance(log_target, (bool, np.bool_)):
        return bool(log_target)
    if isinstance(log_target, (int, np.integer)) and log_target in (0, 1):
        return bool(log_target)
    raise ValueError(f"log_target must be a bool (or 0/1), got {log_target!r}")


@dataclass(frozen=True)
class Variant:
    """One configuration of the loss: ``reduction`` and ``log_target``, checked on creation."""

    reduction: str = "mean"
    log_target: bool = False

    def __post_init__(self) -> None:
        check_reduction(self.reduction)
        object.__setattr__(self, "log_target", check_log_target(self.log_target))

    @property
    def op_name(self) -> str:
        """Op (and function) name, e.g. ``KLDivLoss_batchmean_logtarget``."""
        return f"{GENERIC_OP}_{self.reduction}" + ("_logtarget" if self.log_target else "")

    @property
    def label(self) -> str:
        """``KLDivLoss(reduction='sum', log_target=1)``: how messages and reports name it."""
        return f"{GENERIC_OP}(reduction={self.reduction!r}, log_target={int(self.log_target)})"


VARIANTS: tuple[Variant, ...] = tuple(Variant(r, lt) for r in REDUCTIONS for lt in (False, True))
"""Every variant, in the order of :data:`REDUCTIONS`, plain before log-target."""


def op_name(reduction: str, log_target: bool) -> str:
    """Op (and function) name of one variant, e.g. ``KLDivLoss_batchmean_logtarget``."""
    return Variant(reduction, log_target).op_name


def variant_of(op_type: str) -> Variant | None:
    """The variant an op name stands for, None for any other name (the generic op included)."""
    return _BY_NAME.get(op_type)


def variant_ops() -> dict[str, tuple[str, bool]]:
    """Every variant op name mapped to its (reduction, log_target)."""
    return {v.op_name: (v.reduction, v.log_target) for v in VARIANTS}


_BY_NAME = {v.op_name: v for v in VARIANTS}


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
