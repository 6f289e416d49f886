"""Shared test helpers: seeded inputs (log_softmax / softmax) and dtype-aware comparison."""

from __future__ import annotations

from collections.abc import Iterator

import ml_dtypes
import numpy as np
import pytest

from kldiv_onnx.reference import sample_inputs
from kldiv_onnx.tolerance import RESULT_RTOL as RTOL

DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
REDUCTIONS = ("none", "mean", "sum", "batchmean")
# (input shape, target shape): equal, broadcast along leading / trailing / middle axes, 0-d, empty.
SHAPES = [
    ((4, 5), (4, 5)),
    ((3, 4, 5), (5,)),
    ((3, 1), (3, 7)),
    ((1, 6), (4, 1)),
    ((2, 1, 3), (1, 5, 3)),
    ((), ()),
    ((), (3, 2)),
    ((4,), ()),
    ((0, 3), (0, 3)),
    ((2, 0), (1, 0)),
]


def make_inputs(
    x_shape: tuple[int, ...],
    t_shape: tuple[int, ...],
    dtype: np.dtype,
    log_target: bool,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded log-probabilities and (log-)probabilities of the given shapes and dtype."""
    return sample_inputs(x_shape, t_shape, dtype, log_target, seed)


def assert_matches(
    result: np.ndarray, reference: np.ndarray, dtype_name: str, scale: float | np.ndarray
) -> None:
    """``result`` (in the dtype) against the float64 ``reference`` of the same dtype inputs:
    within one rounding to the dtype plus float32 errors proportional to ``scale``
    (:func:`scale_of`)."""
    assert result.dtype == DTYPES[dtype_name]
    assert result.shape == reference.shape
    got = result.astype(np.float64)
    tol = RTOL[dtype_name] * np.abs(reference) + 4e-6 * scale + 1e-30
    bad = ~((np.abs(got - reference) <= tol) | (np.isnan(got) & np.isnan(reference)))
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} differ: got {got[bad][:5]}, want {reference[bad][:5]}"
    )


def scale_of(x: np.ndarray, t: np.ndarray, reduction: str, log_target: bool) -> float | np.ndarray:
    """The magnitude float32 errors scale with: :func:`kldiv_onnx.reference.error_scale`."""
    from kldiv_onnx.reference import error_scale

    scale = error_scale(x, t, reduction, log_target)
    return scale if reduction == "none" else float(scale)


@pytest.fixture(params=list(DTYPES))
def dtype_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """An empty session cache before and after the test."""
    from kldiv_onnx import runtime

    runtime.clear_cache()
    yield
    runtime.clear_cache()
