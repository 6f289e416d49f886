"""Real files at the boundary: external data, hostile paths, bfloat16 data files, wrong inputs,
atomic writes and one-line errors from every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest

from kldiv_onnx import build_model, runtime
from kldiv_onnx.cli import main
from kldiv_onnx.model_io import load_model, save_model
from kldiv_onnx.reference import kl_div as reference
from kldiv_onnx.reference import sample

MODELS = Path(__file__).resolve().parents[1] / "models"
STUDENT = MODELS / "torch" / "student_mlp.onnx"
BF16 = np.dtype(ml_dtypes.bfloat16)


def _one_line_exit_2(argv: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "[E:onnxruntime" not in err
    return err


# --- model files -------------------------------------------------------------------------------


@pytest.fixture
def external(tmp_path: Path) -> Path:
    """The student model saved with its weights as external data, in a sub-folder."""
    folder = tmp_path / "sub"
    folder.mkdir()
    path = folder / "student.onnx"
    onnx.save(
        onnx.load(STUDENT),
        path,
        save_as_external_data=True,
        location="student.onnx.data",
        size_threshold=0,
    )
    assert (folder / "student.onnx.data").is_file()
    return path


def test_run_finds_external_data_from_another_folder(external, tmp_path, monkeypatch, capfd):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    features = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.save("f.npy", features)
    relative = os.path.relpath(external, elsewhere)
    assert main(["run", relative, "f.npy", "--output", "out"]) == 0
    assert "wrote out.npz" in capfd.readouterr().out
    want = runtime.run(runtime.session(STUDENT), {"features": features})[0]
    np.testing.assert_array_equal(np.load("out.npz")["logits"], want)


def test_embed_keeps_external_data_and_loads_anywhere(external, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "embedded.onnx"
    out.parent.mkdir()
    argv = ["embed", "sub/student.onnx", str(out), "--input", "logits", "--log-softmax"]
    assert main(argv) == 0
    assert _data_file(out).is_file()
    monkeypatch.chdir(external.parent)  # a third folder: the data is found beside the model
    proto = load_model(out)
    assert any(o.name == "kldiv_loss" for o in proto.graph.output)
    sess = runtime.session(out)
    x = np.zeros((2, 16), np.float32)
    t = np.full((2, 10), 0.1, np.float32)
    (logits, loss) = runtime.run(sess, {"features": x, "target": t})
    # a small difference of O(1) terms: float32 rounding of the terms, absolutely
    want = reference(_log_softmax(logits), t, "batchmean")
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)


def _data_file(model: Path) -> Path:
    """The one data file ``model`` names: ``<model name>.<16 hex digits>.data`` beside it."""
    proto = load_model(model, external_data=False)
    (location,) = {
        e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"
    }
    assert re.fullmatch(re.escape(model.name) + r"\.[0-9a-f]{16}\.data", location)
    return model.parent / location


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    return (
        z
        - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - z.max(-1, keepdims=True)
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{m}", "f.npy"],
        ["fuse", "{m}", "o.onnx"],
        ["validate", "{m}"],
        ["embed", "{m}", "o.onnx", "--input", "logits"],
        ["distill", "{m}", "{m}", "o.onnx", "--student-output", "logits", "--teacher-output", "x"],
    ],
)
def test_missing_external_data_is_one_line(external, tmp_path, monkeypatch, capfd, argv):
    (external.parent / "student.onnx.data").unlink()
    monkeypatch.chdir(tmp_path)
    np.save("f.npy", np.zeros((1, 16), np.float32))
    _one_line_exit_2([a.format(m=external) for a in argv], capfd)
    assert not (tmp_path / "o.onnx").exists()


@pytest.fixture
def hostile(tmp_path: Path) -> dict[str, Path]:
    """A 0-byte file, random bytes, a folder and a path with nothing there."""
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(1).bytes(300))
    (tmp_path / "folder.onnx").mkdir()
    return {name: tmp_path / f"{name}.onnx" for name in ("empty", "random", "folder", "missing")}


COMMANDS = [
    ["run", "{m}", "x.npy"],
    ["check", "{m}"],
    ["fuse", "{m}", "{out}"],
    ["validate", "{m}"],
    ["embed", "{m}", "{out}", "--input", "x"],
    ["distill", "{m}", "{m}", "{out}", "--student-output", "a", "--teacher-output", "b"],
]


@pytest.mark.parametrize("kind", ["empty", "random", "folder", "missing"])
@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
def test_hostile_model_paths(hostile, tmp_path, capfd, kind, argv):
    out = tmp_path / "out.onnx"
    err = _one_line_exit_2([a.format(m=hostile[kind], out=out) for a in argv], capfd)
    assert hostile[kind].name in err
    assert not out.exists()


def test_fuse_takes_a_path():
    from kldiv_onnx import fuse

    result = fuse(str(MODELS / "kldiv_batchmean_float32.onnx"))
    assert result.count == 0 and len(result.model.graph.node) == 1


# --- data files --------------------------------------------------------------------------------


def test_bfloat16_data_files_round_trip(tmp_path, capfd):
    model = tmp_path / "bf16.onnx"
    onnx.save(build_model("batchmean", dtype="bfloat16"), model)
    x, t = sample((4, 8), BF16, 3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    assert np.load(tmp_path / "x.npy").dtype == np.dtype("V2")  # what numpy stores
    argv = ["run", str(model), str(tmp_path / "x.npy"), str(tmp_path / "t.npy")]
    assert main([*argv, "--output", str(tmp_path / "res")]) == 0
    assert f"wrote {tmp_path / 'res.npz'}" in capfd.readouterr().out
    saved = np.load(tmp_path / "res.npz")["loss"]
    got = saved.view(BF16)
    want = reference(x, t, "batchmean")
    assert abs(float(got) - float(want)) <= 2.0**-7 * abs(float(want))
    # the output file feeds a bfloat16 model input as it was written
    onnx.save(build_model("sum", dtype="bfloat16", input_shape=[], target_shape=[]), model)
    np.savez(tmp_path / "pair.npz", input=saved, target=saved)
    assert main(["run", str(model), str(tmp_path / "pair.npz")]) == 0
    assert "loss bfloat16" in capfd.readouterr().out


def test_model_inputs_are_described_once():
    """One description of a model's inputs for run, validate and compare: bfloat16 as
    ml_dtypes' type, dim names kept, an unknown rank told apart from a 0-d input."""
    from onnx import TensorProto, helper

    from kldiv_onnx.comparison.models import load
    from kldiv_onnx.data_files import declared_dims, declared_inputs, elem_dtype

    assert elem_dtype(TensorProto.BFLOAT16) == BF16
    assert elem_dtype(TensorProto.FLOAT16) == np.float16
    assert elem_dtype(TensorProto.UNDEFINED) is None
    model = build_model("sum", dtype="bfloat16", input_shape=["n", 5], target_shape=[5])
    specs = declared_inputs(model)
    assert [(s.name, s.dtype, s.dims) for s in specs] == [
        ("input", BF16, ("n", 5)),
        ("target", BF16, (5,)),
    ]
    info = load(model, "base")
    assert info.inputs["input"].dtype == BF16 and info.inputs["input"].dims == ("n", 5)
    unknown = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    assert declared_dims(unknown.type.tensor_type) is None
    scalar = helper.make_tensor_value_info("x", TensorProto.FLOAT, [])
    assert declared_dims(scalar.type.tensor_type) == ()
    untyped = helper.make_model(
        helper.make_graph(
            [], "g", [helper.make_tensor_value_info("x", TensorProto.UNDEFINED, [1])], []
        )
    )
    with pytest.raises(ValueError, match="'x': element type 0"):
        declared_inputs(untyped)


@pytest.mark.parametrize("log_target", [False, True])
def test_sample_feeds_are_distributions_where_they_feed_the_loss(log_target):
    from kldiv_onnx.data_files import sample_feeds

    model = build_model("sum", log_target, "float16", input_shape=["n", 6])
    feeds = sample_feeds(model, seed=2)
    x, t = feeds["input"], feeds["target"]
    assert x.dtype == t.dtype == np.float16 and x.shape == t.shape == (4, 6)
    probs = np.exp(t.astype(np.float64)) if log_target else t.astype(np.float64)
    np.testing.assert_allclose(np.exp(x.astype(np.float64)).sum(axis=-1), 1.0, rtol=1e-2)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-2)
    assert np.array_equal(sample_feeds(model, seed=2)["input"], x)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    onnx.save(build_model("batchmean", input_shape=[2, 3]), tmp_path / "m.onnx")
    onnx.save(build_model("sum", input_shape=["a", "b"]), tmp_path / "sym.onnx")
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.random((2, 3)).astype(np.float32),
        "x64": rng.random((2, 3)),
        "xint": np.ones((2, 3), np.int32),
        "x24": np.zeros((2, 4), np.float32),
        "x3": np.zeros((3,), np.float32),
        "y35": np.zeros((3, 5), np.float32),
    }
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    np.savez(tmp_path / "extra.npz", input=arrays["x"], target=arrays["x"], bogus=arrays["x"])
    return tmp_path


@pytest.mark.parametrize(
    ("model", "files", "message"),
    [
        ("m", ["x64", "x"], "input 'input': the model takes float32, got float64"),
        ("m", ["x", "xint"], "input 'target': the model takes float32, got int32"),
        ("m", ["x24", "x"], "input 'input': the model takes shape [2, 3], got [2, 4]"),
        ("m", ["x", "x3"], "input 'target': the model takes rank 2 shape [2, 3], got [3]"),
        ("m", ["x", "x", "x"], "3 data files for a model with 2 inputs"),
        ("m", ["extra.npz"], "the model has no input 'bogus'"),
        ("m", ["nope=x", "x"], "the model has no input 'nope'"),
        ("sym", ["x", "y35"], "not broadcastable"),
    ],
)
def test_run_wrong_inputs_are_one_line(data, capfd, model, files, message):
    paths = []
    for f in files:
        name, _, stem = f.rpartition("=")
        file = str(data / (stem if stem.endswith(".npz") else f"{stem}.npy"))
        paths.append(f"{name}={file}" if name else file)
    err = _one_line_exit_2(["run", str(data / f"{model}.onnx"), *paths], capfd)
    assert message in err


def test_run_output_refuses_devices_and_missing_folders(data, capfd):
    base = ["run", str(data / "m.onnx"), str(data / "x.npy"), str(data / "x.npy")]
    assert "not a regular file" in _one_line_exit_2([*base, "--output", "/dev/full"], capfd)
    assert not Path("/dev/full.npz").exists()
    err = _one_line_exit_2([*base, "--output", str(data / "no" / "r")], capfd)
    assert "does not exist" in err


@pytest.mark.parametrize(
    ("argv", "victim"),
    [
        (["run", "m.onnx", "x.npy", "x.npy", "--output", "x.npy"], "x.npy"),
        (["run", "m.onnx", "input=x.npy", "x.npy", "--output", "x.npy"], "x.npy"),
        (["validate", "m.onnx", "--inputs", "x.npy", "x.npy", "--json", "m.onnx"], "m.onnx"),
        (
            ["compare", "m.onnx", "m.onnx", "--data", "extra.npz", "--json", "extra.npz"],
            "extra.npz",
        ),
        (["compare", "m.onnx", "m.onnx", "--data", "extra.npz", "--plot", "./m.onnx"], "m.onnx"),
    ],
)
def test_reports_are_never_written_over_an_input(data, capfd, monkeypatch, argv, victim):
    monkeypatch.chdir(data)
    before = (data / victim).read_bytes()
    err = _one_line_exit_2(argv, capfd)
    assert "it is the input" in err
    assert (data / victim).read_bytes() == before


# --- writes ------------------------------------------------------------------------------------

_LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
    from kldiv_onnx.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _limited(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _LIMITED, *argv], capture_output=True, text=True, timeout=300
    )


def test_embed_onto_its_input_under_a_size_limit_keeps_the_input(tmp_path):
    path = tmp_path / "s.onnx"
    path.write_bytes(STUDENT.read_bytes())
    before = path.read_bytes()
    assert len(before) > 2048
    done = _limited("embed", str(path), str(path), "--input", "logits", "--log-softmax")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot write" in done.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]  # nothing partial left


def test_run_output_under_a_size_limit_leaves_nothing(data):
    big = np.zeros((1024, 1024), np.float32)
    np.save(data / "big.npy", big)
    onnx.save(build_model("none", input_shape=["a", "b"]), data / "none.onnx")
    out = data / "res.npz"
    done = _limited(
        "run",
        str(data / "none.onnx"),
        str(data / "big.npy"),
        str(data / "big.npy"),
        "--output",
        str(out),
    )
    assert done.returncode == 2 and "cannot write" in done.stderr
    assert not out.exists() and not list(data.glob(".res.npz*"))


def test_export_write_failures_are_one_line(tmp_path, capfd):
    _one_line_exit_2(["export", "/dev/full"], capfd)
    _one_line_exit_2(["export", str(tmp_path)], capfd)
    _one_line_exit_2(["export", str(tmp_path / "no" / "m.onnx")], capfd)


def test_save_model_external_data_is_relative(tmp_path):
    model = onnx.load(STUDENT)
    save_model(model, tmp_path / "m.onnx", external_data=True)
    data = _data_file(tmp_path / "m.onnx")
    assert data.is_file()
    copy = tmp_path / "moved"
    copy.mkdir()
    for name in ("m.onnx", data.name):
        (copy / name).write_bytes((tmp_path / name).read_bytes())
    reloaded = load_model(copy / "m.onnx")
    assert [i.raw_data for i in reloaded.graph.initializer] == [
        onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(i)).raw_data
        for i in model.graph.initializer
    ]


# --- small, visible to users -------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("kldiv-onnx ")


def test_negative_dims_are_refused(capfd):
    err = _one_line_exit_2(["export", "x.onnx", "--input-shape=-1,10"], capfd)
    assert "'-1'" in err


@pytest.mark.parametrize("bad", ["no", 2, -1, 0.5, None])
def test_log_target_must_be_a_bool(bad):
    from kldiv_onnx import KLDivLoss, kl_div

    x = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="log_target"):
        kl_div(x, x, "sum", bad)
    with pytest.raises(ValueError, match="log_target"):
        KLDivLoss("sum", bad)
    with pytest.raises(ValueError, match="log_target"):
        build_model("sum", bad)


# --- validate ----------------------------------------------------------------------------------


def test_validate_0d_and_empty_shapes(capfd):
    from kldiv_onnx import validate

    for shape in ((), (0, 10)):
        for reduction in ("none", "sum", "mean", "batchmean"):
            report = validate(reduction=reduction, input_shape=shape)
            assert report.ok, report.table()
            assert all(r.status != "DISAGREES" for r in report.rows)
    assert main(["validate", "--input-shape", "", "--reduction", "sum"]) == 0
    assert main(["validate", "--input-shape", "0,10"]) == 0
    assert "DISAGREES" not in capfd.readouterr().out


def test_validate_nan_agrees_with_nan_only_at_the_same_places():
    from kldiv_onnx.interop.validate import FAIL, OK, compare

    ref = np.array([np.nan, 1.0])
    tol = np.full(2, 1e-6)
    assert compare("r", np.array([np.nan, 1.0], np.float32), ref, tol, np.float32).status == OK
    assert compare("r", np.array([1.0, np.nan], np.float32), ref, tol, np.float32).status == FAIL


def test_validate_generic_op_model(tmp_path):
    from onnx import TensorProto, helper

    from kldiv_onnx import validate

    node = helper.make_node(
        "KLDivLoss", ["input", "target"], ["loss"], domain="kldiv_onnx", reduction="sum"
    )
    graph = helper.make_graph(
        [node],
        "generic",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 4]) for n in ("input", "target")],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("kldiv_onnx", 1)],
        ir_version=8,
    )
    report = validate(model)
    rows = {r.runtime: r for r in report.rows}
    assert rows["onnx.reference (inlined)"].status in ("reference", "ok"), report.table()
    assert report.ok, report.table()


def test_validate_checks_input_dtypes_against_the_model(tmp_path, capfd):
    from kldiv_onnx import validate

    model = build_model("sum", dtype="bfloat16", input_shape=[2, 3])
    x, t = sample((2, 3), np.dtype(np.float32), 0)
    with pytest.raises(TypeError, match="bfloat16"):
        validate(model, inputs={"input": x, "target": t})
    onnx.save(model, tmp_path / "bf.onnx")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    argv = ["validate", str(tmp_path / "bf.onnx"), "--inputs"]
    err = _one_line_exit_2([*argv, str(tmp_path / "x.npy"), str(tmp_path / "t.npy")], capfd)
    assert "bfloat16" in err and "float32" in err
    np.save(tmp_path / "xb.npy", x.astype(BF16))
    np.save(tmp_path / "tb.npy", t.astype(BF16))
    assert main([*argv, str(tmp_path / "xb.npy"), str(tmp_path / "tb.npy")]) == 0


@pytest.mark.parametrize("rtol", ["-1", "nan", "inf", "x"])
def test_validate_rejects_bad_rtol(rtol, capfd):
    _one_line_exit_2(["validate", f"--rtol={rtol}"], capfd)


def test_validate_honours_rtol_for_single_node_models(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(build_model("batchmean", input_shape=[64, 1000]), path)
    assert main(["validate", str(path)]) == 0
    assert main(["validate", str(path), "--rtol", "0"]) == 1  # float32 is not exact


def test_validate_leaks_no_runtime_warnings(capfd):
    import warnings

    from kldiv_onnx import validate

    x = np.array([[-np.inf, -0.5], [np.nan, -1.0]], np.float32)
    t = np.array([[0.5, 0.5], [0.0, 1.0]], np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from kldiv_onnx.interop.validate import validate_op

        validate_op("none", inputs=(x, t))
        validate(build_model("none", input_shape=[2, 2]), inputs={"input": x, "target": t})
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert "RuntimeWarning" not in capfd.readouterr().err


@pytest.mark.parametrize(
    ("size", "shape"), [(1, (1, 1)), (3000, (3, 1000)), (2048, (2, 1024)), (1001, (1, 1001))]
)
def test_demo_size_is_honoured(size, shape, capsys):
    from kldiv_onnx.demo import demo_shape

    assert demo_shape(size) == shape and shape[0] * shape[1] == size
    assert main(["demo", "--size", str(size)]) == 0
    assert f"random {shape}" in capsys.readouterr().out


def test_demo_size_must_be_positive(capfd):
    _one_line_exit_2(["demo", "--size", "0"], capfd)


@pytest.mark.parametrize("argv", [["inline"], ["prepare", "--target", "onnxruntime"]])
def test_inline_and_prepare_keep_external_data(external, tmp_path, argv):
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    assert main([argv[0], str(external), str(out), *argv[1:]]) == 0
    assert _data_file(out).is_file()
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    got = runtime.run(runtime.session(out), {"features": x})[0]
    want = runtime.run(runtime.session(STUDENT), {"features": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
