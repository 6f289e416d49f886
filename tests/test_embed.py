"""embed: the loss added to exported models, on logits and on log-probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_inputs
from onnx import TensorProto, helper

from kldiv_onnx import DOMAIN, embed, op_name, runtime
from kldiv_onnx.cli import main
from kldiv_onnx.reference import kl_div as reference

MODELS = Path(__file__).resolve().parent.parent / "models"
STUDENT = MODELS / "torch" / "student_mlp.onnx"
REDUCTIONS = ("none", "mean", "sum", "batchmean")


def _run(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    sess = runtime.session(model, providers=["CPUExecutionProvider"], fused=False)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, runtime.run(sess, feeds), strict=True))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    return (
        z
        - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - z.max(-1, keepdims=True)
    )


def _log_probs_model(dtype: int = TensorProto.FLOAT, opset: int = 17) -> onnx.ModelProto:
    """features → Gemm → LogSoftmax: a classifier whose output holds log-probabilities."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["scores"], name="mm"),
        helper.make_node("LogSoftmax", ["scores"], ["log_probs"], name="ls", axis=-1),
    ]
    if dtype != TensorProto.FLOAT:
        nodes.insert(1, helper.make_node("Cast", ["scores"], ["scores_c"], to=dtype))
        nodes[2].input[0] = "scores_c"
    graph = helper.make_graph(
        nodes,
        "clf",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("log_probs", dtype, ["batch", 4])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_embed_on_logits_of_an_exported_model(reduction):
    model = onnx.load(STUDENT)
    before = model.SerializeToString()
    out = embed(model, "logits", log_softmax=True, reduction=reduction)
    assert model.SerializeToString() == before
    assert [o.name for o in out.graph.output] == ["logits", "kldiv_loss"]
    target = next(i for i in out.graph.input if i.name == "target")
    dims = target.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 10]  # symbolic batch kept
    assert out.opset_import[0].version == 20 and out.ir_version >= 8  # opset kept
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    _, t = make_inputs((3, 10), (3, 10), np.dtype(np.float32), False, seed=2)
    got = _run(out, {"features": x, "target": t})
    logits = _run(model, {"features": x})["logits"]
    np.testing.assert_array_equal(got["logits"], logits)  # original output kept
    want = reference(_log_softmax(logits), t, reduction)
    np.testing.assert_allclose(got["kldiv_loss"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["function", "inline"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_embed_on_log_probabilities(reduction, log_target, form):
    model = _log_probs_model()
    out = embed(model, "log_probs", reduction=reduction, log_target=log_target, form=form)
    nodes = [n for n in out.graph.node if n.domain == DOMAIN]
    if form == "function":
        assert [n.op_type for n in nodes] == [op_name(reduction, log_target)]
        assert [f.name for f in out.functions] == [op_name(reduction, log_target)]
    else:
        assert not nodes and not out.functions
        assert DOMAIN not in {o.domain for o in out.opset_import}
    assert out.opset_import[0].version == 17  # >= 13 already: kept
    feats = np.random.default_rng(4).standard_normal((5, 6)).astype(np.float32)
    _, t = make_inputs((5, 4), (5, 4), np.dtype(np.float32), log_target, seed=6)
    got = _run(out, {"features": feats, "target": t})
    want = reference(got["log_probs"], t, reduction, log_target)
    np.testing.assert_allclose(got["kldiv_loss"], want, rtol=1e-5, atol=1e-7)


def test_existing_target_intermediate_input_and_raised_opset():
    model = _log_probs_model(opset=11)
    model.graph.input.append(
        helper.make_tensor_value_info("soft_labels", TensorProto.FLOAT, ["batch", 4])
    )
    model.graph.node.append(helper.make_node("Softmax", ["soft_labels"], ["q"], axis=-1))
    out = embed(model, "scores", target="q", log_softmax=True, reduction="sum")
    assert out.opset_import[0].version == 13  # raised only as far as needed
    assert [i.name for i in out.graph.input] == ["features", "soft_labels"]
    feats = np.random.default_rng(7).standard_normal((2, 6)).astype(np.float32)
    labels = np.random.default_rng(8).standard_normal((2, 4)).astype(np.float32)
    got = _run(out, {"features": feats, "soft_labels": labels})
    q = np.exp(_log_softmax(labels))
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    want = reference(_log_softmax(feats @ w), q, "sum")
    np.testing.assert_allclose(got["kldiv_loss"], want, rtol=1e-5)


def test_float16_model():
    out = embed(_log_probs_model(TensorProto.FLOAT16), "log_probs", reduction="mean")
    feats = np.random.default_rng(9).standard_normal((3, 6)).astype(np.float32)
    _, t = make_inputs((3, 4), (3, 4), np.dtype(np.float16), False, seed=1)
    got = _run(out, {"features": feats, "target": t})
    assert got["kldiv_loss"].dtype == np.float16
    want = reference(got["log_probs"], t, "mean")
    assert abs(float(got["kldiv_loss"]) - float(want)) <= 2.0**-10 * abs(float(want)) + 1e-6


def test_errors_name_the_culprit():
    model = _log_probs_model()
    with pytest.raises(ValueError, match="'nope'"):
        embed(model, "nope")
    with pytest.raises(ValueError, match="'missing_target'"):
        embed(model, "log_probs", target="missing_target")
    with pytest.raises(ValueError, match="'log_probs' is already"):
        embed(model, "log_probs", output_name="log_probs")
    with pytest.raises(ValueError, match="reduction"):
        embed(model, "log_probs", reduction="avg")
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]))
    with pytest.raises(TypeError, match="'ids' has type INT64"):
        embed(model, "ids")
    with pytest.raises(TypeError, match="target 'ids' has type INT64"):
        embed(model, "log_probs", target="ids")
    model.graph.input.append(helper.make_tensor_value_info("half", TensorProto.FLOAT16, [2, 4]))
    with pytest.raises(TypeError, match="target 'half' is float16"):
        embed(model, "log_probs", target="half")
    model.graph.input.append(helper.make_tensor_value_info("wide", TensorProto.FLOAT, [2, 7]))
    with pytest.raises(ValueError, match="not broadcastable"):
        embed(model, "features", target="wide")


def test_embed_cli(tmp_path, capsys):
    out = tmp_path / "with_loss.onnx"
    argv = ["embed", str(STUDENT), str(out), "--input", "logits", "--log-softmax"]
    assert main(argv) == 0
    assert "new input 'target'" in capsys.readouterr().out
    assert [o.name for o in onnx.load(out).graph.output] == ["logits", "kldiv_loss"]
    assert main(["embed", str(STUDENT), str(out), "--input", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "absent.onnx"), str(out), "--input", "x"]) == 2
