"""The runtime adapter interface: names, availability, what each adapter declines, and the
same model run by every adapter at hand."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_inputs
from onnx import TensorProto, helper

from kldiv_onnx import native
from kldiv_onnx._contract import DOMAIN, GENERIC_OP
from kldiv_onnx.export import build_model
from kldiv_onnx.reference import kl_div
from kldiv_onnx.runtimes import (
    ADAPTERS,
    FRAMEWORKS,
    MindSporeOps,
    OrtFused,
    Runtime,
    TorchEager,
    Tract,
    Unsupported,
    frameworks,
    get,
    runtimes,
)


def test_names_are_unique_and_found():
    names = [r.name for r in runtimes()]
    assert len(set(names)) == len(names) == len(ADAPTERS)
    assert names[0] == "onnx.reference (inlined)"
    for name in names:
        assert get(name).name == name
    with pytest.raises(KeyError, match="known"):
        get("nothing")


def test_frameworks_are_found_by_name():
    names = [r.name for r in frameworks()]
    assert names == ["PyTorch eager", "MindSpore"] and len(FRAMEWORKS) == 2
    assert not set(names) & {r.name for r in runtimes()}
    for name in names:
        assert get(name).name == name


def test_a_missing_module_is_not_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tract" else real(name, *a)
    )
    assert Tract().unavailable() == "tract not installed"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert TorchEager().unavailable() == "torch not installed"
    assert MindSporeOps().unavailable() == "mindspore not installed"


def test_asking_a_framework_adapter_imports_nothing():
    """An adapter imports its framework only where it runs a model."""
    code = (
        "import sys\n"
        "from kldiv_onnx.interop import validate\n"
        "from kldiv_onnx.runtimes import frameworks\n"
        "for a in frameworks():\n"
        "    a.unavailable(); a.version()\n"
        "print(sorted(m for m in ('torch', 'mindspore') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_what_adapters_decline():
    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        )
    )
    assert OrtFused().unsupported(plain) == "no KLDivLoss node"
    assert Tract().unsupported(build_model(dtype="bfloat16")) == "tract has no bfloat16"
    assert OrtFused().unavailable() == (None if native.available() else "native library not built")
    for framework in frameworks():
        assert framework.unsupported(plain) == "runs single-KLDivLoss models only"
        assert framework.unsupported(_generic("sum")) == "runs single-KLDivLoss models only"
        with pytest.raises(ValueError, match="single-KLDivLoss"):
            framework.load(plain)
    assert MindSporeOps().unsupported(build_model("sum", True)) == "ops.kl_div has no log_target"


@pytest.mark.parametrize("adapter", frameworks(), ids=lambda r: r.name)
@pytest.mark.parametrize("reduction", ["none", "batchmean"])
def test_every_framework_runs_a_single_node_file(adapter: Runtime, reduction: str):
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    model = build_model(reduction, False, "float32", [3, 4], [3, 4])
    assert adapter.unsupported(model) is None
    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), False)
    (got,) = adapter.load(model)({"input": x, "target": t})
    assert got.shape == kl_div(x, t, reduction).shape
    np.testing.assert_allclose(got, kl_div(x, t, reduction), rtol=2e-6, atol=1e-7)
    assert adapter.version()


def test_mindspore_declines_what_ops_kl_div_does_not_take():
    adapter = MindSporeOps()
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    run = adapter.load(build_model("sum", False, "float32", ["n", 4], [4]))
    x, t = make_inputs((3, 4), (4,), np.dtype(np.float32), False)
    with pytest.raises(Unsupported, match="equal shapes only"):
        run({"input": x, "target": t})
    empty = np.zeros((0, 4), np.float32)
    with pytest.raises(Unsupported, match="0-d or empty"):
        run({"input": empty, "target": empty})


def _generic(reduction: str) -> object:
    node = helper.make_node(
        GENERIC_OP, ["input", "target"], ["loss"], domain=DOMAIN, reduction=reduction
    )
    graph = helper.make_graph(
        [node],
        "generic",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 4]) for n in ("input", "target")],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid(DOMAIN, 1)]
    )


@pytest.mark.parametrize("adapter", runtimes(), ids=lambda r: r.name)
@pytest.mark.parametrize("generic", [False, True], ids=["variant", "generic"])
def test_every_adapter_runs_the_same_file(adapter: Runtime, generic: bool):
    model = _generic("sum") if generic else build_model("sum", False, "float32", [3, 4], [3, 4])
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    if adapter.unsupported(model):
        assert generic and adapter.name in ("onnxruntime composite", "tract (inlined)")
        assert "no function body" in adapter.unsupported(model)
        return
    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), False)
    (got,) = adapter.load(model)({"input": x, "target": t})
    np.testing.assert_allclose(got, kl_div(x, t, "sum"), rtol=2e-6, atol=1e-7)
    assert adapter.version()


def _rows(report) -> dict[str, dict]:
    return {r["runtime"]: r for r in report.to_dict()["rows"]}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_validate_shows_openvino_and_tract_by_name(dtype):
    pytest.importorskip("openvino")
    pytest.importorskip("tract")
    from kldiv_onnx.interop.validate import validate

    report = validate(
        reduction="mean", log_target=True, dtype=dtype, input_shape=(4, 1, 6), target_shape=(3, 6)
    )
    rows = _rows(report)
    assert rows["OpenVINO"]["status"] == "ok"
    if dtype == "bfloat16":
        assert rows["tract (inlined)"]["status"] == "not supported"
        assert rows["tract (inlined)"]["note"] == "tract has no bfloat16"
    else:
        assert rows["tract (inlined)"]["status"] == "ok"
    assert report.ok
    assert "OpenVINO" in report.table() and "tract (inlined)" in report.table()


def test_validate_model_file_rows():
    pytest.importorskip("openvino")
    pytest.importorskip("tract")
    from runtime_cases import distilled

    from kldiv_onnx.interop.validate import validate

    model, feeds = distilled()
    rows = _rows(validate(model, inputs=feeds))
    assert rows["OpenVINO"]["status"] == rows["tract (inlined)"]["status"] == "ok"


def test_validate_says_not_installed(monkeypatch):
    from kldiv_onnx.interop.validate import UNAVAILABLE, validate

    real = importlib.util.find_spec
    hidden = {"openvino", "tract", "torch", "mindspore"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a)
    )
    rows = _rows(validate(reduction="sum"))
    for name, module in (
        ("OpenVINO", "openvino"),
        ("tract (inlined)", "tract"),
        ("PyTorch eager", "torch"),
        ("MindSpore", "mindspore"),
    ):
        assert rows[name]["status"] == UNAVAILABLE
        assert rows[name]["note"] == f"{module} not installed"


def test_a_framework_refusing_a_case_is_not_supported(monkeypatch):
    """A framework's own error is a case it does not take: "not supported", never a failure."""
    from kldiv_onnx.interop.validate import UNSUPPORTED, validate

    if TorchEager().unavailable():
        pytest.skip(TorchEager().unavailable())

    def refuse(self, x, t, variant):
        raise RuntimeError("no kernel for this\nsecond line")

    monkeypatch.setattr(TorchEager, "kl_div", refuse)
    report = validate(reduction="mean")
    row = _rows(report)["PyTorch eager"]
    assert row["status"] == UNSUPPORTED
    assert row["note"] == "RuntimeError: no kernel for this"
    assert report.ok
