"""The CANN provider's tables as typed values, read once from ``kldiv_onnx/data``.

The JSON file (``cann_ort_<version>.json``) records, with its sources, what the
onnxruntime-cann provider library of that version accepts: the graph-mode op list and opset
range, the single-operator kernel registry, the provider options and the toolkit libraries it
links.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

TABLE_FILE = "cann_ort_1.24.4.json"
"""The tables in use: onnxruntime-cann 1.24.4 (the wheel the side environment tests against)."""


@dataclass(frozen=True)
class Kernel:
    """A single-operator kernel: op, ONNX since-version range, input types (None: any)."""

    op: str
    since: int
    until: int | None
    types: tuple[str, ...] | None


@dataclass(frozen=True)
class OptionSpec:
    """One provider option: its kind (bool, int, enum, string) and constraints."""

    kind: str
    minimum: int = 0
    values: tuple[str, ...] = ()
    ort_default: str | None = None


@dataclass(frozen=True)
class Tables:
    """Everything the provider decides by, for one onnxruntime-cann version."""

    onnxruntime: str
    graph_ops: frozenset[str]
    opset_min: int
    opset_max: int
    kernels: tuple[Kernel, ...]
    options: dict[str, OptionSpec]
    toolkit_libraries: tuple[str, ...]
    toolkit_runpath: str
    sources: dict[str, str]
    """Where each part was read from: ``graph_mode``, ``single_op``, ``provider_options``,
    ``toolkit``."""

    def kernels_of(self, op: str) -> list[Kernel]:
        """The single-operator kernels registered for ``op``."""
        return [k for k in self.kernels if k.op == op]


def _option(spec: dict[str, Any]) -> OptionSpec:
    return OptionSpec(
        kind=spec["kind"],
        minimum=int(spec.get("min", 0)),
        values=tuple(spec.get("values", ())),
        ort_default=spec.get("ort_default"),
    )


@functools.cache
def tables() -> Tables:
    """The tables of :data:`TABLE_FILE`, parsed once per process."""
    text = resources.files("kldiv_onnx").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    raw = json.loads(text)
    graph, toolkit = raw["graph_mode"], raw["toolkit"]
    return Tables(
        onnxruntime=raw["onnxruntime"],
        graph_ops=frozenset(graph["ops"]),
        opset_min=int(graph["opset_min"]),
        opset_max=int(graph["opset_max"]),
        kernels=tuple(
            Kernel(
                k["op"],
                k["since"],
                k["until"],
                None if k["types"] is None else tuple(k["types"]),
            )
            for k in raw["single_op"]["kernels"]
        ),
        options={
            name: _option(spec)
            for name, spec in raw["provider_options"].items()
            if name != "source"
        },
        toolkit_libraries=tuple(toolkit["libraries"]),
        toolkit_runpath=toolkit["runpath"],
        sources={
            part: raw[part]["source"]
            for part in ("graph_mode", "single_op", "provider_options", "toolkit")
        },
    )
