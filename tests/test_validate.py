"""validate: every runtime against the float64 reference; exit codes and JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from kldiv_onnx import native, validate
from kldiv_onnx.cli import main
from kldiv_onnx.interop.validate import FAIL, OK, UNAVAILABLE, UNSUPPORTED, compare

MODELS = Path(__file__).resolve().parent.parent / "models"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _rows(report) -> dict:
    return {r.runtime: r for r in report.rows}


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
def test_op_configuration_agrees(reduction, log_target, dtype_name):
    report = validate(reduction=reduction, log_target=log_target, dtype=dtype_name)
    assert report.ok, report.table()
    rows = _rows(report)
    assert rows["onnx.reference (inlined)"].status == OK
    assert rows["onnxruntime composite"].status == OK
    fused = rows["onnxruntime fused"].status
    assert fused == (OK if native.available() else UNAVAILABLE)
    torch_status = rows["PyTorch eager"].status
    assert torch_status == (OK if installed("torch") else UNAVAILABLE)
    ms = rows["MindSpore"].status
    if not installed("mindspore"):
        assert ms == UNAVAILABLE
    elif log_target or dtype_name == "bfloat16":
        assert ms == UNSUPPORTED  # never reported as agreeing
    else:
        assert ms == OK
    if dtype_name == "float32":
        assert all(r.max_ulps is None for r in report.rows)
    else:
        assert rows["onnxruntime composite"].max_ulps <= 1.0


def test_broadcast_is_not_supported_by_mindspore():
    report = validate(reduction="sum", input_shape=(3, 4), target_shape=(4,))
    assert report.ok
    if installed("mindspore"):
        assert _rows(report)["MindSpore"].status == UNSUPPORTED


def test_tolerance_catches_a_few_ulps_off():
    ref = np.array([1.0, 2.0, 3.0])
    tol = np.full(3, 2 * 2.0**-10 * 3.0)
    assert compare("x", ref.astype(np.float16), ref, tol, np.dtype(np.float16)).status == OK
    off = (ref * (1 + 8 * 2.0**-10)).astype(np.float16)
    row = compare("x", off, ref, tol, np.dtype(np.float16))
    assert row.status == FAIL and row.max_ulps >= 7
    nan = compare("x", np.array([np.nan, 2, 3], np.float16), ref, tol, np.dtype(np.float16))
    assert nan.status == FAIL


def test_cli_op_config_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = ["validate", "--reduction", "sum", "--dtype", "bfloat16", "--input-shape", "4,6"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ULPs" in printed and "all runtimes agree" in printed
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["dtype"] == "bfloat16"
    runtimes = [r["runtime"] for r in data["rows"]]
    assert runtimes[:3] == ["numpy float64", "onnx.reference (inlined)", "onnxruntime composite"]
    assert {"max_abs_err", "max_rel_err", "max_ulps", "status"} <= set(data["rows"][1])


def test_cli_exits_1_on_disagreement(tmp_path, monkeypatch, capsys):
    from kldiv_onnx.interop import validate as v

    real = v.reference_kl_div
    monkeypatch.setattr(v, "reference_kl_div", lambda *a: real(*a) * (1 + 1e-3))
    out = tmp_path / "bad.json"
    assert main(["validate", "--reduction", "mean", "--json", str(out)]) == 1
    assert "DISAGREES" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["ok"] is False
    assert any(r["status"] == FAIL for r in data["rows"])


@pytest.mark.parametrize(
    "name",
    ["kldiv_sum_bfloat16.onnx", "kldiv_none_logtarget_float16.onnx", "torch/student_mlp.onnx"],
)
def test_cli_model_files(name, capsys):
    assert main(["validate", str(MODELS / name)]) == 0
    assert "all runtimes agree" in capsys.readouterr().out


def test_cli_model_with_npz_inputs(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", features=x)
    model = str(MODELS / "torch" / "student_mlp.onnx")
    assert main(["validate", model, "--inputs", str(tmp_path / "in.npz")]) == 0
    np.savez(tmp_path / "wrong.npz", other=x)
    assert main(["validate", model, "--inputs", str(tmp_path / "wrong.npz")]) == 2
    assert "features" in capsys.readouterr().err


def test_cli_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    assert main(["validate", str(bad)]) == 2
    assert main(["validate", "--input-shape", "a,b"]) == 2


def test_distillation_model_file_agrees_and_rtol_tightens(tmp_path, capsys):
    """A distillation loss (a small difference of O(1) terms) agrees within the model-file
    tolerance; an rtol far below float32's reach makes the same model disagree."""
    from kldiv_onnx import distill

    student, teacher = MODELS / "torch" / "student_mlp.onnx", MODELS / "torch" / "teacher_mlp.onnx"
    merged = distill(
        student, teacher, student_output="logits", teacher_output="logits", temperature=4.0
    )
    path = tmp_path / "distill.onnx"
    onnx.save(merged, path)
    assert main(["validate", str(path)]) == 0
    assert main(["validate", str(path), "--rtol", "1e-9"]) == 1
    assert "DISAGREES" in capsys.readouterr().out


def test_an_op_shape_beyond_memory_is_refused_before_any_allocation():
    """2**40 × 10 seeded values (80 TiB in float64) are refused from the shape itself."""
    with pytest.raises(ValueError, match=r"input_shape \[1099511627776, 10\].*memory"):
        validate(input_shape=(2**40, 10))
    with pytest.raises(ValueError, match=r"target_shape \[1099511627776, 1, 10\].*memory"):
        validate(input_shape=(1, 10), target_shape=(2**40, 1, 10))
