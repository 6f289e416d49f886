"""``compare`` at scale: peak memory and CPU time of the whole process tree, rows/s, start-up,
planning time per 1,000 shards and the local engine against a bare onnxruntime loop.

Data and models from ``scripts/scale_data.py`` (one folder per row count, each with
``data.npz``, ``data.parquet`` and ``shards-200/``):

    python scripts/scale_data.py /tmp/scale/1e5 --rows 100000 --formats npz parquet shards
    python scripts/scale_data.py /tmp/scale/1e6 --rows 1000000 --formats npz parquet shards
    python scripts/bench_scale.py /tmp/scale/1e5 /tmp/scale/1e6 --json scale.json

Each ``compare`` runs as its own command (``kldiv-onnx compare --json``); its process tree (Ray's
processes included) is sampled every 0.1 s from ``/proc``: peak memory is the largest sum of the
tree's resident sets (pages shared between processes, Ray's object store among them, count once
per process), CPU time the sum of each process's last user + system time seen, split into the
``compare`` process itself, Ray's workers (``compare``'s actors) and Ray's own processes (GCS,
raylet, dashboard, agents, monitors).

``--fixed FOLDER`` also runs each data kind and engine of that folder on one batch
(``--limit 256``): its wall and CPU time are the run's fixed cost (Python, imports; Ray: its
cluster, actors and sessions, started and stopped), subtracted from the full run's to give the
rate and the CPU after it. Each run carries its own date and load average.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _sample(pid: int) -> tuple[int, float, str] | None:
    """(resident bytes, user + system seconds, command line) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            resident = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError):
        return None
    return resident, (int(fields[11]) + int(fields[12])) / TICK, cmdline


WORKER_TITLES = ("ray::RayWorker", "ray::IDLE")
"""How Ray titles its worker processes: ``compare``'s actors (``ray::<class>.<method>``) and the
idle workers it starts ahead of them."""


def measure(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``command``; its wall time, the tree's peak resident memory and CPU time, the CPU
    split into the command's own process, Ray's workers (``compare``'s actors) and Ray's other
    processes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak, cpu, names = 0, {}, {}
    while proc.poll() is None:
        total = 0
        for pid in _tree(proc.pid):
            got = _sample(pid)
            if got is not None:
                total += got[0]
                cpu[pid] = max(cpu.get(pid, 0.0), got[1])
                if not names.get(pid, "").startswith(WORKER_TITLES):  # once a worker, always
                    names[pid] = got[2]
        peak = max(peak, total)
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {err.decode()[-2000:]}")
    split = {"compare": 0.0, "workers": 0.0, "ray": 0.0}
    for pid, seconds in cpu.items():
        part = (
            "compare"
            if pid == proc.pid
            else "workers"
            if names[pid].startswith(WORKER_TITLES)
            else "ray"
        )
        split[part] += seconds
    return {
        "wall_s": wall,
        "peak_mb": peak / 2**20,
        "cpu_s": sum(cpu.values()),
        "cpu_split_s": split,
    }


FIXED_ROWS = 256
"""The rows of a fixed-cost run: one batch of ``compare``'s default size."""


def run_compare(folder: Path, source: str, engine: str, limit: int | None = None) -> dict[str, Any]:
    """One ``compare`` command on ``folder/source`` (its first ``limit`` rows) and what it
    cost."""
    load = list(os.getloadavg())
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-c",
            "from kldiv_onnx.cli import main; raise SystemExit(main())",
            "compare",
            str(folder / "base.onnx"),
            str(folder / "candidate.onnx"),
            "--data",
            str(folder / source),
            "--engine",
            engine,
            "--json",
            str(report),
            *([] if limit is None else ["--limit", str(limit)]),
        ]
        env = {**os.environ}
        env.pop("RAY_ADDRESS", None)
        got = measure(command, env)
        d = json.loads(report.read_text())
    timings = d["timings"]
    return {
        "rows": d["rows"],
        "source": source,
        "engine": engine,
        "date": date,
        "load_avg": load,
        **got,
        "rows_per_s": d["rows"] / got["wall_s"],
        "startup_s": timings["startup_s"],
        **({"ray_init_s": timings["ray_init_s"]} if "ray_init_s" in timings else {}),
        "compare_wall_s": timings["wall_s"],
        "rows_per_s_after_startup": d["rows"] / max(timings["wall_s"] - timings["startup_s"], 1e-9),
        "kl_mean": d["kl"]["mean"],
    }


def with_fixed(row: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its fixed cost (the same command on one batch) and what is left after it."""
    rows = row["rows"] - fixed["rows"]
    return {
        **row,
        "fixed": {k: fixed[k] for k in ("rows", "wall_s", "cpu_s", "cpu_split_s", "load_avg")},
        "rows_per_s_after_fixed": rows / max(row["wall_s"] - fixed["wall_s"], 1e-9),
        "cpu_after_fixed_s": row["cpu_s"] - fixed["cpu_s"],
    }


def planning(shards: int) -> float:
    """Seconds to plan a folder of ``shards`` tiny Parquet files (headers read once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kldiv_onnx.comparison.data import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        x = np.zeros((10, 64), np.float32)
        table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 64)})
        for i in range(shards):
            pq.write_table(table, Path(tmp) / f"part-{i:05d}.parquet")
        t0 = time.perf_counter()
        data = Dataset(tmp)
        batches = sum(1 for _ in data.plan(256))
        spent = time.perf_counter() - t0
        assert batches == -(-shards * 10 // 256)
    return spent


def bare_loop(folder: Path, source: str) -> dict[str, float]:
    """rows/s of a bare loop over the same batches (sessions with the same options, numpy KL in
    float64) against ``compare``'s local engine in this process, timed in turn, best of two."""
    import onnxruntime as ort

    from kldiv_onnx import runtime
    from kldiv_onnx.comparison import compare
    from kldiv_onnx.comparison.data import Dataset

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def bare() -> float:
        sessions = [
            runtime.session((folder / name).read_bytes())
            for name in ("base.onnx", "candidate.onnx")
        ]
        assert all(isinstance(s, ort.InferenceSession) for s in sessions)
        data = Dataset(folder / source)
        t0 = time.perf_counter()
        for pieces in data.plan(256):
            x = data.read(pieces, ["x"])["x"]
            lp, lq = (log_softmax(s.run(["logits"], {"x": x})[0]) for s in sessions)
            (np.exp(lp) * (lp - lq)).sum(axis=1)
        data.close()
        return time.perf_counter() - t0

    def local() -> float:
        t0 = time.perf_counter()
        compare(folder / "base.onnx", folder / "candidate.onnx", folder / source)
        return time.perf_counter() - t0

    bare_s = min(bare(), bare())
    local_s = min(local(), local())
    return {"source": source, "bare_s": bare_s, "local_s": local_s, "ratio": bare_s / local_s}


def _cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (the machine named beside the figures)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="scale_data.py output folders")
    parser.add_argument(
        "--sources",
        nargs="+",
        default=["data.npz", "data.parquet", "shards-200"],
        help="the data of each folder to compare over (default: all three kinds)",
    )
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], help="default: both")
    parser.add_argument(
        "--planning-shards",
        type=int,
        default=2000,
        help="time planning over this many Parquet shards (0: not at all; default 2000)",
    )
    parser.add_argument("--bare", type=Path, help="the folder to run the bare loop on")
    parser.add_argument(
        "--fixed", nargs="*", type=Path, default=[], help="folders whose fixed cost to measure"
    )
    parser.add_argument("--json", type=Path, help="write the run's figures here")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "load_avg": list(os.getloadavg()),
        },
        "runs": [],
        "planning": None,
        "bare": [],
    }
    for folder in args.folders:
        for source in args.sources:
            for engine in args.engines:
                row = run_compare(folder, source, engine)
                if folder in args.fixed:
                    row = with_fixed(row, run_compare(folder, source, engine, FIXED_ROWS))
                out["runs"].append(row)
                print(json.dumps(row), flush=True)
    if args.planning_shards:
        spent = planning(args.planning_shards)
        out["planning"] = {"shards": args.planning_shards, "s": spent}
        print(f"planning {args.planning_shards} shards: {spent:.3f} s", flush=True)
    if args.bare is not None:
        for source in ("data.npz", "data.parquet"):
            row = bare_loop(args.bare, source)
            out["bare"].append(row)
            print(json.dumps(row), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
