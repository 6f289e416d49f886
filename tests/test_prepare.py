"""prepare: torch opset-20 exports made whole on the NPU (by the placement check) with
unchanged outputs; each lowering rule on its own, relabelling, and what is reported."""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kldiv_onnx import runtime
from kldiv_onnx._contract import DOMAIN
from kldiv_onnx.prepare import TARGETS, lower, prepare

FEATURES, HIDDEN, CLASSES = 16, 32, 10


def _ai_onnx(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _ort(model, feeds, fused=False):
    return runtime.run(runtime.session(model, fused=fused), feeds)


# --- torch exports at their default opset (20) ------------------------------------------------


@functools.cache
def torch_export(exporter: str, approximate: str) -> bytes:
    """Linear → GELU → LayerNorm → Linear, softmax probabilities and the batchmean KL loss
    of the log-softmax against a target, exported by torch 2.13 at its default opset."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.l1 = torch.nn.Linear(FEATURES, HIDDEN)
            self.ln = torch.nn.LayerNorm(HIDDEN)
            self.l2 = torch.nn.Linear(HIDDEN, CLASSES)

        def forward(self, x, target):
            logits = self.l2(self.ln(F.gelu(self.l1(x), approximate=approximate)))
            loss = F.kl_div(F.log_softmax(logits, -1), target, reduction="batchmean")
            return torch.softmax(logits, -1), loss

    args = (torch.randn(4, FEATURES), torch.softmax(torch.randn(4, CLASSES), -1))
    names = {"input_names": ["x", "target"], "output_names": ["probs", "loss"]}
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = {0: "batch"}
                program = torch.onnx.export(
                    Net(), args, dynamo=True, dynamic_shapes={"x": batch, "target": batch}, **names
                )
                return program.model_proto.SerializeToString()
            buffer = io.BytesIO()
            axes = {"x": {0: "batch"}, "target": {0: "batch"}}
            torch.onnx.export(Net(), args, buffer, dynamo=False, dynamic_axes=axes, **names)
            return buffer.getvalue()
    finally:
        logging.disable(logging.NOTSET)


def _feeds(rows: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((rows, CLASSES))
    target = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return {
        "x": rng.standard_normal((rows, FEATURES)).astype(np.float32),
        "target": target.astype(np.float32),
    }


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_opset20_export_comes_out_whole_on_the_npu(tmp_path, exporter, approximate):
    data = torch_export(exporter, approximate)
    original = onnx.load_from_string(data)
    assert _ai_onnx(original) == 20 and {"Gelu", "LayerNormalization"} <= _ops(original)
    path = tmp_path / "model.onnx"
    path.write_bytes(data)

    prepared = prepare(path, "cann")

    assert path.read_bytes() == data  # the input is untouched
    assert prepared.ok, prepared.placement.format()
    assert prepared.fused == 1
    assert prepared.rewritten == {"Gelu": 1, "LayerNormalization": 1}
    assert _ai_onnx(prepared.model) == 15
    assert {"Gelu", "LayerNormalization", "IsNaN"}.isdisjoint(_ops(prepared.model))
    onnx.checker.check_model(prepared.model, full_check=True)
    feeds = _feeds()
    want = _ort(original, feeds)
    for fused in (False, True):
        got = _ort(prepared.model, feeds, fused=fused)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_an_export_with_the_loss_embedded_afterwards():
    from kldiv_onnx.interop.embed import embed

    original = onnx.load_from_string(torch_export("torchscript", "none"))
    # drop the torch loss, keep the network: embed puts the kldiv_onnx loss on the logits
    probs = original.graph.output[0]
    net = onnx.utils.Extractor(original).extract_model(["x"], [probs.name])
    model = embed(net, "probs", reduction="sum")
    prepared = prepare(model, "cann")
    assert prepared.ok, prepared.placement.format()
    assert _ai_onnx(prepared.model) == 15
    assert any(n.domain == DOMAIN for n in prepared.model.graph.node)
    feeds = {"x": _feeds()["x"], "target": _feeds()["target"]}
    for g, w in zip(_ort(prepared.model, feeds), _ort(model, feeds), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["onnxruntime", "openvino", "portable"])
def test_other_targets_fuse_and_keep_the_outputs(target):
    original = onnx.load_from_string(torch_export("dynamo", "none"))
    prepared = prepare(original, target)
    assert prepared.fused == 1 and prepared.placement is None and prepared.ok
    domains = {n.domain for n in prepared.model.graph.node}
    assert (DOMAIN in domains) == (target != "portable")
    assert _ai_onnx(prepared.model) == 20
    feeds = _feeds()
    for g, w in zip(_ort(prepared.model, feeds), _ort(original, feeds), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


# --- the rules one by one (onnx.helper models at opset 20) -----------------------------------


def _model(nodes, inputs, outputs, inits=(), opset=20) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _same_outputs(model, lowered, feeds, rtol):
    for g, w in zip(_ort(lowered, feeds), _ort(model, feeds), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_gelu(approximate, elem):
    model = _model(
        [helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)],
        [_vi("x", elem, [3, 7])],
        [_vi("y", elem, [3, 7])],
    )
    result = lower(model, 15)
    assert result.rewritten == {"Gelu": 1}
    assert "Gelu" not in _ops(result.model) and _ai_onnx(result.model) == 15
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    x = np.random.default_rng(1).standard_normal((3, 7)).astype(dtype) * 3
    _same_outputs(model, result.model, {"x": x}, 1e-6 if elem == TensorProto.FLOAT else 2e-3)


@pytest.mark.parametrize(
    ("axis", "bias", "elem"),
    [(-1, True, TensorProto.FLOAT), (1, False, TensorProto.FLOAT), (-2, True, TensorProto.FLOAT16)],
)
def test_layer_normalization(axis, bias, elem):
    shape = [2, 3, 5]
    norm = shape[axis:] if axis >= 0 else shape[len(shape) + axis :]
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal(norm).astype(dtype), "scale")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(norm).astype(dtype), "bias"))
    node = helper.make_node(
        "LayerNormalization",
        ["x", "scale", *(["bias"] if bias else [])],
        ["y"],
        axis=axis,
        epsilon=1e-3,
    )
    model = _model([node], [_vi("x", elem, shape)], [_vi("y", elem, shape)], inits)
    result = lower(model, 15)
    assert result.rewritten == {"LayerNormalization": 1}
    assert "LayerNormalization" not in _ops(result.model)
    x = (rng.standard_normal(shape) * 4 + 1).astype(dtype)
    _same_outputs(model, result.model, {"x": x}, 1e-5 if elem == TensorProto.FLOAT else 4e-3)


def test_layer_normalization_with_its_mean_output_used_is_reported():
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "scale")]
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="ln")
    model = _model(
        [node],
        [_vi("x", TensorProto.FLOAT, [2, 4])],
        [_vi("y", TensorProto.FLOAT, [2, 4]), _vi("mean", TensorProto.FLOAT, [2, 1])],
        inits,
    )
    with pytest.raises(ValueError, match=r"'ln' \(ai\.onnx\.LayerNormalization\)"):
        lower(model, 15)


@pytest.mark.parametrize("keepdims", [0, 1])
def test_opset18_reductions_take_their_axes_as_an_attribute_again(keepdims):
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=keepdims),
        helper.make_node("ReduceMax", ["x"], ["all"], keepdims=keepdims),
        helper.make_node("ReduceL2", ["x"], ["same"], noop_with_empty_axes=1),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
    ]
    shape = numpy_helper.from_array(np.array([-1], np.int64), "shape")
    out_m = [3, 1] if keepdims else [3]
    out_all = [1, 1] if keepdims else []
    model = _model(
        nodes,
        [_vi("x", TensorProto.FLOAT, [3, 4])],
        [
            _vi("m", TensorProto.FLOAT, out_m),
            _vi("all", TensorProto.FLOAT, out_all),
            _vi("same", TensorProto.FLOAT, [3, 4]),
            _vi("flat", TensorProto.FLOAT, [12]),
        ],
        [axes, shape],
    )
    result = lower(model, 15)
    assert result.rewritten == {"ReduceMean": 1, "ReduceL2": 1}
    assert result.relabelled == {"Reshape": (19, 14), "ReduceMax": (20, 13)}
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    _same_outputs(model, result.model, {"x": x}, 1e-6)


def test_unreachable_ops_are_named_with_the_reason():
    nodes = [
        helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2, name="split"),
        helper.make_node("Mish", ["a"], ["m"], name="mish"),
        helper.make_node("Add", ["m", "b"], ["y"], name="add"),
    ]
    model = _model(
        nodes, [_vi("x", TensorProto.FLOAT, [2, "n"])], [_vi("y", TensorProto.FLOAT, [2, None])]
    )
    with pytest.raises(ValueError) as info:
        lower(model, 15)
    message = str(info.value)
    assert "\n" not in message
    assert "'split' (ai.onnx.Split)" in message and "not static" in message
    assert "'mish' (ai.onnx.Mish)" in message and "no version at opset 15" in message
    assert "'add'" not in message


def test_a_node_that_leaves_the_npu_is_reported_not_raised():
    nodes = [
        helper.make_node("IsNaN", ["x"], ["nan"], name="isnan"),
        helper.make_node("Where", ["nan", "zero", "x"], ["y"], name="where"),
    ]
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    model = _model(
        nodes, [_vi("x", TensorProto.FLOAT, [2, 4])], [_vi("y", TensorProto.FLOAT, [2, 4])], [zero]
    )
    prepared = prepare(model, "cann")
    assert _ai_onnx(prepared.model) == 15
    assert not prepared.ok
    assert [n.name for n in prepared.placement.leaving] == ["isnan"]


def test_unknown_target_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="unknown target 'npu'"):
        prepare(onnx.ModelProto(), "npu")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    for target in TARGETS:
        with pytest.raises(ValueError, match=r"bad\.onnx"):
            prepare(bad, target)


def test_cast_saturate_is_dropped_where_it_means_nothing():
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16, saturate=1)]
    model = _model(
        nodes, [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT16, [2, 3])]
    )
    result = lower(model, 15)
    assert result.relabelled == {"Cast": (19, 13)}
    assert not result.model.graph.node[0].attribute[1:]  # only 'to' is left
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    _same_outputs(model, result.model, {"x": x}, 0)


def test_a_model_within_the_cann_opsets_is_not_converted():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = _model(
        nodes, [_vi("x", TensorProto.FLOAT, [2])], [_vi("y", TensorProto.FLOAT, [2])], opset=13
    )
    prepared = prepare(model, "cann")
    assert _ai_onnx(prepared.model) == 13 and prepared.ok


def test_one_file_for_onnxruntime_and_openvino_and_a_portable_one_for_tract():
    original = onnx.load_from_string(torch_export("dynamo", "tanh"))
    feeds = _feeds()
    want = _ort(original, feeds)
    runs = []
    if importlib.util.find_spec("openvino"):
        from kldiv_onnx.runtimes import OpenVINO

        runs.append((OpenVINO(), prepare(original, "openvino").model))
    if importlib.util.find_spec("tract"):
        from kldiv_onnx.runtimes import Tract

        runs.append((Tract(), prepare(original, "portable").model))
    if not runs:
        pytest.skip("neither openvino nor tract installed")
    for adapter, model in runs:
        for g, w in zip(adapter.load(model)(feeds), want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=adapter.name)


@functools.cache
def encoder_export(exporter: str) -> bytes:
    """A transformer encoder layer (attention, GELU, two LayerNorms), a mean over the
    sequence, a head and the 'mean' KL loss: torch 2.13 at its default opset."""
    torch = pytest.importorskip("torch")

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.enc = torch.nn.TransformerEncoderLayer(
                16, 2, 32, dropout=0.0, batch_first=True, activation="gelu"
            )
            self.head = torch.nn.Linear(16, CLASSES)

        def forward(self, x, target):
            logits = self.head(self.enc(x).mean(1))
            log_p = torch.log_softmax(logits, -1)
            return logits, torch.nn.functional.kl_div(log_p, target, reduction="mean")

    args = (torch.randn(2, 5, 16), torch.softmax(torch.randn(2, CLASSES), -1))
    names = {"input_names": ["x", "target"], "output_names": ["logits", "loss"]}
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                program = torch.onnx.export(Encoder().eval(), args, dynamo=True, **names)
                return program.model_proto.SerializeToString()
            buffer = io.BytesIO()
            torch.onnx.export(Encoder().eval(), args, buffer, dynamo=False, **names)
            return buffer.getvalue()
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_transformer_encoder_export_comes_out_whole_on_the_npu(exporter):
    original = onnx.load_from_string(encoder_export(exporter))
    assert _ai_onnx(original) == 20
    prepared = prepare(original, "cann")
    assert prepared.ok, prepared.placement.format()
    assert prepared.fused == 1
    assert prepared.rewritten["LayerNormalization"] == 2 and prepared.rewritten["Gelu"] == 1
    assert prepared.rewritten["ReduceMean"] == 1  # the mean over the sequence (opset-18 form)
    assert "Reshape" in prepared.relabelled
    rng = np.random.default_rng(4)
    z = rng.standard_normal((3, CLASSES))
    feeds = {
        "x": rng.standard_normal((2, 5, 16)).astype(np.float32),
        "target": (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).astype(np.float32)[:2],
    }
    for g, w in zip(_ort(prepared.model, feeds), _ort(original, feeds), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("size", "count"), [(6, 3), (5, 2), (7, 4)])
def test_split_num_outputs_gets_its_sizes(size, count):
    outputs = [f"y{i}" for i in range(count)]
    node = helper.make_node("Split", ["x"], outputs, axis=1, num_outputs=count)
    model = _model(
        [node],
        [_vi("x", TensorProto.FLOAT, [2, size])],
        [_vi(o, TensorProto.FLOAT, [2, None]) for o in outputs],
    )
    result = lower(model, 15)
    assert result.relabelled == {"Split": (18, 13)}
    x = np.arange(2 * size, dtype=np.float32).reshape(2, size)
    _same_outputs(model, result.model, {"x": x}, 0)
