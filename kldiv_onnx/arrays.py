"""Array conversions, each written once: numpy ↔ PyTorch / MindSpore tensors and numpy ↔
onnxruntime ``OrtValue``, bfloat16 included.

numpy has no bfloat16 of its own: ``ml_dtypes.bfloat16`` is used. onnxruntime's numpy bridge
and ``torch.from_numpy`` do not know that type, so its arrays travel as their 16-bit patterns
(``uint16`` tagged ``TensorProto.BFLOAT16`` for onnxruntime, ``int16`` viewed as
``torch.bfloat16`` for PyTorch).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from onnx import TensorProto

from ._contract import DTYPES

BFLOAT16 = DTYPES["bfloat16"]


def to_numpy(value: Any, name: str) -> np.ndarray:
    """An ndarray view of a numpy, PyTorch or MindSpore array (no copy where possible)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    module = type(value).__module__
    if module.startswith("torch"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # numpy has no bfloat16: reinterpret bits
            import torch

            return tensor.view(torch.int16).numpy().view(BFLOAT16)
        return tensor.numpy()
    if module.startswith("mindspore"):
        if str(value.dtype) == "BFloat16":
            # Tensor.view(int16) is unreliable in MindSpore 2.10's CPU build under numpy 2;
            # bfloat16 → float32 → bfloat16 is exact (one copy).
            import mindspore

            return value.astype(mindspore.float32).asnumpy().astype(BFLOAT16)
        return value.asnumpy()
    raise TypeError(
        f"{name} must be a numpy array or a PyTorch/MindSpore tensor, got {type(value).__name__}"
    )


def to_torch(array: np.ndarray, *, copy: bool = False) -> Any:
    """A PyTorch tensor over ``array`` (bfloat16 included); ``copy`` for a tensor of its own."""
    import torch

    array = np.array(array, copy=True) if copy else np.asarray(array)
    if array.dtype == BFLOAT16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def from_torch(tensor: Any) -> np.ndarray:
    """The numpy array of a CPU PyTorch tensor (bfloat16 as ``ml_dtypes.bfloat16``)."""
    return to_numpy(tensor, "tensor")


def to_ortvalue(array: np.ndarray) -> Any:
    """An ``OrtValue`` over ``array``'s buffer (C order; bfloat16 tagged as such)."""
    import onnxruntime as ort

    array = np.asarray(array, order="C")  # ascontiguousarray would make a 0-d array 1-d
    if array.dtype == BFLOAT16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            array.view(np.uint16), TensorProto.BFLOAT16
        )
    return ort.OrtValue.ortvalue_from_numpy(array)


def from_ortvalue(value: Any) -> np.ndarray:
    """A numpy copy of an ``OrtValue`` (bfloat16 as ``ml_dtypes.bfloat16``)."""
    if value.data_type() != "tensor(bfloat16)":
        return value.numpy()
    shape = tuple(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    out = np.empty(shape, dtype=np.uint16)
    if count:
        ctypes.memmove(out.ctypes.data, value.data_ptr(), count * 2)
    return out.view(BFLOAT16)
