"""Make a model pair and data sets for ``compare`` at scale.

An MLP 64-256-10 (``x`` float32 (batch, 64) → ``logits`` (batch, 10)) as ``base.onnx`` and a
perturbed copy as ``candidate.onnx``, and the same random rows as any of: one ``.npz``
(``data.npz``, written in chunks: uncompressed), one Parquet file (``data.parquet``, pyarrow's
default row groups of 1 Mi rows) and a folder of N Parquet shards (``shards-N/``), in memory a
chunk at a time.

    python scripts/scale_data.py OUT --rows 1000000 --formats npz parquet shards --shards 200
"""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, HIDDEN, CLASSES = 64, 256, 10
CHUNK = 1 << 18


def mlp(seed: int, noise: float = 0.0) -> onnx.ModelProto:
    """The 64-256-10 MLP (weights from ``seed``; ``noise`` perturbs them)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(scale=FEATURES**-0.5, size=(FEATURES, HIDDEN))
    w2 = rng.normal(scale=HIDDEN**-0.5, size=(HIDDEN, CLASSES))
    b1, b2 = np.zeros(HIDDEN), np.zeros(CLASSES)
    if noise:
        jitter = np.random.default_rng(seed)
        w1 = w1 + noise * jitter.normal(size=w1.shape) * FEATURES**-0.5
        w2 = w2 + noise * jitter.normal(size=w2.shape) * HIDDEN**-0.5
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["z0"]),
        helper.make_node("Add", ["z0", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def chunks(rows: int, seed: int = 1) -> Iterator[np.ndarray]:
    """The data rows, ``CHUNK`` at a time (the same rows whatever the format)."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        yield rng.normal(size=(n, FEATURES)).astype(np.float32)


def write_npz(path: Path, rows: int) -> None:
    """One uncompressed ``.npz`` with member ``x.npy``, streamed chunk by chunk."""
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open("x.npy", "w", force_zip64=True) as f,
    ):
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, FEATURES)}
        np.lib.format.write_array_header_1_0(f, header)
        for x in chunks(rows):
            f.write(x.tobytes())


def _table(x: np.ndarray):
    import pyarrow as pa

    return pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), FEATURES)})


def write_parquet(path: Path, rows: int) -> None:
    """One Parquet file, pyarrow's default row groups (up to 1 Mi rows: 256 MB here)."""
    import pyarrow.parquet as pq

    writer = None
    buffered: list[np.ndarray] = []
    pending = 0
    for x in chunks(rows):
        buffered.append(x)
        pending += len(x)
        if pending >= 1 << 20:  # one default-sized row group at a time
            table = _table(np.concatenate(buffered))
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            buffered, pending = [], 0
    if buffered:
        table = _table(np.concatenate(buffered))
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def write_shards(folder: Path, rows: int, shards: int) -> None:
    """``shards`` Parquet files of (nearly) equal row counts, in row order."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    cuts = np.linspace(0, rows, shards + 1).astype(np.int64)
    index, done = 0, 0
    pending: list[np.ndarray] = []
    for x in chunks(rows):
        pending.append(x)
        have = sum(len(p) for p in pending)
        data = np.concatenate(pending) if len(pending) > 1 else pending[0]
        offset = 0
        while index < shards and cuts[index + 1] <= done + have:
            n = int(cuts[index + 1] - cuts[index])
            pq.write_table(_table(data[offset : offset + n]), folder / f"part-{index:05d}.parquet")
            offset += n
            index += 1
        done += offset
        pending = [data[offset:]] if offset < len(data) else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument(
        "--formats", nargs="+", choices=("npz", "parquet", "shards"), default=["npz"]
    )
    parser.add_argument("--shards", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(mlp(0), args.out / "base.onnx")
    onnx.save(mlp(1, noise=0.05), args.out / "candidate.onnx")
    if "npz" in args.formats:
        write_npz(args.out / "data.npz", args.rows)
    if "parquet" in args.formats:
        write_parquet(args.out / "data.parquet", args.rows)
    if "shards" in args.formats:
        write_shards(args.out / f"shards-{args.shards}", args.rows, args.shards)


if __name__ == "__main__":
    main()
