"""Checks an installed kldiv-onnx wheel (run by scripts/wheel_smoke.sh inside the wheel's
environment, not against the source tree): every variant of ``kl_div`` on the native kernel
(4 reductions x log_target x float32/float16/bfloat16, with a broadcast target) against a
float64 numpy formula written here, the compiled ``_core`` module's per-row KL against numpy,
and which SIMD path the core dispatched. Prints one line per check; exits 1 on any mismatch.

    python wheel_check.py EXPECTED_TARGET   # e.g. avx3, neon
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_dtypes
import numpy as np

DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
# Relative bounds: float32 results are the float32 kernel's (sums in double); the 16-bit
# dtypes round the result once (half an ulp of the dtype) after float32 math.
RTOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def loss64(x: np.ndarray, t: np.ndarray, log_target: bool) -> np.ndarray:
    """KLDivLoss's pointwise loss in float64 (0 where the target probability is 0)."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    if log_target:
        return np.exp(t) * (t - x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t == 0, 0.0, t * (np.log(np.where(t == 0, 1.0, t)) - x))


def reduce64(loss: np.ndarray, reduction: str, batch: int) -> np.ndarray:
    if reduction == "none":
        return loss
    total = loss.sum()
    return np.float64(
        {"sum": total, "mean": total / loss.size, "batchmean": total / batch}[reduction]
    )


def main() -> int:
    expected = sys.argv[1]
    import kldiv_onnx
    from kldiv_onnx import native

    failures = 0
    package = Path(kldiv_onnx.__file__).parent
    print(f"kldiv_onnx from {package}")
    target = native.active_target()
    core = native.core()
    core_target = core.active_target() if core is not None else "no _core module"
    ok = target == expected and core_target == expected
    failures += not ok
    print(
        f"{'ok ' if ok else 'BAD'} SIMD path: library {target}, _core {core_target} "
        f"(expected {expected})"
    )

    rng = np.random.default_rng(20)
    logits = rng.normal(size=(6, 257)) * 3
    x64 = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # log-probabilities
    p = rng.dirichlet(np.ones(257), size=1)  # one row, broadcast over the batch
    p[0, ::17] = 0.0  # zero-probability classes: loss 0 whatever the input
    for name, dtype in DTYPES.items():
        x = x64.astype(dtype)
        for log_target in (False, True):
            t = (np.log(np.where(p == 0, 1e-30, p)) if log_target else p).astype(dtype)
            for reduction in ("none", "sum", "mean", "batchmean"):
                got = kldiv_onnx.kl_div(x, t, reduction, log_target, backend="fused")
                want = reduce64(
                    loss64(x, np.broadcast_to(t, x.shape), log_target), reduction, x.shape[0]
                )
                got64 = np.asarray(got).astype(np.float64)
                scale = np.abs(want).max() if reduction == "none" else abs(float(want))
                err = float(np.abs(got64 - want).max()) / max(scale, 1e-30)
                good = got.dtype == dtype and got64.shape == np.shape(want) and err <= RTOL[name]
                failures += not good
                print(
                    f"{'ok ' if good else 'BAD'} kl_div {name:8} log_target={log_target!s:5} "
                    f"{reduction:9} relative error {err:.2e} (bound {RTOL[name]:.0e})"
                )

    if core is not None:
        base = rng.normal(size=(64, 300)).astype(np.float32)
        cand = (base + 0.3 * rng.normal(size=base.shape)).astype(np.float32)
        kl = np.empty(64, np.float64)
        agree = np.empty(64, bool)
        core.row_kl(base, cand, "logits", 1.0, kl, agree, 1)
        b64, c64 = base.astype(np.float64), cand.astype(np.float64)
        lp = (
            b64
            - np.log(np.exp(b64 - b64.max(1, keepdims=True)).sum(1, keepdims=True))
            - b64.max(1, keepdims=True)
        )
        lq = (
            c64
            - np.log(np.exp(c64 - c64.max(1, keepdims=True)).sum(1, keepdims=True))
            - c64.max(1, keepdims=True)
        )
        want = (np.exp(lp) * (lp - lq)).sum(1)
        err = float(np.abs(kl - want).max() / np.abs(want).max())
        same = bool((agree == (base.argmax(1) == cand.argmax(1))).all())
        good = err <= 1e-5 and same
        failures += not good
        print(
            f"{'ok ' if good else 'BAD'} _core.row_kl logits: relative error {err:.2e}, "
            f"argmax agreement {'matches' if same else 'DIFFERS'}"
        )
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
