"""The runtime adapter interface: names, availability, what each adapter declines, and the
same model run by every adapter at hand."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import make_inputs
from onnx import TensorProto, helper

from kldiv_onnx import native
from kldiv_onnx._contract import DOMAIN, GENERIC_OP
from kldiv_onnx.export import build_model
from kldiv_onnx.reference import kl_div
from kldiv_onnx.runtimes import ADAPTERS, OrtFused, Runtime, Tract, get, runtimes


def test_names_are_unique_and_found():
    names = [r.name for r in runtimes()]
    assert len(set(names)) == len(names) == len(ADAPTERS)
    assert names[0] == "onnx.reference (inlined)"
    for name in names:
        assert get(name).name == name
    with pytest.raises(KeyError, match="known"):
        get("nothing")


def test_a_missing_module_is_not_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tract" else real(name, *a)
    )
    assert Tract().unavailable() == "tract not installed"


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
    hidden = {"openvino", "tract"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a)
    )
    rows = _rows(validate(reduction="sum"))
    for name, module in (("OpenVINO", "openvino"), ("tract (inlined)", "tract")):
        assert rows[name]["status"] == UNAVAILABLE
        assert rows[name]["note"] == f"{module} not installed"
