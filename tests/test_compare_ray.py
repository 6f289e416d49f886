"""compare on Ray: a local two-CPU cluster gives the same per-sample values and statistics
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
    # Ray's own start-up is given apart: ray.init (here a cluster already up), then the actors
    t = distributed.timings
    assert (
        0 <= t["ray_init_s"] <= t["startup_s"] < t["wall_s"] and "ray_init_s" not in local.timings
    )
    assert t["samples_per_s_after_startup"] > t["samples_per_s"]


def _exp_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """The classifier's logits through Exp: non-negative scores whose rows do not sum to 1."""
    model.graph.node.insert(-1, onnx.helper.make_node("Exp", ["z"], ["ez"]))
    model.graph.node[-1].input[0] = "ez"
    return model


def test_probs_warning_raised_in_the_workers_is_shown_once(cluster, case):
    """Kind probs on rows that do not sum to 1: the check runs in the Ray workers, and the
    driver shows its warning once, in the local engine's words; each row divided by its sum,
    the KL is the logits' (float64 reference)."""
    w, b, w2 = weights()
    paths = []
    for name, weight in (("base-exp", w), ("candidate-exp", w2)):
        paths.append(case["folder"] / f"{name}.onnx")
        onnx.save(_exp_head(classifier(weight, b)), paths[-1])
    args = (*paths, case["sources"]["shards"])
    with pytest.warns(UserWarning) as local:
        compare(*args, kind="probs", batch_size=case["batch"])
    with pytest.warns(UserWarning) as distributed:
        report = compare(*args, kind="probs", batch_size=case["batch"], engine="ray")
    said = [str(w.message) for w in distributed if "kind probs" in str(w.message)]
    assert said == [str(w.message) for w in local if "kind probs" in str(w.message)]
    assert len(said) == 1 and "not 1" in said[0]
    x = case["x"]
    want = expected(outputs(classifier(w, b), x), outputs(classifier(w2, b), x))
    assert_report_matches(report, want)


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
    assert "Ray started in" in proc.stdout and "after start-up" in proc.stdout
