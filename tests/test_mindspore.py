"""MindSpore tensors as inputs, and MindSpore's own CPU ``ops.kl_div`` as a cross-check
(on CPU it supports equal shapes and ``log_target=False`` only; ``mint.nn.KLDivLoss`` is
Ascend-only)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, assert_matches, make_inputs, scale_of

from kldiv_onnx import kl_div
from kldiv_onnx.arrays import to_numpy as _to_numpy
from kldiv_onnx.reference import kl_div as reference

ms = pytest.importorskip("mindspore")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mindspore_tensors(reduction, dtype_name):
    x, t = make_inputs((5, 7), (1, 7), DTYPES[dtype_name], False)
    ms_dtype = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}[dtype_name]
    xm = ms.Tensor(x.astype(np.float32)).astype(ms_dtype)
    tm = ms.Tensor(t.astype(np.float32)).astype(ms_dtype)
    out = kl_div(xm, tm, reduction)
    assert isinstance(out, np.ndarray)
    assert_matches(out, reference(x, t, reduction), dtype_name, scale_of(x, t, reduction, False))


def test_mindspore_float32_without_copy():
    tensor = ms.Tensor(np.arange(6, dtype=np.float32))
    assert np.shares_memory(_to_numpy(tensor, "input"), tensor.asnumpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype_name", ["float32", "float16"])
def test_matches_mindspore_ops_kl_div(reduction, dtype_name):
    x, t = make_inputs((6, 9), (6, 9), DTYPES[dtype_name], False)
    want = ms.ops.kl_div(ms.Tensor(x), ms.Tensor(t), reduction).asnumpy()
    ours = kl_div(x, t, reduction)
    scale = scale_of(x, t, reduction, False)
    assert_matches(ours, reference(x, t, reduction), dtype_name, scale)
    # MindSpore's CPU kernel computes in the input dtype: compare at that dtype's precision.
    rtol = {"float32": 1e-5, "float16": 4e-3}[dtype_name]
    diff = np.abs(ours.astype(np.float64) - want.astype(np.float64))
    assert np.all(diff <= rtol * (np.abs(want.astype(np.float64)) + scale) + 1e-7)


def test_mindspore_dtype_error():
    with pytest.raises(TypeError, match="int32"):
        kl_div(ms.Tensor(np.zeros(2, np.int32)), ms.Tensor(np.zeros(2, np.int32)))
