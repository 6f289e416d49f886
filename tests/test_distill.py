"""distill: student + teacher + T**2 * KL(softmax(t/T) || log_softmax(s/T)) vs torch eager."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kldiv_onnx import distill, runtime
from kldiv_onnx.cli import main

torch = pytest.importorskip("torch")
F = torch.nn.functional
MODELS = Path(__file__).resolve().parent.parent / "models"
STUDENT, TEACHER = MODELS / "torch" / "student_mlp.onnx", MODELS / "torch" / "teacher_mlp.onnx"


def _torch_mlp(model: onnx.ModelProto) -> torch.nn.Module:
    """The PyTorch module with the exported model's own weights (Linear → ReLU → Linear)."""
    weights = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer
    }
    hidden, features = weights["0.weight"].shape
    classes = weights["2.weight"].shape[0]
    module = torch.nn.Sequential(
        torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes)
    )
    module.load_state_dict(weights)
    return module.eval()


def _outputs(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    sess = runtime.session(model, providers=["CPUExecutionProvider"], fused=False)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, runtime.run(sess, feeds), strict=True))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_matches_torch_eager_on_the_same_weights(reduction, temperature):
    student, teacher = onnx.load(STUDENT), onnx.load(TEACHER)
    merged = distill(
        student,
        teacher,
        student_output="logits",
        teacher_output="logits",
        temperature=temperature,
        reduction=reduction,
    )
    x = np.random.default_rng(11).standard_normal((6, 16)).astype(np.float32)
    got = _outputs(merged, {"features": x})
    assert list(got) == ["logits", "teacher/logits", "distill_loss"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on its 'mean'
        s, t = _torch_mlp(student)(torch.from_numpy(x)), _torch_mlp(teacher)(torch.from_numpy(x))
        T = temperature
        want = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction=reduction) * (
            T * T
        )
        terms = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="none")
    # float32 on both sides: the loss is a difference of terms of this size, so is its error
    scale = float(terms.abs().sum()) * T * T
    np.testing.assert_allclose(got["logits"], s.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["teacher/logits"], t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["distill_loss"], want.numpy(), rtol=1e-5, atol=1e-6 * scale)


def test_clashing_names_are_prefixed_and_inputs_shared():
    student, teacher = onnx.load(STUDENT), onnx.load(TEACHER)
    merged = distill(student, teacher, student_output="logits", teacher_output="logits")
    graph = merged.graph
    assert [i.name for i in graph.input] == ["features"]
    inits = {i.name for i in graph.initializer}
    assert {"0.weight", "teacher/0.weight", "2.bias", "teacher/2.bias"} <= inits
    node_names = [n.name for n in graph.node]
    assert len(node_names) == len(set(node_names))
    outputs = [o for n in graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))
    assert onnx.load(STUDENT).SerializeToString() == student.SerializeToString()
    onnx.checker.check_model(merged, full_check=True)


def test_errors():
    student, teacher = onnx.load(STUDENT), onnx.load(TEACHER)
    kwargs = {"student_output": "logits", "teacher_output": "logits"}
    with pytest.raises(ValueError, match="temperature"):
        distill(student, teacher, temperature=0.0, **kwargs)
    with pytest.raises(ValueError, match="'scores'"):
        distill(student, teacher, student_output="scores", teacher_output="logits")
    teacher.graph.input[0].name = "pixels"
    for node in teacher.graph.node:
        node.input[:] = ["pixels" if n == "features" else n for n in node.input]
    with pytest.raises(ValueError, match="share no input"):
        distill(student, teacher, **kwargs)


def test_distill_cli(tmp_path, capsys):
    out = tmp_path / "kd.onnx"
    argv = ["distill", str(STUDENT), str(TEACHER), str(out), "--student-output", "logits"]
    assert main([*argv, "--teacher-output", "logits", "--temperature", "2"]) == 0
    assert "distill_loss" in capsys.readouterr().out
    assert [o.name for o in onnx.load(out).graph.output][-1] == "distill_loss"
    assert main([*argv, "--teacher-output", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err
