"""tract (Sonos' ONNX runtime, through its Python bindings): the portable file, every function
inlined (:func:`kldiv_onnx.portable.inline`), since tract has no way to register an op from
Python. tract has no bfloat16 ("Unknown DatumType Bfloat16")."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto

from ..portable import inline
from .base import Runner, Runtime, bodyless_kldiv, elem_types, graph_input_names

_EMPTY = "tract 0.23 aborts the process on a reduction over an empty tensor"


class Tract(Runtime):
    name = "tract (inlined)"
    module = "tract"
    distribution = "tract"

    def unsupported(self, model: onnx.ModelProto) -> str | None:
        if TensorProto.BFLOAT16 in elem_types(model):
            return "tract has no bfloat16"
        if any(
            d.HasField("dim_value") and d.dim_value == 0
            for vi in model.graph.input
            for d in vi.type.tensor_type.shape.dim
        ):
            return _EMPTY
        return bodyless_kldiv(model)

    def load(self, model: onnx.ModelProto) -> Runner:
        import tract

        portable = inline(model)
        with tempfile.TemporaryDirectory(prefix="kldiv-tract-") as folder:
            path = os.path.join(folder, "model.onnx")  # tract loads from a path only
            with open(path, "wb") as f:
                f.write(portable.SerializeToString())
            runnable = tract.onnx().load(path).into_model().into_runnable()
        names = graph_input_names(portable)

        def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            missing = [n for n in names if n not in feeds]
            if missing:
                raise ValueError(f"no value given for model inputs {missing}")
            arrays = [np.asarray(feeds[n], order="C") for n in names]  # 0-d stays 0-d
            if any(a.size == 0 for a in arrays):
                raise ValueError(_EMPTY)  # checked here: tract would abort the process
            outputs = runnable.run(arrays)
            return [o.to_numpy() for o in outputs]

        return run
