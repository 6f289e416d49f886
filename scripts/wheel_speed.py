"""Native speed of two builds of the custom-op library side by side (e.g. the wheel's zig build
against a GCC build): the fused kernel on one thread, 2**20 elements, float32 and float16,
'none' and 'sum', both log_target modes; each library in its own process, alternating, the
best of ROUNDS processes x 30 calls per case. Prints ns/element and the ratio B/A per case and
their geometric mean.

    python scripts/wheel_speed.py A.so B.so [ROUNDS]
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

N = 1 << 20
CALLS = 30


def measure() -> None:
    """In a child process: time every case with the library of $KLDIV_ONNX_LIBRARY."""
    import numpy as np

    import kldiv_onnx

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
                slot = best.setdefault(case, {})
                slot[label] = min(slot.get(label, math.inf), float(ns))
    logs = []
    print(f"A: {a}\nB: {b}")
    for case, d in best.items():
        ratio = d["B"] / d["A"]
        logs.append(math.log(ratio))
        print(f"{case:32} A {d['A']:.3f}  B {d['B']:.3f} ns/element  B/A {ratio:.3f}")
    print(f"geometric mean B/A {math.exp(sum(logs) / len(logs)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
