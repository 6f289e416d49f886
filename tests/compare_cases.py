"""Models and data sets the compare tests build (torch-free: onnx.helper), and the float64
numpy computation of the statistics that ``compare`` is checked against."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kldiv_onnx.reference import error_scale

FEATURES, CLASSES, ROWS = 8, 5, 500
NAN_ROWS = (3, 250, 499)
EPS32 = float(np.finfo(np.float32).eps)


def classifier(
    weights: np.ndarray,
    bias: np.ndarray,
    *,
    head: str | None = None,
    input_name: str = "x",
    batch_dependent: bool = False,
    seq: int | None = None,
    extra_output: bool = False,
) -> onnx.ModelProto:
    """``x @ W + b`` ("logits"), optionally through a LogSoftmax/Softmax ``head``; with
    ``batch_dependent`` the logits get 0.05 × their max over the batch (a model whose rows
    depend on their batch, as dynamic quantization does); with ``seq`` the logits are reshaped
    to (batch, seq, classes / seq)."""
    nodes = [
        helper.make_node("MatMul", [input_name, "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["z"]),
    ]
    inits = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")]
    out = "z"
    if batch_dependent:
        inits.append(numpy_helper.from_array(np.array([0.05], np.float32), "k"))
        nodes += [
            helper.make_node("ReduceMax", ["z"], ["zmax"], axes=[0], keepdims=1),
            helper.make_node("Mul", ["zmax", "k"], ["shift"]),
            helper.make_node("Add", ["z", "shift"], ["zb"]),
        ]
        out = "zb"
    classes = weights.shape[1]
    if seq is not None:
        inits.append(numpy_helper.from_array(np.array([0, seq, -1], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", [out, "shape"], ["zs"]))
        out = "zs"
    if head is not None:
        nodes.append(helper.make_node(head, [out], ["zh"], axis=-1))
        out = "zh"
    nodes.append(helper.make_node("Identity", [out], ["logits"]))
    dims = ["batch", seq, classes // seq] if seq is not None else ["batch", classes]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)]
    if extra_output:
        nodes.append(helper.make_node("Neg", ["z"], ["other"]))
        outputs.insert(0, helper.make_tensor_value_info("other", TensorProto.FLOAT, dims))
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", FEATURES])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base weights, bias and a perturbed copy of the weights."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    b = rng.normal(size=CLASSES).astype(np.float32)
    w2 = (w + 0.08 * rng.normal(size=w.shape)).astype(np.float32)
    return w, b, w2


def inputs(rows: int = ROWS, nan_rows: tuple[int, ...] = (), seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)
    x[list(nan_rows)] = np.nan
    return x


def write_parquet(x: np.ndarray, path: Path, row_group_size: int = 128, name: str = "x") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    pq.write_table(pa.table({name: column}), path, row_group_size=row_group_size)


def write_sources(x: np.ndarray, folder: Path) -> dict[str, Path]:
    """The same rows as one .npz, a folder of uneven .npz shards, one Parquet file and a
    folder of Parquet files."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", x=x)
    shards = folder / "shards"
    shards.mkdir()
    cuts = [0, 170, 370, len(x)]
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        np.savez(shards / f"part-{i:02d}.npz", x=x[a:b])
    write_parquet(x, folder / "data.parquet")
    pq_folder = folder / "parquet"
    pq_folder.mkdir()
    write_parquet(x[:230], pq_folder / "a.parquet", row_group_size=100)
    write_parquet(x[230:], pq_folder / "b.parquet", row_group_size=64)
    return {
        "npz": folder / "data.npz",
        "shards": shards,
        "parquet": folder / "data.parquet",
        "parquet-folder": pq_folder,
    }


def outputs(model: onnx.ModelProto, x: np.ndarray, batch_size: int = ROWS) -> np.ndarray:
    """The model's float32 output, run by plain onnxruntime in batches of ``batch_size``."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    parts = [
        sess.run(["logits"], {"x": x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def log_softmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def expected(base: np.ndarray, candidate: np.ndarray) -> dict:
    """The per-sample KL in float64 from both models' float32 logits, and every statistic of
    the report computed from it with numpy (NaN samples left out), with the per-sample
    tolerance of float32 math."""
    lp = log_softmax64(base).reshape(-1, base.shape[-1])
    lq = log_softmax64(candidate).reshape(-1, base.shape[-1])
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    # float32 log-softmax rounds at the logits' magnitude; the op's terms at error_scale's
    z = np.abs(np.concatenate([base, candidate], axis=-1)).reshape(len(lp), -1)
    with np.errstate(invalid="ignore"):
        scale = z.max(axis=-1) + 1 + error_scale(lq, lp, "none", True).sum(axis=-1)
    valid = ~np.isnan(kl)
    v = kl[valid]
    order = np.lexsort((np.flatnonzero(valid), -v))[:10]
    top_b = base.reshape(-1, base.shape[-1]).argmax(-1)
    top_c = candidate.reshape(-1, base.shape[-1]).argmax(-1)
    return {
        "values": kl,
        "tolerance": 8 * EPS32 * np.where(np.isfinite(scale), scale, 0) + 1e-12,
        "mean": v.mean(),
        "stderr": v.std(ddof=1) / math.sqrt(v.size),
        "median": np.quantile(v, 0.5),
        "p90": np.quantile(v, 0.9),
        "p99": np.quantile(v, 0.99),
        "p999": np.quantile(v, 0.999),
        "max": v.max(),
        "worst": [int(i) for i in np.flatnonzero(valid)[order]],
        "top1": float(np.mean(top_b[valid] == top_c[valid])),
        "nan": [int(i) for i in np.flatnonzero(~valid)],
    }


def assert_report_matches(report, want: dict) -> None:
    """Per-sample values within float32 math of the float64 ones, every statistic within the
    largest per-sample tolerance, the worst indices and top-1 exactly."""
    got = report.values
    nan = np.isnan(want["values"])
    assert np.array_equal(np.isnan(got), nan)
    err = np.abs(got[~nan] - want["values"][~nan])
    assert np.all(err <= want["tolerance"][~nan]), float(np.max(err / want["tolerance"][~nan]))
    atol = float(want["tolerance"][~nan].max())
    for key in ("mean", "median", "p90", "p99", "p999", "max"):
        assert abs(report.kl[key] - want[key]) <= atol, key
    assert abs(report.kl["stderr"] - want["stderr"]) <= atol
    assert report.top1_agreement == want["top1"]
    assert [i for i, _ in report.worst] == want["worst"]
    assert report.nan_indices == want["nan"]
    assert report.nan_samples == len(want["nan"])
    assert report.samples == len(want["values"])
