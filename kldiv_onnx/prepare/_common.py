"""Helpers the lowering rules share."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir


def attr(value: ir.Value, name: str, default: Any = None) -> Any:
    """Attribute ``name`` of the node producing ``value`` (``default`` when absent)."""
    node = value.producer()
    found = node.attributes.get(name) if node is not None else None
    return default if found is None else found.value


def constant(op: Any, value: float | list[float], dtype: ir.DataType | None) -> Any:
    """A ``Constant`` node holding ``value`` in ``dtype`` (the rewrite side of a rule)."""
    np_dtype = dtype.numpy() if dtype is not None else np.dtype(np.float32)
    return op.Constant(value=ir.tensor(np.asarray(value, dtype=np_dtype)))


def label(node: ir.Node | None) -> str:
    if node is None:
        return "(no node)"
    domain = node.domain or "ai.onnx"
    return f"node {node.name or '(unnamed)'!r} ({domain}.{node.op_type})"
