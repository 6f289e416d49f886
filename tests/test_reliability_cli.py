"""The command line under hostile or careless use: Ctrl-C, a closed pipe, models onnxruntime
refuses, damaged or lying data files, Parquet with duplicate columns, sequence inputs, logits
compared as probabilities, abbreviated options. Each ends in one line on stderr and exit code 2
(130 for Ctrl-C, a quiet exit for a closed pipe), never a traceback."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from child import CLI, child_env
from compare_cases import classifier, inputs, weights
from onnx import TensorProto, helper

from kldiv_onnx.cli import main
from kldiv_onnx.export import build_model

HUGE_ROWS = 2**40


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("kldiv-onnx: error:"), err
    return lines[0]


def cli(*argv: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``kldiv-onnx argv`` in a child process (the package under test)."""
    return subprocess.run(
        [*CLI, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
        **kwargs,
    )


@pytest.fixture
def kl_model(tmp_path) -> Path:
    """A KLDivLoss model taking ``input`` and ``target`` (batch, classes)."""
    path = tmp_path / "kl.onnx"
    onnx.save(build_model("mean", False, "float32"), path)
    return path


@pytest.fixture
def models(tmp_path) -> tuple[Path, Path]:
    w, b, w2 = weights()
    base, candidate = tmp_path / "base.onnx", tmp_path / "candidate.onnx"
    onnx.save(classifier(w, b), base)
    onnx.save(classifier(w2, b), candidate)
    return base, candidate


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def lying_npy(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A ``.npy`` whose header declares ``shape`` followed by 64 bytes of data."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(64)


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


# --- Ctrl-C and closed pipes ---------------------------------------------------------------


def _holds_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_ctrl_c_exits_130_without_a_traceback(tmp_path, models):
    """SIGINT while compare is working through its data set (it has the data file open: the
    command is past start-up) ends it with exit code 130 and no traceback."""
    data = tmp_path / "many.npz"
    np.savez(data, x=inputs(200_000))
    argv = [*map(str, models), "--data", str(data), "--batch-size", "1"]
    proc = subprocess.Popen(
        [*CLI, "compare", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        # a shell's background job (a CI runner's, say) ignores SIGINT, and the child would
        # inherit that: Ctrl-C at a terminal reaches a command with the default disposition
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while not _holds_open(proc.pid, data):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "compare never opened its data"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def many_outputs_model(path: Path, outputs: int = 20, size: int = 1000) -> Path:
    """Identity to ``outputs`` outputs of a ``size``-element input: printed in full by run,
    several times a pipe's buffer."""
    names = [f"y{i}" for i in range(outputs)]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [n]) for n in names],
        "many",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size]) for n in names],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.save(model, path)
    return path


def test_closed_pipe_ends_quietly(tmp_path):
    """``kldiv-onnx run ... | head -1``: the reader goes away after a line of output far
    longer than a pipe's buffer; the command ends quietly (0 or 141), nothing on stderr."""
    model = many_outputs_model(tmp_path / "many.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=1000).astype(np.float32))
    proc = subprocess.Popen(
        [*CLI, "run", str(model), str(tmp_path / "x.npy")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # what head -1 does
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.startswith(b"y0 float32")
    assert proc.returncode in (0, 141), (proc.returncode, err)
    assert err == ""


# --- models onnxruntime refuses ----------------------------------------------------------------


def refused_models(tmp_path) -> dict[str, Path]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])
    unknown_op = helper.make_model(
        helper.make_graph(
            [helper.make_node("Frobnicate", ["x"], ["logits"], domain="example.domain")],
            "g",
            [x],
            [y],
        ),
        opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("example.domain", 1)],
        ir_version=8,
    )
    wrong_type = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["logits"])],
            "g",
            [x],
            [y],
            [onnx.numpy_helper.from_array(np.ones((8, 5), np.int64), "W")],
        ),
        opset_imports=[helper.make_opsetid("", 15)],
        ir_version=8,
    )
    paths = {}
    for name, model in (("unknown-op", unknown_op), ("type-mismatch", wrong_type)):
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths


@pytest.mark.parametrize("case", ["unknown-op", "type-mismatch"])
def test_compare_a_model_onnxruntime_refuses(tmp_path, models, case, capsys):
    np.savez(tmp_path / "data.npz", x=inputs(20))
    candidate = refused_models(tmp_path)[case]
    argv = ["compare", str(models[0]), str(candidate), "--data", str(tmp_path / "data.npz")]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "candidate model" in line
    assert ("Frobnicate" if case == "unknown-op" else "MatMul") in line


# --- damaged and lying data files ---------------------------------------------------------------


def damaged_npz(tmp_path: Path) -> dict[str, Path]:
    """Data files for the KL model (inputs ``input`` and ``target``), each damaged its way."""
    good = {"input": np.zeros((2, 3), np.float32), "target": np.zeros((2, 3), np.float32)}
    np.savez(tmp_path / "good.npz", **good)
    whole = (tmp_path / "good.npz").read_bytes()
    files = {}
    files["truncated zip"] = tmp_path / "truncated.npz"
    files["truncated zip"].write_bytes(whole[: len(whole) // 2])
    files["zip cut before its directory"] = tmp_path / "cut.npz"
    files["zip cut before its directory"].write_bytes(whole[:-30])
    files["not an npz"] = tmp_path / "garbage.npz"
    files["not an npz"].write_bytes(b"\x80\x04garbage that numpy would unpickle")
    files["member is not a .npy"] = write_zip(
        tmp_path / "text.npz",
        {"input.npy": b"hello, not an array", "target.npy": npy_bytes(good["target"])},
    )
    files["member named otherwise"] = write_zip(
        tmp_path / "named.npz",
        {"input.npy": npy_bytes(good["input"]), "target.txt": b"a note"},
    )
    files["pickled object array"] = write_zip(
        tmp_path / "pickled.npz",
        {
            "input.npy": npy_bytes(np.array([{"a": 1}, None], dtype=object)),
            "target.npy": npy_bytes(good["target"]),
        },
    )
    files["header longer than the data"] = write_zip(
        tmp_path / "short.npz",
        {"input.npy": lying_npy((2, 3000)), "target.npy": npy_bytes(good["target"])},
    )
    # a deflated member whose directory entry says it inflates to 4 GiB: a bomb's header
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr("input.npy", lying_npy((2**28, 3)), zipfile.ZIP_DEFLATED)
        archive.writestr("target.npy", npy_bytes(good["target"]))
    data = bytearray(bomb.read_bytes())
    entry = data.find(b"PK\x01\x02")  # the first central directory entry: input.npy
    data[entry + 24 : entry + 28] = (0xFFFFFFF0).to_bytes(4, "little")  # uncompressed size
    bomb.write_bytes(bytes(data))
    files["zip bomb header"] = bomb
    return files


DAMAGED = [
    "truncated zip",
    "zip cut before its directory",
    "not an npz",
    "member is not a .npy",
    "member named otherwise",
    "pickled object array",
    "header longer than the data",
    "zip bomb header",
]


@pytest.mark.parametrize("case", DAMAGED)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_damaged_npz_one_line(tmp_path, kl_model, command, case, capsys):
    path = damaged_npz(tmp_path)[case]
    argv = (
        ["run", str(kl_model), str(path)]
        if command == "run"
        else ["validate", str(kl_model), "--inputs", str(path)]
    )
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line
    assert "allow_pickle" not in line


def test_pickled_npy_one_line(tmp_path, kl_model, capsys):
    path = tmp_path / "objects.npy"
    path.write_bytes(npy_bytes(np.array([{"a": 1}, None], dtype=object)))
    assert main(["run", str(kl_model), str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and "allow_pickle" not in line


@pytest.mark.parametrize("case", ["truncated zip", "member is not a .npy", "pickled object array"])
def test_compare_damaged_npz_one_line(tmp_path, models, case, capsys):
    good = inputs(20)
    np.savez(tmp_path / "good.npz", x=good)
    whole = (tmp_path / "good.npz").read_bytes()
    path = tmp_path / "bad.npz"
    if case == "truncated zip":
        path.write_bytes(whole[: len(whole) // 2])
    elif case == "member is not a .npy":
        write_zip(path, {"x.npy": b"hello, not an array"})
    else:
        write_zip(path, {"x.npy": npy_bytes(np.array([{"a": 1}, None], dtype=object))})
    assert main(["compare", *map(str, models), "--data", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and "allow_pickle" not in line


# --- headers declaring 2**40 rows ----------------------------------------------------------------


def test_run_and_validate_refuse_a_header_of_2_40_rows(tmp_path, kl_model, capsys):
    path = write_zip(
        tmp_path / "huge.npz",
        {"input.npy": lying_npy((HUGE_ROWS, 10)), "target.npy": lying_npy((HUGE_ROWS, 10))},
    )
    for argv in (
        ["run", str(kl_model), str(path)],
        ["validate", str(kl_model), "--inputs", str(path)],
    ):
        assert main(argv) == 2
        line = one_line(capsys.readouterr().err)
        assert str(path) in line and str(HUGE_ROWS) in line


def test_run_refuses_an_npy_header_of_2_40_rows(tmp_path, kl_model, capsys):
    x = tmp_path / "x.npy"
    x.write_bytes(lying_npy((HUGE_ROWS, 10)))
    np.save(tmp_path / "t.npy", np.zeros((2, 10), np.float32))
    assert main(["run", str(kl_model), str(x), str(tmp_path / "t.npy")]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(x) in line and str(HUGE_ROWS) in line


def test_compare_refuses_a_header_of_2_40_rows_at_once(tmp_path, models):
    """Refused from the header: before any batch, in seconds (it ran for minutes, growing)."""
    path = write_zip(tmp_path / "huge.npz", {"x.npy": lying_npy((HUGE_ROWS, 8))})
    proc = cli("compare", *map(str, models), "--data", str(path), timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert str(path) in line and str(HUGE_ROWS) in line


def test_validate_refuses_an_input_shape_beyond_memory(capsys):
    assert main(["validate", "--input-shape", f"{HUGE_ROWS},10"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--input-shape" in line and "memory" in line
    assert main(["validate", "--input-shape", "8,10", "--target-shape", f"{HUGE_ROWS},1,10"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--target-shape" in line


def test_demo_refuses_a_size_beyond_memory(capsys):
    assert main(["demo", "--size", str(HUGE_ROWS)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--size {HUGE_ROWS}" in line and "memory" in line


# --- Parquet, sequences ----------------------------------------------------------------------


def test_compare_parquet_with_duplicate_columns(tmp_path, models, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x = inputs(10)
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([column, column], names=["x", "x"]), path)
    assert main(["compare", *map(str, models), "--data", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and "'x'" in line and "twice" in line


def sequence_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("SequenceAt", ["s", "i"], ["y"])],
        "g",
        [
            helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), path)
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_sequence_input_one_line(tmp_path, command, capsys):
    model = sequence_model(tmp_path / "seq.onnx")
    np.save(tmp_path / "s.npy", np.zeros(3, np.float32))
    argv = (
        ["validate", str(model)]
        if command == "validate"
        else ["run", str(model), str(tmp_path / "s.npy")]
    )
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "'s'" in line and "sequence" in line


# --- --kind probs on logits, abbreviations ------------------------------------------------------


def test_compare_probs_on_logits_says_so(tmp_path, models, capsys):
    np.savez(tmp_path / "data.npz", x=inputs(50))
    argv = ["compare", *map(str, models), "--data", str(tmp_path / "data.npz"), "--kind", "probs"]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "negative" in line and "kind logits" in line and "'logits'" in line


def test_compare_probs_on_unnormalised_scores_warns(tmp_path, capsys):
    """Non-negative rows far from summing to 1 are divided by their sum, as kind probs says,
    with a one-line warning that they may be logits."""
    w, b, w2 = weights()
    paths = []
    for name, weight in (("b", w), ("c", w2)):
        model = classifier(weight, b)
        model.graph.node.insert(-1, helper.make_node("Exp", ["z"], ["ez"]))
        model.graph.node[-1].input[0] = "ez"
        paths.append(tmp_path / f"{name}.onnx")
        onnx.save(model, paths[-1])
    np.savez(tmp_path / "data.npz", x=inputs(50))
    argv = ["compare", *map(str, paths), "--data", str(tmp_path / "data.npz"), "--kind", "probs"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kldiv-onnx: warning: kind probs:"), err
    assert "not 1" in err[0] and "kind logits" in err[0]


def test_compare_probs_on_probabilities_still_runs(tmp_path, capsys):
    w, b, w2 = weights()
    base, candidate = tmp_path / "b.onnx", tmp_path / "c.onnx"
    onnx.save(classifier(w, b, head="Softmax"), base)
    onnx.save(classifier(w2, b, head="Softmax"), candidate)
    np.savez(tmp_path / "data.npz", x=inputs(50))
    argv = ["compare", str(base), str(candidate), "--data", str(tmp_path / "data.npz")]
    assert main([*argv, "--kind", "probs"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "argv, option",
    [
        (["run", "m.onnx", "x.npy", "--out", "y"], "--out"),
        (["export", "m.onnx", "--reduc", "sum"], "--reduc"),
        (["validate", "--input-sh", "8,10"], "--input-sh"),
        (["compare", "a.onnx", "b.onnx", "--dat", "d.npz"], "--dat"),
        (["--vers", "doctor"], "--vers"),
    ],
)
def test_abbreviated_options_are_refused(argv, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where an accepted abbreviation would write
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert option in line
