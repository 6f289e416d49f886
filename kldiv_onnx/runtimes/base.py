"""The runtime adapter interface: what ``validate`` and ``compare`` iterate over.

An adapter names one way of running an ONNX model and knows three things about it: whether it
can run here at all (:meth:`Runtime.unavailable`), whether it can run a given model
(:meth:`Runtime.unsupported`), and how to load a model into a function from numpy feeds to
numpy outputs (:meth:`Runtime.load`). Adding a runtime is one file: a subclass, listed in
:data:`kldiv_onnx.runtimes.ADAPTERS` (or :data:`~kldiv_onnx.runtimes.FRAMEWORKS`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Mapping

import numpy as np
import onnx

from .._contract import DOMAIN, GENERIC_OP

Runner = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
"""``run(feeds) -> outputs``: feeds by graph input name, outputs in graph output order."""


class Unsupported(Exception):
    """Raised by a runner for inputs its runtime does not take (e.g. MindSpore's ``ops.kl_div``
    on unequal shapes): a case reported "not supported", never as agreeing or as an error."""


class Runtime:
    """One ONNX runtime (or one way of using it). Subclasses set :attr:`name` and implement
    :meth:`load`; the two checks return a reason (one short phrase) or ``None``."""

    name: str = ""
    """How tables and ``--json`` name it."""
    module: str | None = None
    """The Python module it needs; absent → :meth:`unavailable` says "<module> not installed"."""
    distribution: str | None = None
    """The package whose version :meth:`version` reports."""

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here at all (e.g. "openvino not installed"), or None."""
        if self.module is not None and importlib.util.find_spec(self.module) is None:
            return f"{self.module} not installed"
        return None

    def unsupported(self, model: onnx.ModelProto) -> str | None:
        """Why this runtime cannot run ``model`` (e.g. "tract has no bfloat16"), or None."""
        return None

    def load(self, model: onnx.ModelProto) -> Runner:
        """Prepare ``model`` and return its runner (errors are the runtime's own;
        :class:`Unsupported` for inputs it does not take)."""
        raise NotImplementedError

    def version(self) -> str | None:
        """The installed version of :attr:`distribution`, or None."""
        if self.distribution is None:
            return None
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def __repr__(self) -> str:
        return f"<runtime {self.name!r}>"


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs a caller feeds (initializers that are also inputs left out)."""
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def bodyless_kldiv(model: onnx.ModelProto) -> str | None:
    """The reason a runtime that runs function bodies cannot run ``model``: a ``kldiv_onnx``
    node with no model-local function (the generic op), or None."""
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if node.domain == DOMAIN and (node.domain, node.op_type) not in local:
            if node.op_type == GENERIC_OP:
                return f"the generic {GENERIC_OP} has no function body"
            return f"{node.op_type} has no function in the model"
    return None


def elem_types(model: onnx.ModelProto) -> set[int]:
    """Element types of the graph's inputs, outputs and initializers."""
    graph = model.graph
    types = {vi.type.tensor_type.elem_type for vi in [*graph.input, *graph.output]}
    types |= {init.data_type for init in graph.initializer}
    return types - {0}
