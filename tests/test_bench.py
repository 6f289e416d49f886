"""``kldiv-onnx bench``: the --quick run writes well-formed JSON and PNG, and
``scripts/performance.py`` turns its JSON into the performance page; backends that cannot run are
reported as skipped; output paths are checked before measuring and written atomically. Nothing
here asserts anything about time."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from kldiv_onnx import api, native
from kldiv_onnx._contract import DTYPES
from kldiv_onnx.bench import config, kernel_log, machine, measure, report
from kldiv_onnx.bench.config import fmt_size
from kldiv_onnx.cli import bench as bench_cli
from kldiv_onnx.cli import main

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))
import performance  # scripts/performance.py, on the path above

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATS = ("median_s", "q1_s", "q3_s", "min_s", "max_s", "ns_per_element", "input_gb_per_s")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _page(json_path, md_path, png_path, more_cores="none") -> str:
    """``scripts/performance.py`` on a result: the page's text (the plot linked, not drawn)."""
    argv = ["--json", str(json_path), "--out", str(md_path), "--plot", str(png_path)]
    assert performance.main([*argv, "--no-plot", "--more-cores", str(more_cores)]) == 0
    return pathlib.Path(md_path).read_text()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run through the command line and its page, shared by the checks below."""
    folder = tmp_path_factory.mktemp("bench")
    paths = {k: folder / f"bench.{k}" for k in ("json", "png", "md")}
    argv = ["bench", "--quick", "--no-progress", "--json", str(paths["json"])]
    if _has("matplotlib"):
        argv += ["--plot", str(paths["png"])]
    assert main(argv) == 0
    _page(paths["json"], paths["md"], paths["png"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in paths.values() if p.exists()
    )  # no temporary file left behind
    return paths, json.loads(paths["json"].read_text())


def test_quick_json_has_every_point(quick):
    _, result = quick
    assert result["schema"] == config.SCHEMA
    cfg = result["config"]
    assert tuple(cfg["sizes"]) == config.QUICK_SIZES
    assert tuple(cfg["backends"]) == config.BACKENDS
    expected = {
        (b, d, r, t, s)
        for b in cfg["backends"]
        for d in cfg["dtypes"]
        for r in cfg["reductions"]
        for t in cfg["threads"]
        for s in cfg["sizes"]
    }
    points = result["points"]
    assert len(points) == len(expected) == 2 * 3 * 2 * 2 * 7
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
        if p["backend"] in ("numpy-read", "composite", "api"):
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
        "api_vs_torch_eager_2x2",
        "api_vs_torch_eager_64x1000",
    }
    for check in targets.values():
        assert check["met"] in (True, False, None)


def test_quick_call_overhead(quick):
    """The API and torch eager at (2, 2) and (64, 1000), side by side, with the targets."""
    _, result = quick
    section = result["call_overhead"]
    assert section["threads"] == 1 and section["reduction"] == "batchmean"
    assert section["api_backend"] == ("fused" if native.available() else "composite")
    assert [tuple(r["shape"]) for r in section["rows"]] == list(config.OVERHEAD_SHAPES)
    for row in section["rows"]:
        assert row["us"]["api"] > 0 and row["us"]["kl_div"] > 0 and row["us"]["session"] > 0
        assert row["target"] == config.OVERHEAD_TARGETS[tuple(row["shape"])]
        if _has("torch"):
            assert row["us"]["torch-eager"] > 0
            ratio = row["us"]["api"] / row["us"]["torch-eager"]
            assert row["api_over_eager"] == pytest.approx(ratio)
            worst = max(row["api_over_eager"], row["kl_div_over_eager"])
            assert row["met"] == (worst <= row["target"])
            key = "api_vs_torch_eager_" + "x".join(map(str, row["shape"]))
            assert result["summary"]["targets"][key]["value"] == pytest.approx(worst)
    table = report.format_table(result)
    assert "call overhead: float32 batchmean, 1 thread" in table
    assert "API / torch eager (2, 2), 1 thread (time)" in table
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
    """The page scripts/performance.py writes from the --quick JSON."""
    paths, result = quick
    text = paths["md"].read_text()
    assert text.startswith("# Performance")
    assert performance.command_as_run(result["command"]) == result["command"]
    assert result["command"] in text
    if paths["png"].exists():
        assert "](bench.png)" in text  # the plot beside the page, linked
    assert "| fused |" in text and "| numpy-read |" in text and "| api |" in text
    assert "Call overhead:" in text and "| (2, 2) |" in text and "| (64, 1000) |" in text
    # the thread-scaling table: every size at every thread count, ratios from the same medians
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 2**")]
    scaling = [[c.strip() for c in r] for r in rows if len(r) == 6]
    cfg = result["config"]
    assert [(r[0], int(r[1])) for r in scaling] == [
        (fmt_size(size), threads) for size in cfg["sizes"] for threads in cfg["threads"]
    ]
    median = {
        (p["backend"], p["threads"], p["size"]): p["median_s"]
        for p in result["points"]
        if p["status"] == "ok" and p["dtype"] == "float32" and p["reduction"] == "batchmean"
    }
    for (size, threads), r in zip(
        [(s, t) for s in cfg["sizes"] for t in cfg["threads"]], scaling, strict=True
    ):
        read = min(median[(b, threads, size)] for b in ("numpy-read", "torch-read"))
        assert float(r[5].rstrip("x")) == pytest.approx(
            median[("fused", threads, size)] / read, rel=5e-3
        )


def test_unavailable_backends_are_skipped(monkeypatch, capsys, request):
    """No torch and no native library: those backends are skipped with a reason, not faked;
    the API falls back to the composite, and the call-overhead section has no torch."""

    def missing() -> str:
        raise FileNotFoundError("kldiv_onnx native library not found at /nowhere")

    def forget() -> None:  # the API resolves its backend once per process: as in a new one
        api._resolved_backend.cache_clear()
        api._loss_for.cache_clear()

    forget()
    request.addfinalizer(forget)

    monkeypatch.setattr(native, "library_path", missing)
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    cfg = config.Config(
        sizes=(1024,),
        dtypes=("float32",),
        reductions=("batchmean",),
        threads=(1,),
        min_repeats=1,
        max_repeats=2,
        budget_s=0.0,
    )
    result = measure.run_benchmark(cfg, progress=False)
    skipped = {s["backend"]: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"fused", "torch-export", "torch-eager", "torch-read"}
    assert "native library" in skipped["fused"] and "torch" in skipped["torch-eager"]
    status = {p["backend"]: p for p in result["points"]}
    for name in skipped:
        assert status[name]["status"] == "skipped" and status[name]["median_s"] is None
    assert status["composite"]["status"] == status["numpy-read"]["status"] == "ok"
    assert status["api"]["status"] == "ok"
    table = report.format_table(result)
    assert "skipped fused" in table and "skipped torch-eager" in table
    assert result["summary"]["targets"]["fused_vs_torch_export"]["met"] is None
    section = result["call_overhead"]
    assert section["api_backend"] == "composite"
    for row in section["rows"]:
        assert row["us"]["torch-eager"] is None and "torch" in row["missing"]["torch-eager"]
        assert row["met"] is None and row["us"]["api"] > 0
    assert result["summary"]["targets"]["api_vs_torch_eager_2x2"]["met"] is None
    for row in result["kernel_log"]["rows"]:  # no library: the section is skipped, not faked
        assert row["status"] == "skipped" and "native library" in row["error"]
    assert result["summary"]["targets"]["fused_vs_torch_log_avx3_batchmean"]["met"] is None


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
    memory = machine.PeakMemory()
    if not memory.available:
        pytest.skip(memory.reason)
    for size in (64 << 20, 8 << 20, 8 << 20):  # the second 8 MiB reuses freed heap pages
        grew = memory.measure(lambda: np.ones(size, dtype=np.uint8))  # noqa: B023
        assert grew is not None and grew >= size * 0.9, (size, grew)


# --- output paths: checked before measuring, written atomically, failures in one line -------


def _no_measuring(monkeypatch):
    monkeypatch.setattr(
        bench_cli, "run_benchmark", lambda *a, **k: pytest.fail("measured before failing")
    )


def _one_line_exit_2(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kldiv-onnx: error:") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_unwritable_outputs_refused_before_measuring(option, tmp_path, monkeypatch, capsys):
    """/dev/full, a folder, a missing folder: one line, exit 2, and nothing measured."""
    _no_measuring(monkeypatch)
    for path in ("/dev/full", str(tmp_path), str(tmp_path / "missing" / "out")):
        err = _one_line_exit_2(["bench", "--quick", option, path], capsys)
        assert path in err
    assert not os.path.exists("/dev/full.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_refused_before_measuring(tmp_path, monkeypatch, capsys):
    _no_measuring(monkeypatch)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        err = _one_line_exit_2(["bench", "--quick", "--json", str(folder / "b.json")], capsys)
        assert "not writable" in err
    finally:
        folder.chmod(0o755)


def test_same_output_twice_refused(tmp_path, monkeypatch, capsys):
    _no_measuring(monkeypatch)
    out = str(tmp_path / "b.out")
    err = _one_line_exit_2(["bench", "--quick", "--json", out, "--plot", out], capsys)
    assert "same file" in err


def test_failed_write_leaves_old_file_and_writes_the_others(quick, tmp_path, monkeypatch, capsys):
    """A full disk while writing --json (after measuring): the old JSON is intact, no partial
    or temporary file remains, --plot is still written; one line, exit 2."""
    _, result = quick
    monkeypatch.setattr(bench_cli, "run_benchmark", lambda *a, **k: json.loads(json.dumps(result)))

    def plot(result, path, *, format=None):  # no matplotlib needed: a file the size of a plot
        pathlib.Path(path).write_bytes(PNG_SIGNATURE + bytes(20_000))

    monkeypatch.setattr(bench_cli, "plot", plot)
    target, png = tmp_path / "b.json", tmp_path / "b.png"
    target.write_text("old\n")
    real = pathlib.Path.write_bytes

    def full_disk(self, data):
        if self.name.startswith(".b.json."):
            real(self, data[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    argv = ["bench", "--quick", "--no-progress", "--json", str(target), "--plot", str(png)]
    err = _one_line_exit_2(argv, capsys)
    assert "No space left on device" in err and str(target) in err
    assert target.read_text() == "old\n"
    assert png.read_bytes() == PNG_SIGNATURE + bytes(20_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.png"]


def test_failed_plot_leaves_nothing(quick, tmp_path, monkeypatch, capsys):
    """matplotlib failing half-way through the PNG: no file at the path, no temporary file."""
    _, result = quick
    monkeypatch.setattr(bench_cli, "run_benchmark", lambda *a, **k: json.loads(json.dumps(result)))

    def broken_plot(result, path, *, format=None):
        assert format == "png"
        pathlib.Path(path).write_bytes(PNG_SIGNATURE)
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(bench_cli, "plot", broken_plot)
    out = tmp_path / "b.png"
    err = _one_line_exit_2(["bench", "--quick", "--no-progress", "--plot", str(out)], capsys)
    assert "File too large" in err and str(out) in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib not installed")
def test_plot_is_png_whatever_the_suffix(quick, tmp_path):
    """The plot goes through a temporary file (no .png suffix): it is still a PNG."""
    _, result = quick
    out = tmp_path / "plot.out"
    bench_cli._write_plot(result, str(out))
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.out"]


def test_compare_section(tmp_path, capsys):
    """--compare measures compare's KL stage against reading both output batches, and its
    samples/s end to end, and keeps them in the JSON."""
    out = tmp_path / "b.json"
    argv = ["bench", "--quick", "--no-memory", "--no-overhead", "--no-progress"]
    argv += ["--backends", "fused", "--dtypes", "float32", "--reductions", "batchmean"]
    md = tmp_path / "perf.md"
    assert main([*argv, "--compare", "local", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "KL stage vs reading both output batches once (KL op: native KLDivRows, called " in text
    section = json.loads(out.read_text())["compare"]
    page = _page(out, md, tmp_path / "none.png")
    table = [line for line in page.splitlines() if line.startswith("| logits |")]
    assert [line.split("|")[2].strip() for line in table] == ["10", "1000"]
    assert {r["classes"] for r in section["kl_stage"]} == {10, 1000}
    assert all(r["read_s"] > 0 and r["kl_s"] > 0 for r in section["kl_stage"])
    assert [e["engine"] for e in section["end_to_end"]] == ["local"]
    assert section["end_to_end"][0]["samples_per_s"] > 0


def test_compare_engines_are_checked(capfd):
    assert main(["bench", "--quick", "--compare", "spark"]) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "engines must be among" in err


def test_faster_read_bound(quick):
    """The kernel is held to the faster of the two read bounds: numpy's and torch's."""
    _, result = quick
    at = result["summary"]["at"]
    key = (at["dtype"], at["reduction"], at["threads"], at["size"])
    median = {
        p["backend"]: p["median_s"]
        for p in result["points"]
        if (p["dtype"], p["reduction"], p["threads"], p["size"]) == key
    }
    check = result["summary"]["targets"]["fused_vs_faster_read"]
    if median.get("fused") is None:
        assert check["met"] is None
        return
    want = median["fused"] / min(median["numpy-read"], median["torch-read"])
    assert check["value"] == pytest.approx(want) and check["target"] == 1.25


# --- kernel in cache vs torch.log ---------------------------------------------------------


def _kernel_log_rows_sane(section, torch_expected):
    assert section["target"] == kernel_log.KERNEL_LOG_TARGET == 1.0
    assert section["target_size"] == kernel_log.KERNEL_LOG_TARGET_SIZE == 2**18
    assert [r["isa"] for r in section["rows"]] == list(kernel_log.KERNEL_LOG_ISAS)
    simd = native.simd_level()
    for row in section["rows"]:
        assert row["status"] in ("ok", "unsupported", "skipped", "failed"), row
        if not native.available():
            assert row["status"] == "skipped" and "native library" in row["error"]
            continue
        supported = simd == "avx512f" or (simd == "avx2" and row["isa"] == "avx2")
        assert row["status"] == ("ok" if supported else "unsupported"), row
        if row["status"] != "ok":
            continue
        assert row["active"] == row["isa"]  # the subprocess ran the target it was given
        assert [p["size"] for p in row["sizes"]] == section["sizes"]
        assert all(row["session_us"][r] > 0 for r in kernel_log.KERNEL_LOG_REDUCTIONS)
        for at in row["sizes"]:
            ns = at["ns_per_element"]
            assert all(0 < ns[r] < 1e4 for r in kernel_log.KERNEL_LOG_REDUCTIONS), at
            if torch_expected:
                assert ns["torch.log"] > 0
                for r in kernel_log.KERNEL_LOG_REDUCTIONS:
                    assert at["over_log"][r] == pytest.approx(ns[r] / ns["torch.log"])
            else:
                assert ns["torch.log"] is None and row["torch"] == "not installed"
                assert all(at["over_log"][r] is None for r in kernel_log.KERNEL_LOG_REDUCTIONS)


def test_quick_kernel_log(quick):
    """The section ran in the quick run: one subprocess per SIMD target, the fused op and
    torch.log side by side at each size, and the targets judged at 2**18."""
    paths, result = quick
    section = result["kernel_log"]
    assert section["rounds"] == config.quick_config().kernel_log_rounds
    assert section["sizes"] == list(kernel_log.KERNEL_LOG_SIZES)
    _kernel_log_rows_sane(section, _has("torch"))
    targets = result["summary"]["targets"]
    # judged: AVX-512 batchmean (the whole loss for one log); none and AVX2 are reported only
    assert [k for k in targets if k.startswith("fused_vs_torch_log")] == [
        "fused_vs_torch_log_avx3_batchmean"
    ]
    row = next(r for r in section["rows"] if r["isa"] == "avx3")
    at = next((p for p in row.get("sizes", []) if p["size"] == 2**18), None)
    check = targets["fused_vs_torch_log_avx3_batchmean"]
    assert check["target"] == 1.0 and check["op"] == "<="
    if at is None or at["over_log"]["batchmean"] is None:
        assert check["met"] is None
    else:
        assert check["value"] == pytest.approx(at["over_log"]["batchmean"])
        assert check["met"] == (check["value"] <= 1.0)
    table = report.format_table(result)
    assert "kernel in cache vs torch.log: float32, 1 thread" in table
    assert "fused avx3 batchmean / torch.log (2**18)" in table
    text = paths["md"].read_text()
    assert "Kernel in cache vs `torch.log`" in text and "| avx2 |" in text
    avx2_target = [line for line in text.splitlines() if line.startswith("| avx2 | 2**18 |")]
    assert all(line.rstrip(" |").endswith("reported / reported") for line in avx2_target)


def test_kernel_log_worker_without_torch(monkeypatch):
    """Without torch the worker still times the fused op; torch.log reads "not installed"."""
    if not native.available():
        pytest.skip("native library not built")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    row = kernel_log._worker(1, (1024,))
    assert row["status"] == "ok" and row["torch"] == "not installed"
    assert row["active"] == native.active_target()
    section = {
        "dtype": "float32",
        "threads": 1,
        "rounds": 1,
        "sizes": [1024],
        "target_size": 2**18,
        "target": 1.0,
        "rows": [{**row, "isa": "avx3"}],
    }
    at = row["sizes"][0]
    assert at["ns_per_element"]["torch.log"] is None and at["over_log"]["batchmean"] is None
    text = report.format_kernel_log({"kernel_log": section})
    assert "not installed" in text


def test_kernel_log_only(tmp_path, capsys):
    """--kernel-log-only measures that section alone (no points, no call overhead)."""
    out = tmp_path / "k.json"
    argv = ["bench", "--quick", "--kernel-log-only", "--no-progress", "--json", str(out)]
    assert main(argv) == 0
    assert "kernel in cache vs torch.log" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["points"] == [] and result["call_overhead"] is None
    assert "--kernel-log-only" in result["command"]
    _kernel_log_rows_sane(result["kernel_log"], _has("torch"))
    assert main(["bench", "--kernel-log-only", "--no-kernel-log"]) == 2


# --- scripts/performance.py: the page from the JSON ---------------------------------------


def test_performance_page_is_generated_from_the_json():
    """docs/performance.md is what the script makes of docs/bench.json and docs/bench-16core:
    regenerated, not edited by hand."""
    result = json.loads((DOCS / "bench.json").read_text())
    page = performance.render(
        result,
        "docs/bench.json",
        "bench.png",
        DOCS / "bench-16core",
        DOCS / "startup.json",
        DOCS / "compare-scale.json",
    )
    assert page == (DOCS / "performance.md").read_text()
    assert "## On 16 cores" in page and "| 2**28 | 16 |" in page
    assert "## Start-up" in page and "## `compare` at scale" in page
    assert "`docs/startup.json`" in page and "`docs/compare-scale.json`" in page


def _sections(tmp_path, startup: dict | None, scale: dict | None) -> str:
    """The page with these start-up and scale JSON (None: no file), the bench's own left
    as in the docs."""
    paths = []
    for name, content in (("startup.json", startup), ("scale.json", scale)):
        path = tmp_path / name
        if content is not None:
            path.write_text(json.dumps(content))
        paths.append(path)
    result = json.loads((DOCS / "bench.json").read_text())
    return performance.render(result, "docs/bench.json", None, None, *paths)


def test_performance_page_sections_read_whatever_json_is_there(tmp_path):
    """The start-up and scale sections are made from their JSON, with its command and machine
    when recorded; no file, no section."""
    startup = json.loads((DOCS / "startup.json").read_text())
    scale = json.loads((DOCS / "compare-scale.json").read_text())
    assert "## Start-up" not in _sections(tmp_path, None, None)
    startup["results"]["first_call"]["ratio_median"] = 12.345
    startup["verdicts"]["first_call"] = {"ratio": 12.345, "target": 2.0, "met": False}
    startup["command"] = "python scripts/bench_startup.py --rounds 3"
    startup["machine"]["cpu"] = "Some CPU 9000"
    scale["machine"] = {"cpu": "Other CPU 7", "cores": 64}
    scale["command"] = "python scripts/bench_scale.py /data --json docs/compare-scale.json"
    scale["runs"][0]["peak_mb"] = 10.0  # so the largest row count's peak is far above it
    scale["runs"][1]["kl_mean"] = 0.5  # engines disagree
    page = _sections(tmp_path, startup, scale)
    assert "**12.35x**" in page and "| <= 2 | **missed** |" in page
    assert "`python scripts/bench_startup.py --rounds 3`" in page and "Some CPU 9000" in page
    assert "64-core Other CPU 7" in page and "not recorded" not in page
    assert "python scripts/bench_scale.py /data --json docs/compare-scale.json" in page
    first = scale["runs"][0]
    largest = next(
        r
        for r in scale["runs"]
        if (r["source"], r["engine"]) == (first["source"], first["engine"])
        and r["rows"] == max(x["rows"] for x in scale["runs"])
    )
    ratio = largest["peak_mb"] / 10
    assert f"| 10 MB | {largest['peak_mb']:.0f} MB | {ratio:.2f}x | **missed** |" in page
    assert "**differ**" in page and "0.5" in page
    assert "## Start-up" in page and "## `compare` at scale" in page
    (tmp_path / "only-startup").mkdir()
    only = _sections(tmp_path / "only-startup", startup, None)
    assert "## Start-up" in only and "## `compare` at scale" not in only


def test_performance_page_says_which_ray_target_is_missed(tmp_path):
    """Ray against local at 10^6 rows: each figure's verdict follows the JSON, whole command
    and after the fixed cost apart."""
    scale = json.loads((DOCS / "compare-scale.json").read_text())
    runs = [r for r in scale["runs"] if r["rows"] == 10**6]
    local = next(r for r in runs if r["engine"] == "local" and "fixed" in r)
    ray = next(r for r in runs if r["engine"] == "ray" and r["source"] == local["source"])
    ray["cpu_s"] = 2 * local["cpu_s"]  # the whole command over 1.5x local's CPU
    ray["cpu_after_fixed_s"] = local["cpu_after_fixed_s"]  # after the fixed cost, 1x
    page = _sections(tmp_path, None, scale)
    verdicts = next(line for line in page.splitlines() if line.startswith("At 1,000,000 rows"))
    assert "CPU, whole command" in verdicts and "2.00x: **missed** (for some kinds)" in verdicts
    assert "CPU after the fixed cost" in verdicts
    assert "CPU after the fixed cost 1.00x" not in verdicts  # a span over the data kinds
    after = verdicts.split("CPU after the fixed cost", 1)[1]
    assert after.split(";")[0].rstrip(".").endswith(": met")


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_performance_script_refuses_bad_outputs(option, tmp_path, capsys):
    """/dev/full, a folder, a missing folder, or both outputs the same file: one line on
    stderr, exit 2, nothing written."""
    other = "--plot" if option == "--out" else "--out"
    base = ["--json", str(DOCS / "bench.json"), other, str(tmp_path / "other")]
    for path in ("/dev/full", str(tmp_path), str(tmp_path / "missing" / "out")):
        assert performance.main([*base, option, path]) == 2
        err = capsys.readouterr().err
        assert err.startswith("performance.py: error:") and err.count("\n") == 1, err
        assert path in err
    same = str(tmp_path / "same")
    assert (
        performance.main(["--json", str(DOCS / "bench.json"), "--out", same, "--plot", same]) == 2
    )
    assert "same file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_performance_script_refuses_a_bad_json(tmp_path, capsys):
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    for source in (bad, tmp_path / "missing.json", tmp_path):
        argv = ["--json", str(source), "--out", str(tmp_path / "p.md"), "--no-plot"]
        assert performance.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("performance.py: error:") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]
