"""compare on Ray Data: a local two-CPU cluster gives the same per-sample values and statistics
as the local engine, and both agree with the float64 computation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import ray
from compare_cases import (
    NAN_ROWS,
    assert_report_matches,
    classifier,
    expected,
    inputs,
    outputs,
    weights,
    write_parquet,
    write_sources,
)

from kldiv_onnx.comparison import compare


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare_ray")
    w, b, w2 = weights()
    # the candidate's rows depend on their batch (as with dynamic quantization): both engines
    # must cut the same batches to agree exactly
    base, candidate = classifier(w, b), classifier(w2, b, batch_dependent=True)
    onnx.save(base, folder / "base.onnx")
    onnx.save(candidate, folder / "candidate.onnx")
    x = inputs(nan_rows=NAN_ROWS)
    batch = 64
    want = expected(outputs(base, x, batch), outputs(candidate, x, batch))
    return {
        "base": folder / "base.onnx",
        "candidate": folder / "candidate.onnx",
        "sources": write_sources(x, folder / "data"),
        "batch": batch,
        "want": want,
        "folder": folder,
        "x": x,
    }


@pytest.mark.parametrize("source", ["parquet-folder", "shards"])
def test_ray_equals_local_and_float64(cluster, case, source):
    args = (case["base"], case["candidate"], case["sources"][source])
    local = compare(*args, batch_size=case["batch"])
    distributed = compare(*args, batch_size=case["batch"], engine="ray")
    assert distributed.engine == "ray"
    assert np.array_equal(local.values, distributed.values, equal_nan=True)
    assert local.kl == distributed.kl  # mean, quantiles, max: the same bits
    assert local.top1_agree == distributed.top1_agree
    assert local.worst == distributed.worst and local.nan_indices == distributed.nan_indices
    assert_report_matches(distributed, case["want"])
    assert distributed.nan_samples == len(NAN_ROWS)


def test_worker_errors_are_one_line(cluster, case):
    """A ragged row is found by the worker that reads it: the same one-line error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = case["x"][:40]
    rows = [list(r) for r in x]
    rows[30] = rows[30][:7]
    path = case["folder"] / "ragged.parquet"
    pq.write_table(pa.table({"x": pa.array(rows, pa.list_(pa.float32()))}), path)
    with pytest.raises(ValueError, match="column 'x' is ragged") as info:
        compare(case["base"], case["candidate"], path, batch_size=16, engine="ray")
    assert "\n" not in str(info.value)
    write_parquet(x, path)  # the same file without the ragged row runs


def test_a_ray_run_prints_only_progress_and_the_report(case):
    """The command line on Ray with stderr piped: stderr holds compare's progress lines only
    (none of Ray's own log lines, warnings or errors), stdout the report with the start-up."""
    import subprocess

    from child import CLI, child_env

    env = child_env(KLDIV_ONNX_PROGRESS_SECONDS="0")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [
            *CLI,
            "compare",
            str(case["base"]),
            str(case["candidate"]),
            "--data",
            str(case["sources"]["parquet-folder"]),
            "--engine",
            "ray",
            "--batch-size",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("compare: ") for line in lines), proc.stderr
    assert lines[-1].startswith("compare: 500/500 rows in ")
    assert "start-up" in proc.stdout and "engine ray" in proc.stdout
