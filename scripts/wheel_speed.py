"""Native speed of two builds of the custom-op library side by side (e.g. the wheel's zig build
against a GCC build): the fused kernel on one thread, 2**20 elements, float32 and float16,
'none' and 'sum', both log_target modes; each library in its own process, alternating, the
best of ROUNDS processes x 30 calls per case. Prints ns/element and the ratio B/A per case and
their geometric mean. It also checks that both builds give bit-identical results: every
variant (3 dtypes x 4 reductions x log_target) on inputs with zeros, subnormals, inf, NaN and
float sums that overflow, at lengths that reach every part of the loops; exits 1 if not.

    python scripts/wheel_speed.py A.so B.so [ROUNDS]

Both children inherit the environment: KLDIV_ONNX_ISA=avx2 (or avx3, scalar) times and checks
that SIMD path of both builds instead of the best one of this CPU.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time

N = 1 << 20
CALLS = 30


def digest() -> str:
    """SHA-256 of every variant's result bytes on inputs that reach the loops' special paths."""
    import ml_dtypes
    import numpy as np

    import kldiv_onnx

    rng = np.random.default_rng(1)
    h = hashlib.sha256()
    for n in (8 * 16 * 40 + 4 * 16 + 2 * 16 + 5, 1 << 16):  # steps of 8, 4, 1 vectors, a tail
        x = np.log(rng.uniform(1e-6, 1.0, n))
        t = rng.uniform(0.0, 1.0, n) * (rng.uniform(size=n) > 0.05)  # about 5% zeros
        big_x = x.copy()
        big_x[n // 3 : n // 3 + 40] = -3e38  # finite losses whose float sum overflows
        tiny_t = t.copy()
        tiny_t[7::97] = np.resize([-0.0, 1e-45, 1e-40, 3e-39], tiny_t[7::97].shape)  # subnormals
        odd_x, odd_t = x.copy(), t.copy()
        odd_t[5::89] = np.resize([np.inf, -1.0, np.nan], odd_t[5::89].shape)
        odd_x[3::83] = np.resize([np.inf, -np.inf, np.nan], odd_x[3::83].shape)
        for xs, ts in ((x, t), (big_x, t), (x, tiny_t), (odd_x, odd_t)):
            for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
                for log_target in (False, True):
                    tt = np.log(np.where(ts > 0, ts, 1e-30)) if log_target else ts
                    for reduction in ("none", "sum", "mean", "batchmean"):
                        out = kldiv_onnx.kl_div(
                            xs.astype(dtype),
                            tt.astype(dtype),
                            reduction,
                            log_target,
                            backend="fused",
                            threads=1,
                        )
                        h.update(np.ascontiguousarray(out).tobytes())
    return h.hexdigest()


def measure() -> None:
    """In a child process: time every case with the library of $KLDIV_ONNX_LIBRARY."""
    import numpy as np

    import kldiv_onnx

    print(f"digest {digest()}")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float16):
        x = np.log(rng.dirichlet(np.ones(1024), size=N // 1024)).astype(dtype)
        t = rng.dirichlet(np.ones(1024), size=N // 1024).astype(dtype)
        for reduction in ("none", "sum"):
            for log_target in (False, True):
                kldiv_onnx.kl_div(x, t, reduction, log_target, backend="fused", threads=1)
                best = math.inf
                for _ in range(CALLS):
                    start = time.perf_counter()
                    kldiv_onnx.kl_div(x, t, reduction, log_target, backend="fused", threads=1)
                    best = min(best, time.perf_counter() - start)
                name = f"{np.dtype(dtype).name}/{reduction}/log_target={log_target}"
                print(f"{name} {best / N * 1e9:.4f}")


def main() -> int:
    if len(sys.argv) == 2 and sys.argv[1] == "--child":
        measure()
        return 0
    a, b = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    best: dict[str, dict[str, float]] = {}
    digests: dict[str, set[str]] = {"A": set(), "B": set()}
    for _ in range(rounds):
        for label, lib in (("A", a), ("B", b)):
            out = subprocess.run(
                [sys.executable, __file__, "--child"],
                env={**os.environ, "KLDIV_ONNX_LIBRARY": lib},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for line in out.splitlines():
                case, ns = line.rsplit(" ", 1)
                if case == "digest":
                    digests[label].add(ns)
                    continue
                slot = best.setdefault(case, {})
                slot[label] = min(slot.get(label, math.inf), float(ns))
    logs = []
    print(f"A: {a}\nB: {b}\nISA: {os.environ.get('KLDIV_ONNX_ISA', 'best of this CPU')}")
    for case, d in best.items():
        ratio = d["B"] / d["A"]
        logs.append(math.log(ratio))
        print(f"{case:32} A {d['A']:.3f}  B {d['B']:.3f} ns/element  B/A {ratio:.3f}")
    print(f"geometric mean B/A {math.exp(sum(logs) / len(logs)):.3f}")
    same = len(digests["A"] | digests["B"]) == 1
    short = {label: sorted(d[:12] for d in found) for label, found in digests.items()}
    print(f"results of A and B: {'bit-identical' if same else 'DIFFER'} (SHA-256 {short})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
