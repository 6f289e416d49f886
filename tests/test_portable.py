"""inline: every model-local function inlined, nothing of the kldiv_onnx domain left."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import DTYPES, make_inputs
from onnx import TensorProto, helper
from runtime_cases import embedded

from kldiv_onnx import runtime
from kldiv_onnx._contract import DOMAIN, GENERIC_OP
from kldiv_onnx.export import build_model
from kldiv_onnx.portable import inline


def _domains(model: onnx.ModelProto) -> set[str]:
    return {n.domain for n in model.graph.node} | {o.domain for o in model.opset_import}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_inline_leaves_standard_ops_only_with_the_same_outputs(dtype):
    model = build_model("batchmean", True, dtype)
    out = inline(model)
    assert DOMAIN not in _domains(out)
    assert not out.functions
    onnx.checker.check_model(out, full_check=True)
    x, t = make_inputs((4, 5), (4, 5), DTYPES[dtype], True)
    feeds = {"input": x, "target": t}
    before = runtime.run(runtime.session(model, fused=False), feeds)
    after = runtime.run(runtime.session(out, fused=False), feeds)
    np.testing.assert_array_equal(before[0], after[0])


def test_inline_keeps_the_rest_of_a_model_and_takes_paths_and_bytes(tmp_path):
    model, feeds = embedded()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    before = path.read_bytes()
    for source in (model, path, str(path), before):
        out = inline(source)
        assert DOMAIN not in _domains(out)
        assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert path.read_bytes() == before  # the input is untouched
    got = runtime.run(runtime.session(inline(model), fused=False), feeds)
    want = runtime.run(runtime.session(model, fused=False), feeds)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_generic_op_has_no_body_and_is_named():
    node = helper.make_node(GENERIC_OP, ["x", "t"], ["loss"], name="my_loss", domain=DOMAIN)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "t")],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid(DOMAIN, 1)]
    )
    with pytest.raises(ValueError, match=r"'my_loss' \(kldiv_onnx\.KLDivLoss\).*no function body"):
        inline(model)


def test_a_variant_without_its_function_is_named():
    model = build_model("sum")
    del model.functions[:]
    with pytest.raises(ValueError, match=r"kldiv_loss.*carries no function"):
        inline(model)


@pytest.mark.parametrize("content", [b"", b"not a model", b"\x08\x01\x12\x03abc"])
def test_bad_files_are_value_errors(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.onnx"):
        inline(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        inline("/nonexistent/model.onnx")
