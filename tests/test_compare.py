"""compare (local engine): per-sample KL and its statistics against a float64 numpy computation,
every data source, kinds, NaN samples, bad input, the report, the plot and the command line."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import onnx
import pytest
from compare_cases import (
    NAN_ROWS,
    ROWS,
    assert_report_matches,
    classifier,
    expected,
    inputs,
    outputs,
    weights,
    write_parquet,
    write_sources,
)
from onnx import helper

from kldiv_onnx.comparison import CompareReport, compare
from kldiv_onnx.comparison.models import kl_model


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    w, b, w2 = weights_ = weights()
    base, candidate = classifier(w, b), classifier(w2, b)
    onnx.save(base, folder / "base.onnx")
    onnx.save(candidate, folder / "candidate.onnx")
    x = inputs()
    return {
        "folder": folder,
        "weights": weights_,
        "base": folder / "base.onnx",
        "candidate": folder / "candidate.onnx",
        "x": x,
        "sources": write_sources(x, folder / "data"),
        "want": expected(outputs(base, x), outputs(candidate, x)),
    }


def test_local_matches_float64(case):
    report = compare(case["base"], case["candidate"], case["sources"]["npz"], batch_size=64)
    assert_report_matches(report, case["want"])
    assert report.engine == "local"
    assert report.providers == {
        "base": ["CPUExecutionProvider"],
        "candidate": ["CPUExecutionProvider"],
    }


@pytest.mark.parametrize("source", ["shards", "parquet", "parquet-folder"])
def test_every_source_gives_the_same_values(case, source):
    """The same rows form the same batches whatever the files: identical values, statistics."""
    npz = compare(case["base"], case["candidate"], case["sources"]["npz"], batch_size=64)
    other = compare(case["base"], case["candidate"], case["sources"][source], batch_size=64)
    assert np.array_equal(npz.values, other.values)
    assert npz.kl == other.kl and npz.top1_agree == other.top1_agree and npz.worst == other.worst


@pytest.mark.parametrize("batch_size", [1, 7, ROWS])
def test_per_sample_values_do_not_depend_on_the_batch(case, batch_size):
    """The KL model's rows are independent: any batch size gives the same bits."""
    ref = compare(case["base"], case["candidate"], case["sources"]["npz"], batch_size=64)
    got = compare(case["base"], case["candidate"], case["sources"]["npz"], batch_size=batch_size)
    assert np.array_equal(ref.values, got.values)


def test_limit(case):
    report = compare(case["base"], case["candidate"], case["sources"]["shards"], limit=200)
    assert report.samples == report.rows == 200
    np.testing.assert_array_equal(
        report.values,
        compare(case["base"], case["candidate"], case["sources"]["npz"]).values[:200],
    )


def test_models_as_protos_and_bytes(case):
    base, candidate = onnx.load(case["base"]), onnx.load(case["candidate"]).SerializeToString()
    report = compare(base, candidate, case["sources"]["npz"])
    assert_report_matches(report, case["want"])


@pytest.mark.parametrize("kind, head", [("log-probs", "LogSoftmax"), ("probs", "Softmax")])
def test_kinds(case, kind, head):
    w, b, w2 = case["weights"]
    report = compare(
        classifier(w, b, head=head), classifier(w2, b, head=head), case["sources"]["npz"], kind=kind
    )
    assert_report_matches(report, case["want"])


def test_temperature_divides_logits(case):
    w, b, w2 = case["weights"]
    x = case["x"]
    t = 2.5
    want = expected(outputs(classifier(w, b), x) / t, outputs(classifier(w2, b), x) / t)
    report = compare(case["base"], case["candidate"], case["sources"]["npz"], temperature=t)
    assert_report_matches(report, want)
    assert report.temperature == t


def test_nan_samples_are_counted_listed_and_left_out(case, tmp_path):
    x = inputs(nan_rows=NAN_ROWS)
    np.savez(tmp_path / "nan.npz", x=x)
    w, b, w2 = case["weights"]
    want = expected(outputs(classifier(w, b), x), outputs(classifier(w2, b), x))
    assert want["nan"] == list(NAN_ROWS)
    report = compare(case["base"], case["candidate"], tmp_path / "nan.npz", batch_size=100)
    assert_report_matches(report, want)
    assert math.isfinite(report.kl["mean"])
    assert report.top1_agree == round(want["top1"] * (ROWS - len(NAN_ROWS)))


def test_probs_with_zeros(tmp_path):
    """0·log 0 = 0 where the base gives a class probability 0; infinite KL where only the
    candidate does."""
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.25, 0.25, 0.5]], np.float32)
    q = np.array([[0.25, 0.75, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]], np.float32)
    np.savez(tmp_path / "p.npz", x=p)
    # one data set for both: the candidate shifts p to q by a constant
    base = helper_identity_model()
    candidate = helper_identity_model(offset=q - p)
    report = compare(base, candidate, tmp_path / "p.npz", kind="probs", batch_size=3)
    want0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert report.values[0] == pytest.approx(want0, rel=1e-6)
    assert abs(report.values[1]) < 1e-7
    assert report.values[2] == math.inf
    assert report.nan_samples == 0 and report.kl["max"] == math.inf


def test_probs_nan_where_the_base_is_zero_counts(tmp_path):
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.25, 0.25, 0.5]], np.float32)
    np.savez(tmp_path / "p.npz", x=p)
    offset = np.zeros_like(p)
    offset[0, 2] = np.nan
    report = compare(
        helper_identity_model(),
        helper_identity_model(offset),
        tmp_path / "p.npz",
        kind="probs",
        batch_size=3,
    )
    assert report.nan_indices == [0] and report.nan_samples == 1


def helper_identity_model(offset: np.ndarray | None = None) -> onnx.ModelProto:
    """y = x (+ a constant per row position: three rows)."""
    from onnx import TensorProto, helper, numpy_helper

    off = np.zeros((3, 3), np.float32) if offset is None else offset.astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "off"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])],
        [numpy_helper.from_array(off, "off")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def test_sequence_outputs_are_per_position(case):
    """A (batch, seq, classes) output: one sample per position, numbered in C order."""
    w, b, w2 = case["weights"]
    ww = np.concatenate([w, w], axis=1)
    ww2 = np.concatenate([w2, w], axis=1)
    bb = np.concatenate([b, b])
    base, candidate = classifier(ww, bb, seq=2), classifier(ww2, bb, seq=2)
    x = case["x"]
    want = expected(outputs(base, x), outputs(candidate, x))
    report = compare(base, candidate, case["sources"]["npz"], batch_size=50)
    assert report.samples == 2 * ROWS and report.rows == ROWS
    assert_report_matches(report, want)
    np.testing.assert_array_equal(report.values[1::2], 0.0)  # the second half is unchanged


def test_output_is_picked_by_name(case):
    w, b, w2 = case["weights"]
    base, candidate = classifier(w, b, extra_output=True), classifier(w2, b, extra_output=True)
    with pytest.raises(ValueError, match="have several outputs"):
        compare(base, classifier(w2, b), case["sources"]["npz"])
    default = compare(base, candidate, case["sources"]["npz"])  # the base's first: 'other'
    assert default.output == {"base": "other", "candidate": "other"}
    report = compare(base, candidate, case["sources"]["npz"], output="logits")
    assert_report_matches(report, case["want"])
    with pytest.raises(ValueError, match="no output 'nope'"):
        compare(base, candidate, case["sources"]["npz"], output="nope")


def test_kl_model_uses_the_project_op():
    model = kl_model("logits", 2.0)
    assert [(n.domain, n.op_type) for n in model.graph.node] == [("kldiv_onnx", "KLDivRows")]
    attrs = {a.name: helper.get_attribute_value(a) for a in model.graph.node[0].attribute}
    assert attrs == {"kind": b"logits", "temperature": 2.0}


# ---------------------------------------------------------------------------------------------
# bad input


def _bad_cases(case, tmp):
    _, b, w2 = case["weights"]
    npz = case["sources"]["npz"]
    renamed = classifier(w2, b, input_name="pixels")
    wider = classifier(np.concatenate([w2, w2[:, :1]], axis=1), np.concatenate([b, b[:1]]))
    no_classes = classifier(w2[:, :0], b[:0])  # a (batch, 0) output
    np.savez(tmp / "misnamed.npz", pixels=case["x"])
    np.savez(tmp / "empty.npz", x=np.zeros((0, 8), np.float32))
    np.savez(tmp / "narrow.npz", x=case["x"][:, :6])
    np.savez(tmp / "text.npz", x=np.array([["a"] * 8] * 2))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"x": pa.array([[1.0] * 8, [1.0] * 7], pa.list_(pa.float32()))}),
        tmp / "ragged.parquet",
    )
    write_parquet(case["x"], tmp / "other-column.parquet", name="y")
    pq.write_table(pa.table({"x": pa.array(["a", "b"])}), tmp / "text.parquet")
    (tmp / "notes.txt").write_text("hello")
    (tmp / "empty-folder").mkdir()
    return {
        "different inputs": ((case["base"], renamed, npz), {}, "different inputs"),
        "different output shapes": ((case["base"], wider, npz), {}, "differ in shape"),
        "misnamed key": (
            (case["base"], case["candidate"], tmp / "misnamed.npz"),
            {},
            r"no column for model input\(s\) \['x'\]",
        ),
        "missing column": (
            (case["base"], case["candidate"], tmp / "other-column.parquet"),
            {},
            r"no column for model input\(s\) \['x'\]; its columns are \['y'\]",
        ),
        "ragged list column": (
            (case["base"], case["candidate"], tmp / "ragged.parquet"),
            {},
            "column 'x' is ragged",
        ),
        "row shape": (
            (case["base"], case["candidate"], tmp / "narrow.npz"),
            {},
            r"rows of shape \[6\]",
        ),
        "not numbers": ((case["base"], case["candidate"], tmp / "text.npz"), {}, "holds <U1"),
        "text column": (
            (case["base"], case["candidate"], tmp / "text.parquet"),
            {},
            r"text\.parquet: column 'x': Parquet type string is not a numeric tensor type",
        ),
        "no such data": (
            (case["base"], case["candidate"], tmp / "nope.npz"),
            {},
            "no such file or folder",
        ),
        "not data": (
            (case["base"], case["candidate"], tmp / "notes.txt"),
            {},
            "neither an .npz nor a Parquet",
        ),
        "empty folder": (
            (case["base"], case["candidate"], tmp / "empty-folder"),
            {},
            "holds no .npz or .parquet",
        ),
        "empty data set": (
            (case["base"], case["candidate"], tmp / "empty.npz"),
            {},
            "holds no samples",
        ),
        "no such model": ((tmp / "nope.onnx", case["candidate"], npz), {}, "base model"),
        "not a model": ((case["base"], tmp / "notes.txt", npz), {}, "candidate model"),
        "kind": ((case["base"], case["candidate"], npz), {"kind": "odds"}, "kind must be"),
        "temperature": (
            (case["base"], case["candidate"], npz),
            {"temperature": 0.0},
            "temperature must be",
        ),
        "temperature of probs": (
            (case["base"], case["candidate"], npz),
            {"temperature": 2.0, "kind": "probs"},
            "needs kind 'logits'",
        ),
        "batch size": (
            (case["base"], case["candidate"], npz),
            {"batch_size": 0},
            "batch size must be",
        ),
        "engine": ((case["base"], case["candidate"], npz), {"engine": "spark"}, "engine must be"),
        "limit": ((case["base"], case["candidate"], npz), {"limit": 0}, "limit must be"),
        "provider": (
            (case["base"], case["candidate"], npz),
            {"base_provider": "tpu"},
            "unknown provider 'tpu'",
        ),
        "no classes": ((no_classes, no_classes, npz), {}, r"class axis \(the last\) is empty"),
    }


BAD = [
    "different inputs",
    "different output shapes",
    "misnamed key",
    "missing column",
    "ragged list column",
    "row shape",
    "not numbers",
    "text column",
    "no such data",
    "not data",
    "empty folder",
    "empty data set",
    "no such model",
    "not a model",
    "kind",
    "temperature",
    "temperature of probs",
    "batch size",
    "engine",
    "limit",
    "provider",
    "no classes",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_clear_line(case, tmp_path, name):
    args, kwargs, message = _bad_cases(case, tmp_path)[name]
    with pytest.raises(ValueError, match=message) as info:
        compare(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_missing_optional_packages(case, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match="pyarrow, which is not installed"):
        compare(case["base"], case["candidate"], case["sources"]["parquet"])
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match="needs Ray, which is not installed"):
        compare(case["base"], case["candidate"], case["sources"]["npz"], engine="ray")


# ---------------------------------------------------------------------------------------------
# report, plot


def test_report_dict_and_table(case):
    report = compare(case["base"], case["candidate"], case["sources"]["npz"])
    d = report.to_dict()
    assert list(d)[:4] == ["samples", "kl", "top1_agreement", "worst"]
    assert list(d["kl"]) == ["mean", "stderr", "median", "p90", "p99", "p999", "max"]
    assert {"models", "providers", "engine", "timings", "nan_samples"} <= set(d)
    assert set(d["timings"]) >= {
        "read_s",
        "base_s",
        "candidate_s",
        "kl_s",
        "startup_s",
        "wall_s",
        "samples_per_s",
    }
    assert 0 < d["timings"]["startup_s"] < d["timings"]["wall_s"]
    assert len(d["worst"]) == 10 and set(d["worst"][0]) == {"index", "kl"}
    assert json.loads(json.dumps(d)) == d
    text = report.table()
    for label in ("KL mean", "KL median", "KL p99.9", "top-1 agreement", "worst samples"):
        assert label in text
    assert isinstance(report, CompareReport)


def test_plot(case, tmp_path):
    pytest.importorskip("matplotlib")  # the bench extra
    from kldiv_onnx.comparison.plot import plot

    report = compare(case["base"], case["candidate"], case["sources"]["npz"])
    path = plot(report, tmp_path / "kl.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["kl.png"]  # no temporary file left


# ---------------------------------------------------------------------------------------------
# command line


def _main():
    from kldiv_onnx.cli.main import main

    return main


def test_cli(case, tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    argv = [
        "compare",
        str(case["base"]),
        str(case["candidate"]),
        "--data",
        str(case["sources"]["parquet"]),
        "--batch-size",
        "100",
        "--json",
        str(out_json),
    ]
    if __import__("importlib").util.find_spec("matplotlib"):
        argv += ["--plot", str(out_png)]
    assert _main()(argv) == 0
    text = capsys.readouterr().out
    assert "KL mean" in text and "top-1 agreement" in text
    d = json.loads(out_json.read_text())
    assert d["samples"] == ROWS and d["engine"] == "local" and d["batch_size"] == 100
    assert d["kl"]["mean"] == pytest.approx(case["want"]["mean"], rel=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--temperature", "-1"], "--temperature"),
        (["--engine", "spark"], "--engine"),
        (["--kind", "odds"], "--kind"),
        (["--json", "/nonexistent-folder/r.json"], "does not exist"),
        (["--plot", "/nonexistent-folder/r.png"], "does not exist"),
        (["--limit", "x"], "--limit"),
        (["--base-provider", "tpu"], "unknown provider"),
    ],
)
def test_cli_bad_arguments(case, capsys, extra, message):
    argv = [
        "compare",
        str(case["base"]),
        str(case["candidate"]),
        "--data",
        str(case["sources"]["npz"]),
        *extra,
    ]
    assert _main()(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and captured.err.count("\n") == 1


def test_cli_bad_data(case, tmp_path, capsys):
    argv = [
        "compare",
        str(case["base"]),
        str(case["candidate"]),
        "--data",
        str(tmp_path / "missing.parquet"),
    ]
    assert _main()(argv) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and err.count("\n") == 1 and "Traceback" not in err


def test_openvino_as_the_candidate_provider(case):
    """The same model on OpenVINO against onnxruntime: the model-level cross-runtime check."""
    pytest.importorskip("openvino")
    report = compare(
        case["base"], case["base"], case["sources"]["npz"], candidate_provider="openvino"
    )
    assert report.providers == {"base": ["CPUExecutionProvider"], "candidate": ["OpenVINO"]}
    assert report.top1_agreement == 1.0
    assert 0 <= report.kl["max"] < 1e-9  # two runtimes' float32 rounding
