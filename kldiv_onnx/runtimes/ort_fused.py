"""onnxruntime with the native library registered: each ``kldiv_onnx`` node runs as the fused
C++ kernel."""

from __future__ import annotations

import onnx

from .. import native, runtime
from .._contract import DOMAIN
from .base import Runner, Runtime


class OrtFused(Runtime):
    name = "onnxruntime fused"
    module = "onnxruntime"
    distribution = "onnxruntime"

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason is not None:
            return reason
        return None if native.available() else "native library not built"

    def unsupported(self, model: onnx.ModelProto) -> str | None:
        if not any(n.domain == DOMAIN for n in model.graph.node):
            return "no KLDivLoss node"
        return None

    def load(self, model: onnx.ModelProto) -> Runner:
        sess = runtime.session(model, providers=["CPUExecutionProvider"], fused=True)
        return lambda feeds: runtime.run(sess, feeds)
