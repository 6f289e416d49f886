"""The kldiv-onnx command line and the checked-in example models."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_inputs

from kldiv_onnx import native
from kldiv_onnx.cli import main
from kldiv_onnx.reference import SEED_INPUT, SEED_TARGET
from kldiv_onnx.reference import kl_div as reference

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def test_export_then_run(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    argv = [
        "export",
        str(path),
        "--reduction",
        "sum",
        "--log-target",
        "--dtype",
        "float16",
        "--input-shape",
        "batch,3",
        "--target-shape",
        "1,3",
    ]
    assert main(argv) == 0
    model = onnx.load(path)
    assert model.graph.node[0].op_type == "KLDivLoss_sum_logtarget"
    x, t = make_inputs((4, 3), (1, 3), np.dtype(np.float16), True)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    out = tmp_path / "out.npz"
    assert (
        main(
            [
                "run",
                str(path),
                str(tmp_path / "x.npy"),
                f"target={tmp_path / 't.npy'}",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    got = np.load(out)["loss"]
    want = reference(x, t, "sum", True)
    assert got.dtype == np.float16
    assert abs(float(got) - float(want)) <= 2.0**-10 * abs(float(want)) + 1e-3


def test_run_prints_npz_inputs(tmp_path, capsys):
    np.savez(tmp_path / "in.npz", input=SEED_INPUT, target=SEED_TARGET)
    assert (
        main(["run", str(MODELS / "kldiv_mean_seed_float32.onnx"), str(tmp_path / "in.npz")]) == 0
    )
    assert "-0.225" in capsys.readouterr().out


def test_inline_export(tmp_path):
    path = tmp_path / "inline.onnx"
    assert main(["export", str(path), "--form", "inline", "--opset", "13"]) == 0
    model = onnx.load(path)
    assert not model.functions and model.opset_import[0].version == 13


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "x.onnx", "--reduction", "avg"], "invalid choice: 'avg'"),
        (
            ["export", "x.onnx", "--input-shape", "2,3", "--target-shape", "4,3"],
            "not broadcastable",
        ),
        (["export", "x.onnx", "--opset", "9"], "opset must lie"),
        (["run", "missing.onnx", "a.npy"], "missing.onnx"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_bad_inputs_exit_2(tmp_path, capsys):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert main(["run", str(tmp_path / "junk.onnx"), "x.npy"]) == 2
    assert (
        main(["run", str(MODELS / "kldiv_batchmean_float32.onnx"), str(tmp_path / "no.npy")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no.npy" in err[1]


def test_demo(capsys):
    assert main(["demo", "--size", "20000"]) == 0
    out = capsys.readouterr().out
    assert "seed example" in out and "-0.225" in out and "composite" in out
    assert bool(re.search(r"^seed example\s+float32\s+fused\s", out, re.M)) == native.available()
    assert "all backends agree" in out


def test_doctor(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "CPUExecutionProvider" in out and "native library" in out


def test_console_script_entry_point():
    """The installed `kldiv-onnx` script exits 2 with one line on a bad argument."""
    proc = subprocess.run(
        [sys.executable, "-m", "kldiv_onnx", "export"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("kldiv-onnx: error:")


@pytest.mark.parametrize("script", ["make_models.py", "make_torch_models.py"])
def test_models_are_current(script):
    """models/ holds exactly what the generating scripts write."""
    if script == "make_torch_models.py":
        pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.onnx")), ids=lambda p: p.name)
def test_checked_in_models_run(path):
    from kldiv_onnx import runtime

    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    sess = runtime.session(path, providers=["CPUExecutionProvider"], fused=False)
    dtype = {1: np.float32, 10: np.float16, 16: None}[
        model.graph.input[0].type.tensor_type.elem_type
    ]
    if dtype is None:
        import ml_dtypes

        dtype = ml_dtypes.bfloat16
    x_dims, t_dims = (
        tuple(d.dim_value or 2 for d in value.type.tensor_type.shape.dim)
        for value in model.graph.input
    )
    log_target = "logtarget" in path.name
    x, t = make_inputs(x_dims, t_dims, np.dtype(dtype), log_target)
    (got,) = runtime.run(sess, {"input": x, "target": t})
    reduction = next(r for r in ("batchmean", "mean", "none", "sum") if f"_{r}" in path.name)
    want = reference(x, t, reduction, log_target)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-2, atol=1e-3)
