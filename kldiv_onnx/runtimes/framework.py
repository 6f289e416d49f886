"""Frameworks that compute the loss themselves, without ONNX (PyTorch eager, MindSpore): their
adapter runs a model that is one KLDivLoss variant node on its two graph inputs as the
framework's own ``kl_div``, a cross-check independent of every ONNX runtime. Any other model is
"not supported", and so is a case the framework refuses (its error, as :class:`Unsupported`):
never counted as agreeing, never as an error of the op.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from .._contract import DOMAIN, Variant, variant_of
from ..errors import first_line
from .base import Runner, Runtime, Unsupported


def single_kldiv(model: onnx.ModelProto) -> tuple[Variant, str, str] | None:
    """(variant, input name, target name) if the graph is one KLDivLoss variant node reading
    its two graph inputs, else None."""
    graph = model.graph
    if len(graph.node) != 1 or len(graph.output) != 1:
        return None
    node = graph.node[0]
    variant = variant_of(node.op_type)
    inputs = [i.name for i in graph.input]
    if node.domain != DOMAIN or variant is None or list(node.input) != inputs:
        return None
    return variant, inputs[0], inputs[1]


class Framework(Runtime):
    """A framework's own loss as a runtime of single-KLDivLoss models. Subclasses implement
    :meth:`kl_div` and may decline inputs in :meth:`declines`."""

    def unsupported(self, model: onnx.ModelProto) -> str | None:
        if single_kldiv(model) is None:
            return "runs single-KLDivLoss models only"
        return None

    def declines(self, x: np.ndarray, t: np.ndarray, variant: Variant) -> str | None:
        """Why the framework does not take these inputs (one short phrase), or None."""
        return None

    def kl_div(self, x: np.ndarray, t: np.ndarray, variant: Variant) -> np.ndarray:
        """The framework's loss of ``x`` and ``t`` as a numpy array."""
        raise NotImplementedError

    def load(self, model: onnx.ModelProto) -> Runner:
        single = single_kldiv(model)
        if single is None:
            raise ValueError(f"{self.name} {self.unsupported(model)}")
        variant, x_name, t_name = single

        def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            x, t = np.asarray(feeds[x_name]), np.asarray(feeds[t_name])
            reason = self.declines(x, t, variant)
            if reason is not None:
                raise Unsupported(reason)
            try:
                return [np.asarray(self.kl_div(x, t, variant))]
            except Exception as exc:  # the framework refusing the case is not a disagreement
                raise Unsupported(f"{type(exc).__name__}: {first_line(exc)[:120]}") from exc

        return run
