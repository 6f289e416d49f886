"""The portable form: every model-local function inlined, nothing of the ``kldiv_onnx`` domain.

For runtimes with no extension mechanism (tract, and any runtime that does not inline
model-local functions of a custom domain). The loss then runs as its onnxscript body: standard
ONNX ops with float32 math inside, the same body onnxruntime runs without the native library.
"""

from __future__ import annotations

import onnx
import onnx.inliner
from onnx import ModelProto

from ._contract import DOMAIN, GENERIC_OP
from .errors import first_line
from .model_io import ModelLike, load_model


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.HasField("g"):
            graphs.append(attr.g)
        graphs.extend(attr.graphs)
    return graphs


def _nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node of ``graph`` and of the graphs nested in its nodes' attributes."""
    found: list[onnx.NodeProto] = []
    for node in graph.node:
        found.append(node)
        for sub in _subgraphs(node):
            found.extend(_nodes(sub))
    return found


def _label(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'!r} ({node.domain or 'ai.onnx'}.{node.op_type})"


def check_inlinable(model: ModelProto) -> None:
    """``ValueError`` naming the first ``kldiv_onnx`` node without a function body (the generic
    ``KLDivLoss`` runs only as the native kernel, in onnxruntime or OpenVINO)."""
    local = {(f.domain, f.name) for f in model.functions}
    nodes = _nodes(model.graph)
    for function in model.functions:
        nodes += list(function.node)
    for node in nodes:
        if node.domain == DOMAIN and (node.domain, node.op_type) not in local:
            why = (
                f"the generic {GENERIC_OP} has no function body"
                if node.op_type == GENERIC_OP
                else "the model carries no function for it"
            )
            raise ValueError(
                f"cannot inline {_label(node)}: {why}; export a variant such as "
                f"{GENERIC_OP}_batchmean (build_model, embed) to get a portable file"
            )


def inline(model: ModelLike) -> ModelProto:
    """``model`` (a ``ModelProto``, bytes or a path; never modified) with every model-local
    function inlined by onnx's inliner and the ``kldiv_onnx`` opset import dropped.

    ``ValueError`` for a file that is not an ONNX model and for a ``kldiv_onnx`` node with no
    function body (the generic op), naming the node.
    """
    proto = load_model(model)
    check_inlinable(proto)
    try:
        out = onnx.inliner.inline_local_functions(proto)
    except Exception as exc:  # onnx's C++ inliner raises plain exceptions
        raise ValueError(f"cannot inline the model's functions: {first_line(exc)}") from exc
    del out.functions[:]
    imports = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(imports)
    left = [n for n in _nodes(out.graph) if n.domain == DOMAIN]
    if left:  # cannot happen after check_inlinable; kept as the contract's guard
        raise ValueError(f"{_label(left[0])} is left after inlining")
    onnx.checker.check_model(out)
    return out
