"""kldiv_onnx.torch.export: one KLDivLoss node per loss, with its body, the numbers of torch.

A few models are exported (the dynamo exporter takes seconds each), each computing all eight
variants at once; every runtime then runs them on fresh inputs: onnxruntime with the native
library (fused), without it (the function body), the inlined file, and onnx.reference.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import pytest
from conftest import DTYPES, make_inputs

from kldiv_onnx import native, runtime
from kldiv_onnx._contract import DOMAIN, Variant
from kldiv_onnx.cli import main
from kldiv_onnx.interop.embed import inline_kldiv
from kldiv_onnx.tolerance import tolerance

torch = pytest.importorskip("torch")
kt = pytest.importorskip("kldiv_onnx.torch")
F = torch.nn.functional
REDUCTIONS = ("none", "mean", "sum", "batchmean")
VARIANTS = [Variant(r, lt) for lt in (False, True) for r in REDUCTIONS]
CLASSES = 5


class AllVariants(torch.nn.Module):
    """The eight variants of (x, t) and (x, log t), through F.kl_div and nn.KLDivLoss alike."""

    def __init__(self) -> None:
        super().__init__()
        self.losses = torch.nn.ModuleList(
            [torch.nn.KLDivLoss(reduction=r, log_target=True) for r in REDUCTIONS]
        )

    def forward(self, x, t, log_t):
        plain = [F.kl_div(x, t, reduction=r) for r in REDUCTIONS]
        return (*plain, *(loss(x, log_t) for loss in self.losses))


class Student(torch.nn.Module):
    """A classifier with its batchmean loss in the graph; the target is broadcast over the
    batch, so dynamo reads the batch size from the model's input, not from the loss's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(CLASSES, CLASSES)

    def forward(self, x, t):
        log_p = F.log_softmax(self.fc(x), -1)
        return F.kl_div(log_p, t, reduction="batchmean"), torch.nn.KLDivLoss(
            reduction="batchmean", log_target=True
        )(log_p, F.log_softmax(x, -1))


def _quiet_export(*args, **kwargs):
    logging.disable(logging.WARNING)  # the dynamo exporter logs its steps
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return kt.export(*args, verbose=False, **kwargs)
    finally:
        logging.disable(logging.NOTSET)


def _inputs(dtype: str, batch: int, seed: int = 0) -> list[np.ndarray]:
    x, t = make_inputs((batch, CLASSES), (batch, CLASSES), DTYPES[dtype], False, seed)
    log_t = make_inputs((batch, CLASSES), (batch, CLASSES), DTYPES[dtype], True, seed)[1]
    return [x, t, log_t]


@functools.cache
def exported(dtype: str, dynamic: bool, tmp: str) -> tuple[Path, object]:
    path = Path(tmp) / f"all_{dtype}_{'dynamic' if dynamic else 'static'}.onnx"
    batch = torch.export.Dim("batch")
    args = tuple(torch.from_numpy(a.astype(np.float32)).to(getattr(torch, dtype))
                 for a in _inputs(dtype, 4))  # fmt: skip
    program = _quiet_export(
        AllVariants(), args, path, input_names=["x", "t", "log_t"],
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}) if dynamic else None,
    )  # fmt: skip
    return path, program


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("torch_export"))


def _to_torch(a: np.ndarray, dtype: str):
    return torch.from_numpy(a.astype(np.float32)).to(getattr(torch, dtype))


def _eager(module, feeds: list[np.ndarray], dtype: str) -> list[np.ndarray]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on its 'mean'
        outs = module(*(_to_torch(a, dtype) for a in feeds))
    return [o.float().numpy().astype(np.float64) for o in outs]


def _ort(fused: bool):
    def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
        sess = runtime.session(model, providers=["CPUExecutionProvider"], fused=fused)
        return runtime.run(sess, feeds)

    return run


def _inlined(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    flat = inline_kldiv(model)
    assert not any(n.domain == DOMAIN for n in flat.graph.node)
    return _ort(False)(flat, feeds)


def _reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return onnx.reference.ReferenceEvaluator(model).run(None, feeds)  # the function bodies


RUNTIMES = {
    "fused": _ort(True),
    "composite": _ort(False),
    "inline": _inlined,
    "onnx.reference": _reference,
}
CASES = [
    ("float32", False),
    ("float32", True),
    ("float16", True),
    ("bfloat16", False),
]


def _runtime_ids():
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name == "fused" and not native.available(), reason="native library not built"
            ),
        )
        for name in RUNTIMES
    ]


@pytest.mark.parametrize(("dtype", "dynamic"), CASES, ids=str)
def test_one_node_per_loss_with_its_body(folder, dtype, dynamic):
    path, program = exported(dtype, dynamic, folder)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node if n.domain == DOMAIN]
    assert ops == [v.op_name for v in VARIANTS]
    assert not any(n.op_type == "Div" for n in model.graph.node)  # batchmean lifted
    assert sorted(f.name for f in model.functions) == sorted(ops)
    assert program.model_proto.graph == model.graph  # what torch.onnx.export returns
    for out in model.graph.output:
        assert out.type.tensor_type.elem_type == onnx.helper.np_dtype_to_tensor_dtype(DTYPES[dtype])


@pytest.mark.parametrize("runtime_name", _runtime_ids())
@pytest.mark.parametrize(("dtype", "dynamic"), CASES, ids=str)
def test_every_variant_matches_torch_eager(folder, dtype, dynamic, runtime_name):
    model = onnx.load(exported(dtype, dynamic, folder)[0])
    for batch, seed in [(4, 1)] + ([(7, 2), (1, 3)] if dynamic else []):
        feeds = _inputs(dtype, batch, seed)
        got = RUNTIMES[runtime_name](model, dict(zip(["x", "t", "log_t"], feeds, strict=True)))
        want = _eager(AllVariants(), feeds, dtype)
        for variant, out, ref in zip(VARIANTS, got, want, strict=True):
            assert out.dtype == DTYPES[dtype], variant.label
            x, t = feeds[0], feeds[2 if variant.log_target else 1]
            tol = 2 * tolerance(x, t, variant, ref)  # torch and the runtime each within one
            err = np.abs(out.astype(np.float64) - ref)
            assert (err <= tol).all(), f"{variant.label} batch {batch}: {err.max()} > {tol}"


@pytest.fixture(scope="module")
def student(folder) -> tuple[Path, Student]:
    path = Path(folder) / "student.onnx"
    module = Student()
    batch = torch.export.Dim("batch")
    x = torch.randn(4, CLASSES)
    t = torch.softmax(torch.randn(CLASSES), -1)
    _quiet_export(module, (x, t), path, input_names=["x", "t"],
                  dynamic_shapes=({0: batch}, None))  # fmt: skip
    return path, module


def test_dynamic_batch_read_from_the_model_input(student, tmp_path):
    path, module = student
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node if n.domain == DOMAIN]
    assert ops == ["KLDivLoss_batchmean", "KLDivLoss_batchmean_logtarget"]
    flat = tmp_path / "flat.onnx"
    assert main(["inline", str(path), str(flat)]) == 0
    rng = np.random.default_rng(5)
    for batch in (3, 9):
        x = rng.standard_normal((batch, CLASSES)).astype(np.float32)
        t = rng.dirichlet(np.ones(CLASSES)).astype(np.float32)
        with torch.no_grad():
            want = [o.double().numpy() for o in module(torch.from_numpy(x), torch.from_numpy(t))]
        feeds = {"x": x, "t": t}
        outs = [RUNTIMES["composite"](model, feeds), _ort(False)(onnx.load(flat), feeds),
                _reference(model, feeds)]  # fmt: skip
        if native.available():
            outs.append(RUNTIMES["fused"](model, feeds))
        for got in outs:
            np.testing.assert_allclose(np.array(got, np.float64), want, rtol=1e-5, atol=1e-7)


def test_writes_nothing_when_the_export_fails(tmp_path):
    class Bad(torch.nn.Module):
        def forward(self, x, t):
            return F.kl_div(x, t, reduction="sum") + F.kl_div(x.half(), t.half(), reduction="sum")

    path = tmp_path / "bad.onnx"
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="one model holds each variant for one dtype"):
        _quiet_export(Bad(), (x, x), path)
    assert list(tmp_path.iterdir()) == []


def test_refuses_the_torchscript_exporter(tmp_path):
    with pytest.raises(ValueError, match="dynamo"):
        kt.export(AllVariants(), (), tmp_path / "m.onnx", dynamo=False)


def test_without_torch_export_says_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"not installed: pip install 'kldiv-onnx\[torch\]'"):
        kt.export(object(), ())
