"""Small edits of ONNX graphs shared by the layers that build or merge models."""

from __future__ import annotations

from collections.abc import Mapping

import onnx


def rename_values(graph: onnx.GraphProto, names: Mapping[str, str]) -> onnx.GraphProto:
    """Rename values in place wherever they appear: inputs, outputs, value_info, initializers,
    node inputs and outputs, and the graphs nested in node attributes. Returns ``graph``."""
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        vi.name = names.get(vi.name, vi.name)
    for init in graph.initializer:
        init.name = names.get(init.name, init.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = names.get(sparse.values.name, sparse.values.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                rename_values(sub, names)
    return graph
