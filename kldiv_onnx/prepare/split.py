"""``Split`` with ``num_outputs`` (ai.onnx 18) in its opset-13 form: the chunk sizes as the
``split`` input.

Split-18 cuts ``num_outputs`` chunks of ``ceil(d / n)`` elements, the last one smaller when
``n`` does not divide the split dim ``d``; Split-13 takes the sizes as an input. With a static
``d`` the sizes are written as a constant ``[c, ..., c, d - (n - 1) * c]`` and the node means at
opset 13 what it meant at 18. A Split has as many outputs as chunks, which onnxscript's patterns
cannot match for any count, so this is a direct edit of the node rather than a rewrite rule.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def reason(node: ir.Node) -> str | None:
    """Why the Split-18 ``node`` cannot be given its sizes (None: :func:`fix` can)."""
    if "num_outputs" not in node.attributes:
        return None
    x = node.inputs[0]
    axis = node.attributes.get_int("axis", 0)
    if x is None or x.shape is None:
        return "Split num_outputs on an input of unknown shape"
    rank = len(x.shape)
    if not -rank <= axis < rank or not isinstance(x.shape[axis], int):
        return f"Split num_outputs along axis {axis}, whose size is not static"
    return None


def fix(node: ir.Node, graph: ir.Graph) -> bool:
    """Replace ``num_outputs`` by a constant ``split`` input; True when the node was edited."""
    if node.op_type != "Split" or "num_outputs" not in node.attributes or reason(node):
        return False
    x = node.inputs[0]
    assert x is not None and x.shape is not None
    axis = node.attributes.get_int("axis", 0)
    size = int(x.shape[axis])  # type: ignore[arg-type]
    count = node.attributes.get_int("num_outputs")
    chunk = -(-size // count)
    sizes = np.array([chunk] * (count - 1) + [size - chunk * (count - 1)], dtype=np.int64)
    constant = ir.Node(
        "",
        "Constant",
        [],
        [ir.AttrTensor("value", ir.tensor(sizes))],
        name=f"{node.name or 'split'}_sizes",
    )
    graph.insert_before(node, constant)
    node.resize_inputs(2)
    node.replace_input_with(1, constant.outputs[0])
    del node.attributes["num_outputs"]
    return True
