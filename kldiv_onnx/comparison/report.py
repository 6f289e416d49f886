"""The statistics of a comparison and its report: a table for people, ``to_dict`` for JSON.

Every statistic is computed once, at the end, from the per-sample KL values in sample order, so
that every engine (whatever order its batches finished in) gives the very same figures.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUANTILES = {"median": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}
"""Reported quantiles: numpy's default (linear interpolation) over all non-NaN samples, inf
where an infinite sample takes part (:func:`quantiles`)."""
WORST = 10
"""How many of the largest per-sample KL values the report lists."""
NAN_LISTED = 100
"""How many NaN samples' indices the report lists (all are counted)."""


CHUNK = 1 << 16
"""Values the statistics scan at a time: their temporaries stay this small (512 KB) whatever the
sample count, so that the statistics of a run add no copy of its per-sample values."""
GATHER = 1 << 17
""":func:`order_statistics` sorts out a rank among at most this many values (1 MB) gathered in
one copy; larger groups are narrowed by their next 16 bits first."""
_SIGN = np.uint64(1 << 63)
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # Linux, macOS


def _chunks(values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``values`` as views of :data:`CHUNK` values and the index of each one's first. Values
    that map a file (a run's, :class:`.engines.Results`) leave this process's resident memory
    chunk by chunk once read: the file's pages stay in the kernel's cache."""
    base = values.base.obj if isinstance(values.base, memoryview) else values.base
    mapped = base if isinstance(base, mmap.mmap) and _DONTNEED is not None else None
    for start in range(0, values.size, CHUNK):
        yield start, values[start : start + CHUNK]
        if mapped is not None:
            mapped.madvise(_DONTNEED, 8 * start, min(8 * CHUNK, 8 * (values.size - start)))


def _valid(chunk: np.ndarray, nan: bool) -> np.ndarray:
    """The chunk's non-NaN values (the chunk itself where the values hold no NaN)."""
    return chunk[~np.isnan(chunk)] if nan else chunk


def nan_samples(values: np.ndarray, listed: int = NAN_LISTED) -> tuple[int, list[int]]:
    """How many of ``values`` are NaN, and the first ``listed`` of their indices."""
    count, indices = 0, []
    for start, chunk in _chunks(values):
        mask = np.isnan(chunk)
        found = int(np.count_nonzero(mask))
        if found:
            count += found
            if len(indices) < listed:
                indices += (np.flatnonzero(mask)[: listed - len(indices)] + start).tolist()
    return count, indices


def kl_statistics(values: np.ndarray) -> dict[str, float]:
    """Mean, its standard error, the :data:`QUANTILES` and the max of ``values`` without NaNs
    (NaN for a statistic that needs more samples than there are). Computed in chunks, without a
    copy of ``values``: the quantiles are exact (:func:`quantiles`)."""
    nan = nan_samples(values, 0)[0]
    n = values.size - nan
    stats = {"mean": math.nan, "stderr": math.nan, **dict.fromkeys(QUANTILES, math.nan)}
    stats["max"] = math.nan
    if n == 0:
        return stats
    with np.errstate(invalid="ignore", over="ignore"):
        mean = math.fsum(float(np.sum(_valid(c, nan))) for _, c in _chunks(values)) / n
        stats["mean"] = mean
        if n > 1:
            squares = []
            for _, chunk in _chunks(values):
                d = _valid(chunk, nan) - mean
                squares.append(float(np.sum(np.multiply(d, d, out=d))))
            stats["stderr"] = math.sqrt(math.fsum(squares) / (n - 1)) / math.sqrt(n)
        for name, q in zip(QUANTILES, quantiles(values, list(QUANTILES.values())), strict=True):
            stats[name] = q
    stats["max"] = float(np.fmax.reduce([np.fmax.reduce(c) for _, c in _chunks(values)]))
    return stats


def _keys(chunk: np.ndarray) -> np.ndarray:
    """Float64 values (no NaN) as uint64 keys in the same order: the sign bit flipped for
    positive values, every bit for negative ones."""
    flip = (chunk.view(np.int64) >> 63).view(np.uint64) | _SIGN
    return chunk.view(np.uint64) ^ flip


def _from_key(key: int) -> float:
    bits = key ^ (1 << 63) if key >> 63 else ~key & (2**64 - 1)
    return float(np.array(bits, dtype=np.uint64).view(np.float64))


def order_statistics(values: np.ndarray, ranks: Iterable[int]) -> dict[int, float]:
    """The non-NaN ``values`` of the given ranks (0: the smallest) as a sort would place them,
    without sorting or copying the values: a radix selection over their bits (as
    order-preserving integer keys), 16 at a time, with a pass over the values per 16 bits
    until a rank's group of equal leading bits holds at most :data:`GATHER` values, which are
    then gathered and partitioned."""
    nan = nan_samples(values, 0)[0]
    found: dict[int, float] = {}
    # (leading bits, how many bits follow them) → [(rank, rank within the values that have them)]
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {(0, 64): [(r, r) for r in set(ranks)]}
    sizes = {(0, 64): values.size - nan}
    while groups:
        gather = {g: [] for g in groups if sizes[g] <= GATHER}
        split = {g: np.zeros(1 << 16, np.int64) for g in groups if g not in gather}
        for _, chunk in _chunks(values):
            valid = _valid(chunk, nan)
            keys = _keys(valid)
            for (lead, rest), pieces in gather.items():
                pieces.append(valid if rest == 64 else valid[keys >> np.uint64(rest) == lead])
            for (lead, rest), counts in split.items():
                mine = keys if rest == 64 else keys[keys >> np.uint64(rest) == lead]
                counts += np.bincount(
                    ((mine >> np.uint64(rest - 16)) & np.uint64(0xFFFF)).astype(np.intp),
                    minlength=1 << 16,
                )
        for g, pieces in gather.items():
            part = np.concatenate(pieces)
            part.partition(sorted({k for _, k in groups[g]}))
            found.update((r, float(part[k])) for r, k in groups[g])
        narrowed: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for (lead, rest), counts in split.items():
            ends = np.cumsum(counts)
            for r, k in groups[(lead, rest)]:
                b = int(np.searchsorted(ends, k, side="right"))
                g = (lead << 16 | b, rest - 16)
                if g[1] == 0:  # every bit known
                    found[r] = _from_key(g[0])
                    continue
                narrowed.setdefault(g, []).append((r, k - (int(ends[b - 1]) if b else 0)))
                sizes[g] = int(counts[b])
        groups = narrowed
    return found


def quantiles(values: np.ndarray, qs: list[float]) -> list[float]:
    """numpy's linear quantiles (``np.quantile``, to the bit) of the non-NaN ``values``, from
    their exact order statistics (:func:`order_statistics`, no copy of the values), with
    infinite values taken as the limit of ever larger ones: where numpy interpolates inf - inf
    to NaN, the quantile is the infinite value (or its finite neighbour where the infinite
    one's interpolation weight is 0)."""
    n = values.size - nan_samples(values, 0)[0]
    # numpy's linear method: virtual index (n - 1) q, its floor and the next rank, weight
    # index - floor; from the last rank on, the last value
    spots = []
    for q in qs:
        pos = (n - 1) * q
        i = math.floor(pos)
        spots.append((i, i + 1, pos - i) if pos < n - 1 else (n - 1, n - 1, 0.0))
    value = order_statistics(values, {r for i, j, _ in spots for r in (i, j)})
    out = []
    for i, j, t in spots:
        a, b = value[i], value[j]
        diff = b - a
        x = b - diff * (1 - t) if t >= 0.5 else a + diff * t  # numpy's _lerp
        if math.isnan(x):
            x = a if t == 0 or a == b else a + (b - a) * t
        out.append(x)
    return out


def worst(values: np.ndarray, count: int = WORST) -> list[tuple[int, float]]:
    """The ``count`` largest non-NaN values as (index, value), largest first, ties by index:
    each chunk's own ``count`` largest (ties by index), then the largest of those."""
    index: list[np.ndarray] = []
    top: list[np.ndarray] = []
    for start, chunk in _chunks(values):
        keep = np.flatnonzero(~np.isnan(chunk))
        v = chunk[keep]
        if v.size > count:
            threshold = np.partition(v, v.size - count)[v.size - count]
            above = np.flatnonzero(v > threshold)
            ties = np.flatnonzero(v == threshold)[: count - above.size]
            pick = np.concatenate((above, ties))
            keep, v = keep[pick], v[pick]
        index.append(keep + start)
        top.append(v)
    i, v = np.concatenate(index), np.concatenate(top)
    order = np.lexsort((i, -v))[:count]
    return [(int(a), float(b)) for a, b in zip(i[order], v[order], strict=True)]


def _json_float(x: float) -> float | str | None:
    """``x`` as strict JSON takes it: NaN (a statistic not computed) as null, ±inf as the
    strings ``"inf"`` and ``"-inf"``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


@dataclass
class CompareReport:
    """What ``compare`` measured. ``values`` holds every sample's KL (NaN where an output was
    NaN), in sample order; it is not part of :meth:`to_dict`."""

    samples: int
    kl: dict[str, float]
    top1_agreement: float
    top1_agree: int
    worst: list[tuple[int, float]]
    nan_samples: int
    nan_indices: list[int]
    models: dict[str, str]
    output: dict[str, str]
    kind: str
    temperature: float
    providers: dict[str, list[str]]
    engine: str
    batch_size: int
    kl_op: str
    data: str
    rows: int
    timings: dict[str, float]
    values: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: samples, kl {mean, stderr, median, p90, p99, p999, max},
        top1_agreement, worst [{index, kl}], the NaN count and indices, the models, providers,
        engine and timings. Strict JSON (``json.dumps(..., allow_nan=False)`` takes it): a NaN
        statistic (one that needs more samples than there are) is null, an infinite one (a
        sample where the candidate gives probability 0 to a class the base does not) the
        string ``"inf"`` (``"-inf"``)."""
        return {
            "samples": self.samples,
            "kl": {k: _json_float(v) for k, v in self.kl.items()},
            "top1_agreement": _json_float(self.top1_agreement),
            "worst": [{"index": i, "kl": _json_float(v)} for i, v in self.worst],
            "nan_samples": self.nan_samples,
            "nan_indices": list(self.nan_indices),
            "models": dict(self.models),
            "output": dict(self.output),
            "kind": self.kind,
            "temperature": self.temperature,
            "providers": {k: list(v) for k, v in self.providers.items()},
            "engine": self.engine,
            "batch_size": self.batch_size,
            "kl_op": self.kl_op,
            "data": self.data,
            "rows": self.rows,
            "timings": {k: _json_float(v) for k, v in self.timings.items()},
        }

    def table(self) -> str:
        """The report as aligned text lines."""

        def g(x: float) -> str:
            return "nan" if math.isnan(x) else f"{x:.6g}"

        kl = self.kl
        valid = self.samples - self.nan_samples
        lines = [
            f"base       {self.models['base']}  ({', '.join(self.providers['base'])})",
            f"candidate  {self.models['candidate']}  ({', '.join(self.providers['candidate'])})",
            f"data       {self.data}  (output {self._output()}, kind {self.kind}"
            + (f", temperature {self.temperature:g}" if self.temperature != 1.0 else "")
            + f", engine {self.engine}, KL op: {self.kl_op})",
            "",
            f"samples          {self.samples}"
            + (f"  ({self.nan_samples} NaN, not in the statistics)" if self.nan_samples else ""),
            f"KL mean          {g(kl['mean'])} ± {g(kl['stderr'])} (standard error)",
            f"KL median        {g(kl['median'])}",
            f"KL p90           {g(kl['p90'])}",
            f"KL p99           {g(kl['p99'])}",
            f"KL p99.9         {g(kl['p999'])}",
            f"KL max           {g(kl['max'])}",
            f"top-1 agreement  {100 * self.top1_agreement:.3f} %  ({self.top1_agree}/{valid})"
            if valid
            else "top-1 agreement  -",
        ]
        if self.worst:
            lines.append("worst samples    " + ", ".join(f"#{i} {g(v)}" for i, v in self.worst))
        if self.nan_samples:
            more = self.nan_samples - len(self.nan_indices)
            lines.append(
                "NaN samples      "
                + ", ".join(f"#{i}" for i in self.nan_indices)
                + (f" and {more} more" if more else "")
            )
        t = self.timings
        started = (
            f"Ray started in {t['ray_init_s']:.3f} s, then the actors' sessions built"
            if "ray_init_s" in t
            else "sessions built"
        )
        after = t.get("samples_per_s_after_startup")
        lines.append(
            f"time             {t['wall_s']:.3f} s, {t['samples_per_s']:.0f} samples/s"
            + ("" if after is None else f" ({after:.0f} after start-up)")
            + f", start-up {t.get('startup_s', 0.0):.3f} s ({started}; "
            f"read {t['read_s']:.3f} s, base {t['base_s']:.3f} s, candidate "
            f"{t['candidate_s']:.3f} s, KL {t['kl_s']:.3f} s"
            + (" summed over workers" if self.engine != "local" else "")
            + ")"
        )
        return "\n".join(lines)

    def _output(self) -> str:
        b, c = self.output["base"], self.output["candidate"]
        return repr(b) if b == c else f"{b!r} / {c!r}"

    def __str__(self) -> str:
        return self.table()


def build_report(values: np.ndarray, agree: int, **fields: Any) -> CompareReport:
    """A :class:`CompareReport` from the per-sample values and the count of agreeing samples
    (NaN samples left out)."""
    nan, nan_indices = nan_samples(values)
    valid = values.size - nan
    return CompareReport(
        samples=int(values.size),
        kl=kl_statistics(values),
        top1_agreement=agree / valid if valid else math.nan,
        top1_agree=int(agree),
        worst=worst(values),
        nan_samples=nan,
        nan_indices=nan_indices,
        values=values,
        **fields,
    )
