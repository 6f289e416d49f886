"""onnxruntime without the native library: a function-form loss runs as its onnxscript body."""

from __future__ import annotations

import onnx

from .. import runtime
from .base import Runner, Runtime, bodyless_kldiv


class OrtComposite(Runtime):
    name = "onnxruntime composite"
    module = "onnxruntime"
    distribution = "onnxruntime"

    def unsupported(self, model: onnx.ModelProto) -> str | None:
        return bodyless_kldiv(model)

    def load(self, model: onnx.ModelProto) -> Runner:
        sess = runtime.session(model, providers=["CPUExecutionProvider"], fused=False)
        return lambda feeds: runtime.run(sess, feeds)
