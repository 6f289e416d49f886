"""``kldiv-onnx bench``: the --quick run writes well-formed JSON, PNG and markdown; backends that
cannot run are reported as skipped. Nothing here asserts anything about time."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from kldiv_onnx import bench, native
from kldiv_onnx._contract import DTYPES
from kldiv_onnx.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATS = ("median_s", "q1_s", "q3_s", "min_s", "max_s", "ns_per_element", "input_gb_per_s")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run through the command line, shared by the checks below."""
    folder = tmp_path_factory.mktemp("bench")
    paths = {k: folder / f"bench.{k}" for k in ("json", "png", "md")}
    argv = ["bench", "--quick", "--no-progress", "--json", str(paths["json"])]
    argv += ["--markdown", str(paths["md"])]
    if _has("matplotlib"):
        argv += ["--plot", str(paths["png"])]
    assert main(argv) == 0
    return paths, json.loads(paths["json"].read_text())


def test_quick_json_has_every_point(quick):
    _, result = quick
    assert result["schema"] == bench.SCHEMA
    cfg = result["config"]
    assert tuple(cfg["sizes"]) == bench.QUICK_SIZES
    assert tuple(cfg["backends"]) == bench.BACKENDS
    expected = {
        (b, d, r, t, s)
        for b in cfg["backends"]
        for d in cfg["dtypes"]
        for r in cfg["reductions"]
        for t in cfg["threads"]
        for s in cfg["sizes"]
    }
    points = result["points"]
    assert len(points) == len(expected) == 2 * 3 * 2 * 2 * 5
    assert {
        (p["backend"], p["dtype"], p["reduction"], p["threads"], p["size"]) for p in points
    } == (expected)
    for p in points:
        assert p["status"] in ("ok", "failed", "skipped")
        assert p["input_bytes"] == 2 * p["size"] * DTYPES[p["dtype"]].itemsize
        assert int(np.prod(p["shape"])) == p["size"]
        if p["status"] == "ok":
            assert p["repeats"] >= cfg["min_repeats"]
            assert all(p[k] > 0 for k in STATS), p
            assert p["min_s"] <= p["q1_s"] <= p["median_s"] <= p["q3_s"] <= p["max_s"]
            assert p["peak_extra_bytes"] is None or p["peak_extra_bytes"] >= 0
        else:
            assert p["error"], p
            assert all(p[k] is None for k in STATS)
    # numpy and the composite run everywhere; the fused node wherever the library is built
    for p in points:
        if p["backend"] in ("numpy-read", "composite"):
            assert p["status"] == "ok", p
        if p["backend"] == "fused":
            assert p["status"] == ("ok" if native.available() else "skipped"), p


def test_quick_json_machine_and_summary(quick):
    _, result = quick
    machine = result["machine"]
    for key in ("cpu_model", "simd", "cores", "versions", "loadavg", "native_library"):
        assert key in machine
    assert machine["cores"] >= 1
    assert machine["versions"]["numpy"] == np.__version__
    targets = result["summary"]["targets"]
    assert set(targets) >= {
        "fused_vs_torch_export",
        "fused_vs_torch_eager",
        "fused_vs_read_both",
        "fused_peak_extra_bytes",
    }
    for check in targets.values():
        assert check["met"] in (True, False, None)
    assert "kldiv-onnx bench --quick --no-progress --json" in result["command"]


@pytest.mark.skipif(not _has("torch"), reason="torch not installed")
def test_torch_export_bfloat16_reported_failed(quick):
    """onnxruntime has no bfloat16 kernels for the exported graph: failed, with its message."""
    _, result = quick
    rows = [p for p in result["points"] if p["backend"] == "torch-export"]
    for p in rows:
        if p["dtype"] == "bfloat16":
            assert p["status"] == "failed" and "session" in p["error"]
        elif p["dtype"] == "float32":
            assert p["status"] == "ok"


@pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib not installed")
def test_quick_plot_is_png(quick):
    paths, _ = quick
    data = paths["png"].read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_quick_markdown(quick):
    paths, result = quick
    text = paths["md"].read_text()
    assert text.startswith("## Performance")
    assert result["command"] in text
    assert "| fused |" in text and "| numpy-read |" in text


def test_unavailable_backends_are_skipped(monkeypatch, capsys):
    """No torch and no native library: those backends are skipped with a reason, not faked."""

    def missing() -> str:
        raise FileNotFoundError("kldiv_onnx native library not found at /nowhere")

    monkeypatch.setattr(native, "library_path", missing)
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    cfg = bench.Config(
        sizes=(1024,),
        dtypes=("float32",),
        reductions=("batchmean",),
        threads=(1,),
        min_repeats=1,
        max_repeats=2,
        budget_s=0.0,
    )
    result = bench.run_benchmark(cfg, progress=False)
    skipped = {s["backend"]: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"fused", "torch-export", "torch-eager"}
    assert "native library" in skipped["fused"] and "torch" in skipped["torch-eager"]
    status = {p["backend"]: p for p in result["points"]}
    for name in skipped:
        assert status[name]["status"] == "skipped" and status[name]["median_s"] is None
    assert status["composite"]["status"] == status["numpy-read"]["status"] == "ok"
    table = bench.format_table(result)
    assert "skipped fused" in table and "skipped torch-eager" in table
    assert result["summary"]["targets"]["fused_vs_torch_export"]["met"] is None


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--dtypes", "float64"],
        ["bench", "--backends", "cuda"],
        ["bench", "--threads", "0"],
        ["bench", "--log2-sizes", "ten"],
        ["bench", "--json", "/nonexistent-folder/x.json"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kldiv-onnx: error:") and err.count("\n") == 1


def test_peak_memory_sees_an_allocation():
    memory = bench.PeakMemory()
    if not memory.available:
        pytest.skip(memory.reason)
    for size in (64 << 20, 8 << 20, 8 << 20):  # the second 8 MiB reuses freed heap pages
        grew = memory.measure(lambda: np.ones(size, dtype=np.uint8))  # noqa: B023
        assert grew is not None and grew >= size * 0.9, (size, grew)
