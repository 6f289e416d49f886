"""``kldiv-onnx bench --compare``: the figures the benchmark reports for ``compare``.

* KL stage against reading: per batch of both models' float32 outputs ``(batch, classes)``
  (``compare``'s default batch size), the time of the KL stage
  (:class:`kldiv_onnx.comparison.models.KLStage`, as ``compare`` runs it) against the time to
  read both output batches once (numpy's float32 sum over each), for several class counts. The
  target is a ratio ≤ 2.
* End to end: samples/s of ``compare`` with each engine on a synthetic classifier pair (a
  MatMul + bias model and a perturbed copy) over an ``.npz`` data set.

Timings (:func:`~.timer.side_by_side`): one warm-up call each, then ``repeats`` rounds timing
the read and the KL stage in turn, one call each; the median per contestant (the ``median`` of
:class:`~.timer.Stats`). Nothing here is asserted.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import native
from ..comparison.core import DEFAULT_BATCH_SIZE, compare
from ..comparison.models import KL_WAYS, KLStage, kl_model, kl_way, log_softmax
from .timer import Stats, side_by_side


def kl_stage(
    classes: Sequence[int] = (10, 100, 1000, 32000),
    batch_size: int = DEFAULT_BATCH_SIZE,
    repeats: int = 50,
    threads: int | None = None,
    kinds: Sequence[str] = ("logits", "log-probs"),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per output kind and class count: seconds per batch for reading both output batches once
    and for the KL stage, their ratio, and the KL stage's elements/s."""
    rng = np.random.default_rng(seed)
    library = native.library_path() if native.available() else None
    rows = []
    for kind in kinds:
        stage = KLStage(kl_model(kind, 1.0).SerializeToString(), kind, 1.0, library, threads)
        for c in classes:
            base = rng.normal(scale=3.0, size=(batch_size, c)).astype(np.float32)
            candidate = (base + rng.normal(scale=0.1, size=base.shape)).astype(np.float32)
            if kind != "logits":
                base, candidate = (log_softmax(z).astype(np.float32) for z in (base, candidate))

            def read(base: np.ndarray = base, candidate: np.ndarray = candidate) -> None:
                base.sum()
                candidate.sum()

            def kl(
                base: np.ndarray = base, candidate: np.ndarray = candidate, stage: KLStage = stage
            ) -> None:
                stage(base, candidate)

            times = side_by_side({"read": read, "kl": kl}, repeats)
            read_s, kl_s = (Stats.of(times[name]).median_s for name in ("read", "kl"))
            rows.append(
                {
                    "kind": kind,
                    "classes": c,
                    "batch_size": batch_size,
                    "repeats": repeats,
                    "read_s": read_s,
                    "kl_s": kl_s,
                    "ratio": kl_s / read_s,
                    "kl_elements_per_s": batch_size * c / kl_s,
                }
            )
    return rows


def _classifier(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["logits"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", w.shape[1]])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def end_to_end(
    engines: Sequence[str] = ("local", "ray"),
    rows: int = 20000,
    features: int = 64,
    classes: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``compare`` of a classifier pair over ``rows`` samples with each engine: samples/s and
    the stage timings (Ray: summed over workers; its wall time includes starting the actors,
    not the cluster)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=features**-0.5, size=(features, classes)).astype(np.float32)
    b = rng.normal(size=classes).astype(np.float32)
    w2 = (w + 0.02 * rng.normal(size=w.shape) * features**-0.5).astype(np.float32)
    out = []
    with tempfile.TemporaryDirectory(prefix="compare_bench.") as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, x=rng.normal(size=(rows, features)).astype(np.float32))
        base, candidate = _classifier(w, b), _classifier(w2, b)
        started = False
        for engine in engines:
            if engine == "ray":
                import ray

                if not ray.is_initialized():
                    ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)
                    started = True
            report = compare(base, candidate, data, batch_size=batch_size, engine=engine)
            out.append(
                {
                    "engine": engine,
                    "samples": report.samples,
                    "classes": classes,
                    "batch_size": batch_size,
                    "samples_per_s": report.samples / report.timings["wall_s"],
                    **{
                        k: report.timings[k]
                        for k in ("wall_s", "read_s", "base_s", "candidate_s", "kl_s")
                    },
                }
            )
        if started:
            import ray

            ray.shutdown()
    return out


def compare_bench(
    classes: Sequence[int] = (10, 100, 1000, 32000),
    batch_size: int = DEFAULT_BATCH_SIZE,
    repeats: int = 50,
    engines: Sequence[str] = ("local", "ray"),
    rows: int = 20000,
    threads: int | None = None,
) -> dict[str, Any]:
    """Both measurements (:func:`kl_stage`, :func:`end_to_end`) and the machine they ran on."""
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "kl_op": KL_WAYS[kl_way(native.library_path() if native.available() else None)],
        },
        "kl_stage": kl_stage(classes, batch_size, repeats, threads),
        "end_to_end": end_to_end(engines, rows),
    }


def format_bench(result: dict[str, Any]) -> str:
    """The figures as text lines."""
    lines = [f"KL stage vs reading both output batches once (KL op: {result['machine']['kl_op']})"]
    for r in result["kl_stage"]:
        lines.append(
            f"  {r['kind']:9s} classes {r['classes']:>6}  batch {r['batch_size']}: "
            f"read {1e6 * r['read_s']:9.1f} µs"
            f"  KL {1e6 * r['kl_s']:9.1f} µs  ratio {r['ratio']:6.2f}"
            f"  ({r['kl_elements_per_s'] / 1e6:.0f} M elements/s)"
        )
    lines.append("end to end")
    for r in result["end_to_end"]:
        lines.append(
            f"  {r['engine']:5s} {r['samples']} samples × {r['classes']} classes: "
            f"{r['samples_per_s']:.0f} samples/s (wall {r['wall_s']:.2f} s; read {r['read_s']:.2f}"
            f" base {r['base_s']:.2f} candidate {r['candidate_s']:.2f} KL {r['kl_s']:.2f} s)"
        )
    return "\n".join(lines)
