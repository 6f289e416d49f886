"""compare under hostile input: models that return the wrong number of rows, all-inf KL values
and strict JSON, data of another dtype than the models take, SIGTERM during a Ray run, and an
unreachable Ray cluster."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from child import CLI, child_env
from compare_cases import CLASSES, FEATURES, classifier, inputs, outputs, weights
from onnx import helper, numpy_helper

from kldiv_onnx.cli import main
from kldiv_onnx.comparison import compare
from kldiv_onnx.comparison.report import kl_statistics


def _with_tail(model: onnx.ModelProto, nodes: list, inits: list, out: str) -> onnx.ModelProto:
    """``model`` with ``nodes`` appended after its ``logits``, whose result ``out`` becomes the
    new ``logits``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["pre" if o == "logits" else o for o in node.output]
    for node in nodes:
        node.input[:] = ["pre" if i == "logits" else i for i in node.input]
    graph.node.extend(nodes)
    graph.node.append(helper.make_node("Identity", [out], ["logits"]))
    graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    w, b, w2 = weights()
    x = inputs(rows=64)
    base, candidate = classifier(w, b), classifier(w2, b)
    paths = {"base": tmp / "base.onnx", "candidate": tmp / "candidate.onnx"}
    onnx.save(base, paths["base"])
    onnx.save(candidate, paths["candidate"])
    np.savez(tmp / "data.npz", x=x)
    return {"tmp": tmp, "x": x, "base_model": base, "candidate_model": candidate, **paths}


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr without compare's progress lines."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines(True) if not line.startswith("compare: ")]
    return code, out, "".join(lines)


# ---------------------------------------------------------------------------------------------
# a model's rows against the batch fed


@pytest.mark.parametrize("rows", ["fewer", "more"])
def test_rows_returned_are_checked_against_the_batch(case, capsys, rows):
    """A model whose output has one row less, or twice the rows, of the batch it was fed: one
    line naming the model, the output, the rows returned and the rows fed (not NaN samples with
    exit 0, not an IndexError)."""
    if rows == "fewer":
        starts = numpy_helper.from_array(np.array([0], np.int64), "s0")
        ends = numpy_helper.from_array(np.array([-1], np.int64), "s1")
        tail = [helper.make_node("Slice", ["logits", "s0", "s1"], ["cut"])]
        bad = _with_tail(case["candidate_model"], tail, [starts, ends], "cut")
        returned = 15
    else:
        tail = [helper.make_node("Concat", ["logits", "logits"], ["cut"], axis=0)]
        bad = _with_tail(case["candidate_model"], tail, [], "cut")
        returned = 32
    path = case["tmp"] / f"{rows}.onnx"
    onnx.save(bad, path)
    data = case["tmp"] / "data.npz"
    for base in (path, case["base"]):  # the bad model as the base too: both return too few/many
        with pytest.raises(ValueError, match=rf"'logits' returned {returned} rows for 16 rows fed"):
            compare(base, path, data, batch_size=16)
    code, out, err = _cli(
        capsys, "compare", str(case["base"]), str(path), "--data", str(data), "--batch-size", "16"
    )
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "candidate model" in lines[0] and "'logits'" in lines[0]
    assert f"returned {returned} rows for 16 rows fed" in lines[0]


# ---------------------------------------------------------------------------------------------
# infinite KL values and strict JSON


def _quantile_reference(values: np.ndarray, q: float) -> float:
    """numpy's linear quantile where inf stands for the limit of ever larger numbers: with inf
    replaced by two different huge numbers, a quantile that moves with them is inf."""
    a = np.quantile(np.where(np.isinf(values), 1e200, values), q)
    b = np.quantile(np.where(np.isinf(values), 1e250, values), q)
    return float(a) if a == b else math.inf


@pytest.mark.parametrize("infinite", [64, 60, 30, 1])
def test_percentiles_of_infinite_values(infinite):
    """Percentiles of a set where some or all values are inf follow linear interpolation's
    limit (inf where an inf takes part), never NaN."""
    values = np.random.default_rng(3).gamma(1.0, size=64)
    values[np.random.default_rng(4).permutation(64)[:infinite]] = np.inf
    stats = kl_statistics(values)
    for name, q in {"median": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}.items():
        assert stats[name] == _quantile_reference(values, q), name
    assert stats["max"] == math.inf and stats["mean"] == math.inf


def _strict(text: str):
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_all_infinite_kl_is_reported_as_inf_in_strict_json(case, capsys):
    """The candidate gives class 0 probability 0 where the base does not: every sample's KL is
    inf. The percentiles are inf (not NaN) and ``--json`` is strict JSON with inf as "inf"."""
    mask = numpy_helper.from_array(np.array([0.0] + [1.0] * (CLASSES - 1), np.float32), "mask")
    base = _with_tail(case["base_model"], [helper.make_node("Softmax", ["logits"], ["p"])], [], "p")
    zero = [
        helper.make_node("Softmax", ["logits"], ["p"]),
        helper.make_node("Mul", ["p", "mask"], ["pm"]),
    ]
    candidate = _with_tail(case["candidate_model"], zero, [mask], "pm")
    tmp = case["tmp"]
    onnx.save(base, tmp / "probs-base.onnx")
    onnx.save(candidate, tmp / "probs-zero.onnx")
    want = outputs(candidate, case["x"])
    assert np.all(want[:, 0] == 0) and np.all(outputs(base, case["x"])[:, 0] > 0)
    report = compare(base, candidate, tmp / "data.npz", kind="probs")
    assert np.all(report.values == np.inf)
    for name in ("mean", "median", "p90", "p99", "p999", "max"):
        assert report.kl[name] == math.inf, name
    json_path = tmp / "inf.json"
    code, _, err = _cli(
        capsys,
        "compare",
        str(tmp / "probs-base.onnx"),
        str(tmp / "probs-zero.onnx"),
        "--data",
        str(tmp / "data.npz"),
        "--kind",
        "probs",
        "--json",
        str(json_path),
    )
    assert code == 0, err
    parsed = _strict(json_path.read_text())
    assert parsed["kl"]["median"] == "inf" and parsed["kl"]["max"] == "inf"
    assert parsed["kl"]["stderr"] is None  # undefined: NaN is null
    assert all(w["kl"] == "inf" for w in parsed["worst"])


def test_report_dict_is_strict_json(case):
    """Every non-finite number in :meth:`CompareReport.to_dict` is JSON: NaN as null, ±inf as
    "inf"/"-inf"; ``allow_nan=False`` accepts it."""
    report = compare(case["base"], case["candidate"], case["tmp"] / "data.npz")
    report.kl.update(mean=math.inf, median=-math.inf, p90=math.nan)
    report.worst[0] = (report.worst[0][0], math.inf)
    d = _strict(json.dumps(report.to_dict(), allow_nan=False))
    assert d["kl"]["mean"] == "inf" and d["kl"]["median"] == "-inf" and d["kl"]["p90"] is None
    assert d["worst"][0]["kl"] == "inf"


# ---------------------------------------------------------------------------------------------
# data of another dtype than the model's input


def _typed(case, name: str, x: np.ndarray) -> Path:
    path = case["tmp"] / f"{name}.npz"
    np.savez(path, x=x)
    return path


def _float32_values(case) -> np.ndarray:
    return compare(case["base"], case["candidate"], case["tmp"] / "data.npz").values


@pytest.mark.parametrize("dtype", ["float64", "int64", "bool", "float16"])
def test_other_dtypes_are_refused_without_a_cast(case, capsys, dtype):
    """Data of another dtype than the model's float32 input: a ValueError naming the input, the
    data's dtype, the model's and the option; the command line says it in one line, exit 2."""
    x = case["x"].astype(dtype) if dtype != "bool" else case["x"] > 0
    path = _typed(case, f"refused-{dtype}", x)
    message = rf"'x' holds {dtype}.*takes float32.*--cast"
    with pytest.raises(ValueError, match=message) as info:
        compare(case["base"], case["candidate"], path)
    assert "\n" not in str(info.value)
    code, out, err = _cli(
        capsys, "compare", str(case["base"]), str(case["candidate"]), "--data", str(path)
    )
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"'x' holds {dtype}" in err and "float32" in err and "--cast" in err


def test_cast_exact_takes_values_that_round_trip(case, capsys):
    """``cast='exact'``: float64 copies of float32 values, int64 below 2**24, bool and float16
    give the same KL as the float32 data they equal."""
    x = case["x"]
    want = _float32_values(case)
    same = compare(
        case["base"], case["candidate"], _typed(case, "exact64", x.astype(np.float64)), cast="exact"
    )
    np.testing.assert_array_equal(same.values, want)
    for name, data in {
        "int64": np.round(x * 1000).astype(np.int64) * 4096,  # up to about 2**24
        "bool": x > 0,
        "float16": x.astype(np.float16),
    }.items():
        assert np.all(np.abs(data.astype(np.float64)) < 2**24)
        got = compare(case["base"], case["candidate"], _typed(case, name, data), cast="exact")
        as32 = _typed(case, f"{name}-as32", data.astype(np.float32))
        np.testing.assert_array_equal(
            got.values, compare(case["base"], case["candidate"], as32).values
        )
    code, out, err = _cli(
        capsys,
        "compare",
        str(case["base"]),
        str(case["candidate"]),
        "--data",
        str(case["tmp"] / "exact64.npz"),
        "--cast",
        "exact",
    )
    assert code == 0 and "KL mean" in out, err


@pytest.mark.parametrize("name", ["float64", "int64"])
def test_cast_exact_refuses_values_that_change(case, capsys, name):
    """``cast='exact'`` refuses a value float32 cannot hold (a float64 between two float32s, an
    int64 of 2**24 + 1) naming the input and ``--cast any``; ``cast='any'`` rounds it as numpy
    does."""
    if name == "float64":
        data = case["x"].astype(np.float64)
        data[5, 3] += 1e-12
    else:
        data = np.ones((64, FEATURES), np.int64)
        data[5, 3] = 2**24 + 1
    path = _typed(case, f"inexact-{name}", data)
    with pytest.raises(ValueError, match=r"'x'.*float32 cannot hold.*--cast any"):
        compare(case["base"], case["candidate"], path, cast="exact")
    code, out, err = _cli(
        capsys,
        "compare",
        str(case["base"]),
        str(case["candidate"]),
        "--data",
        str(path),
        "--cast",
        "exact",
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--cast any" in err
    got = compare(case["base"], case["candidate"], path, cast="any")
    as32 = _typed(case, f"inexact-{name}-as32", data.astype(np.float32))
    np.testing.assert_array_equal(got.values, compare(case["base"], case["candidate"], as32).values)


def test_cast_is_checked(case):
    with pytest.raises(ValueError, match="cast must be one of"):
        compare(case["base"], case["candidate"], case["tmp"] / "data.npz", cast="some")


# ---------------------------------------------------------------------------------------------
# Ray: SIGTERM during a run, an unreachable cluster


def _cli_process(*argv: str, env: dict | None = None, **popen) -> subprocess.Popen:
    environ = child_env(KLDIV_ONNX_PROGRESS_SECONDS="0", **(env or {}))
    if "RAY_ADDRESS" not in (env or {}):
        environ.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [*CLI, *argv],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _slow_model(seed: int) -> onnx.ModelProto:
    """(batch, 8) → (batch, 5) through a 512-wide hidden layer: slow enough per row that a run
    of 20000 one-row batches is still going when its first results come back."""
    rng = np.random.default_rng(seed)
    shapes = [(FEATURES, 512), (512, 512), (512, CLASSES)]
    inits, nodes, last = [], [], "x"
    for i, shape in enumerate(shapes):
        inits.append(
            numpy_helper.from_array((rng.normal(size=shape) / 20).astype(np.float32), f"W{i}")
        )
        nodes.append(helper.make_node("MatMul", [last, f"W{i}"], [f"h{i}"]))
        last = f"h{i}"
    nodes.append(helper.make_node("Identity", [last], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def test_sigterm_during_a_ray_run_stops_cleanly(tmp_path):
    """SIGTERM once the first results of a Ray run are in: exit 143, Ray shut down, no
    traceback, no abort and no core dump (Ray's own handler aborted), no --json file."""
    pytest.importorskip("ray")
    onnx.save(_slow_model(1), tmp_path / "a.onnx")
    onnx.save(_slow_model(2), tmp_path / "b.onnx")
    np.savez(tmp_path / "d.npz", x=inputs(rows=20000))
    proc = _cli_process(
        "compare",
        "a.onnx",
        "b.onnx",
        "--data",
        "d.npz",
        "--engine",
        "ray",
        "--batch-size",
        "1",
        "--json",
        "out.json",
        cwd=tmp_path,
    )
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("compare: ") and "rows (" in line:  # results are coming back
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + err
    assert any("rows (" in line for line in seen), err
    assert "20000/20000" not in err, err  # stopped during the run, not after it
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err and "SIGTERM received" not in err, err
    assert "KL mean" not in out
    assert not (tmp_path / "out.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("core")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("listening", [False, True])
def test_an_unreachable_ray_cluster_is_one_line_within_the_timeout(case, listening):
    """``RAY_ADDRESS=ray://`` a closed port, or a port that accepts connections but never
    answers: one line naming RAY_ADDRESS and --ray-timeout, exit 2, within the timeout (Ray's
    own connect retries for about 45 s, then raises a traceback)."""
    pytest.importorskip("ray")
    with socket.socket() as server:
        if listening:
            server.bind(("127.0.0.1", 0))
            server.listen(8)  # never accepted: the handshake completes, nothing answers
            port = server.getsockname()[1]
        else:
            port = _closed_port()
        t0 = time.monotonic()
        proc = _cli_process(
            "compare",
            str(case["base"]),
            str(case["candidate"]),
            "--data",
            str(case["tmp"] / "data.npz"),
            "--engine",
            "ray",
            "--ray-timeout",
            "3",
            env={"RAY_ADDRESS": f"ray://127.0.0.1:{port}"},
        )
        out, err = proc.communicate(timeout=120)
        wall = time.monotonic() - t0
    lines = [line for line in err.splitlines() if not line.startswith("compare: ")]
    assert proc.returncode == 2 and out == "", err
    assert len(lines) == 1, err
    assert f"ray://127.0.0.1:{port}" in lines[0] and "--ray-timeout" in lines[0]
    assert wall < 3 + 20, wall  # the timeout and the start of Python, well below Ray's 45 s


def test_a_ray_client_address_without_the_client_says_what_to_install(case, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc raises ImportError
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{_closed_port()}")
    with pytest.raises(ImportError, match=r"needs Ray's client.*kldiv-onnx\[ray\]"):
        compare(case["base"], case["candidate"], case["tmp"] / "data.npz", engine="ray")


def test_ray_timeout_is_checked(case):
    with pytest.raises(ValueError, match="ray timeout must be"):
        compare(case["base"], case["candidate"], case["tmp"] / "data.npz", ray_timeout=0)


def _bfloat16_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` taking its input ``x`` as bfloat16 (cast to float32 inside)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.BFLOAT16
    for node in model.graph.node:
        node.input[:] = ["x32" if i == "x" else i for i in node.input]
    model.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x32"], to=onnx.TensorProto.FLOAT))
    onnx.checker.check_model(model)
    return model


def test_cast_to_a_bfloat16_input(case, tmp_path):
    """float32 data for a bfloat16 input: refused by default; ``cast='exact'`` takes values
    bfloat16 holds (the KL equals that of the float32 models on them) and refuses others."""
    import ml_dtypes

    base, candidate = (_bfloat16_input(case[k]) for k in ("base_model", "candidate_model"))
    exact = tmp_path / "exact.npz"
    np.savez(exact, x=case["x"].astype(ml_dtypes.bfloat16).astype(np.float32))
    with pytest.raises(ValueError, match=r"'x' holds float32.*takes bfloat16.*--cast"):
        compare(base, candidate, exact)
    got = compare(base, candidate, exact, cast="exact").values
    want = compare(case["base"], case["candidate"], exact).values
    np.testing.assert_array_equal(got, want)
    inexact = tmp_path / "inexact.npz"
    np.savez(inexact, x=case["x"])
    with pytest.raises(ValueError, match=r"bfloat16 cannot hold"):
        compare(base, candidate, inexact, cast="exact")


def test_bfloat16_saved_by_numpy_feeds_a_bfloat16_input(case, tmp_path):
    """``np.savez`` of bfloat16 data stores 2-byte void arrays: compare reads them as bfloat16
    for a bfloat16 input, as run and validate do (the KL equals that of the float32 models on
    the same values)."""
    import ml_dtypes

    base, candidate = (_bfloat16_input(case[k]) for k in ("base_model", "candidate_model"))
    x = case["x"].astype(ml_dtypes.bfloat16)
    np.savez(tmp_path / "bf16.npz", x=x)
    assert np.load(tmp_path / "bf16.npz")["x"].dtype == np.dtype("V2")
    np.savez(tmp_path / "f32.npz", x=x.astype(np.float32))
    got = compare(base, candidate, tmp_path / "bf16.npz").values
    want = compare(case["base"], case["candidate"], tmp_path / "f32.npz").values
    np.testing.assert_array_equal(got, want)
