"""kldiv-onnx inline / prepare: files in, files out, one line and exit 2 for bad input, exit 1
for a node that would leave the NPU; the input is never touched."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kldiv_onnx._contract import DOMAIN, GENERIC_OP
from kldiv_onnx.cli.main import build_parser, main
from kldiv_onnx.export import build_model


def _save(path, model: onnx.ModelProto) -> bytes:
    data = model.SerializeToString()
    path.write_bytes(data)
    return data


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("kldiv-onnx: error: ")
    return err


def _model(nodes, opset=20, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_inline(tmp_path, capsys):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    data = _save(src, build_model("batchmean"))
    assert main(["inline", str(src), str(out)]) == 0
    assert "standard ops only" in capsys.readouterr().out
    model = onnx.load(out)
    assert all(n.domain != DOMAIN for n in model.graph.node)
    assert DOMAIN not in {o.domain for o in model.opset_import}
    assert src.read_bytes() == data


def test_inline_generic_op_names_the_node(tmp_path, capsys):
    node = helper.make_node(GENERIC_OP, ["x", "x"], ["y"], name="loss_node", domain=DOMAIN)
    model = _model([node], opset=15)
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _save(src, model)
    assert main(["inline", str(src), str(out)]) == 2
    assert "'loss_node'" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("command", ["inline", "prepare"])
def test_bad_files(tmp_path, capsys, command):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    src.write_bytes(b"not an onnx file")
    extra = ["--target", "portable"] if command == "prepare" else []
    assert main([command, str(src), str(out), *extra]) == 2
    assert "in.onnx" in _one_line_error(capsys)
    assert main([command, str(tmp_path / "missing.onnx"), str(out), *extra]) == 2
    _one_line_error(capsys)
    assert not out.exists()


def test_prepare_cann_torch_export(tmp_path, capsys):
    from test_prepare import torch_export

    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    data = torch_export("dynamo", "none")
    src.write_bytes(data)
    assert main(["prepare", str(src), str(out), "--target", "cann"]) == 0
    text = capsys.readouterr().out
    assert "1 KL subgraph(s) fused" in text and "rewritten Gelu ×1" in text
    assert "stay on the NPU" in text
    assert src.read_bytes() == data
    assert next(o.version for o in onnx.load(out).opset_import if o.domain == "") == 15


def test_prepare_cann_names_each_node_that_would_leave(tmp_path, capsys):
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("IsNaN", ["x"], ["nan"], name="isnan_node"),
        helper.make_node("Where", ["nan", "zero", "x"], ["y"], name="where"),
    ]
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _save(src, _model(nodes, inits=[zero]))
    assert main(["prepare", str(src), str(out), "--target", "cann"]) == 1
    text = capsys.readouterr().out
    assert "isnan_node" in text and "not in the CANN graph-mode op list" in text
    assert out.exists()  # written: lowered as far as it goes


def test_prepare_unreachable_target_is_one_line(tmp_path, capsys):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    data = _save(src, _model([helper.make_node("Mish", ["x"], ["y"], name="mish_node")]))
    assert main(["prepare", str(src), str(out), "--target", "cann"]) == 2
    err = _one_line_error(capsys)
    assert "'mish_node' (ai.onnx.Mish)" in err and "opset 15" in err
    assert src.read_bytes() == data and not out.exists()


def test_prepare_unknown_target(tmp_path, capsys):
    src = tmp_path / "in.onnx"
    _save(src, build_model())
    assert main(["prepare", str(src), str(tmp_path / "o.onnx"), "--target", "npu"]) == 2
    assert "npu" in _one_line_error(capsys)


def test_prepare_openvino_reports_what_it_cannot_read(tmp_path, capsys):
    pytest.importorskip("openvino")
    model = _model([helper.make_node("Frob", ["x"], ["y"], name="frob", domain="my.ops")], 15)
    model.opset_import.append(helper.make_opsetid("my.ops", 1))
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _save(src, model)
    assert main(["prepare", str(src), str(out), "--target", "openvino"]) == 2
    assert "my.ops.Frob" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("target", ["onnxruntime", "openvino", "portable"])
def test_prepare_other_targets(tmp_path, capsys, target):
    if target == "openvino":
        pytest.importorskip("openvino")
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _save(src, build_model("sum"))
    assert main(["prepare", str(src), str(out), "--target", target]) == 0
    domains = {n.domain for n in onnx.load(out).graph.node}
    assert (DOMAIN in domains) == (target != "portable")


def test_every_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("inline", "prepare"):
        for action in sub.choices[name]._actions:
            if action.dest != "help":
                assert action.help, (name, action.dest)
