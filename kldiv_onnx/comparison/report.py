"""The statistics of a comparison and its report: a table for people, ``to_dict`` for JSON.

Every statistic is computed once, at the end, from the per-sample KL values in sample order, so
that every engine (whatever order its batches finished in) gives the very same figures.
"""

from __future__ import annotations

import math
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


def kl_statistics(values: np.ndarray) -> dict[str, float]:
    """Mean, its standard error, the :data:`QUANTILES` and the max of ``values`` without NaNs
    (NaN for a statistic that needs more samples than there are)."""
    v = values[~np.isnan(values)]
    n = v.size
    stats = {"mean": math.nan, "stderr": math.nan, **dict.fromkeys(QUANTILES, math.nan)}
    stats["max"] = math.nan
    if n == 0:
        return stats
    with np.errstate(invalid="ignore", over="ignore"):
        stats["mean"] = float(np.mean(v))
        if n > 1:
            stats["stderr"] = float(np.std(v, ddof=1) / math.sqrt(n))
        for name, q in zip(QUANTILES, quantiles(v, list(QUANTILES.values())), strict=True):
            stats[name] = q
    stats["max"] = float(v.max())
    return stats


def quantiles(v: np.ndarray, qs: list[float]) -> list[float]:
    """numpy's linear quantiles of ``v`` (no NaN), with infinite values taken as the limit of
    ever larger ones: where numpy interpolates inf - inf to NaN, the quantile is the infinite
    value (or its finite neighbour where the infinite one's interpolation weight is 0)."""
    with np.errstate(invalid="ignore"):
        got = [float(x) for x in np.quantile(v, qs)]
    out = []
    for q, x in zip(qs, got, strict=True):
        if not math.isnan(x):
            out.append(x)
            continue
        pos = q * (v.size - 1)
        i = math.floor(pos)
        j = min(i + 1, v.size - 1)
        part = np.partition(v, [i, j])
        a, b, t = float(part[i]), float(part[j]), pos - i
        out.append(a if t == 0 or a == b else a + (b - a) * t)
    return out


def worst(values: np.ndarray, count: int = WORST) -> list[tuple[int, float]]:
    """The ``count`` largest non-NaN values as (index, value), largest first, ties by index."""
    index = np.flatnonzero(~np.isnan(values))
    if index.size == 0:
        return []
    v = values[index]
    k = min(count, v.size)
    threshold = np.partition(v, v.size - k)[v.size - k]
    keep = v >= threshold
    order = np.lexsort((index[keep], -v[keep]))[:k]
    return [(int(i), float(x)) for i, x in zip(index[keep][order], v[keep][order], strict=True)]


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
        lines.append(
            f"time             {t['wall_s']:.3f} s, {t['samples_per_s']:.0f} samples/s, "
            f"start-up {t.get('startup_s', 0.0):.3f} s (sessions built; "
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
    nan = np.flatnonzero(np.isnan(values))
    valid = values.size - nan.size
    return CompareReport(
        samples=int(values.size),
        kl=kl_statistics(values),
        top1_agreement=agree / valid if valid else math.nan,
        top1_agree=int(agree),
        worst=worst(values),
        nan_samples=int(nan.size),
        nan_indices=[int(i) for i in nan[:NAN_LISTED]],
        values=values,
        **fields,
    )
