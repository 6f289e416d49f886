"""The Python API (KLDivLoss, kl_div) on every backend against the float64 reference."""

from __future__ import annotations

import copy
import os
import pickle
import traceback
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, SHAPES, assert_matches, make_inputs, scale_of
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kldiv_onnx
from kldiv_onnx import KLDivLoss, kl_div, native
from kldiv_onnx._contract import Variant, dtype_name
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


def test_masked_arrays_rejected():
    """A masked array's mask would be silently dropped: TypeError, for either argument."""
    ok = np.full((2, 2), 0.5, np.float32)
    masked = np.ma.array(ok, mask=[[True, False], [False, False]])
    for args in ((masked, ok), (ok, masked)):
        with pytest.raises(TypeError, match="masked array"):
            kl_div(*args, "sum")
        with pytest.raises(TypeError, match="masked array"):
            KLDivLoss("sum")(*args)
    loss = KLDivLoss("sum")
    loss(ok, ok)  # a prepared call for these shapes exists: still refused
    with pytest.raises(TypeError, match="masked array"):
        loss(masked, ok)


# --- the prepared call: same results as an unprepared run, every path ------------------------


def _plain(x, t, reduction, log_target=False, backend="composite"):
    """The loss through runtime.session + runtime.run, as kl_div ran it before it was cached."""
    sess = kldiv_onnx.runtime.session(
        kldiv_onnx.api._model_bytes(
            Variant(reduction, log_target), dtype_name(x.dtype), (x.ndim, t.ndim)
        ),
        providers=["CPUExecutionProvider"],
        fused=backend == "fused",
    )
    return kldiv_onnx.runtime.run(sess, {"input": x, "target": t})[0]


def _expected(x, t, reduction, backend):
    """What a call must return, bit for bit: the unprepared run of contiguous copies."""
    x, t = np.ascontiguousarray(x), np.ascontiguousarray(t)
    if backend == "numpy":
        return np.asarray(reference(x, t, reduction).astype(x.dtype))
    return _plain(x, t, reduction, backend=backend)


def _same(out, want):
    assert out.dtype == want.dtype and out.shape == want.shape
    assert out.tobytes() == want.tobytes()


ONNX_BACKENDS = [b for b in BACKENDS if b != "numpy"]
BIG = (64, 1000)  # 256 KB of float32: above COPY_BYTES, bound by address


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "shapes",
    [((2, 2), (2, 2)), (BIG, BIG), (BIG, (1, 1000)), ((1, 1000), BIG), ((3, 4, 5), (5,))],
    ids=str,
)
def test_prepared_calls_rebind_each_call(backend, reduction, shapes, dtype_name):
    """Calls on new arrays of the same dtypes and shapes give each its own, fresh result,
    bit for bit that of an unprepared run; the results of earlier calls are not overwritten."""
    loss = KLDivLoss(reduction, backend=backend)
    results = []
    for seed in range(3):
        x, t = make_inputs(*shapes, DTYPES[dtype_name], False, seed)
        out = loss(x, t)
        want = _plain(x, t, reduction, backend=backend)
        _same(out, want)
        results.append((out, want.copy()))
    for out, want in results:
        _same(out, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(6, 8), (64, 2000)], ids=str)
def test_non_contiguous_and_alternating_dtypes(backend, shape):
    """Strided views, Fortran order and a dtype change at the same shapes."""
    loss = KLDivLoss("none", backend=backend)
    x, t = make_inputs(shape, shape, np.dtype(np.float32), False)
    for xv, tv in ((x[:, ::2], t[:, ::2]), (x[:, 1::2], t[:, ::2]), (x.T, t.T)):
        want = _expected(xv, tv, "none", backend)
        _same(loss(xv, tv), want)
        _same(loss(np.asfortranarray(xv), np.asfortranarray(tv)), want)
    for name in ("float16", "float32", "bfloat16", "float32"):
        xd, td = x.astype(DTYPES[name]), t.astype(DTYPES[name])
        _same(loss(xd, td), _expected(xd, td, "none", backend))


def test_dtype_checks_survive_the_cache():
    """Errors do not depend on what ran before: a float64 or big-endian array of shapes
    already prepared is still a TypeError, an unbroadcastable pair a ValueError."""
    loss = KLDivLoss("sum")
    ok = np.full((2, 3), 0.25, np.float32)
    loss(ok, ok)
    with pytest.raises(TypeError, match="float64"):
        loss(ok.astype(np.float64), ok.astype(np.float64))
    with pytest.raises(TypeError, match="float16 differs"):
        loss(ok, ok.astype(np.float16))
    with pytest.raises(TypeError, match=">f4"):
        loss(ok.astype(">f4"), ok.astype(">f4"))
    with pytest.raises(ValueError, match="not broadcastable"):
        loss(ok, np.zeros((4, 3), np.float32))


def test_no_file_system_per_call(monkeypatch):
    """After the first call, neither the library's path nor any file is looked at."""
    x, t = make_inputs((2, 2), (2, 2), np.dtype(np.float32), False)
    loss = KLDivLoss("batchmean")
    first = loss(x, t)
    kl_div(x, t, "batchmean")
    seen: list[str] = []

    def spy(real):
        def call(*args, **kwargs):
            seen.append("".join(traceback.format_stack(limit=6)))
            return real(*args, **kwargs)

        return call

    for module, name in ((native, "library_path"), (native, "available"), (os, "stat")):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    monkeypatch.setattr(os, "open", spy(os.open))
    outs = [f(x, t) for _ in range(3) for f in (loss, lambda a, b: kl_div(a, b, "batchmean"))]
    monkeypatch.undo()
    assert not seen, seen[0]
    for out in outs:
        np.testing.assert_array_equal(out, first)


def test_clear_cache_retires_prepared_calls():
    """kldiv_onnx.clear_cache() drops the sessions: the next call builds one again."""
    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), False)
    loss = KLDivLoss("sum", backend="composite")
    first = loss(x, t)
    assert len(loss._local.calls) == 1
    kldiv_onnx.clear_cache()
    assert kldiv_onnx.runtime.cache_info() == 0
    assert loss._local.calls == {} == loss._local.by_dtype  # let go of at once
    np.testing.assert_array_equal(loss(x, t), first)
    assert kldiv_onnx.runtime.cache_info() == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 2), BIG], ids=str)
def test_one_instance_many_threads(backend, shape):
    """Threads calling one KLDivLoss (and kl_div) at once each get their own result."""
    loss = KLDivLoss("none", backend=backend, threads=1)
    inputs = [make_inputs(shape, shape, np.dtype(np.float32), False, s) for s in range(8)]
    wants = [loss(x, t) for x, t in inputs]

    def work(i: int) -> bool:
        x, t = inputs[i % 8]
        for _ in range(30):
            if not np.array_equal(loss(x, t), wants[i % 8]):
                return False
            if not np.array_equal(kl_div(x, t, "none", backend=backend, threads=1), wants[i % 8]):
                return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(16)))


def test_threads_argument():
    x, t = make_inputs((4, 5), (4, 5), np.dtype(np.float32), False)
    want = kl_div(x, t, "sum")
    for threads in (None, 0, 1, 2):
        assert kl_div(x, t, "sum", threads=threads) == want
        assert KLDivLoss("sum", threads=threads)(x, t) == want
    assert "threads=1" in repr(KLDivLoss(threads=1))
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="threads"):
            KLDivLoss(threads=bad)
        with pytest.raises(ValueError, match="threads"):
            kl_div(x, t, threads=bad)


def test_kl_div_arguments_checked_every_call():
    """kl_div keeps a KLDivLoss per argument set: values equal to a cached one but of another
    type (1.0 for True) are still checked."""
    x = np.full(3, 0.5, np.float32)
    kl_div(x, x, "sum", True)
    for bad in (1.0, "no", 2):
        with pytest.raises(ValueError, match="log_target"):
            kl_div(x, x, "sum", bad)
    with pytest.raises(ValueError, match="reduction"):
        kl_div(x, x, ["sum"])
    with pytest.raises(ValueError, match="backend"):
        kl_div(x, x, backend="gpu")


def test_pickle_and_copy():
    """A KLDivLoss pickles (without its prepared calls) and the copy computes the same."""
    x, t = make_inputs((4, 5), (4, 5), np.dtype(np.float32), False)
    loss = KLDivLoss("batchmean", threads=1)
    want = loss(x, t)
    for other in (pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss)):
        assert repr(other) == repr(loss)
        np.testing.assert_array_equal(other(x, t), want)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_tensors_use_the_prepared_call(dtype):
    """Tensors after numpy arrays of the same dtype and shapes: the same bits, each call."""
    torch = pytest.importorskip("torch")
    from_numpy = kldiv_onnx.arrays.to_torch
    loss = KLDivLoss("none")
    for seed in range(3):
        x, t = make_inputs((3, 4), (3, 4), DTYPES[dtype], False, seed)
        want = loss(x, t)
        out = loss(from_numpy(x), from_numpy(t))
        _same(out, want)
        assert isinstance(out, np.ndarray)
    with pytest.raises(TypeError, match="float64"):
        loss(torch.zeros((3, 4), dtype=torch.float64), torch.zeros((3, 4), dtype=torch.float64))


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_same_buffers_new_contents(backend, reduction):
    """Arrays refilled in place between calls (the same addresses, bound once): every call
    sees the current contents; as do strided views, whose contiguous copies may land where
    the last one was."""
    loss = KLDivLoss(reduction, backend=backend)
    x = np.empty(BIG, np.float32)
    t = np.empty(BIG, np.float32)
    for seed in range(3):
        x[...], t[...] = make_inputs(BIG, BIG, np.dtype(np.float32), False, seed)
        _same(loss(x, t), _expected(x, t, reduction, backend))
        xs, ts = make_inputs((64, 2000), (64, 2000), np.dtype(np.float32), False, seed)
        _same(loss(xs[:, ::2], ts[:, ::2]), _expected(xs[:, ::2], ts[:, ::2], reduction, backend))


def test_evicted_sessions_are_let_go():
    """Prepared calls do not keep sessions the session cache evicted: no more are held than
    the cache holds."""
    kldiv_onnx.clear_cache()
    losses = []
    for rank in range(1, 6):
        x, t = make_inputs((2,) * rank, (2,) * rank, np.dtype(np.float32), False)
        for reduction in REDUCTIONS:
            for log_target in (False, True):
                loss = KLDivLoss(reduction, log_target, backend="composite")
                loss(x, t)
                losses.append(loss)
    assert len(losses) > kldiv_onnx.runtime.CACHE_SIZE
    held = sum(len(loss._local.calls) for loss in losses)
    assert held == kldiv_onnx.runtime.cache_info() == kldiv_onnx.runtime.CACHE_SIZE


def test_configuration_is_read_only():
    """Changing reduction (or the rest) after calls would leave the prepared calls running
    the old configuration: refused."""
    loss = KLDivLoss("sum", True, backend="composite", threads=1)
    assert (loss.reduction, loss.log_target, loss.backend, loss.threads) == (
        "sum",
        True,
        "composite",
        1,
    )
    for name, value in (("reduction", "mean"), ("log_target", False), ("backend", "numpy")):
        with pytest.raises(AttributeError):
            setattr(loss, name, value)
    with pytest.raises(AttributeError):
        loss.threads = 2
