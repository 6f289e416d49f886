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


# Relative tolerance of a reduction against the float64 reference, per dtype: float32
# accumulation, or one rounding of the result to float16/bfloat16.
_RTOL = {"float32": 1e-5, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def demo(size: int = 1 << 20, seed: int = 0) -> int:
    """Export models, run them fused and composite, validate against the float64 reference.

    Prints a table; returns 1 when a backend disagrees with the reference.
    """
    classes = 1000
    x, t = sample((max(size // classes, 1), classes), np.dtype(np.float32), seed)
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
                ok = err <= _RTOL[dtype]
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
