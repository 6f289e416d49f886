"""The one timer of every benchmark in the package: warm-up, repeats, and one set of figures.

Two ways to time, on the same clock (``time.perf_counter_ns``) and with Python's cyclic garbage
collector off while timing (so a collection never lands inside a measured call):

- :func:`repeat`: one callable, called one at a time after ``warmup`` untimed calls, until at
  least ``min_repeats`` calls and ``budget_s`` timed seconds (or ``max_repeats`` calls) are
  reached. An optional ``prepare`` runs before each call, outside the timing.
- :func:`side_by_side`: several callables timed in alternating rounds. Each round times every
  contestant once (in a new random order each round when given a generator, so that none
  always follows another), so a slow spell of the machine falls on all of them, not on one.
  A contestant's round may time a batch of consecutive calls (sized once, after the warm-up,
  to last about ``batch_s``) and counts the batch's mean: a call of a few microseconds is
  close to the clock's own cost.

Either gives a list of seconds per call, one per repeat or round; :class:`Stats` turns it into
the figures the benchmarks keep. What each figure means:

- ``min``: the fastest repeat: the cost with the least interference from the machine (other
  processes, interrupts, a cold cache). The figure of a microbenchmark in cache, where the
  question is what the code costs, not what the machine adds.
- ``median``: the typical repeat: half were faster, half slower. The figure of every
  comparison between backends and of the call overhead: robust to the outliers a shared
  machine adds, and what a user sees most often.
- ``max``: the slowest repeat: the worst interference seen (reported, never judged).
- ``q1`` / ``q3``: the quartiles, the spread of the middle half.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (restored after)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _per_call(call: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``n`` consecutive calls."""
    start = time.perf_counter_ns()
    for _ in range(n):
        call()
    return (time.perf_counter_ns() - start) * 1e-9 / n


def repeat(
    call: Callable[[], Any],
    *,
    warmup: int,
    min_repeats: int,
    max_repeats: int,
    budget_s: float,
    prepare: Callable[[], Any] | None = None,
) -> list[float]:
    """Seconds of each timed call of ``call``: ``warmup`` untimed calls, then calls until
    ``min_repeats`` and ``budget_s`` timed seconds, or ``max_repeats``. ``prepare`` runs before
    every call (warm-up included), outside the timing."""
    for _ in range(warmup):
        if prepare is not None:
            prepare()
        call()
    times: list[float] = []
    spent = 0.0
    with _no_gc():
        while len(times) < max_repeats and (len(times) < min_repeats or spent < budget_s):
            if prepare is not None:
                prepare()
            start = time.perf_counter_ns()
            call()
            elapsed = (time.perf_counter_ns() - start) * 1e-9
            times.append(elapsed)
            spent += elapsed
    return times


def side_by_side(
    calls: Mapping[str, Callable[[], Any]],
    rounds: int,
    *,
    warmup: int = 1,
    batch_s: float | None = None,
    max_batch: int = 1,
    rng: np.random.Generator | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each contestant, one figure per round (``rounds`` of them).

    Each contestant first runs ``warmup`` untimed calls. With ``batch_s``, a batch of
    ``warmup`` (at least one) further calls then sizes its batch: the number of calls lasting
    about ``batch_s``, between 1 and ``max_batch``; without it each round times one call.
    Rounds take the contestants in ``calls``' order, or in a new order drawn from ``rng`` for
    each round. A contestant that raises stops the timing (the caller reports it)."""
    batch: dict[str, int] = {}
    for name, call in calls.items():
        for _ in range(warmup):
            call()
        if batch_s is None:
            batch[name] = 1
        else:
            single = _per_call(call, max(1, warmup))
            batch[name] = max(1, min(max_batch, int(batch_s / max(single, 1e-9))))
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    with _no_gc():
        for _ in range(rounds):
            order = rng.permutation(len(names)) if rng is not None else range(len(names))
            for i in order:
                name = names[i]
                times[name].append(_per_call(calls[name], batch[name]))
    return times


@dataclass(frozen=True)
class Stats:
    """The figures of one list of seconds per call (see the module docstring for what each
    means): how many, the fastest, the quartiles and median, the slowest."""

    repeats: int
    min_s: float
    q1_s: float
    median_s: float
    q3_s: float
    max_s: float

    @classmethod
    def of(cls, times: Sequence[float]) -> Stats:
        """The figures of ``times`` (at least one)."""
        arr = np.asarray(times, dtype=np.float64)
        q1, median, q3 = (float(v) for v in np.percentile(arr, [25, 50, 75]))
        return cls(int(arr.size), float(arr.min()), q1, median, q3, float(arr.max()))
