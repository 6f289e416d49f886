"""How close to the float64 reference a result must be: every tolerance, in one place.

* :data:`RESULT_RTOL`: one rounding of the result to its dtype after float32 math (float32:
  the float32 accumulation of a reduction), relative to the exact value.
* :func:`tolerance`: per element, for a computation of the loss of given inputs,
  ``2 * eps * |ref| + (4 * eps + 2 * eps32 * sqrt(n)) * scale``, where ``scale`` is
  :func:`kldiv_onnx.reference.error_scale` (the size of the terms before they cancel). It
  admits one rounding of the result, a few roundings of every operand for runtimes that compute
  in the dtype (PyTorch, MindSpore) and the float32 accumulation of ``n`` terms.
* :data:`MODEL_RTOL`: for a model file, whose conditioning is unknown, ``rtol * (|ref| +
  max |ref|)`` per output (of the order of onnx's backend tests' 1e-3 and onnxruntime's own
  1e-4 float32 comparisons); a distillation loss, for one, is a small difference of O(1) terms.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from ._contract import Variant
from .reference import error_scale

RESULT_RTOL = {"float32": 2e-6, "float16": 2.0**-10, "bfloat16": 2.0**-7}
MODEL_RTOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
"""Default relative tolerance of a model file's outputs, per dtype (other floats: 1e-4)."""
_F32_EPS = float(np.finfo(np.float32).eps)


def tolerance(x: np.ndarray, t: np.ndarray, variant: Variant, ref: np.ndarray) -> np.ndarray:
    """The per-element tolerance of the module docstring for the loss of ``x`` and ``t``."""
    eps = float(ml_dtypes.finfo(x.dtype).eps)
    scale = error_scale(x, t, variant.reduction, variant.log_target)
    n = max(int(np.prod(np.broadcast_shapes(x.shape, t.shape), dtype=np.int64)), 1)
    accumulation = 0.0 if variant.reduction == "none" else 2 * _F32_EPS * math.sqrt(n)
    return 2 * eps * np.abs(ref) + (4 * eps + accumulation) * scale + 1e-30


def model_tolerance(baseline: np.ndarray, rtol: float | None = None) -> np.ndarray:
    """Per element, for a model output whose baseline result is ``baseline``: ``rtol *
    (|ref| + max |ref|)``; exact for integer and boolean outputs unless ``rtol`` is given."""
    ref = np.asarray(baseline).astype(np.float64)
    finite = np.abs(ref[np.isfinite(ref)])
    peak = float(finite.max()) if finite.size else 0.0
    if rtol is None:
        floating = baseline.dtype.kind == "f" or baseline.dtype == ml_dtypes.bfloat16
        rtol = MODEL_RTOL.get(str(baseline.dtype), 1e-4) if floating else 0.0
    return rtol * (np.abs(ref) + peak) + 1e-30
