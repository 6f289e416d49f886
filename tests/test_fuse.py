"""fuse: every kl_div pattern torch 2.13 exports becomes one KLDivLoss node, same outputs."""

from __future__ import annotations

import functools
import io
import logging
import warnings

import numpy as np
import onnx
import pytest
from conftest import DTYPES, make_inputs

from kldiv_onnx import Variant, fuse, native, op_name, runtime
from kldiv_onnx.cli import main
from kldiv_onnx.reference import kl_div as reference
from kldiv_onnx.tolerance import tolerance

torch = pytest.importorskip("torch")
F = torch.nn.functional
REDUCTIONS = ("none", "mean", "sum", "batchmean")
SHAPE = (4, 5)


class KL(torch.nn.Module):
    def __init__(self, reduction: str, log_target: bool) -> None:
        super().__init__()
        self.reduction, self.log_target = reduction, log_target

    def forward(self, x, t):
        return F.kl_div(x, t, reduction=self.reduction, log_target=self.log_target)


class StudentLoss(torch.nn.Module):
    """A classifier whose loss is computed inside the graph: the pattern amid other ops."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(5, 5)

    def forward(self, x, t):
        logits = self.fc(x)
        return logits, F.kl_div(F.log_softmax(logits, -1), t, reduction="batchmean")


@functools.cache
def exported(module_key: tuple, exporter: str, dynamic: bool, dtype: str = "float32") -> bytes:
    """The module exported by torch's default exporter settings (default opset), with inputs
    of ``dtype``."""
    module = StudentLoss() if module_key == ("student",) else KL(*module_key)
    x, t = (torch.zeros(SHAPE, dtype=getattr(torch, dtype)) for _ in range(2))
    names = ["x", "t"]
    outputs = ["logits", "loss"] if module_key == ("student",) else ["loss"]
    logging.disable(logging.WARNING)  # the dynamo exporter logs its steps
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "torchscript":
                buffer = io.BytesIO()
                axes = {"x": {0: "batch"}, "t": {0: "batch"}} if dynamic else None
                torch.onnx.export(
                    module, (x, t), buffer, dynamo=False, input_names=names,
                    output_names=outputs, dynamic_axes=axes,
                )  # fmt: skip
                return buffer.getvalue()
            batch = torch.export.Dim("batch")
            shapes = ({0: batch}, {0: batch}) if dynamic else None
            program = torch.onnx.export(
                module, (x, t), dynamo=True, input_names=names, output_names=outputs,
                dynamic_shapes=shapes, verbose=False,
            )  # fmt: skip
            return program.model_proto.SerializeToString()
    finally:
        logging.disable(logging.NOTSET)


def _run(model: onnx.ModelProto, feeds: dict, fused: bool = False) -> list[np.ndarray]:
    return runtime.run(
        runtime.session(model, providers=["CPUExecutionProvider"], fused=fused), feeds
    )


CASES = [
    (exporter, dynamic, reduction, log_target)
    for exporter in ("torchscript", "dynamo")
    for reduction in REDUCTIONS
    for log_target in (False, True)
    for dynamic in (True, False)
    if dynamic or reduction == "batchmean"  # static shapes change only batchmean's divisor
]


@pytest.mark.parametrize(("exporter", "dynamic", "reduction", "log_target"), CASES, ids=str)
def test_every_torch_pattern_becomes_one_node(exporter, dynamic, reduction, log_target):
    original = onnx.load_from_string(exported((reduction, log_target), exporter, dynamic))
    assert len(original.graph.node) >= 3
    before = original.SerializeToString()
    result = fuse(original)
    assert original.SerializeToString() == before  # the argument is untouched
    assert result.count == 1
    model = result.model
    assert [n.op_type for n in model.graph.node] == [op_name(reduction, log_target)]
    assert len(model.graph.initializer) == 0  # the pattern's constants went with it
    assert [f.name for f in model.functions] == [op_name(reduction, log_target)]
    assert result.ops == {op_name(reduction, log_target): 1}
    onnx.checker.check_model(model, full_check=True)

    x, t = make_inputs(SHAPE, SHAPE, np.dtype(np.float32), log_target, seed=3)
    feeds = {"x": x, "t": t}
    (want,) = _run(original, feeds)
    want_ref = reference(x, t, reduction, log_target)
    backends = [False] + ([True] if native.available() else [])
    for fused in backends:
        (got,) = _run(model, feeds, fused=fused)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(got, want_ref, rtol=2e-6, atol=1e-7)


LOW_PRECISION_CASES = [
    (dtype, reduction, log_target, dynamic)
    for dtype in ("float16", "bfloat16")
    for reduction in ("sum", "mean", "batchmean")
    for log_target in (False, True)
    for dynamic in (True, False)
    if dynamic or reduction == "batchmean"
]


@pytest.mark.parametrize(
    ("dtype", "reduction", "log_target", "dynamic"), LOW_PRECISION_CASES, ids=str
)
def test_float16_and_bfloat16_dynamo_exports_become_one_node(dtype, reduction, log_target, dynamic):
    """dynamo sums a float16/bfloat16 loss in float32 (Cast, ReduceSum, Cast back for
    batchmean): the whole loss is still one node. torch's ``sum`` graph outputs the float32
    sum, so the node's result is cast to float32 to keep the model's output type."""
    original = onnx.load_from_string(exported((reduction, log_target), "dynamo", dynamic, dtype))
    result = fuse(original)
    name = op_name(reduction, log_target)
    assert result.count == 1 and result.ops == {name: 1}
    model = result.model
    assert [n.op_type for n in model.graph.node] == [name] + (
        ["Cast"] if reduction == "sum" else []
    )
    assert len(model.graph.initializer) == 0
    assert [f.name for f in model.functions] == [name]
    onnx.checker.check_model(model, full_check=True)
    out_type = original.graph.output[0].type.tensor_type.elem_type
    assert model.graph.output[0].type.tensor_type.elem_type == out_type

    x, t = make_inputs(SHAPE, SHAPE, DTYPES[dtype], log_target, seed=3)
    feeds = {"x": x, "t": t}
    want = reference(x, t, reduction, log_target)
    tol = tolerance(x, t, Variant(reduction, log_target), want)
    outputs = []
    for fused in [False] + ([True] if native.available() else []):
        (got,) = _run(model, feeds, fused=fused)
        assert got.dtype == onnx.helper.tensor_dtype_to_np_dtype(out_type)
        assert np.all(np.abs(got.astype(np.float64) - want) <= tol), (got, want)
        outputs.append(got)
    if dtype == "float16":  # onnxruntime's CPU provider has no bfloat16 Div or ReduceSum
        (before,) = _run(original, feeds)
        for got in outputs:
            np.testing.assert_allclose(
                got.astype(np.float64), before.astype(np.float64), atol=2 * tol
            )


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_pattern_inside_a_model(exporter):
    original = onnx.load_from_string(exported(("student",), exporter, True))
    result = fuse(original)
    assert result.count == 1
    ops = [n.op_type for n in result.model.graph.node]
    assert op_name("batchmean", False) in ops
    assert ops.count(op_name("batchmean", False)) == 1
    assert {"Gemm", "LogSoftmax"} <= set(ops)
    assert len(ops) == 3  # Gemm, LogSoftmax, KLDivLoss
    x, t = make_inputs(SHAPE, SHAPE, np.dtype(np.float32), False, seed=5)
    x = x.astype(np.float32) * 3  # any features
    want = _run(original, {"x": x, "t": t})
    got = _run(result.model, {"x": x, "t": t})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-7)


def test_nothing_to_fuse_returns_the_model_unchanged(tmp_path, capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "models" / "torch" / "student_mlp.onnx"
    original = onnx.load(path)
    result = fuse(original)
    assert result.count == 0 and result.ops == {}
    assert result.model.SerializeToString() == original.SerializeToString()
    assert result.model is not original
    out = tmp_path / "same.onnx"
    assert main(["fuse", str(path), str(out)]) == 0
    assert "nothing to fuse" in capsys.readouterr().out
    assert onnx.load(out).SerializeToString() == original.SerializeToString()


def test_documented_difference_negative_target():
    """TorchScript's export maps target < 0 to 0; the fused op gives NaN (as torch eager)."""
    original = onnx.load_from_string(exported(("none", False), "torchscript", True))
    model = fuse(original).model
    x = np.full((1, 5), -1.0, np.float32)
    t = np.array([[0.5, -0.25, 0.0, 0.25, 0.5]], np.float32)
    (before,) = _run(original, {"x": x, "t": t})
    (after,) = _run(model, {"x": x, "t": t})
    assert before[0, 1] == 0.0 and np.isnan(after[0, 1])
    assert torch.isnan(F.kl_div(torch.from_numpy(x), torch.from_numpy(t), reduction="none")[0, 1])
    mask = np.arange(5) != 1
    np.testing.assert_allclose(after[0, mask], before[0, mask], rtol=2e-6)


def test_fuse_cli_summary_and_bad_file(tmp_path, capsys):
    src = tmp_path / "kl.onnx"
    src.write_bytes(exported(("sum", True), "dynamo", True))
    out = tmp_path / "fused.onnx"
    assert main(["fuse", str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fused 1" in printed and "KLDivLoss_sum_logtarget x1" in printed
    assert len(onnx.load(out).graph.node) == 1
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["fuse", str(bad), str(out)]) == 2
    assert "cannot read model" in capsys.readouterr().err
