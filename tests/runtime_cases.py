"""Cases every ONNX runtime adapter is tested on: the build_model matrix (reduction ×
log_target × dtype × shape) and the model files embed, distill and fuse write from the
models/torch students and teachers."""

from __future__ import annotations

import io
import itertools
import warnings
from pathlib import Path

import numpy as np
import onnx
from conftest import DTYPES, REDUCTIONS, make_inputs

from kldiv_onnx.export import build_model
from kldiv_onnx.interop.distill import distill
from kldiv_onnx.interop.embed import embed
from kldiv_onnx.reference import error_scale, kl_div

TORCH_MODELS = Path(__file__).resolve().parent.parent / "models" / "torch"
SHAPES = {
    "equal": ((8, 10), (8, 10)),
    "broadcast": ((8, 10), (1, 10)),
    "3d": ((4, 1, 6), (3, 6)),
}
MATRIX = list(itertools.product(REDUCTIONS, (False, True), SHAPES))
"""(reduction, log_target, shape name): with each dtype, the cases of the runtime table of
docs/runtimes.md."""


def check_variant(run_model, reduction: str, log_target: bool, dtype: str, shape: str) -> None:
    """Build the function-form file, run it with ``run_model(model, feeds) -> outputs`` and
    compare with the float64 reference: one rounding to the dtype after float32 math."""
    x_shape, t_shape = SHAPES[shape]
    model = build_model(reduction, log_target, dtype, list(x_shape), list(t_shape))
    x, t = make_inputs(x_shape, t_shape, DTYPES[dtype], log_target)
    (got,) = run_model(model, {"input": x, "target": t})
    want = kl_div(x, t, reduction, log_target)
    assert got.dtype == DTYPES[dtype], got.dtype
    assert got.shape == want.shape
    eps = (
        float(np.finfo(np.float32).eps)
        if dtype == "float32"
        else 2.0 ** {"float16": -10, "bfloat16": -7}[dtype]
    )
    scale = error_scale(x, t, reduction, log_target)
    tol = eps * np.abs(want) + 8 * float(np.finfo(np.float32).eps) * scale + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= tol), f"max error {err.max():.3g}, tolerance {np.min(tol):.3g}"


def _student_logits_feeds(batch: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"features": rng.standard_normal((batch, 16)).astype(np.float32)}


def _probs(rows: int, classes: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((rows, classes))
    p = np.exp(z - z.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def embedded() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The student with a batchmean loss on its logits (log_softmax inserted)."""
    model = embed(TORCH_MODELS / "student_mlp.onnx", "logits", log_softmax=True)
    feeds = _student_logits_feeds()
    feeds["target"] = _probs(6, 10, 1)
    return model, feeds


def distilled() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Student and teacher with the distillation loss between them (T = 2)."""
    model = distill(
        TORCH_MODELS / "student_mlp.onnx",
        TORCH_MODELS / "teacher_mlp.onnx",
        student_output="logits",
        teacher_output="logits",
        temperature=2.0,
    )
    return model, _student_logits_feeds()


def fused() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A torch classifier with F.kl_div inside, exported (TorchScript exporter, opset 20) and
    fused into one KLDivLoss node. Needs torch."""
    import torch

    from kldiv_onnx.interop.fuse import fuse

    class StudentLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x, t):
            logits = self.fc(x)
            log_p = torch.nn.functional.log_softmax(logits, -1)
            return logits, torch.nn.functional.kl_div(log_p, t, reduction="batchmean")

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            StudentLoss(),
            (torch.zeros(2, 16), torch.zeros(2, 10)),
            buffer,
            dynamo=False,
            opset_version=20,
            input_names=["x", "t"],
            output_names=["logits", "loss"],
            dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}},
        )
    result = fuse(onnx.load_from_string(buffer.getvalue()))
    assert result.count == 1
    feeds = {"x": _student_logits_feeds()["features"], "t": _probs(6, 10, 2)}
    return result.model, feeds


def model_cases() -> dict[str, object]:
    return {"embed": embedded, "distill": distilled, "fuse": fused}


def check_model_file(run_model, make) -> None:
    """``run_model`` agrees with onnxruntime (composite body) on every output, rtol 1e-5."""
    from kldiv_onnx import runtime

    model, feeds = make()
    want = runtime.run(runtime.session(model, fused=False), feeds)
    got = run_model(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * float(np.abs(w).max() + 1))
