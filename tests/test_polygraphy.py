"""kldiv_onnx.polygraphy_compare: Polygraphy's exit status with the KL comparison, and the
function itself against a float64 numpy KL."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from child import child_env
from onnx import TensorProto, helper, numpy_helper

from kldiv_onnx import polygraphy_compare as pc

pytest.importorskip("polygraphy")
SCRIPT = Path(pc.__file__)
ROWS, FEATURES, CLASSES = 64, 8, 10
POLYGRAPHY = (  # Polygraphy's command line (its `polygraphy` script) in this Python
    "import sys; from polygraphy.tools import main; sys.argv[0] = 'polygraphy'; sys.exit(main())"
)


def _numpy_kl(base: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """KL(softmax(base) ‖ softmax(candidate)) per row, float64."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        return (
            z
            - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - z.max(-1, keepdims=True)
        )

    lp, lq = log_softmax(base), log_softmax(candidate)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def _classifier(path: Path, weights: np.ndarray) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [ROWS, CLASSES])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)


def _polygraphy(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", POLYGRAPHY, *args],
        cwd=cwd, env=child_env(**env), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """base.onnx's outputs (and inputs) saved by Polygraphy; close.onnx and far.onnx beside."""
    folder = tmp_path_factory.mktemp("polygraphy")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((FEATURES, CLASSES)).astype(np.float32)
    _classifier(folder / "base.onnx", w)
    # a tiny change of the weights (the argmax of every row kept), and a large one
    _classifier(folder / "close.onnx", w * np.float32(1.001))
    _classifier(folder / "far.onnx", w + rng.standard_normal(w.shape).astype(np.float32))
    done = _polygraphy(
        ["run", "base.onnx", "--onnxrt", "--save-inputs", "inputs.json",
         "--save-outputs", "base.json"],
        folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def _compare(folder: Path, candidate: str, max_kl: str) -> subprocess.CompletedProcess:
    return _polygraphy(
        ["run", candidate, "--onnxrt", "--load-inputs", "inputs.json",
         "--load-outputs", "base.json", "--compare-func-script", f"{SCRIPT}:compare_outputs"],
        folder, KLDIV_ONNX_POLYGRAPHY_MAX_KL=max_kl,
    )  # fmt: skip


def _loaded_logits(path: Path) -> np.ndarray:
    from polygraphy.comparator import RunResults

    (_, iterations), *_ = RunResults.load(str(path)).items()
    return np.asarray(iterations[0]["logits"])


def test_passes_under_the_threshold(saved):
    done = _compare(saved, "close.onnx", "1e-4")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    line = next(x for x in out.splitlines() if "logits: KL over" in x)
    assert "PASSED" in line and f"KL over {ROWS} rows" in line
    assert "top-1 agreement 1.0000" in line
    x = _loaded_inputs(saved)
    base = _loaded_logits(saved / "base.json")
    np.testing.assert_allclose(base, x @ onnx.numpy_helper.to_array(
        onnx.load(saved / "base.onnx").graph.initializer[0]), rtol=1e-5, atol=1e-5)  # fmt: skip
    want = _numpy_kl(base, base * 1.001)  # close.onnx's logits: the base's times 1.001
    mean = float(re.search(r"mean ([0-9.e+-]+),", line).group(1))
    assert mean == pytest.approx(want.mean(), rel=2e-2)
    assert 0 < mean < 1e-4


def _loaded_inputs(folder: Path) -> np.ndarray:
    from polygraphy.json import load_json

    return np.asarray(load_json(str(folder / "inputs.json"))[0]["x"])


def test_fails_over_the_threshold(saved):
    done = _compare(saved, "far.onnx", "1e-4")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert re.search(r"FAILED \| logits: KL over", out)
    # the same candidate passes a threshold above its KL: the threshold decides
    assert _compare(saved, "far.onnx", "100").returncode == 0


# --- the function itself ---------------------------------------------------------------------


def test_compare_outputs_kl_statistics(monkeypatch, capsys):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((50, 7)).astype(np.float32)
    candidate = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32)
    want = _numpy_kl(base, candidate)
    monkeypatch.setenv(pc.MAX_KL_VAR, str(want.mean() * 1.01))
    assert pc.compare_outputs({"y": candidate}, {"y": base}) == {"y": True}
    monkeypatch.setenv(pc.MAX_KL_VAR, str(want.mean() * 0.99))
    assert pc.compare_outputs({"y": candidate}, {"y": base}) == {"y": False}
    monkeypatch.setenv(pc.STATISTIC_VAR, "max")
    monkeypatch.setenv(pc.MAX_KL_VAR, str(want.max() * 1.01))
    assert pc.compare_outputs({"y": candidate}, {"y": base}) == {"y": True}
    out = capsys.readouterr()
    assert f"max {want.max():.3e}" in out.out


def test_compare_outputs_direction_and_other_outputs(monkeypatch):
    base = np.array([[4.0, 0.0, 0.0]], np.float32)
    candidate = np.array([[0.0, 0.0, 4.0]], np.float32)
    kl, agree = pc.row_kl(candidate, base, "logits", 1.0)  # KL(P_candidate ‖ P_base)
    np.testing.assert_allclose(kl, _numpy_kl(candidate, base), rtol=1e-6)
    assert not agree[0]
    monkeypatch.setenv(pc.MAX_KL_VAR, "10")
    labels = {"label": np.array([1, 2])}
    result = pc.compare_outputs({"y": candidate, "label": np.array([1, 3])}, {"y": base, **labels})
    assert result == {"y": True, "label": False}
    assert pc.compare_outputs({}, {"y": base}) == {"y": False}  # missing from the candidate


@pytest.mark.parametrize(
    ("var", "value"),
    [
        (pc.MAX_KL_VAR, "-1"),
        (pc.MAX_KL_VAR, "a lot"),
        (pc.STATISTIC_VAR, "mode"),
        (pc.KIND_VAR, "scores"),
        (pc.TEMPERATURE_VAR, "0"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=var):
        pc.compare_outputs({"y": np.zeros((1, 2), np.float32)}, {"y": np.zeros((1, 2), np.float32)})
