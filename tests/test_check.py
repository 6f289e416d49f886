"""``kldiv-onnx check --provider cann``: the placement the CANN provider would make."""

from __future__ import annotations

from importlib import resources

import onnx
import pytest
from conftest import REDUCTIONS
from onnx import TensorProto, helper

from kldiv_onnx import build_model, cann
from kldiv_onnx.cli import main

BODY_OPS = {
    "Cast",
    "Equal",
    "Where",
    "Log",
    "Exp",
    "Sub",
    "Mul",
    "ReduceSum",
    "ReduceProd",
    "Shape",
    "Concat",
    "Gather",
    "Div",
    "Identity",
    "Constant",
}


def _model(nodes, opset=15, inputs=("x",), dtype=TensorProto.FLOAT, initializers=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, dtype, [2, "n"]) for name in inputs],
        [helper.make_tensor_value_info("y", dtype, None)],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _check(tmp_path, model, *args):
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return main(["check", "--provider", "cann", *args, str(path)])


# --- the tables ----------------------------------------------------------------------------


def test_tables_say_where_they_come_from():
    table = cann.tables()
    assert table.onnxruntime == "1.24.4"
    assert "cann_graph.cc" in table.sources["graph_mode"]
    assert "libonnxruntime_providers_cann.so" in table.sources["single_op"]
    assert resources.files("kldiv_onnx").joinpath("data", cann.TABLE_FILE).is_file()
    assert (table.opset_min, table.opset_max) == (8, 15)


def test_graph_mode_list():
    ops = cann.tables().graph_ops
    assert len(ops) == 134
    assert ops >= BODY_OPS
    assert not {"IsNaN", "Einsum", "Trilu", "CastLike", "If", "Loop"} & ops


def test_kernel_registry_has_no_body_reductions():
    kernels = {k.op for k in cann.tables().kernels}
    assert {"Log", "Exp", "Mul", "Sub", "Div", "Cast"} <= kernels
    assert not {"Equal", "Where", "ReduceSum", "ReduceProd", "Shape", "Gather"} & kernels


# --- our models ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["function", "inline"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_exported_model_stays_on_the_npu(reduction, log_target, dtype, form):
    report = cann.check_placement(build_model(reduction, log_target, dtype, form=form))
    assert report.ok, report.format()
    assert report.partitions == 1 and report.opset == 15 and report.blocker is None
    # the body's ops are what the provider sees: nothing was folded away with dynamic shapes
    assert report.nodes >= 5


@pytest.mark.parametrize("form", ["function", "inline"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cli_passes_exported_models(tmp_path, capsys, form, dtype):
    code = _check(tmp_path, build_model("batchmean", True, dtype, form=form))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stay on the NPU (1 NPU partition)" in out


def test_static_shapes_fold_the_shape_arithmetic():
    dynamic = cann.check_placement(build_model("batchmean", False, "float32", ["b", 5]))
    static = cann.check_placement(build_model("batchmean", False, "float32", [4, 5]))
    assert static.ok and static.nodes < dynamic.nodes


def test_single_operator_mode_cannot_take_the_body(tmp_path, capsys):
    code = _check(tmp_path, build_model("mean"), "--cann-mode", "op")
    out = capsys.readouterr().out
    assert code == 1
    for op in ("Equal", "Where", "ReduceSum", "ReduceProd", "Shape"):
        assert f"no CANN kernel for {op}" in out


def test_single_operator_mode_checks_types():
    """Exp at opset 13+ has a float16 kernel only; Log takes float32."""
    report = cann.check_placement(
        _model(
            [
                helper.make_node("Log", ["x"], ["l"], name="log"),
                helper.make_node("Exp", ["l"], ["y"], name="exp"),
            ]
        ),
        "op",
    )
    assert [(n.op, n.name) for n in report.leaving] == [("Exp", "exp")]
    assert "float16" in report.leaving[0].reason and "float32" in report.leaving[0].reason
    ok = cann.check_placement(
        _model([helper.make_node("Exp", ["x"], ["y"])], dtype=TensorProto.FLOAT16), "op"
    )
    assert ok.ok


# --- models CANN cannot take whole -----------------------------------------------------------


@pytest.mark.parametrize("op", ["IsNaN", "Einsum"])
def test_an_op_outside_the_list_is_named(tmp_path, capsys, op):
    if op == "IsNaN":
        nodes = [
            helper.make_node("Log", ["x"], ["l"], name="log"),
            helper.make_node("IsNaN", ["l"], ["nan"], name="isnan"),
            helper.make_node("Cast", ["nan"], ["c"], to=TensorProto.FLOAT, name="cast"),
            helper.make_node("Mul", ["c", "l"], ["y"], name="mul"),
        ]
    else:
        nodes = [
            helper.make_node("Log", ["x"], ["l"], name="log"),
            helper.make_node("Einsum", ["l", "x"], ["e"], equation="ij,ij->ij", name="einsum"),
            helper.make_node("Exp", ["e"], ["y"], name="exp"),
        ]
    model = _model(nodes)
    report = cann.check_placement(model)
    assert [(n.op, n.domain, n.opset, n.dtype) for n in report.leaving] == [
        (op, "ai.onnx", 15, "bool" if op == "IsNaN" else "float32")
    ]
    assert report.partitions == 2  # the node cuts the graph in two NPU models
    code = _check(tmp_path, model)
    out = capsys.readouterr().out
    assert code == 1
    assert f"{op} is not in the CANN graph-mode op list" in out
    assert "would leave the NPU" in out and "2 NPU partitions" in out


def test_custom_domain_node_is_named(tmp_path, capsys):
    """A function-form model without its function: the kldiv_onnx node leaves the NPU."""
    model = build_model("sum")
    del model.functions[:]
    code = _check(tmp_path, model)
    out = capsys.readouterr().out
    assert code == 1
    assert "KLDivLoss_sum" in out and "domain 'kldiv_onnx' is not ai.onnx" in out


def test_opset_20_is_named_as_the_blocker(tmp_path, capsys):
    """A torch export lands at opset 20: every node is fine but the opset."""
    code = _check(tmp_path, build_model("mean", opset=20))
    out = capsys.readouterr().out
    assert code == 1
    assert "blocker: ai.onnx opset 20" in out
    assert "opset 20 is above 15" in out
    report = cann.check_placement(build_model("mean", opset=20))
    assert report.partitions == 0 and len(report.leaving) == report.nodes


def test_opset_below_8():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], opset=7)
    report = cann.check_placement(model)
    assert not report.ok and "below 8" in report.leaving[0].reason


def test_constant_only_nodes():
    """Constants are initializers; a node fed only by them is folded by onnxruntime, and left
    out of graph mode where it is not folded."""
    nodes = [
        helper.make_node("Constant", [], ["a"], value_float=2.0),
        helper.make_node("Constant", [], ["b"], value_float=3.0),
        helper.make_node("Add", ["a", "b"], ["c"], name="add_constants"),
        helper.make_node("Mul", ["x", "c"], ["y"], name="mul"),
    ]
    folded = cann.check_placement(_model(nodes))
    assert folded.ok and folded.nodes == 1
    kept = cann.check_placement(_model(nodes), fold_constants=False)
    assert [n.name for n in kept.leaving] == ["add_constants"]
    assert "all inputs are initializers" in kept.leaving[0].reason


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["check", "--provider", "cann", str(tmp_path / "missing.onnx")]) == 2
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00 not a protobuf")
    assert main(["check", "--provider", "cann", str(garbage)]) == 2
    assert "not an ONNX model" in capsys.readouterr().err
    model = tmp_path / "m.onnx"
    onnx.save(build_model(), model)
    assert main(["check", "--provider", "cuda", str(model)]) == 2
    assert main(["check", "--cann-mode", "eager", str(model)]) == 2


def test_mode_is_validated():
    with pytest.raises(ValueError, match="mode"):
        cann.check_placement(build_model(), "eager")
