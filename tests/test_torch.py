"""Against PyTorch eager (float64 ``F.kl_div``), and PyTorch tensors as inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, SHAPES, assert_matches, make_inputs, scale_of

from kldiv_onnx import kl_div, native

torch = pytest.importorskip("torch")
F = torch.nn.functional
BACKENDS = ["composite"] + (["fused"] if native.available() else [])


def _torch_kl(x: np.ndarray, t: np.ndarray, reduction: str, log_target: bool) -> np.ndarray:
    xt = torch.from_numpy(x.astype(np.float64))
    tt = torch.from_numpy(t.astype(np.float64))
    return F.kl_div(xt, tt, reduction=reduction, log_target=log_target).numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shapes", [s for s in SHAPES if 0 not in s[0] + s[1]], ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch_eager(backend, shapes, log_target, reduction, dtype_name):
    x, t = make_inputs(*shapes, DTYPES[dtype_name], log_target)
    want = _torch_kl(x, t, reduction, log_target)
    out = kl_div(x, t, reduction, log_target, backend=backend)
    assert_matches(out, want, dtype_name, scale_of(x, t, reduction, log_target))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_like_torch(reduction):
    x = np.zeros((0, 3), np.float32)
    want = _torch_kl(x, x, reduction, False)
    np.testing.assert_array_equal(kl_div(x, x, reduction), want.astype(np.float32))


def test_documented_difference_target_zero():
    """target == 0 with input -inf or NaN: 0 here (the limit), NaN in PyTorch 2.13 eager."""
    x = np.array([-np.inf, np.nan], np.float32)
    t = np.zeros(2, np.float32)
    assert np.isnan(_torch_kl(x, t, "none", False)).all()
    np.testing.assert_array_equal(kl_div(x, t, "none"), [0.0, 0.0])


def test_torch_tensors_in_numpy_out():
    x, t = make_inputs((4, 6), (4, 6), np.dtype(np.float32), False)
    out = kl_div(torch.from_numpy(x), torch.from_numpy(t), "batchmean")
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, _torch_kl(x, t, "batchmean", False), rtol=1e-5)


def test_torch_bfloat16_tensors():
    x, t = make_inputs((4, 6), (4, 6), np.dtype(np.float32), False)
    xb, tb = torch.from_numpy(x).bfloat16(), torch.from_numpy(t).bfloat16()
    out = kl_div(xb, tb, "sum")
    assert out.dtype == DTYPES["bfloat16"]
    want = F.kl_div(xb.double(), tb.double(), reduction="sum").item()
    assert abs(float(out) - want) <= 2.0**-7 * abs(want)


def test_torch_without_copy():
    from kldiv_onnx.arrays import to_numpy as _to_numpy

    tensor = torch.arange(6, dtype=torch.float32)
    assert np.shares_memory(_to_numpy(tensor, "input"), tensor.numpy())


def test_torch_dtype_errors():
    with pytest.raises(TypeError, match="float64"):
        kl_div(torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
