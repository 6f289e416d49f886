"""What ``kldiv-onnx bench`` measures: the backends, dtypes, reductions and sizes, and
:class:`Config` / :func:`quick_config`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._contract import REDUCTIONS

SCHEMA = "kldiv-onnx-bench/1"
BACKENDS = ("fused", "api", "composite", "torch-export", "torch-eager", "numpy-read", "torch-read")
"""``api`` is ``KLDivLoss(reduction, threads=n)(x, t)`` exactly as a user calls it (backend
'auto'); ``fused`` and ``composite`` are bare sessions with pre-bound inputs."""
DTYPE_NAMES = ("float32", "float16", "bfloat16")
BENCH_REDUCTIONS = ("none", "batchmean")
FULL_SIZES = tuple(2**k for k in range(10, 27, 2))
QUICK_SIZES = (2**10, 2**14)
OVERHEAD_SHAPES: tuple[tuple[int, int], ...] = ((2, 2), (64, 1000))
"""Shapes of the "call overhead" section (float32, batchmean, 1 thread)."""
OVERHEAD_TARGETS: dict[tuple[int, int], float] = {(2, 2): 1.0, (64, 1000): 0.5}
"""The most the API may take, as a fraction of torch eager's ``F.kl_div`` time, per shape."""
CLASSES = 1024
"""Elements per row: a size of n elements is benchmarked as an (n // 1024, 1024) tensor."""

KERNEL_LOG_ROUNDS = 200
"""Rounds of the "kernel in cache vs torch.log" section (:mod:`.kernel_log`)."""


def shape_of(size: int) -> tuple[int, int]:
    """(rows, classes) of a size: rows of 1024 elements where it divides, else one row."""
    return (size // CLASSES, CLASSES) if size % CLASSES == 0 else (1, size)


@dataclass
class Config:
    """What to measure. ``budget_s``: timed seconds per point after ``min_repeats``."""

    sizes: tuple[int, ...] = FULL_SIZES
    dtypes: tuple[str, ...] = DTYPE_NAMES
    reductions: tuple[str, ...] = BENCH_REDUCTIONS
    threads: tuple[int, ...] = (1, 2)
    backends: tuple[str, ...] = BACKENDS
    warmup: int = 1
    min_repeats: int = 5
    max_repeats: int = 200
    budget_s: float = 0.25
    memory: bool = True
    seed: int = 0
    overhead: bool = True
    """Measure the "call overhead" section (needs the ``api`` backend selected)."""
    overhead_rounds: int = 51
    """Rounds of the call-overhead section: each times every contestant once, side by side."""
    points: bool = True
    """Measure the backends at every (size, dtype, reduction, threads); off for
    ``--kernel-log-only``."""
    kernel_log: bool = True
    """Measure the "kernel in cache vs torch.log" section (:mod:`.kernel_log`)."""
    kernel_log_rounds: int = KERNEL_LOG_ROUNDS
    """Rounds of that section: each times every contestant once, side by side."""

    def validate(self) -> None:
        """``ValueError`` naming the first bad field."""
        checks: list[tuple[str, Iterable[Any], Callable[[Any], bool]]] = [
            ("sizes", self.sizes, lambda v: isinstance(v, int) and v >= 1),
            ("dtypes", self.dtypes, lambda v: v in DTYPE_NAMES),
            ("reductions", self.reductions, lambda v: v in REDUCTIONS),
            ("threads", self.threads, lambda v: isinstance(v, int) and v >= 1),
            ("backends", self.backends, lambda v: v in BACKENDS),
        ]
        for name, values, ok in checks:
            values = tuple(values)
            if not values:
                raise ValueError(f"{name}: give at least one")
            for value in values:
                if not ok(value) or isinstance(value, bool):
                    raise ValueError(f"{name}: bad value {value!r}")
        if self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ValueError("need warmup >= 0 and 1 <= min_repeats <= max_repeats")
        if self.overhead_rounds < 1:
            raise ValueError("overhead_rounds: need at least 1")
        if self.kernel_log_rounds < 1:
            raise ValueError("kernel_log_rounds: need at least 1")


def quick_config() -> Config:
    """The CI set: two small sizes, every dtype, reduction, thread count and backend."""
    return Config(
        sizes=QUICK_SIZES,
        min_repeats=3,
        max_repeats=20,
        budget_s=0.01,
        overhead_rounds=5,
        kernel_log_rounds=5,
    )


def fmt_size(size: int) -> str:
    """A size as '2**k' when it is a power of two."""
    exp = size.bit_length() - 1
    return f"2**{exp}" if size == 1 << exp else str(size)
