"""The runtime × form × dtype table of docs/runtimes.md: every build_model variant on every
ONNX runtime.

For each runtime, each file form (``function``: one kldiv_onnx node and its model-local
function, the default; ``inline``: ``build_model(form='inline')``) and each dtype, the 24 cases
(4 reductions × log_target × shapes (8,10)/(8,10), (8,10)/(1,10), (4,1,6)/(3,6)) are run and
compared with the float64 reference (kldiv_onnx.tolerance). A cell reads ``24/24`` when every
case agrees, else the count and the first error. Runtimes: the adapters of kldiv_onnx.runtimes,
plus OpenVINO without the registration and tract on the file as it is, to show what the
registration and inlining change.

Usage: python scripts/runtime_table.py [--json FILE] [--quick] [--from-json FILE] [--doc FILE.md]
(--quick: one case per cell, for the tests; --from-json: the table of an earlier --json run
instead of a new run; --doc: also write the table into FILE.md, between the lines
``<!-- runtime-table ... -->`` and ``<!-- /runtime-table -->``, leaving the rest as it is)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Mapping

import numpy as np
import onnx

from kldiv_onnx._contract import DTYPES, REDUCTIONS, Variant
from kldiv_onnx.export import build_model
from kldiv_onnx.model_io import write_bytes
from kldiv_onnx.reference import kl_div, sample_inputs
from kldiv_onnx.runtimes import Runtime, runtimes
from kldiv_onnx.tolerance import tolerance

FORMS = ("function", "inline")
SHAPES = (((8, 10), (8, 10)), ((8, 10), (1, 10)), ((4, 1, 6), (3, 6)))
Loader = Callable[[onnx.ModelProto], Callable[[Mapping[str, np.ndarray]], list]]


class BareOpenVINO(Runtime):
    """OpenVINO with no registration: what a user gets without kldiv_onnx.openvino."""

    name = "OpenVINO, no registration"
    module = "openvino"
    distribution = "openvino"

    def load(self, model: onnx.ModelProto) -> Callable:
        import openvino

        from kldiv_onnx.openvino import compile_model

        return compile_model(model, ov_core=openvino.Core())


class BareTract(Runtime):
    """tract on the file as it is (no inlining)."""

    name = "tract, file as is"
    module = "tract"
    distribution = "tract"

    def load(self, model: onnx.ModelProto) -> Callable:
        import tract

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.onnx")
            onnx.save(model, path)
            runnable = tract.onnx().load(path).into_model().into_runnable()
        return lambda feeds: [o.to_numpy() for o in runnable.run([feeds["input"], feeds["target"]])]


def all_runtimes() -> list[Runtime]:
    rows = runtimes()
    at = next(i for i, r in enumerate(rows) if r.name == "OpenVINO")
    rows.insert(at, BareOpenVINO())
    at = next(i for i, r in enumerate(rows) if r.name.startswith("tract"))
    rows.insert(at, BareTract())
    return rows


def cases(quick: bool) -> list[tuple[str, bool, tuple, tuple]]:
    full = [(r, lt, xs, ts) for r, lt, (xs, ts) in itertools.product(REDUCTIONS, (0, 1), SHAPES)]
    return full[::7] if quick else full


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = line.removeprefix("OpenVINO cannot read the model: ")
    return line if len(line) <= 80 else line[:79] + "…"


def cell(runtime: Runtime, form: str, dtype: str, todo: list) -> str:
    """``n/n`` when all agree; else the count that agreed and the first failure."""
    if runtime.unavailable():
        return runtime.unavailable()  # type: ignore[return-value]
    agreed, first = 0, ""
    for reduction, log_target, xs, ts in todo:
        model = build_model(reduction, log_target, dtype, list(xs), list(ts), form=form)
        why = runtime.unsupported(model)
        if why:
            return f"not supported ({why})"
        x, t = sample_inputs(xs, ts, DTYPES[dtype], bool(log_target))
        ref = kl_div(x, t, reduction, bool(log_target))
        try:
            (got,) = runtime.load(model)({"input": x, "target": t})
        except Exception as exc:  # the runtime's own error: reported, not raised
            first = first or _first_line(exc)
            continue
        tol = tolerance(x, t, Variant(reduction, bool(log_target)), ref)
        got = np.asarray(got)
        ok = got.dtype == DTYPES[dtype] and got.shape == ref.shape
        if ok and np.all(np.abs(got.astype(np.float64) - ref) <= tol):
            agreed += 1
        else:
            first = first or f"disagrees ({got.dtype}, {got.shape})"
    result = f"{agreed}/{len(todo)}"
    return result if not first else f"{result}: {first}"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    name = names[0] if names else platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} CPUs"


def table(quick: bool = False) -> dict:
    todo = cases(quick)
    rows = []
    for runtime in all_runtimes():
        cells = {f"{f} {d}": cell(runtime, f, d, todo) for f in FORMS for d in DTYPES}
        rows.append({"runtime": runtime.name, "version": runtime.version(), "cells": cells})
    return {
        "cases_per_cell": len(todo),
        "machine": _cpu(),
        "python": platform.python_version(),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    columns = list(result["rows"][0]["cells"])
    lines = [
        "| runtime | version | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in result["rows"]:
        values = [row["cells"][c] for c in columns]
        lines.append(f"| {row['runtime']} | {row['version'] or '-'} | " + " | ".join(values) + " |")
    return "\n".join(lines)


START = "<!-- runtime-table"
END = "<!-- /runtime-table -->"


def into_doc(text: str, table_markdown: str) -> str:
    """``text`` with the lines between its runtime-table markers replaced by the table."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(START)]
    ends = [i for i, line in enumerate(lines) if line.startswith(END)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"expected one '{START} ...' line followed by one '{END}' line")
    body = table_markdown.rstrip("\n") + "\n"
    return "".join(lines[: starts[0] + 1]) + body + "".join(lines[ends[0] :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the table as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="one case per cell")
    parser.add_argument("--from-json", metavar="FILE", help="the table of an earlier --json run")
    parser.add_argument("--doc", metavar="FILE.md", help="write the table into this page")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            result = json.load(f)
    else:
        result = table(args.quick)
    text = markdown(result)
    print(text)
    if args.doc:
        with open(args.doc, encoding="utf-8") as f:
            page = f.read()
        write_bytes(args.doc, into_doc(page, text).encode("utf-8"), "page")
    if args.json:
        write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode("utf-8"), "JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
