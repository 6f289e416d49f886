"""``onnx.reference``: the ONNX specification's evaluator, on the model with its functions
inlined (the generic ``KLDivLoss``, which has no body, runs as :func:`reference_ops`)."""

from __future__ import annotations

import onnx
import onnx.inliner

from ..reference import reference_ops
from .base import Runner, Runtime


class OnnxReference(Runtime):
    name = "onnx.reference (inlined)"
    module = "onnx.reference"
    distribution = "onnx"

    def load(self, model: onnx.ModelProto) -> Runner:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(
            onnx.inliner.inline_local_functions(model), new_ops=reference_ops()
        )
        return lambda feeds: list(evaluator.run(None, dict(feeds)))
