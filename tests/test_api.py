"""The Python API (KLDivLoss, kl_div) on every backend against the float64 reference."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, SHAPES, assert_matches, make_inputs, scale_of
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kldiv_onnx
from kldiv_onnx import KLDivLoss, kl_div, native
from kldiv_onnx.reference import kl_div as reference

BACKENDS = ["composite", "numpy"] + (["fused"] if native.available() else [])


def test_seed_example():
    """The MindSpore documentation's example: -0.225."""
    x = np.array([[0.5, 0.5], [0.4, 0.6]], np.float32)
    t = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    loss = KLDivLoss(reduction="mean", log_target=False)
    out = loss(x, t)
    assert out.shape == () and out.dtype == np.float32
    np.testing.assert_allclose(out, -0.225, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matrix(backend, shapes, log_target, reduction, dtype_name):
    x, t = make_inputs(*shapes, DTYPES[dtype_name], log_target)
    out = kl_div(x, t, reduction, log_target, backend=backend)
    ref = reference(x, t, reduction, log_target)
    assert_matches(out, ref, dtype_name, scale_of(x, t, reduction, log_target))


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_values(backend):
    """t == 0 gives 0 whatever the input (-inf, NaN); t < 0 or NaN gives NaN."""
    x = np.array([-np.inf, np.nan, 0.5, -1.0, -1.0, -2.0], np.float32)
    t = np.array([0.0, 0.0, 0.0, -0.5, np.nan, 0.25], np.float32)
    out = kl_div(x, t, "none", backend=backend)
    np.testing.assert_array_equal(out[:3], 0.0)
    assert np.isnan(out[3]) and np.isnan(out[4])
    np.testing.assert_allclose(out[5], 0.25 * (np.log(0.25) + 2.0), rtol=1e-6)
    assert np.isnan(kl_div(x, t, "sum", backend=backend))
    assert kl_div(x[:3], t[:3], "sum", backend=backend) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_accumulates_in_float32(backend):
    """A float16 sum of 4096 ones is 4096 (float16 accumulation would stall at 2048)."""
    t = np.full(4096, np.e, np.float16)  # t * log t = e * 1 ≈ 2.719 each...
    x = np.zeros(4096, np.float16)
    x_one = (t.astype(np.float64) * np.log(t.astype(np.float64)) - 1.0) / t.astype(np.float64)
    out = kl_div(x_one.astype(np.float16), t, "sum", backend=backend)
    want = reference(x_one.astype(np.float16), t, "sum")
    assert out.dtype == np.float16
    assert abs(float(out) - float(want)) <= 2.0**-10 * abs(float(want))
    assert abs(float(out) - 4096.0) <= 4.0  # within one float16 ulp of 4096 (ulp = 4)
    assert float(kl_div(x, t, "sum", backend=backend)) == pytest.approx(4096 * np.e, rel=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_low_precision_rounded_once(backend):
    """float16/bfloat16 results lie within one ulp of the exact value (math in float32)."""
    x, t = make_inputs((64, 33), (64, 33), np.dtype(np.float32), False)
    for name in ("float16", "bfloat16"):
        xl, tl = x.astype(DTYPES[name]), t.astype(DTYPES[name])
        ref = reference(xl, tl, "none")
        out = kl_div(xl, tl, "none", backend=backend).astype(np.float64)
        info = ml_dtypes.finfo(DTYPES[name])
        with np.errstate(divide="ignore"):
            exponent = np.floor(np.log2(np.abs(ref.astype(DTYPES[name]).astype(np.float64))))
        ulp = np.maximum(float(info.eps) * 2.0**exponent, float(info.smallest_subnormal))
        assert np.all(np.abs(out - ref) <= ulp), name


def test_auto_backend_prefers_fused():
    want = "fused" if native.available() else "composite"
    assert kldiv_onnx.api._check_backend("auto") == want


def test_sessions_are_reused():
    kldiv_onnx.clear_cache()
    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), False)
    kl_div(x, t, backend="composite")
    count = kldiv_onnx.runtime.cache_info()
    for _ in range(3):
        kl_div(x, t, backend="composite")
    assert kldiv_onnx.runtime.cache_info() == count == 1


@settings(max_examples=60, deadline=None)
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=5),
    reduction=st.sampled_from(REDUCTIONS),
    log_target=st.booleans(),
    dtype_name=st.sampled_from(list(DTYPES)),
    seed=st.integers(0, 2**16),
)
def test_property_composite(shapes, reduction, log_target, dtype_name, seed):
    x_shape, t_shape = shapes.input_shapes
    x, t = make_inputs(x_shape, t_shape, DTYPES[dtype_name], log_target, seed)
    for backend in BACKENDS:
        out = kl_div(x, t, reduction, log_target, backend=backend)
        assert_matches(
            out,
            reference(x, t, reduction, log_target),
            dtype_name,
            scale_of(x, t, reduction, log_target),
        )


@settings(max_examples=40, deadline=None)
@given(
    values=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
        elements=st.floats(-50, 50, width=32) | st.just(0.0),
    ),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_property_any_values(values, reduction):
    """Arbitrary finite values, negative targets included: NaN where the reference has NaN."""
    x = np.flip(values).copy()
    for backend in BACKENDS:
        out = kl_div(x, values, reduction, backend=backend)
        assert_matches(
            out, reference(x, values, reduction), "float32", scale_of(x, values, reduction, False)
        )


# --- errors ---------------------------------------------------------------------------------


def test_bad_reduction_at_construction():
    with pytest.raises(ValueError, match="'avg'"):
        KLDivLoss(reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        kl_div(np.zeros(2, np.float32), np.zeros(2, np.float32), reduction=None)


@pytest.mark.parametrize("bad", [[0.1, 0.2], 0.5, "x", None])
def test_not_an_array(bad):
    ok = np.zeros(2, np.float32)
    with pytest.raises(TypeError, match="input must be"):
        kl_div(bad, ok)
    with pytest.raises(TypeError, match="target must be"):
        kl_div(ok, bad)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64, np.bool_])
def test_bad_dtype(dtype):
    ok = np.zeros(2, np.float32)
    with pytest.raises(TypeError, match=str(np.dtype(dtype))):
        kl_div(ok.astype(dtype), ok.astype(dtype))


def test_mixed_dtypes():
    with pytest.raises(TypeError, match="float16 differs from input dtype float32"):
        kl_div(np.zeros(2, np.float32), np.zeros(2, np.float16))


def test_not_broadcastable():
    with pytest.raises(ValueError, match=r"\(2, 3\) and target shape \(4, 3\)"):
        kl_div(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32))


def test_bad_backend():
    with pytest.raises(ValueError, match="'gpu'"):
        KLDivLoss(backend="gpu")


def test_errors_before_any_session(monkeypatch):
    """Validation runs before a session is built."""
    kldiv_onnx.clear_cache()
    monkeypatch.setattr(kldiv_onnx.runtime, "session", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(ValueError):
        kl_div(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), backend="composite")
    with pytest.raises(TypeError):
        kl_div(np.zeros(2, np.float32), np.zeros(2, np.float64), backend="composite")
