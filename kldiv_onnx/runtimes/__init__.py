"""Runtime adapters: one small interface (:class:`Runtime`) over every ONNX runtime the
project runs models on, so that ``validate`` and ``compare`` iterate over a list and adding a
runtime is one file.

* ``onnx.reference (inlined)``: onnx's evaluator, functions inlined (``reference_ops`` for the
  generic op);
* ``onnxruntime composite``: onnxruntime, the loss as its onnxscript body;
* ``onnxruntime fused``: onnxruntime with the native kernel;
* ``OpenVINO``: the function-form file through :mod:`kldiv_onnx.openvino`;
* ``tract (inlined)``: the portable file (:func:`kldiv_onnx.portable.inline`).
"""

from __future__ import annotations

from .base import Runner, Runtime, graph_input_names
from .onnx_reference import OnnxReference
from .openvino import OpenVINO
from .ort_composite import OrtComposite
from .ort_fused import OrtFused
from .tract import Tract

ADAPTERS: tuple[type[Runtime], ...] = (OnnxReference, OrtComposite, OrtFused, OpenVINO, Tract)
"""Every adapter, in the order tables list them."""


def runtimes() -> list[Runtime]:
    """One instance of every adapter, in :data:`ADAPTERS` order."""
    return [cls() for cls in ADAPTERS]


def get(name: str) -> Runtime:
    """The adapter called ``name`` (``KeyError`` listing the names otherwise)."""
    for runtime in runtimes():
        if runtime.name == name:
            return runtime
    raise KeyError(f"no runtime {name!r}; known: {[r.name for r in runtimes()]}")


__all__ = [
    "ADAPTERS",
    "OnnxReference",
    "OpenVINO",
    "OrtComposite",
    "OrtFused",
    "Runner",
    "Runtime",
    "Tract",
    "get",
    "graph_input_names",
    "runtimes",
]
