"""Bring a model's ai.onnx opset down: rewrite what has no older version, relabel the rest.

1. Every model-local function outside the ``kldiv_onnx`` domain is inlined (their bodies are
   lowered with the graph); the ``kldiv_onnx`` functions' bodies are valid from opset 13 on,
   so only their opset import changes.
2. The rules of :mod:`.gelu`, :mod:`.layer_norm` and :mod:`.reduce` rewrite the nodes whose
   op has no version at the target opset, or one that means something else there, into
   opset-``target`` ops (onnxscript's rewriter); :mod:`.split` gives a ``Split`` with
   ``num_outputs`` its sizes.
3. Every node left is checked by :func:`.relabel.reason`: it must mean at the target opset
   what it meant at the model's own.

Nodes inside subgraphs (``If``, ``Loop``, ``Scan`` bodies) are not lowered: such a node is
reported.
"""

from __future__ import annotations

from typing import NamedTuple

import onnx
import onnx.inliner
import onnx.shape_inference
import onnx.version_converter
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass
from onnxscript.rewriter import pattern

from .._contract import DOMAIN, MIN_OPSET
from ..errors import first_line
from ..export import opset_of
from . import gelu, layer_norm, reduce, relabel, split
from ._common import label

RULE_OPS = {"Gelu": "gelu", "LayerNormalization": "layer_norm", **dict.fromkeys(reduce.OPS)}


class Lowered(NamedTuple):
    """The result of :func:`lower`."""

    model: onnx.ModelProto
    source: int
    """The model's ai.onnx opset before."""
    rewritten: dict[str, int]
    """Op type → nodes rewritten into older ops."""
    relabelled: dict[str, tuple[int, int]]
    """Op type → (its version at the source opset, at the target), for ops whose version
    changed and that mean the same for the nodes at hand."""


def rules() -> pattern.RewriteRuleSet:
    """Every lowering rule, as one rule set."""
    return pattern.RewriteRuleSet([*gelu.rules(), *layer_norm.rules(), *reduce.rules()])


def _why_left(node: ir.Node, source: int, target: int) -> str:
    """The reason a node a rule should have rewritten is still there."""
    out = node.outputs[0] if node.outputs else None
    if node.op_type == "Gelu" and out is not None:
        why = gelu.reason(out)
    elif node.op_type == "LayerNormalization" and out is not None and node.inputs:
        why = layer_norm.reason(node.inputs[0], out)
    elif node.op_type in reduce.OPS:
        why = reduce.reason(node)
    else:
        why = None
    return why or relabel.reason(node, source, target) or "no rule matched"


def _nested(graph: ir.Graph) -> list[ir.Node]:
    found = []
    for node in graph:
        for attr in node.attributes.values():
            if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                found.append(node)
                break
    return found


_FLOAT8 = {
    ir.DataType.FLOAT8E4M3FN,
    ir.DataType.FLOAT8E4M3FNUZ,
    ir.DataType.FLOAT8E5M2,
    ir.DataType.FLOAT8E5M2FNUZ,
}


def _drop_unused_saturate(node: ir.Node) -> None:
    """``saturate`` (Cast/CastLike 19) matters only for a float8 result: drop it otherwise, so
    that the node means at opset 13 what it means at 19."""
    if node.op_type not in ("Cast", "CastLike") or "saturate" not in node.attributes:
        return
    to = node.attributes.get_int("to") if node.op_type == "Cast" else None
    out = node.outputs[0].dtype if node.outputs else None
    if (to is not None and ir.DataType(to) in _FLOAT8) or out in _FLOAT8 or out is None:
        return
    del node.attributes["saturate"]


def lower(model: onnx.ModelProto, target: int) -> Lowered:
    """``model`` (not modified) with its ai.onnx opset at ``target``.

    ``ValueError`` naming every node that cannot be brought down and why, in one line.
    Raising a lower opset to ``target`` is left to onnx's version converter.
    """
    source = opset_of(model)
    if source is None:
        raise ValueError("the model imports no ai.onnx opset")
    if target < MIN_OPSET and any(o.domain == DOMAIN for o in model.opset_import):
        raise ValueError(f"the kldiv_onnx functions need ai.onnx >= {MIN_OPSET}, not {target}")
    if source == target:
        return Lowered(model, source, {}, {})
    if source < target:
        try:
            up = onnx.version_converter.convert_version(model, target)
        except Exception as exc:
            raise ValueError(f"cannot raise ai.onnx opset {source} to {target}: {exc}") from exc
        return Lowered(up, source, {}, {})

    keep = [(f.domain, f.name) for f in model.functions if f.domain == DOMAIN]
    others = [(f.domain, f.name) for f in model.functions if f.domain != DOMAIN]
    if others:
        model = onnx.inliner.inline_selected_functions(model, others)
        model.functions[:] = [f for f in model.functions if (f.domain, f.name) in keep]
    try:  # the rules' checks read element types and ranks
        typed = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        typed = model
    ir_model = ir.serde.deserialize_model(typed)
    # the nodes themselves are kept, so that no node a rule writes can reuse an id
    before = {id(n): n for n in ir_model.graph}
    counts: dict[str, int] = {}
    for node in ir_model.graph:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1

    ir_model.opset_imports[""] = target
    ir_model.graph.opset_imports[""] = target
    rules().apply_to_model(ir_model)
    RemoveUnusedNodesPass()(ir_model)  # the constants only a rewritten node read

    left: dict[str, int] = {}
    problems: list[str] = []
    relabelled: dict[str, tuple[int, int]] = {}
    for node in list(ir_model.graph):
        left[node.op_type] = left.get(node.op_type, 0) + (id(node) in before)
        if id(node) not in before or (node.domain not in ("", "ai.onnx")):
            continue  # written by a rule at the target opset, or another domain
        if node.op_type in RULE_OPS and node.op_type not in relabel.SAME_MEANING:
            problems.append(f"{label(node)}: {_why_left(node, source, target)}")
            continue
        _drop_unused_saturate(node)
        if node.op_type == "Split" and "num_outputs" in node.attributes:
            why_split = split.reason(node)
            if why_split is not None:
                problems.append(f"{label(node)}: {why_split}")
                continue
            split.fix(node, ir_model.graph)
        why = relabel.reason(node, source, target)
        if why is None:
            new, old = relabel.schema(node.op_type, source), relabel.schema(node.op_type, target)
            if new is not None and old is not None and new.since_version != old.since_version:
                relabelled[node.op_type] = (new.since_version, old.since_version)
        elif node.op_type in RULE_OPS:
            problems.append(f"{label(node)}: {_why_left(node, source, target)}")
        else:
            problems.append(f"{label(node)}: {why}")
    for node in _nested(ir_model.graph):
        problems.append(f"{label(node)}: nodes inside subgraphs are not lowered")
    if problems:
        raise ValueError(f"cannot lower ai.onnx opset {source} to {target}: " + "; ".join(problems))
    rewritten = {  # the constants a rewritten node alone read are gone too: not counted
        op: n - left.get(op, 0)
        for op, n in counts.items()
        if op in RULE_OPS and n - left.get(op, 0) > 0
    }

    out = ir.serde.serialize_model(ir_model)
    for function in out.functions:
        if function.domain == DOMAIN:
            for imp in function.opset_import:
                if imp.domain in ("", "ai.onnx"):
                    imp.version = target
    known = {vi.name for vi in model.graph.value_info}  # keep only the value_info it had
    kept = [vi for vi in out.graph.value_info if vi.name in known]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept)
    try:
        onnx.checker.check_model(out)
        onnx.shape_inference.infer_shapes(out, strict_mode=True)
    except Exception as exc:
        raise ValueError(
            f"the model lowered to opset {target} is invalid: {first_line(exc)}"
        ) from exc
    return Lowered(out, source, rewritten, relabelled)
