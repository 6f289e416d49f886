"""Start-up of the package and the command, each against its yardstick, side by side.

Every figure is a whole process (``import kldiv_onnx``, ``kldiv-onnx --version``, ...) or a first
call timed inside a fresh process, measured in alternating rounds with its yardstick (a bare
Python script doing the same work with numpy, onnx and onnxruntime alone) through the package's
one timer (:func:`kldiv_onnx.bench.timer.side_by_side`), so a slow spell of a shared machine
falls on both. The ratio kept is the median of the rounds' ratios (A / B, round by round).

    python scripts/bench_startup.py [--rounds 7] [--json docs/startup.json]

Also writes a ``python -X importtime`` summary (the packages that cost the most, cumulative, the
median of a few runs) for ``from kldiv_onnx import kl_div`` and for ``kldiv-onnx --version``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kldiv_onnx import native
from kldiv_onnx._version import __version__
from kldiv_onnx.bench.timer import Stats, side_by_side

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "kldiv_batchmean_float32.onnx"
TARGETS = {
    "import": 1.3,
    "import_api": 1.3,
    "version": 1.5,
    "help": 1.5,
    "check": 1.5,
    "run": 1.5,
    "first_call": 2.0,
    "first_call_after_library_check": 2.0,
    "new_variant": 2.0,
    "validate": 1.5,
}
"""The most each A / B ratio may be."""

BARE_RUN = """
import sys
import numpy as np
import onnx
import onnxruntime as ort

model = onnx.load(sys.argv[1])
so = ort.SessionOptions()
if sys.argv[2]:
    so.register_custom_ops_library(sys.argv[2])
sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
feeds = {"input": np.load(sys.argv[3]), "target": np.load(sys.argv[4])}
print(sess.run(None, feeds)[0])
"""
"""The yardstick of ``check`` and ``run``: load the model with onnx, run it in onnxruntime."""

FIRST_CALL = """
import json, sys, time
import numpy as np
x = np.log(np.full((2, 2), 0.25, np.float32))
t = np.full((2, 2), 0.25, np.float32)
times = []
if sys.argv[1] == "api":
    from kldiv_onnx import kl_div, native

    def call(reduction):
        return kl_div(x, t, reduction)

    start = time.perf_counter_ns()
    native.available()  # the library's check, which the first call would do: timed apart
    times.append((time.perf_counter_ns() - start) * 1e-9)
else:
    import onnxruntime as ort

    def call(reduction):
        with open(f"{sys.argv[2]}/{reduction}.onnx", "rb") as f:
            model = f.read()
        so = ort.SessionOptions()
        so.register_custom_ops_library(sys.argv[3])
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        return sess.run(None, {"input": x, "target": t})[0]

    times.append(0.0)
for reduction in ("batchmean", "sum"):
    start = time.perf_counter_ns()
    call(reduction)
    times.append((time.perf_counter_ns() - start) * 1e-9)
print(json.dumps(times))
"""
"""A first call and a new variant's first call, timed inside a fresh process: ``kl_div`` (after
``from kldiv_onnx import kl_div``) or a bare session on the same one-node model the API builds,
with the native library registered. Prints [library check, first call, new variant] seconds:
the first call's check of the native library (:func:`kldiv_onnx.native.available`: the ELF
check, then the pass an earlier process remembered for this very file; the warm-up round has
made sure there is one) is timed apart, and the first call's figure is the two together."""


CHECK_ONCE = """
import sys, time
from pathlib import Path
from kldiv_onnx import native
start = time.perf_counter_ns()
problem = native._check(Path(sys.argv[1]))
seconds = (time.perf_counter_ns() - start) * 1e-9
assert not problem, problem
print(seconds)
"""
"""The native library's whole check, timed in a fresh process (prints seconds)."""


def _process(argv: Sequence[str]) -> Callable[[], None]:
    """A callable running ``argv`` to its end (its output discarded; a failure raises)."""

    def run() -> None:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    return run


def _figures(a: list[float], b: list[float]) -> dict[str, Any]:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {
        "a": Stats.of(a).__dict__,
        "b": Stats.of(b).__dict__,
        "ratio_median": Stats.of(ratios).median_s,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def _pair(name: str, a: Sequence[str], b: Sequence[str], rounds: int) -> dict[str, Any]:
    print(f"{name}: {' '.join(a)}  vs  {' '.join(b)}", file=sys.stderr)
    times = side_by_side({"a": _process(a), "b": _process(b)}, rounds, warmup=1)
    return {"a_command": list(a), "b_command": list(b), **_figures(times["a"], times["b"])}


def _first_calls(python: str, models: Path, library: str, rounds: int) -> dict[str, Any]:
    """A first ``kl_div`` call and a new variant's, against a bare session (in-process times
    read from alternating fresh processes)."""
    seen: dict[str, list[list[float]]] = {"api": [], "bare": []}

    def child(kind: str) -> Callable[[], None]:
        def run() -> None:
            out = subprocess.run(
                [python, "-c", FIRST_CALL, kind, str(models), library],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            seen[kind].append(json.loads(out.strip().splitlines()[-1]))

        return run

    print("first calls: kl_div vs a bare session", file=sys.stderr)
    side_by_side({"api": child("api"), "bare": child("bare")}, rounds, warmup=1)
    api, bare = seen["api"][1:], seen["bare"][1:]  # the warm-up's first
    return {
        "first_call": _figures([r[0] + r[1] for r in api], [r[1] for r in bare]),
        "first_call_after_library_check": _figures([r[1] for r in api], [r[1] for r in bare]),
        "library_check": {"a": Stats.of([r[0] for r in api]).__dict__},
        "new_variant": _figures([r[2] for r in api], [r[2] for r in bare]),
    }


def _check_once(python: str, library: str, rounds: int) -> dict[str, Any]:
    """The library check a process pays when no earlier process passed this very file (after
    a build or an install): :func:`kldiv_onnx.native._check` timed inside fresh processes,
    each with an empty cache folder. The first calls above find the pass remembered."""
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            out = subprocess.run(
                [python, "-c", CHECK_ONCE, library],
                env={**os.environ, "XDG_CACHE_HOME": cache},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        times.append(float(out.strip().splitlines()[-1]))
    return {"a": Stats.of(times).__dict__}


def _validate_imports() -> list[str]:
    """The modules the runtimes of ``kldiv-onnx validate`` import, those installed here."""
    from kldiv_onnx.runtimes import frameworks, runtimes

    modules = ["numpy", "onnx", "onnx.reference", "onnxruntime"]
    for adapter in [*runtimes(), *frameworks()]:
        module = getattr(adapter, "module", None)
        if module and adapter.unavailable() is None and module not in modules:
            modules.append(module)
    return modules


def _importtime(argv: Sequence[str], runs: int = 3, top: int = 10) -> dict[str, Any]:
    """Where the imports of ``argv`` go, from ``python -X importtime``: each package's own
    time (the self times of its modules, nested imports of other packages left out: so the
    package's share of the whole), the ``top`` largest, and the total; ms, the median of
    ``runs`` runs."""
    per_package: dict[str, list[float]] = {}
    totals: list[float] = []
    for _ in range(runs):
        err = subprocess.run(
            argv, capture_output=True, text=True, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
        ).stderr
        seen: dict[str, float] = {}
        for line in err.splitlines():
            fields = line.removeprefix("import time:").split("|")
            if not line.startswith("import time:") or not fields[0].strip().isdigit():
                continue  # the header, or another line of the command's output
            package = fields[2].strip().split(".")[0]
            seen[package] = seen.get(package, 0.0) + int(fields[0]) / 1000
        totals.append(sum(seen.values()))
        for package in set(seen) | set(per_package):
            per_package.setdefault(package, []).append(seen.get(package, 0.0))
    rows = [
        {"package": p, "own_ms": round(float(np.median(ms)), 1)} for p, ms in per_package.items()
    ]
    rows = sorted(rows, key=lambda r: -r["own_ms"])[:top]
    return {"total_ms": round(float(np.median(totals)), 1), "packages": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per pair (default 7)")
    parser.add_argument("--validate-rounds", type=int, default=5, help="rounds of validate")
    parser.add_argument("--json", default=str(ROOT / "docs" / "startup.json"), help="output")
    args = parser.parse_args()

    python = sys.executable
    script = shutil.which("kldiv-onnx")
    cli = [script] if script else [python, "-m", "kldiv_onnx"]
    library = native.library_path() if native.available() else ""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        x, t = np.log(np.full((4, 10), 0.1, np.float32)), np.full((4, 10), 0.1, np.float32)
        np.save(work / "x.npy", x)
        np.save(work / "t.npy", t)
        (work / "bare_run.py").write_text(BARE_RUN)
        bare_run = [python, str(work / "bare_run.py"), str(MODEL), library]
        bare_run += [str(work / "x.npy"), str(work / "t.npy")]
        r = args.rounds
        results["import"] = _pair(
            "import",
            [python, "-c", "import kldiv_onnx"],
            [python, "-c", "import onnxruntime, numpy, onnx"],
            r,
        )
        results["import_api"] = _pair(
            "import the API",
            [python, "-c", "from kldiv_onnx import kl_div"],
            [python, "-c", "import onnxruntime, numpy, onnx"],
            r,
        )
        results["version"] = _pair(
            "--version", [*cli, "--version"], [python, "-c", "import numpy"], r
        )
        results["help"] = _pair("--help", [*cli, "--help"], [python, "-c", "import numpy"], r)
        results["check"] = _pair("check", [*cli, "check", str(MODEL)], bare_run, r)
        run = [*cli, "run", str(MODEL), str(work / "x.npy"), f"target={work / 't.npy'}"]
        results["run"] = _pair("run", run, bare_run, r)
        if library:
            from kldiv_onnx._contract import Variant
            from kldiv_onnx.api import _model_bytes

            for reduction in ("batchmean", "sum"):  # the very model kl_div builds and runs
                data = _model_bytes(Variant(reduction), "float32", (2, 2), False)
                (work / f"{reduction}.onnx").write_bytes(data)
            # a few milliseconds each, the machine's noise is larger: three times the rounds
            results.update(_first_calls(python, work, library, 3 * r))
            results["library_check_once"] = _check_once(python, library, r)
        imports = _validate_imports()
        results["validate"] = _pair(
            "validate",
            [*cli, "validate", "--input-shape", "4,10"],
            [python, "-c", f"import {', '.join(imports)}"],
            args.validate_rounds,
        )
    verdicts = {
        name: {"ratio": results[name]["ratio_median"], "target": target}
        | {"met": results[name]["ratio_median"] <= target}
        for name, target in TARGETS.items()
        if name in results
    }
    report = {
        "schema": "kldiv-onnx-startup/1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "load_avg": list(os.getloadavg()),
            "simd": native.simd_level(),
            "python": platform.python_version(),
            "versions": _versions(),
        },
        "command": shlex.join(["python", "scripts/bench_startup.py", *sys.argv[1:]]),
        "native_library": bool(library),
        "validate_imports": imports,
        "results": results,
        "verdicts": verdicts,
        "importtime": {
            "from kldiv_onnx import kl_div": _importtime(
                [python, "-c", "from kldiv_onnx import kl_div"]
            ),
            "kldiv-onnx --version": _importtime([*cli, "--version"]),
        },
    }
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for name, verdict in verdicts.items():
        a, b = results[name]["a"]["median_s"], results[name]["b"]["median_s"]
        mark = "ok" if verdict["met"] else "MISSED"
        print(
            f"{name:12s} {a * 1e3:9.1f} ms vs {b * 1e3:9.1f} ms  ratio {verdict['ratio']:.2f} "
            f"(target <= {verdict['target']})  {mark}"
        )
    print(f"wrote {args.json}")
    return 0


def _versions() -> dict[str, str]:
    """The installed versions of what start-up imports or validate runs (those installed)."""
    names = ("onnxruntime", "onnx", "numpy", "ml_dtypes", "onnxscript")
    names += ("torch", "mindspore", "openvino", "tract")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                platform.processor(),
            )
    except OSError:
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
