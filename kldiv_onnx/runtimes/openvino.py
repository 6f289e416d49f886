"""OpenVINO (CPU): the function-form file as it is, its ``kldiv_onnx`` nodes converted by the
registration of :mod:`kldiv_onnx.openvino` (float32 math inside, bfloat16 files included)."""

from __future__ import annotations

import onnx

from .. import openvino as registration
from .base import Runner, Runtime


class OpenVINO(Runtime):
    name = "OpenVINO"
    module = "openvino"
    distribution = "openvino"

    def load(self, model: onnx.ModelProto) -> Runner:
        return registration.compile_model(model)
