"""Runtime adapters: one small interface (:class:`Runtime`) over every ONNX runtime the
project runs models on, so that ``validate`` and ``compare`` iterate over a list and adding a
runtime is one file.

* ``onnx.reference (inlined)``: onnx's evaluator, functions inlined (``reference_ops`` for the
  generic op);
* ``onnxruntime composite``: onnxruntime, the loss as its onnxscript body;
* ``onnxruntime fused``: onnxruntime with the native kernel;
* ``OpenVINO``: the function-form file through :mod:`kldiv_onnx.openvino`;
* ``tract (inlined)``: the portable file (:func:`kldiv_onnx.portable.inline`).

and, in :data:`FRAMEWORKS`, the frameworks that compute the loss themselves (a single-KLDivLoss
model run as the framework's own ``kl_div``, :mod:`.framework`):

* ``PyTorch eager``: ``torch.nn.functional.kl_div``;
* ``MindSpore``: ``mindspore.ops.kl_div`` (CPU: equal shapes, no log-target, float16/float32).

Each adapter imports its runtime where it runs a model: one that is not installed costs no
import and reports "<module> not installed".
"""

from __future__ import annotations

from .base import Runner, Runtime, Unsupported, graph_input_names
from .framework import Framework, single_kldiv
from .mindspore_ops import MindSporeOps
from .onnx_reference import OnnxReference
from .openvino import OpenVINO
from .ort_composite import OrtComposite
from .ort_fused import OrtFused
from .torch_eager import TorchEager
from .tract import Tract

ADAPTERS: tuple[type[Runtime], ...] = (OnnxReference, OrtComposite, OrtFused, OpenVINO, Tract)
"""Every ONNX runtime adapter, in the order tables list them."""
FRAMEWORKS: tuple[type[Runtime], ...] = (TorchEager, MindSporeOps)
"""The frameworks' own losses, listed after the ONNX runtimes (``validate`` runs both)."""


def runtimes() -> list[Runtime]:
    """One instance of every adapter, in :data:`ADAPTERS` order."""
    return [cls() for cls in ADAPTERS]


def frameworks() -> list[Runtime]:
    """One instance of every framework adapter, in :data:`FRAMEWORKS` order."""
    return [cls() for cls in FRAMEWORKS]


def get(name: str) -> Runtime:
    """The adapter (ONNX runtime or framework) called ``name`` (``KeyError`` listing the names
    otherwise)."""
    every = [*runtimes(), *frameworks()]
    for runtime in every:
        if runtime.name == name:
            return runtime
    raise KeyError(f"no runtime {name!r}; known: {[r.name for r in every]}")


__all__ = [
    "ADAPTERS",
    "FRAMEWORKS",
    "Framework",
    "MindSporeOps",
    "OnnxReference",
    "OpenVINO",
    "OrtComposite",
    "OrtFused",
    "Runner",
    "Runtime",
    "TorchEager",
    "Tract",
    "Unsupported",
    "frameworks",
    "get",
    "graph_input_names",
    "runtimes",
    "single_kldiv",
]
