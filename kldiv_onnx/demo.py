"""``kldiv-onnx demo``: export → fused and composite runs → validation against float64."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from . import native, runtime
from ._contract import DTYPES
from .export import build_model
from .reference import SEED_INPUT, SEED_TARGET, sample
from .reference import kl_div as reference
from .tolerance import RESULT_RTOL


def _backends() -> list[tuple[str, bool | None]]:
    rows: list[tuple[str, bool | None]] = [("composite", False)]
    if native.available():
        rows.insert(0, ("fused", True))
    return rows


def demo_shape(size: int) -> tuple[int, int]:
    """(rows, classes) of exactly ``size`` elements: rows of 1000 (or 1024) classes where
    they divide it, else one row."""
    classes = next((c for c in (1000, 1024) if size % c == 0), size)
    return size // classes, classes


def demo(size: int = 1000 * 1000, seed: int = 0) -> int:
    """Export models, run them fused and composite, validate against the float64 reference.

    Prints a table; returns 1 when a backend disagrees with the reference.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    x, t = sample(demo_shape(size), np.dtype(np.float32), seed)
    bf16 = DTYPES["bfloat16"]
    cases = [
        ("seed example", "mean", "float32", SEED_INPUT, SEED_TARGET),
        (f"random {x.shape}", "batchmean", "float32", x, t),
        (f"random {x.shape}", "batchmean", "bfloat16", x.astype(bf16), t.astype(bf16)),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        header = ("case", "dtype", "backend", "result", "reference", "rel err", "ms")
        print("{:<20} {:<9} {:<10} {:>12} {:>12} {:>9} {:>8}".format(*header))
        for label, reduction, dtype, xi, ti in cases:
            path = Path(folder) / f"kldiv_{reduction}_{dtype}.onnx"
            onnx.save(build_model(reduction, dtype=dtype), path)  # the export
            ref = float(reference(xi, ti, reduction))
            for backend, fused in _backends():
                sess = runtime.session(path, providers=["CPUExecutionProvider"], fused=fused)
                runtime.run(sess, {"input": xi, "target": ti})  # warm-up
                start = time.perf_counter()
                (out,) = runtime.run(sess, {"input": xi, "target": ti})
                ms = (time.perf_counter() - start) * 1e3
                err = abs(float(out) - ref) / max(abs(ref), 1e-30)
                ok = err <= RESULT_RTOL[dtype]
                failures += not ok
                print(
                    f"{label:<20} {dtype:<9} {backend:<10} {float(out):>12.7g} {ref:>12.7g} "
                    f"{err:>9.1e} {ms:>8.2f}{'' if ok else '  MISMATCH'}"
                )
    print(
        "models: one kldiv_onnx node each, its body as a model-local function; 'fused' ran the "
        "native kernel, 'composite' the body"
    )
    if not native.available():
        print("native library not built: fused backend skipped (pip install . builds it)")
    verdict = "all backends agree with" if not failures else f"{failures} results differ from"
    print(f"validation: {verdict} the float64 reference")
    return 1 if failures else 0
