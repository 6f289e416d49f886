"""compare's data reader at scale: a folder of many shards read through in flat memory and under
a small open-file limit, each in a fresh subprocess (its own RSS and limits); the rows read
checked against the data written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from child import CLI, child_env


def _run(script: str, *args: str, timeout: float = 120) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# reads a data set through with the reader compare uses; prints the RSS (MB) after the first
# tenth of the batches and at the end, and a checksum of every row read
READ_THROUGH = """
    import json, os, sys
    import numpy as np
    from kldiv_onnx.comparison.data import Dataset

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    data = Dataset(sys.argv[1])
    batches = list(data.plan(int(sys.argv[2])))
    total = np.zeros(2)
    early = None
    for i, pieces in enumerate(batches):
        x = data.read(pieces, ["x"])["x"]
        total += [x.astype(np.float64).sum(), len(x)]
        if i == len(batches) // 10:
            early = rss_mb()
    late = rss_mb()
    data.close()
    print(json.dumps({"early": early, "late": late, "sum": total[0], "rows": int(total[1])}))
"""


def _parquet_shards(folder: Path, shards: int, rows: int, features: int, seed: int = 0) -> float:
    """``shards`` Parquet files of ``rows`` float32 rows (a fixed-size list column ``x``); the
    float64 sum of everything written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(shards):
        x = rng.normal(size=(rows, features)).astype(np.float32)
        total += float(x.astype(np.float64).sum())
        column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), features)
        pq.write_table(
            pa.table({"x": column}), folder / f"part-{i:05d}.parquet", compression="none"
        )
    return total


def test_a_folder_of_200_shards_is_read_in_flat_memory(tmp_path):
    """200 shards of 1 MB each: the memory after the last batch is that after the first tenth
    (a reader that keeps each shard's table grows by about 180 MB)."""
    folder = tmp_path / "shards"
    total = _parquet_shards(folder, shards=200, rows=4096, features=64)
    got = _run(READ_THROUGH, str(folder), "256")
    assert got["rows"] == 200 * 4096
    assert got["sum"] == pytest.approx(total, rel=1e-9, abs=1e-6)
    assert got["late"] - got["early"] < 40, got


OPEN_FILES = """
    import json, resource, sys
    import numpy as np
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    from kldiv_onnx.comparison.data import Dataset

    data = Dataset(sys.argv[1])
    total = np.zeros(2)
    for pieces in data.plan(int(sys.argv[2])):
        x = data.read(pieces, ["x"])["x"]
        total += [x.astype(np.float64).sum(), len(x)]
    data.close()
    print(json.dumps({"sum": total[0], "rows": int(total[1])}))
"""


@pytest.mark.parametrize("kind", ["parquet", "npz"])
def test_a_thousand_shards_under_256_open_files(tmp_path, kind):
    folder = tmp_path / "shards"
    shards, rows = 1000, 7
    if kind == "parquet":
        total = _parquet_shards(folder, shards=shards, rows=rows, features=4)
    else:
        folder.mkdir()
        rng = np.random.default_rng(0)
        total = 0.0
        for i in range(shards):
            x = rng.normal(size=(rows, 4)).astype(np.float32)
            total += float(x.astype(np.float64).sum())
            np.savez(folder / f"part-{i:05d}.npz", x=x)
    got = _run(OPEN_FILES, str(folder), "64")
    assert got["rows"] == shards * rows
    assert got["sum"] == pytest.approx(total, rel=1e-9, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# files that change or are not files


@pytest.mark.parametrize("kind", ["npz", "parquet"])
def test_a_shard_replaced_after_planning_is_refused(tmp_path, kind):
    """A shard replaced by another file (other rows, other length) between planning and reading
    is refused with one line naming it, not read through the old header."""
    from compare_cases import write_parquet

    from kldiv_onnx.comparison.data import Dataset

    folder = tmp_path / "shards"
    folder.mkdir()
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 4)).astype(np.float32) for n in (30, 40)]
    new = rng.normal(size=(25, 4)).astype(np.float32)

    def write(x: np.ndarray, path: Path) -> None:
        if kind == "npz":
            np.savez(path, x=x)
        else:
            write_parquet(x, path, row_group_size=8)

    suffix = ".npz" if kind == "npz" else ".parquet"
    for i, x in enumerate(parts):
        write(x, folder / f"part-{i}{suffix}")
    data = Dataset(folder)
    batches = list(data.plan(16))
    first = data.read(batches[0], ["x"])["x"]
    np.testing.assert_array_equal(first, parts[0][:16])
    write(new, tmp_path / f"new{suffix}")
    os.replace(tmp_path / f"new{suffix}", folder / f"part-1{suffix}")
    with pytest.raises(ValueError, match=r"part-1.* changed while compare was reading") as info:
        for pieces in batches[1:]:
            data.read(pieces, ["x"])
    assert "\n" not in str(info.value)
    data.close()


def test_a_fifo_as_data_is_refused_at_once(tmp_path):
    """``compare --data`` on a FIFO: one line, exit 2, no wait for a writer."""
    import onnx
    from compare_cases import classifier, weights

    w, b, _ = weights()
    onnx.save(classifier(w, b), tmp_path / "m.onnx")
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    m = str(tmp_path / "m.onnx")
    proc = subprocess.run(
        [*CLI, "compare", m, m, "--data", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a regular file" in lines[0], proc.stderr


# ---------------------------------------------------------------------------------------------
# progress


PROGRESS_LINE = re.compile(
    r"compare: (\d+)/(\d+) rows \(\d+\.\d %\), (\d+|-) rows/s, ETA (\d+:\d\d|-:--)$"
)


def test_progress_lines_off_a_terminal(tmp_path):
    """stderr piped: plain progress lines (rows, rows/s, ETA) as the rows go, the last at the
    total, then a closing line; stdout holds the report only."""
    import onnx
    from compare_cases import classifier, inputs, weights

    w, b, w2 = weights()
    onnx.save(classifier(w, b), tmp_path / "base.onnx")
    onnx.save(classifier(w2, b), tmp_path / "candidate.onnx")
    np.savez(tmp_path / "data.npz", x=inputs(rows=300))
    proc = subprocess.run(
        [
            *CLI,
            "compare",
            str(tmp_path / "base.onnx"),
            str(tmp_path / "candidate.onnx"),
            "--data",
            str(tmp_path / "data.npz"),
            "--batch-size",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(KLDIV_ONNX_PROGRESS_SECONDS="0"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    matches = [PROGRESS_LINE.match(line) for line in lines[:-1]]
    assert all(matches), lines
    done = [int(m.group(1)) for m in matches]
    assert done == [min(32 * (i + 1), 300) for i in range(10)]  # one line per batch at 0 s
    assert {int(m.group(2)) for m in matches} == {300}
    assert all(m.group(3) != "-" for m in matches)  # the sessions were built before the rows
    assert re.fullmatch(r"compare: 300/300 rows in \d+\.\d s", lines[-1]), lines[-1]
    assert "compare:" not in proc.stdout and "KL mean" in proc.stdout


def test_the_eta_counts_from_the_built_sessions(monkeypatch, capsys):
    """Ten minutes of session building before the first rows do not enter the ETA."""
    from kldiv_onnx.comparison import progress as engines

    clock = [1000.0]
    monkeypatch.setattr(engines.time, "perf_counter", lambda: clock[0])
    monkeypatch.setenv(engines.PROGRESS_SECONDS_VAR, "0")
    bar = engines.Progress(1000, enabled=True)
    clock[0] += 600  # building the sessions
    bar.begin()
    clock[0] += 10
    bar.update(100)  # 10 rows/s since: 900 rows to go take 90 s
    bar.close()
    first = capsys.readouterr().err.splitlines()[0]
    assert first == "compare: 100/1000 rows (10.0 %), 10 rows/s, ETA 1:30", first


# ---------------------------------------------------------------------------------------------
# Ray's share of the work


def test_ray_tasks_hold_many_batches_and_cover_the_plan_once():
    from kldiv_onnx.comparison.ray_engine import TASK_BATCHES, tasks

    for batches, workers in ((1, 1), (7, 2), (100, 2), (15625, 2), (15625, 64)):
        runs = tasks(batches, workers)
        covered = [b for first, count in runs for b in range(first, first + count)]
        assert covered == list(range(batches))
        assert all(1 <= count <= TASK_BATCHES for _, count in runs)
        # about eight runs per worker, never one per batch once there are enough batches
        assert len(runs) <= max(8 * workers, -(-batches // TASK_BATCHES))
    assert len(tasks(15625, 2)) == -(-15625 // TASK_BATCHES)


def test_a_reader_given_some_batches_reads_only_their_row_groups(tmp_path, monkeypatch):
    """A worker handed batches 4-7 of 50 rows (rows 200-400) of a file of ten row groups of 100
    rows reads row groups 2 and 3 only, and gets the right rows."""
    import pyarrow.parquet as pq
    from compare_cases import write_parquet

    from kldiv_onnx.comparison.data import Dataset

    x = np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32)
    write_parquet(x, tmp_path / "data.parquet", row_group_size=100)
    read: list[int] = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        groups = list(kwargs["row_groups"])
        read.extend(groups)
        yield from iter_batches(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    data = Dataset(tmp_path / "data.parquet")
    got = [data.read(pieces, ["x"])["x"] for pieces in data.plan(50, first=4, count=4)]
    data.close()
    np.testing.assert_array_equal(np.concatenate(got), x[200:400])
    assert sorted(set(read)) == [2, 3]


def test_a_worker_s_later_runs_in_one_row_group_do_not_read_it_again(tmp_path, monkeypatch):
    """A Ray worker handed every other run of a file that is one row group (pyarrow's default
    for up to about a million rows) reads on through the group to each of its runs, decoding
    each row at most once, instead of from the group's start for every run."""
    import pyarrow.parquet as pq
    from compare_cases import write_parquet

    from kldiv_onnx.comparison.data import Dataset

    # runs of 6,400 rows, more than a record batch read ahead (READ_AHEAD_ROWS)
    x = np.random.default_rng(0).normal(size=(64000, 4)).astype(np.float32)
    write_parquet(x, tmp_path / "data.parquet", row_group_size=len(x))
    decoded: list[int] = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            decoded.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    data = Dataset(tmp_path / "data.parquet")
    assert len(data.shards[0].groups) == 2  # one row group
    got, want = [], []
    for first in range(0, 1000, 200):  # runs of 100 batches of 64 rows: every other one
        got += [data.read(p, ["x"])["x"] for p in data.plan(64, first=first, count=100)]
        want.append(x[first * 64 : (first + 100) * 64])
    data.close()
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))
    assert sum(decoded) <= len(x)


# ---------------------------------------------------------------------------------------------
# the statistics at the end of a run: exact, and without copies of the per-sample values

# runs compare on a model pair whose output holds 1,024 samples per row; prints the peak RSS (MB)
PEAK = """
    import json, os, sys
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from kldiv_onnx.comparison import compare

    folder, rows = sys.argv[1], int(sys.argv[2])
    per_row = 1024
    w = np.random.default_rng(0).normal(size=(8, 2 * per_row)).astype(np.float32)
    for name, noise in (("base", 0.0), ("candidate", 0.1)):
        weights = w + noise * np.random.default_rng(1).normal(size=w.shape).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Reshape", ["h", "shape"], ["y"])],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", per_row, 2])],
            [numpy_helper.from_array(weights, "w"),
             numpy_helper.from_array(np.array([-1, per_row, 2], np.int64), "shape")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.save(model, os.path.join(folder, name + ".onnx"))
    x = np.random.default_rng(2).normal(size=(rows, 8)).astype(np.float32)
    np.savez(os.path.join(folder, "data.npz"), x=x)
    paths = [os.path.join(folder, f) for f in ("base.onnx", "candidate.onnx", "data.npz")]
    report = compare(*paths)
    with open("/proc/self/status") as f:
        peak = dict(line.split(":", 1) for line in f)["VmHWM"].split()[0]
    print(json.dumps({"samples": report.samples, "peak": int(peak) / 1024}))
"""


def test_the_peak_memory_of_a_run_does_not_grow_with_its_samples(tmp_path):
    """Sixteen times the rows (0.26 M → 4.2 M samples): the peak resident memory grows by less
    than the per-sample values would take (8 bytes a sample, 30 MB more here): they live in a
    file, and the statistics read it in chunks without a copy."""
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small = _run(PEAK, str(tmp_path / "small"), "256")
    large = _run(PEAK, str(tmp_path / "large"), "4096")
    assert (small["samples"], large["samples"]) == (256 * 1024, 4096 * 1024)
    values_mb = 8 * (large["samples"] - small["samples"]) / 2**20
    assert large["peak"] - small["peak"] < values_mb / 2, (small, large)


def test_the_statistics_are_numpys_without_a_copy():
    """Quantiles bit for bit as ``np.quantile``, the worst samples as a stable sort, the NaN
    samples as ``np.isnan``, on sets larger than one gathered group (ties, signed zeros,
    infinities, NaN)."""
    from kldiv_onnx.comparison.report import GATHER, kl_statistics, nan_samples, worst

    rng = np.random.default_rng(5)
    n = 3 * GATHER + 17
    sets = [
        rng.gamma(1.0, 1e-3, n),
        rng.integers(0, 7, n).astype(np.float64) * 0.25,
        np.where(rng.random(n) < 0.3, -0.0, rng.normal(size=n)),
        np.where(rng.random(n) < 0.02, np.inf, rng.gamma(2.0, size=n)),
        np.where(rng.random(n) < 0.1, np.nan, 1.0 + rng.random(n) * 1e-12),
    ]
    for values in sets:
        valid = values[~np.isnan(values)]
        stats = kl_statistics(values)
        # inf as the limit of ever larger numbers: a quantile that moves with them is inf
        qs = [0.5, 0.9, 0.99, 0.999]
        a, b = (np.quantile(np.where(np.isinf(valid), big, valid), qs) for big in (1e200, 1e250))
        want = np.where(a == b, a, np.inf).tolist()
        assert [stats[k] for k in ("median", "p90", "p99", "p999")] == want
        assert stats["mean"] == pytest.approx(valid.mean(), rel=1e-12)
        assert stats["max"] == valid.max()
        index = np.flatnonzero(~np.isnan(values))
        order = index[np.argsort(-values[index], kind="stable")][:10]
        assert worst(values) == [(int(i), float(values[i])) for i in order]
        nan = np.flatnonzero(np.isnan(values))
        assert nan_samples(values) == (nan.size, nan[:100].tolist())


def test_no_room_for_the_values_is_one_line(tmp_path, monkeypatch):
    """The per-sample values go to a temporary file: a temporary folder that cannot hold it is
    a ValueError naming it, not an OSError from deep inside the run."""
    import tempfile

    from kldiv_onnx.comparison import compare

    folder = tmp_path / "data"
    folder.mkdir()
    _run(PEAK, str(folder), "4")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    paths = [folder / name for name in ("base.onnx", "candidate.onnx", "data.npz")]
    with pytest.raises(ValueError, match=r"cannot keep the per-sample values in .*missing"):
        compare(*paths)
