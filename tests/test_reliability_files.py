"""Model files under stress: tensors kept outside the model wherever they sit, concurrent
writers, data files named like the output, file modes, the session cache's keys and budget,
and recursive local functions."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from kldiv_onnx import runtime
from kldiv_onnx.cli import main
from kldiv_onnx.model_io import load_model, save_model, uses_external_data

MODELS = Path(__file__).resolve().parents[1] / "models"
STUDENT = MODELS / "torch" / "student_mlp.onnx"
FEATURES, CLASSES = 16, 10


def _one_line_exit_2(argv: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "[E:onnxruntime" not in err
    return err


def _weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((FEATURES, CLASSES)).astype(np.float32)
    b = rng.standard_normal(CLASSES).astype(np.float32)
    return w, b


def _linear(w_node: onnx.NodeProto | None, initializers: list[TensorProto]) -> onnx.ModelProto:
    """``logits = features @ W + b`` with ``W`` made by ``w_node`` (or an initializer)."""
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        ([w_node] if w_node is not None else []) + nodes,
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _constant_external_model(folder: Path, seed: int = 0) -> Path:
    """A model whose ``Constant`` node keeps its ``value`` in ``w.bin`` beside it (no
    initializer is external)."""
    w, b = _weights(seed)
    value = numpy_helper.from_array(w, "W")
    (folder / "w.bin").write_bytes(value.raw_data)
    set_external_data(value, "w.bin", offset=0, length=len(value.raw_data))
    value.ClearField("raw_data")
    node = helper.make_node("Constant", [], ["W"], value=value)
    path = folder / "m.onnx"
    path.write_bytes(_linear(node, [numpy_helper.from_array(b, "b")]).SerializeToString())
    return path


@pytest.fixture(params=["empty", "decoy"])
def constant_external(request, tmp_path, monkeypatch) -> Path:
    """The model in ``tmp/model``; the working directory is another folder, empty or holding a
    decoy ``w.bin`` with other numbers."""
    folder = tmp_path / "model"
    folder.mkdir()
    path = _constant_external_model(folder)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if request.param == "decoy":
        (cwd / "w.bin").write_bytes(numpy_helper.from_array(_weights(99)[0]).raw_data)
    monkeypatch.chdir(cwd)
    return path


def _features() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((4, FEATURES)).astype(np.float32)


def _expected_logits() -> np.ndarray:
    w, b = _weights(0)
    return _features().astype(np.float64) @ w.astype(np.float64) + b


def _feeds(sess: object, features: np.ndarray) -> dict[str, np.ndarray]:
    """``features``, and a uniform target for the input ``embed`` adds."""
    feeds = {"features": features}
    for i in sess.get_inputs():  # type: ignore[attr-defined]
        if i.name != "features":
            feeds[i.name] = np.full((len(features), CLASSES), 1 / CLASSES, np.float32)
    return feeds


def _check_logits(path: Path) -> None:
    """The model at ``path`` loads from a third folder and computes ``features @ W + b``."""
    sess = runtime.session(path)
    got = runtime.run(sess, _feeds(sess, _features()), ["logits"])[0]
    np.testing.assert_allclose(got, _expected_logits(), rtol=1e-5, atol=1e-5)


# --- a Constant node's value kept as external data -----------------------------------------------


def test_constant_value_in_external_data_is_found(constant_external):
    assert uses_external_data(load_model(constant_external, external_data=False))
    proto = load_model(constant_external)
    assert not uses_external_data(proto)  # everything read, from the model's folder
    got = runtime.run(runtime.session(proto), {"features": _features()})[0]
    np.testing.assert_allclose(got, _expected_logits(), rtol=1e-5, atol=1e-5)
    _check_logits(constant_external)


@pytest.mark.parametrize("against", ["itself", "inline"])
def test_compare_constant_external_model(constant_external, tmp_path, against):
    """Against itself or the same weights held in the model: KL 0 for every sample."""
    np.savez(tmp_path / "d.npz", features=_features())
    candidate = constant_external
    if against == "inline":
        w, b = _weights(0)
        node = helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "W"))
        candidate = tmp_path / "inline.onnx"
        onnx.save(_linear(node, [numpy_helper.from_array(b, "b")]), candidate)
    report = tmp_path / "r.json"
    argv = [
        "compare",
        str(constant_external),
        str(candidate),
        "--data",
        str(tmp_path / "d.npz"),
        "--json",
        str(report),
    ]
    assert main(argv) == 0
    kl = json.loads(report.read_text())["kl"]
    assert kl["max"] == 0.0


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", "{m}", "{out}", "--input", "logits", "--log-softmax"],
        ["inline", "{m}", "{out}"],
        ["fuse", "{m}", "{out}"],
        ["prepare", "{m}", "{out}", "--target", "onnxruntime"],
        ["prepare", "{m}", "{out}", "--target", "portable"],
        ["prepare", "{m}", "{out}", "--target", "cann"],
    ],
)
def test_rewrites_of_constant_external_model_load_and_run(constant_external, tmp_path, argv):
    out = tmp_path / "out" / "o.onnx"
    out.parent.mkdir()
    assert main([a.format(m=constant_external, out=out) for a in argv]) == 0
    third = tmp_path / "third"
    third.mkdir()
    os.chdir(third)  # monkeypatch restores the working directory
    _check_logits(out)


# --- a data file named like the output in the working directory ----------------------------------


def _external_student(folder: Path) -> Path:
    """The student model as a torch dynamo export writes it: weights in ``<name>.data``."""
    path = folder / "student.onnx"
    onnx.save(
        onnx.load(STUDENT),
        path,
        save_as_external_data=True,
        location="student.onnx.data",
        size_threshold=0,
    )
    return path


def _student_logits(path: Path) -> np.ndarray:
    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    sess = runtime.session(path)
    return runtime.run(sess, _feeds(sess, x), ["logits"])[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", "{m}", "{m}", "--input", "logits", "--log-softmax"],
        ["fuse", "{m}", "{m}"],
        ["prepare", "{m}", "{m}", "--target", "onnxruntime"],
        ["inline", "{m}", "{m}"],
        [
            "distill",
            "{m}",
            "{m}",
            "{m}",
            "--student-output",
            "logits",
            "--teacher-output",
            "logits",
        ],
    ],
)
@pytest.mark.parametrize("where", ["own folder", "decoys"])
def test_in_place_rewrite_ignores_a_decoy_data_file_in_the_working_directory(
    tmp_path, monkeypatch, argv, where
):
    """Run in the export's own folder (its data file lies there) or in another folder that
    holds files named like the input's and the output's data files."""
    folder = tmp_path / "export"
    folder.mkdir()
    model = _external_student(folder)
    want = _student_logits(STUDENT)
    cwd = folder
    decoys = ("student.onnx.data", "student.onnx", "o.onnx.data")
    if where == "decoys":
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        for name in decoys:
            (cwd / name).write_bytes(b"decoy")
    monkeypatch.chdir(cwd)
    assert main([a.format(m=model) for a in argv]) == 0
    if where == "decoys":
        for name in decoys:
            assert (cwd / name).read_bytes() == b"decoy"
    assert (folder / "student.onnx.data").is_file()  # the export's own file is left alone
    np.testing.assert_allclose(_student_logits(model), want, rtol=1e-6)


# --- file modes ----------------------------------------------------------------------------------


def _data_files(model: Path) -> list[Path]:
    proto = load_model(model, external_data=False)
    locations = {
        e.value
        for t in onnx.external_data_helper._get_all_tensors(proto)
        for e in t.external_data
        if e.key == "location"
    }
    return [model.parent / name for name in sorted(locations)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_data_file_mode_follows_the_umask_like_the_model(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "m.onnx"
        save_model(onnx.load(STUDENT), out, external_data=True)
    finally:
        os.umask(old)
    (data,) = _data_files(out)
    assert _mode(out) == 0o666 & ~umask
    assert _mode(data) == _mode(out)


def test_replaced_model_keeps_its_mode_for_model_and_data(tmp_path):
    out = tmp_path / "m.onnx"
    save_model(onnx.load(STUDENT), out, external_data=True)
    os.chmod(out, 0o640)
    save_model(onnx.load(STUDENT), out, external_data=True)
    (data,) = _data_files(out)
    assert _mode(out) == 0o640 and _mode(data) == 0o640


# --- concurrent writers --------------------------------------------------------------------------


def _writer(args: tuple[str, int, multiprocessing.synchronize.Barrier]) -> None:
    path, seed, barrier = args
    w, b = _weights(seed)
    big = np.full((512, 512), float(seed), np.float32)  # external; W and b stay in the model
    init = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(big, "pad"),
    ]
    model = _linear(None, init)
    barrier.wait()
    for _ in range(5):
        save_model(model, path, external_data=True)


def _owner(proto: onnx.ModelProto) -> int | None:
    """The writer whose weights ``proto`` holds, or None for a mix of two writers'."""
    tensors = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    owner = int(tensors["pad"].flat[0])
    w, b = _weights(owner)
    same = (
        np.array_equal(tensors["W"], w)
        and np.array_equal(tensors["b"], b)
        and np.array_equal(tensors["pad"], np.full((512, 512), owner, np.float32))
    )
    return owner if same else None


def _reader(path: str, stop: multiprocessing.synchronize.Event, mixed: object) -> None:
    """Read the model until ``stop``; count the reads that mix two writers' files (a read
    that finds no data file, removed by a newer write meanwhile, is not a mix)."""
    while not stop.is_set():
        try:
            proto = load_model(path)
        except (OSError, ValueError):
            continue
        if _owner(proto) is None:
            with mixed.get_lock():  # type: ignore[attr-defined]
                mixed.value += 1  # type: ignore[attr-defined]


def _run_writers(path: Path, seeds: list[int]) -> int:
    """Run the writers with a reader beside them; return the reader's count of mixed reads."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(seeds))
    stop, mixed = ctx.Event(), ctx.Value("i", 0)
    reader = ctx.Process(target=_reader, args=(str(path), stop, mixed))
    procs = [ctx.Process(target=_writer, args=((str(path), s, barrier),)) for s in seeds]
    reader.start()
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    stop.set()
    reader.join(60)
    assert reader.exitcode == 0
    return mixed.value


def test_concurrent_writers_leave_one_writers_model_and_data(tmp_path):
    """Four processes write the same output with different weights while a fifth reads it:
    the model left reads one writer's weights, and no read ever mixed two writers' files."""
    seeds = [11, 12, 13, 14]
    for trial in range(8):
        out = tmp_path / f"t{trial}" / "m.onnx"
        out.parent.mkdir()
        assert _run_writers(out, seeds) == 0
        assert _owner(load_model(out)) in seeds
        # one data file left beside the model: the one it names
        data = _data_files(out)
        leftovers = [p for p in out.parent.iterdir() if p != out and p not in data]
        assert len(data) == 1 and leftovers == []


def test_data_file_is_named_after_the_model(tmp_path):
    out = tmp_path / "m.onnx"
    save_model(onnx.load(STUDENT), out, external_data=True)
    (data,) = _data_files(out)
    assert re.fullmatch(r"m\.onnx\.[0-9a-f]{16}\.data", data.name)


# --- the session cache: keyed on the external data too, bounded by memory ------------------------


def _save_with_data(path: Path, seed: int, rows: int = 64) -> None:
    """A linear model (``W`` padded to ``rows`` rows of zeros: the data file's size) saved as a
    torch export saves it: the same ``.onnx`` bytes whatever the weights, ``<name>.data``."""
    w, b = _weights(seed)
    model = _linear(None, [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    pad = numpy_helper.from_array(np.zeros((rows, CLASSES), np.float32), "pad")
    model.graph.initializer.append(pad)
    (path.parent / f"{path.name}.data").unlink(missing_ok=True)  # onnx would append to it
    onnx.save(
        model, path, save_as_external_data=True, location=f"{path.name}.data", size_threshold=0
    )


@pytest.mark.usefixtures("fresh_cache")
def test_rewritten_data_file_gives_a_new_session(tmp_path):
    path = tmp_path / "m.onnx"
    _save_with_data(path, 0)
    model_bytes = path.read_bytes()
    old = runtime.session(path, fused=False)
    x = _features()
    _save_with_data(path, 7)  # new weights in m.onnx.data, the .onnx unchanged
    assert path.read_bytes() == model_bytes
    data = tmp_path / "m.onnx.data"
    info = data.stat()
    # a rewrite within one clock tick may keep the old time: move it on as a later write would
    os.utime(data, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    new = runtime.session(path, fused=False)
    assert new is not old
    w, b = _weights(7)
    got = runtime.run(new, {"features": x})[0]
    np.testing.assert_allclose(got, x.astype(np.float64) @ w + b, rtol=1e-5, atol=1e-5)
    assert runtime.session(path, fused=False) is new  # and cached again


@pytest.mark.usefixtures("fresh_cache")
def test_data_file_of_another_size_gives_a_new_session(tmp_path):
    path = tmp_path / "m.onnx"
    _save_with_data(path, 0, rows=64)
    old = runtime.session(path, fused=False)
    moved = tmp_path / "other.onnx"  # the same weights, another data file size
    _save_with_data(moved, 0, rows=128)
    os.replace(tmp_path / "other.onnx.data", tmp_path / "m.onnx.data")
    _save_with_data(moved, 0, rows=64)  # (W and b first: their offsets are unchanged)
    assert runtime.session(path, fused=False) is not old


@pytest.mark.usefixtures("fresh_cache")
def test_cache_is_bounded_by_its_memory_estimate(monkeypatch):
    """Under a budget of 2.5 sessions' allowance, the third model evicts the least recently
    used: the count bound alone (32) would keep all three."""
    assert runtime.CACHE_SIZE >= 3
    from kldiv_onnx import build_model

    models = [build_model("sum", False, "float32", [n, 2]) for n in range(1, 4)]
    budget = 2.5 * runtime.SESSION_ALLOWANCE / 2**20
    monkeypatch.setenv("KLDIV_ONNX_SESSION_CACHE_MB", str(budget))
    first = runtime.session(models[0], fused=False)
    second = runtime.session(models[1], fused=False)
    assert runtime.cache_info() == 2
    assert runtime.cache_memory() <= budget * 2**20
    runtime.session(models[2], fused=False)  # evicts models[0], the least recent
    assert runtime.cache_info() == 2
    assert runtime.session(models[1], fused=False) is second
    assert runtime.session(models[0], fused=False) is not first


@pytest.mark.usefixtures("fresh_cache")
def test_cache_estimate_counts_external_data(tmp_path, monkeypatch):
    """A model with 8 MiB of external data costs its data: under a budget that holds two small
    sessions, it holds itself alone."""
    big = tmp_path / "big.onnx"
    _save_with_data(big, 0, rows=2**21 // CLASSES)
    from kldiv_onnx import build_model

    monkeypatch.setenv(
        "KLDIV_ONNX_SESSION_CACHE_MB", str((2.5 * runtime.SESSION_ALLOWANCE + 2**20) / 2**20)
    )
    runtime.session(build_model("sum"), fused=False)
    runtime.session(build_model("mean"), fused=False)
    assert runtime.cache_info() == 2
    runtime.session(big, fused=False)
    assert runtime.cache_info() == 1
    assert runtime.cache_memory() >= 8 * 2**20


# --- recursive model-local functions -------------------------------------------------------------


def _recursive_model(path: Path, mutual: bool) -> Path:
    """``y = custom.Loss(x, t)`` (and ``ex = Exp(x)``), where ``Loss`` calls itself, directly or
    through ``custom.Other``."""
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("custom", 1)]
    callee = "Other" if mutual else "Loss"
    functions = [
        helper.make_function(
            "custom",
            "Loss",
            ["x", "t"],
            ["y"],
            [helper.make_node(callee, ["x", "t"], ["y"], domain="custom")],
            opsets,
        )
    ]
    if mutual:
        functions.append(
            helper.make_function(
                "custom",
                "Other",
                ["x", "t"],
                ["y"],
                [helper.make_node("Loss", ["x", "t"], ["y"], domain="custom")],
                opsets,
            )
        )
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 3])  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Exp", ["x"], ["ex"]),
            helper.make_node("Loss", ["x", "t"], ["y"], domain="custom"),
        ],
        "g",
        [value("x"), value("t")],
        [value("y"), value("ex")],
    )
    path.write_bytes(
        helper.make_model(graph, opset_imports=opsets, functions=functions).SerializeToString()
    )
    return path


RECURSIVE_COMMANDS = [
    ["fuse", "{m}", "{out}"],
    ["prepare", "{m}", "{out}", "--target", "onnxruntime"],
    ["prepare", "{m}", "{out}", "--target", "cann"],
    ["prepare", "{m}", "{out}", "--target", "portable"],
    ["inline", "{m}", "{out}"],
    ["check", "{m}"],
    ["embed", "{m}", "{out}", "--input", "ex"],
    ["distill", "{m}", "{m}", "{out}", "--student-output", "ex", "--teacher-output", "ex"],
    ["run", "{m}", "{data}"],
    ["validate", "{m}"],
    ["compare", "{m}", "{m}", "--data", "{data}", "--output", "ex"],
]


@pytest.mark.parametrize("mutual", [False, True], ids=["self", "mutual"])
@pytest.mark.parametrize("argv", RECURSIVE_COMMANDS, ids=lambda a: "-".join(a[:1] + a[3:5]))
def test_every_command_refuses_a_recursive_local_function(tmp_path, capfd, argv, mutual):
    model = _recursive_model(tmp_path / "rec.onnx", mutual)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 3), np.float32), t=np.zeros((2, 3), np.float32))
    out = tmp_path / "o.onnx"
    err = _one_line_exit_2([a.format(m=model, out=out, data=data) for a in argv], capfd)
    assert "recursive" in err and re.search(r"custom[.:]Loss", err)  # onnxruntime's: custom:Loss
    assert not out.exists()


def test_load_model_refuses_a_recursive_local_function(tmp_path):
    model = _recursive_model(tmp_path / "rec.onnx", mutual=True)
    for source in (model, model.read_bytes(), onnx.load(model)):
        with pytest.raises(ValueError, match=r"recursive.*custom\.Loss -> custom\.Other"):
            load_model(source)


def test_saving_a_model_whose_external_data_was_not_read_is_refused(tmp_path):
    """Its tensors would name data files of another folder: a ValueError naming the output."""
    folder = tmp_path / "model"
    folder.mkdir()
    unread = load_model(_constant_external_model(folder), external_data=False)
    out = tmp_path / "o.onnx"
    for external in (True, False, None):
        with pytest.raises(ValueError, match=r"cannot write model .*o\.onnx.*'W' was not read"):
            save_model(unread, out, external_data=external)
    assert list(tmp_path.iterdir()) == [folder]


def _external_tensor(folder: Path, name: str, array: np.ndarray) -> TensorProto:
    tensor = numpy_helper.from_array(array, name)
    (folder / f"{name}.bin").write_bytes(tensor.raw_data)
    set_external_data(tensor, f"{name}.bin", offset=0, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    return tensor


def _model_with_external_tensors_everywhere(folder: Path) -> tuple[onnx.ModelProto, dict]:
    """External tensors in a sparse initializer, a function's Constant, an ``If`` branch's
    initializer and its Constant: ``{name: array}`` of what each holds."""
    rng = np.random.default_rng(4)
    arrays = {n: rng.standard_normal(300).astype(np.float32) for n in ("sv", "fc", "bi", "bc")}
    indices = numpy_helper.from_array(np.arange(300, dtype=np.int64), "si")
    sparse = helper.make_sparse_tensor(_external_tensor(folder, "sv", arrays["sv"]), indices, [600])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("custom", 1)]
    function = helper.make_function(
        "custom",
        "F",
        [],
        ["y"],
        [
            helper.make_node(
                "Constant", [], ["y"], value=_external_tensor(folder, "fc", arrays["fc"])
            )
        ],
        opsets,
    )
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    branch = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["c"], value=_external_tensor(folder, "bc", arrays["bc"])
            ),
            helper.make_node("Add", ["c", "bi"], ["o"]),
        ],
        "branch",
        [],
        [value("o")],
        [_external_tensor(folder, "bi", arrays["bi"])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("F", [], ["f"], domain="custom"),
            helper.make_node("If", ["cond"], ["b"], then_branch=branch, else_branch=branch),
        ],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [value("f"), value("b")],
        sparse_initializer=[sparse],
    )
    return helper.make_model(graph, opset_imports=opsets, functions=[function]), arrays


def test_every_kind_of_external_tensor_is_read_from_the_model_folder(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    model, arrays = _model_with_external_tensors_everywhere(folder)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    monkeypatch.chdir(tmp_path)
    assert uses_external_data(load_model(path, external_data=False))
    proto = load_model(path)
    assert not uses_external_data(proto)
    graph = proto.graph
    branch = graph.node[1].attribute[0].g
    got = {
        "sv": graph.sparse_initializer[0].values,
        "fc": proto.functions[0].node[0].attribute[0].t,
        "bi": branch.initializer[0],
        "bc": branch.node[0].attribute[0].t,
    }
    for name, tensor in got.items():
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), arrays[name])


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("value", ["lots", "-1", "inf", "nan"])
def test_a_bad_cache_budget_is_one_line(tmp_path, monkeypatch, capfd, value):
    from kldiv_onnx import build_model

    onnx.save(build_model("sum", input_shape=[2, 3]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    monkeypatch.setenv("KLDIV_ONNX_SESSION_CACHE_MB", value)
    with pytest.raises(ValueError, match="KLDIV_ONNX_SESSION_CACHE_MB"):
        runtime.session(tmp_path / "m.onnx")
    argv = ["run", str(tmp_path / "m.onnx"), str(tmp_path / "x.npy"), str(tmp_path / "x.npy")]
    assert "KLDIV_ONNX_SESSION_CACHE_MB" in _one_line_exit_2(argv, capfd)
