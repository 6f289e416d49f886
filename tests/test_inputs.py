"""One reader of model inputs for run, validate and compare: a Parquet file feeds run and
validate as the same data from ``.npz`` does; ``--cast`` fits data of another dtype as compare's
does; 2-byte void data (numpy's save of bfloat16) feeds a bfloat16 input in compare too."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest

from kldiv_onnx import build_model
from kldiv_onnx.cli import main
from kldiv_onnx.data_files import InputSpec, cast_feed, check_feed, feedable, read_feeds
from kldiv_onnx.reference import kl_div as reference
from kldiv_onnx.reference import sample

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
BF16 = np.dtype(ml_dtypes.bfloat16)


def _fixed_list(array: np.ndarray) -> pa.Array:
    """A column of ``array``'s rows as (nested) fixed-size lists."""
    column = pa.array(array.reshape(-1))
    for size in reversed(array.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


def _one_line_exit_2(argv: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def pair(tmp_path: Path) -> dict:
    """A batchmean model of (4, 3, 5) inputs and the same inputs as .npz and as Parquet (3-d:
    nested fixed-size lists for the input, plain list rows for the target)."""
    x, t = sample((4, 3, 5), np.dtype(np.float32), 7)
    onnx.save(build_model("batchmean", input_shape=[4, 3, 5]), tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", input=x, target=t)
    target = pa.array([list(map(list, row)) for row in t.astype(np.float64)])
    target = target.cast(pa.list_(pa.list_(pa.float32())))
    table = pa.table({"input": _fixed_list(x), "target": target})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=3)
    return {"dir": tmp_path, "x": x, "t": t}


def test_run_reads_parquet_as_the_same_npz(pair, capfd):
    d = pair["dir"]
    assert main(["run", str(d / "m.onnx"), str(d / "in.parquet"), "--output", str(d / "pq")]) == 0
    assert main(["run", str(d / "m.onnx"), str(d / "in.npz"), "--output", str(d / "npz")]) == 0
    capfd.readouterr()
    got = np.load(d / "pq.npz")["loss"]
    np.testing.assert_array_equal(got, np.load(d / "npz.npz")["loss"])
    want = reference(pair["x"], pair["t"], "batchmean")
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_parquet_feeds_match_npz_feeds(pair):
    """The arrays read from Parquet equal those of the .npz, dtype and shape included."""
    d = pair["dir"]
    specs = [InputSpec(n, np.dtype(np.float32), (4, 3, 5)) for n in ("input", "target")]
    from_pq = read_feeds([str(d / "in.parquet")], specs)
    from_npz = read_feeds([str(d / "in.npz")], specs)
    for name in ("input", "target"):
        assert from_pq[name].dtype == from_npz[name].dtype == np.float32
        np.testing.assert_array_equal(from_pq[name], from_npz[name])


def test_validate_takes_parquet_inputs(pair, tmp_path, capfd):
    d = pair["dir"]
    argv = ["validate", str(d / "m.onnx"), "--json"]
    assert main([*argv, str(tmp_path / "pq.json"), "--inputs", str(d / "in.parquet")]) == 0
    assert main([*argv, str(tmp_path / "npz.json"), "--inputs", str(d / "in.npz")]) == 0
    capfd.readouterr()
    pq_report = json.loads((tmp_path / "pq.json").read_text())
    npz_report = json.loads((tmp_path / "npz.json").read_text())
    assert pq_report["ok"] is True and len(pq_report["rows"]) > 1
    assert pq_report == npz_report  # every runtime's errors, from the same data


# reads a Parquet file through run's reader and compare's, as where pandas is not installed
# (the ray extra brings pyarrow without it; pyarrow 25's DataType.to_pandas_dtype needs it)
WITHOUT_PANDAS = """
import importlib.abc, sys

class NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoPandas())
import numpy as np
from kldiv_onnx.comparison.data import Dataset
from kldiv_onnx.data_files import InputSpec, read_feeds
path, dtype = sys.argv[1], np.dtype(sys.argv[2])
data = Dataset(path)
rows = [data.read(p, ["x"])["x"] for p in data.plan(4)]
feeds = read_feeds([path], [InputSpec("x", dtype, (None, 4))])
print(np.concatenate(rows).tobytes().hex(), feeds["x"].tobytes().hex(), feeds["x"].dtype)
"""


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.bool_])
def test_parquet_is_read_without_pandas(tmp_path, dtype):
    import subprocess
    import sys

    from child import child_env

    x = (np.arange(24).reshape(6, 4) % 3).astype(dtype)
    pq.write_table(pa.table({"x": _fixed_list(x)}), tmp_path / "d.parquet", row_group_size=4)
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_PANDAS, str(tmp_path / "d.parquet"), np.dtype(dtype).name],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, feed, got_dtype = proc.stdout.split()
    assert rows == feed == x.tobytes().hex() and got_dtype == np.dtype(dtype).name


def test_bad_parquet_is_one_line(tmp_path, capfd):
    onnx.save(build_model("sum", input_shape=[2]), tmp_path / "m.onnx")
    pq.write_table(
        pa.table({"input": pa.array(["a", "b"]), "target": pa.array([0.5, 0.5])}),
        tmp_path / "s.parquet",
    )
    err = _one_line_exit_2(["run", str(tmp_path / "m.onnx"), str(tmp_path / "s.parquet")], capfd)
    assert "'input'" in err and "Parquet type string is not a numeric tensor type" in err
    pq.write_table(
        pa.table({"input": pa.array([0.5, None]), "target": pa.array([0.5, 0.5])}),
        tmp_path / "n.parquet",
    )
    err = _one_line_exit_2(["run", str(tmp_path / "m.onnx"), str(tmp_path / "n.parquet")], capfd)
    assert "'input'" in err and "null" in err
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "n.parquet").read_bytes()[:40])
    err = _one_line_exit_2(["run", str(tmp_path / "m.onnx"), str(tmp_path / "cut.parquet")], capfd)
    assert "cut.parquet" in err


def test_run_cast(tmp_path, capfd):
    """--cast on run: refused by default with the way out named; exact feeds float64 copies of
    float32 values as those values and refuses others; any rounds as numpy does."""
    onnx.save(build_model("sum", input_shape=[2, 3]), tmp_path / "m.onnx")
    x, t = sample((2, 3), np.dtype(np.float32), 1)
    np.savez(tmp_path / "exact.npz", input=x.astype(np.float64), target=t.astype(np.float64))
    x64 = x.astype(np.float64) + 1e-12  # no float32 holds these
    np.savez(tmp_path / "inexact.npz", input=x64, target=t.astype(np.float64))
    model = str(tmp_path / "m.onnx")
    err = _one_line_exit_2(["run", model, str(tmp_path / "exact.npz")], capfd)
    assert "takes float32, got float64" in err and "--cast exact" in err
    out = str(tmp_path / "out")
    argv = ["run", model, str(tmp_path / "exact.npz"), "--output", out]
    assert main([*argv, "--cast", "exact"]) == 0
    want = reference(x, t, "sum")
    np.testing.assert_allclose(np.load(out + ".npz")["loss"], want, rtol=1e-5)
    argv = ["run", model, str(tmp_path / "inexact.npz"), "--cast", "exact"]
    err = _one_line_exit_2(argv, capfd)
    assert "'input'" in err and "cannot hold" in err
    argv = ["run", model, str(tmp_path / "inexact.npz"), "--output", out]
    assert main([*argv, "--cast", "any"]) == 0
    want = reference(x64.astype(np.float32), t, "sum")
    np.testing.assert_allclose(np.load(out + ".npz")["loss"], want, rtol=1e-5)
    assert "wrote" in capfd.readouterr().out


def test_validate_cast_needs_inputs(capfd):
    _one_line_exit_2(["validate", "--cast", "exact"], capfd)


def test_the_bfloat16_rule_is_one_rule():
    """2-byte void data is bfloat16 for a bfloat16 input, in check_feed and cast_feed alike,
    and nothing else for other inputs."""
    x = np.linspace(-1, 1, 6, dtype=np.float32).astype(BF16)
    void = x.view("V2")
    assert feedable(void.dtype, BF16, "no")
    assert not feedable(void.dtype, np.dtype(np.float32), "any")
    spec = InputSpec("x", BF16, (6,))
    np.testing.assert_array_equal(check_feed(spec, void).astype(np.float32), x.astype(np.float32))
    assert cast_feed("x", void, BF16, "no").dtype == BF16
    with pytest.raises(TypeError, match=r"takes float32, got \|V2"):
        check_feed(InputSpec("x", np.dtype(np.float32), (6,)), void, "any")
