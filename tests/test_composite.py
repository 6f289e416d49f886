"""The composite body's reductions: the float32 sum in stages keeps 2**27 terms within 1e-5 of
float64, scaled partials keep every result float32 can hold finite, and tiny totals keep their
digits, for every rank and dtype."""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from conftest import DTYPES

from kldiv_onnx import build_model, cann, runtime
from kldiv_onnx.reference import kl_div, sample_inputs

BIG = 2**27
"""Terms of the long sums: the issue's size. Broadcast inputs keep them small (128 × 1024
log-probabilities against 1024 × 1024 probabilities) while the body sums 2**27 loss terms."""
X_BIG, T_BIG = (128, 1, 1024), (1, 1024, 1024)
FLT_MAX = float(np.finfo(np.float32).max)


def _run(model, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The composite in onnxruntime, in a session of its own without a memory arena (the
    session cache would keep a 2**27-term run's buffers)."""
    options = runtime.session_options(arena=False)
    sess = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (out,) = runtime.run(sess, {"input": x, "target": t})
    return out


def _dims(shape: tuple[int, ...], prefix: str = "d") -> list[str]:
    """Symbolic dims, so that the body's shape arithmetic runs rather than folds."""
    return [f"{prefix}{i}" for i in range(len(shape))]


@functools.cache
def _big(dtype: str, log_target: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """The inputs of the 2**27-term loss and its float64 total, summed by the reference one
    input row (2**20 terms) at a time."""
    x, t = sample_inputs(X_BIG, T_BIG, DTYPES[dtype], log_target, seed=11)
    total = sum(float(kl_div(x[i], t, "sum", log_target)) for i in range(x.shape[0]))
    return x, t, total


BIG_CASES = [
    *[("float32", r, False) for r in ("sum", "mean", "batchmean")],
    ("float32", "sum", True),
    ("float16", "mean", False),
    ("bfloat16", "sum", False),
]


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "reduction", "log_target"), BIG_CASES, ids=str)
def test_two_to_the_27_terms_within_1e_5_of_float64(dtype, reduction, log_target):
    """One ReduceSum over these terms was 1.7e-2 off (float32); the staged sum is ~1e-7 off,
    so float16/bfloat16 results are the float64 value rounded once (half an ulp)."""
    x, t, total = _big(dtype, log_target)
    want = {"sum": total, "mean": total / BIG, "batchmean": total / X_BIG[0]}[reduction]
    model = build_model(reduction, log_target, dtype, _dims(X_BIG, "x"), _dims(T_BIG, "t"))
    got = float(np.asarray(_run(model, x, t), dtype=np.float64))
    tol = 1e-5 if dtype == "float32" else float(ml_dtypes.finfo(x.dtype).eps) / 2 + 1e-5
    assert abs(got - want) <= tol * abs(want), (got, want)


@pytest.mark.parametrize(
    "shape", [(2**22,), (2**12, 2**10), (2**22, 1), (1, 3, 2**20 + 5)], ids=str
)
@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_long_sums_of_any_rank(shape, reduction):
    """2**22 terms in any layout: 1-D, rows, one column, a block size that does not divide."""
    x, t = sample_inputs(shape, shape, np.dtype(np.float32), False, seed=5)
    model = build_model(reduction, False, "float32", _dims(shape), _dims(shape))
    got = float(_run(model, x, t))
    want = float(kl_div(x, t, reduction))
    assert abs(got - want) <= 1e-6 * abs(want), (got, want)  # one ReduceSum: 2e-4 .. 2e-3


@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 2**20 - 1, 2**20, 2**20 + 1, 3 * 2**20 + 7])
def test_every_term_is_counted_once(n):
    """n terms of exactly 1 (t = 1, x = -1) sum to n: no term is lost or doubled by the
    blocks, their zero fill or the stages, on either side of each block boundary."""
    x = np.full(n, -1.0, np.float32)
    t = np.ones((), np.float32)
    assert float(_run(build_model("sum", False, "float32", ["n"], []), x, t)) == n
    assert float(_run(build_model("mean", False, "float32", ["n"], []), x, t)) == 1.0


def _huge(n: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """n loss terms of 3e38 each (t = 1, x = -3e38): any sum of two overflows float32."""
    return np.full(n, -3e38, DTYPES[dtype]), np.ones(n, DTYPES[dtype])


HUGE_RTOL = {"float32": 1e-5, "bfloat16": 2.0**-8 + 1e-5}  # bfloat16: half an ulp more


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("n", [2, 1000, 2**21 + 3])
@pytest.mark.parametrize("reduction", ["mean", "batchmean"])
def test_mean_of_huge_terms_does_not_overflow(reduction, n, dtype):
    """The mean of terms near float32's largest value is that value, not inf (a 1-D input has
    a row per term: batchmean is the mean too); 2**21 terms overflow even the block means
    summed unscaled, and the ``hi`` row takes over."""
    x, t = _huge(n, dtype)
    want = float(kl_div(x, t, reduction))
    model = build_model(reduction, False, dtype, ["n"], ["n"])
    got = float(np.asarray(_run(model, x, t), dtype=np.float64))
    assert np.isfinite(got) and abs(got - want) <= HUGE_RTOL[dtype] * want, (got, want)


def test_sum_that_passes_through_overflow():
    """3e38 + 3e38 - 3e38: the result fits float32 although a running sum does not."""
    x = np.array([-3e38, -3e38, 3e38], np.float32)
    t = np.ones((), np.float32)
    want = float(kl_div(x, t, "sum"))
    assert 2.9e38 < want < FLT_MAX
    got = float(_run(build_model("sum", False, "float32", ["n"], []), x, t))
    assert abs(got - want) <= 1e-6 * want, (got, want)


def test_batchmean_of_huge_rows():
    """One term of 3e38 per row (the rest of the row has target 0): the batch mean is 3e38."""
    rows = 2**18
    x = np.full((rows, 4), -3e38, np.float32)
    t = np.zeros((rows, 4), np.float32)
    t[:, 0] = 1.0
    want = float(kl_div(x, t, "batchmean"))
    got = float(_run(build_model("batchmean", False, "float32", ["b", 4], ["b", 4]), x, t))
    assert abs(got - want) <= 1e-5 * want, (got, want)  # equal terms: rounding adds up


def test_a_true_overflow_is_inf():
    x, t = _huge(3)
    assert float(_run(build_model("sum", False, "float32", ["n"], ["n"]), x, t)) == np.inf


@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_tiny_totals_keep_their_digits(reduction):
    """Terms of 1e-30: totals scaled by 2**-40 would be subnormal (3 digits); the unscaled row
    is used wherever it is finite."""
    x = np.array([-1e-30, -2e-30, -4e-30], np.float32)
    t = np.ones((), np.float32)
    want = float(kl_div(x, t, reduction))
    got = float(_run(build_model(reduction, False, "float32", ["n"], []), x, t))
    assert abs(got - want) <= 1e-6 * want, (got, want)


@pytest.mark.parametrize(
    ("reduction", "x_shape", "want"),
    [
        ("sum", (0, 3), 0.0),
        ("mean", (0, 3), np.nan),
        ("batchmean", (0, 3), np.nan),
        ("mean", (2, 0), np.nan),
        ("batchmean", (2, 0), 0.0),
    ],
)
def test_empty(reduction, x_shape, want):
    x, t = sample_inputs(x_shape, x_shape, np.dtype(np.float32), False)
    got = float(_run(build_model(reduction, False, "float32", ["a", "b"], ["a", "b"]), x, t))
    np.testing.assert_equal(got, want)


@pytest.mark.parametrize("value", [np.inf, np.nan])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_inf_and_nan_terms_stay(value, reduction):
    """A term of inf (x = -inf, t > 0) or NaN (t < 0) makes the total inf or NaN, as before."""
    x = np.array([-1.0, -np.inf if value == np.inf else -1.0, -1.0], np.float32)
    t = np.array([0.5, 0.5 if value == np.inf else -0.5, 0.5], np.float32)
    want = float(kl_div(x, t, reduction))
    got = float(_run(build_model(reduction, False, "float32", ["n"], ["n"]), x, t))
    np.testing.assert_equal(got, want)


@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_the_staged_body_stays_whole_on_the_npu_unfolded(reduction, dtype_name):
    """Every op of the staged sum is on the CANN graph-mode list, and no node is fed by
    constants alone, so the body is one NPU partition even without constant folding."""
    model = build_model(reduction, False, dtype_name)
    assert {n.op_type for n in model.functions[0].node} <= cann.tables().graph_ops
    report = cann.check_placement(model, fold_constants=False)
    assert report.ok and report.partitions == 1, report.format()
