"""``kldiv-onnx demo``: export → fused and composite runs → validation against float64."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from . import native, runtime
from .export import build_model
from .reference import kl_div as reference

SEED_INPUT = np.array([[0.5, 0.5], [0.4, 0.6]], dtype=np.float32)
SEED_TARGET = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)


def sample(shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities and probabilities over the last axis (some target entries exactly 0)."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape)
    with np.errstate(divide="ignore"):  # an empty last axis
        log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    q = np.exp(rng.standard_normal(shape))
    q[rng.random(shape) < 0.1] = 0.0
    q /= np.maximum(q.sum(axis=-1, keepdims=True), 1e-30)
    return log_p.astype(dtype), q.astype(dtype)


def _backends() -> list[tuple[str, bool | None]]:
    rows: list[tuple[str, bool | None]] = [("composite", False)]
    if native.available():
        rows.insert(0, ("fused", True))
    return rows


def demo(size: int = 1 << 20, seed: int = 0) -> int:
    """Print the demo table; return 1 when a backend disagrees with the reference."""
    classes = 1000
    x, t = sample((max(size // classes, 1), classes), np.dtype(np.float32), seed)
    cases = [
        ("seed example", "mean", SEED_INPUT, SEED_TARGET),
        (f"random {x.shape}", "batchmean", x, t),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        header = ("case", "backend", "result", "reference", "rel err", "ms")
        print("{:<22} {:<10} {:>14} {:>14} {:>9} {:>8}".format(*header))
        for label, reduction, xi, ti in cases:
            path = Path(folder) / f"kldiv_{reduction}.onnx"
            onnx.save(build_model(reduction, input_shape=["batch", "classes"]), path)  # export
            ref = float(reference(xi, ti, reduction))
            for backend, fused in _backends():
                sess = runtime.session(path, providers=["CPUExecutionProvider"], fused=fused)
                runtime.run(sess, {"input": xi, "target": ti})  # warm-up
                start = time.perf_counter()
                (out,) = runtime.run(sess, {"input": xi, "target": ti})
                ms = (time.perf_counter() - start) * 1e3
                err = abs(float(out) - ref) / max(abs(ref), 1e-30)
                ok = err < 1e-5
                failures += not ok
                print(
                    f"{label:<22} {backend:<10} {float(out):>14.7g} {ref:>14.7g} {err:>9.1e} "
                    f"{ms:>8.2f}{'' if ok else '  MISMATCH'}"
                )
    if not native.available():
        print("native library not built: fused backend skipped (pip install . builds it)")
    print(
        "validation:",
        "all backends agree with the float64 reference"
        if not failures
        else f"{failures} mismatches",
    )
    return 1 if failures else 0
