"""OpenVINO: the function-form file runs through the registration of every kldiv_onnx op."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_inputs
from onnx import TensorProto, helper
from runtime_cases import MATRIX, check_model_file, check_variant, model_cases

from kldiv_onnx._contract import DOMAIN, GENERIC_OP, REDUCTIONS, variant_ops
from kldiv_onnx.export import build_model
from kldiv_onnx.reference import kl_div

ov = pytest.importorskip("openvino")
kov = pytest.importorskip("kldiv_onnx.openvino")


@pytest.fixture(scope="module")
def core():
    return kov.core()


def _runner(core):
    return lambda model, feeds: kov.compile_model(model, ov_core=core)(feeds)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(("reduction", "log_target", "shape"), MATRIX)
def test_every_variant_from_the_function_form_file(core, reduction, log_target, dtype, shape):
    check_variant(_runner(core), reduction, log_target, dtype, shape)


def test_an_unregistered_core_cannot_read_the_function_form():
    with pytest.raises(ValueError, match=r"kldiv_onnx\.KLDivLoss_batchmean"):
        kov.read_model(build_model("batchmean"), ov.Core())


def test_every_op_is_registered():
    names = {GENERIC_OP, *variant_ops()}
    assert len(kov.extensions()) == len(names) == 9


def _generic(attrs: dict, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    node = helper.make_node(GENERIC_OP, ["input", "target"], ["loss"], domain=DOMAIN, **attrs)
    graph = helper.make_graph(
        [node],
        "generic",
        [helper.make_tensor_value_info(n, dtype, [3, 4]) for n in ("input", "target")],
        [helper.make_tensor_value_info("loss", dtype, None)],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid(DOMAIN, 1)]
    )


@pytest.mark.parametrize("reduction", [*REDUCTIONS, None])
@pytest.mark.parametrize("log_target", [0, 1, None])
def test_generic_op_reads_its_attributes(core, reduction, log_target):
    attrs = {
        k: v for k, v in (("reduction", reduction), ("log_target", log_target)) if v is not None
    }
    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), bool(log_target))
    (got,) = kov.compile_model(_generic(attrs), ov_core=core)({"input": x, "target": t})
    want = kl_div(x, t, reduction or "mean", bool(log_target))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [({"reduction": "avg"}, "reduction must be one of"), ({"log_target": 2}, "log_target")],
)
def test_generic_op_bad_attribute_names_the_node(core, attrs, message):
    with pytest.raises(ValueError, match=message) as info:
        kov.read_model(_generic(attrs), core)
    assert "KLDivLoss" in str(info.value)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_corner_cases_follow_the_reference(core, reduction):
    model = build_model(reduction, False, "float32", [None], [None])
    run = kov.compile_model(model, ov_core=core)
    x = np.array([-np.inf, 1.0, 0.5, np.nan, 2.0], np.float32)
    t = np.array([0.0, -1.0, 0.3, 0.0, np.nan], np.float32)
    np.testing.assert_allclose(run({"input": x, "target": t})[0], kl_div(x, t, reduction))
    empty = np.zeros((0,), np.float32)
    np.testing.assert_equal(
        run({"input": empty, "target": empty})[0], kl_div(empty, empty, reduction)
    )


def test_zero_d_batchmean_is_the_sum(core):
    run = kov.compile_model(build_model("batchmean", False, "float32", [], []), ov_core=core)
    x, t = np.array(-1.2, np.float32), np.array(0.3, np.float32)
    np.testing.assert_allclose(
        run({"input": x, "target": t})[0], kl_div(x, t, "batchmean"), atol=1e-7
    )


def test_bfloat16_computes_in_float32_and_rounds_once(core):
    """On this CPU (no native bfloat16) and any other: bfloat16 in and out, float32 inside;
    the result is the float32 loss rounded to bfloat16 (within one bfloat16 ulp)."""
    import ml_dtypes

    bf16 = np.dtype(ml_dtypes.bfloat16)
    x, t = make_inputs((64, 33), (64, 33), bf16, False)
    run = kov.compile_model(build_model("sum", False, "bfloat16", [64, 33], [64, 33]), ov_core=core)
    (got,) = run({"input": x, "target": t})
    assert got.dtype == bf16
    f32 = kl_div(x.astype(np.float32), t.astype(np.float32), "sum")
    assert abs(float(got) - float(f32)) <= 2.0**-8 * abs(float(f32))


@pytest.mark.parametrize("case", list(model_cases()))
def test_model_files_of_embed_distill_fuse(core, case):
    if case == "fuse":
        pytest.importorskip("torch")
    check_model_file(_runner(core), model_cases()[case])


def _layers(model: onnx.ModelProto, core) -> list[tuple[str, str]]:
    runtime_model = kov.compiled(model, ov_core=core).get_runtime_model()
    layers = []
    for op in runtime_model.get_ops():
        info = op.get_rt_info()
        layers.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str)))
    return layers


def test_bfloat16_stays_at_the_edges_and_the_math_runs_in_float32(core):
    """What OpenVINO's CPU plugin makes of a bfloat16 file: bf16 Input/Output layers, f32
    arithmetic and reductions (the converters' casts; compiled() pins the f32 hint)."""
    layers = _layers(build_model("batchmean", False, "bfloat16", [8, 10], [8, 10]), core)
    kinds = {kind: precision for kind, precision in layers}
    assert kinds["Input"] == kinds["Output"] == "bf16"
    math = [p for kind, p in layers if kind in ("Eltwise", "Reduce", "Divide", "Multiply")]
    assert math and set(math) == {"f32"}, layers
    assert kov.compiled(build_model(), ov_core=core).get_property("INFERENCE_PRECISION_HINT") == (
        ov.Type.f32
    )


def test_prepare_for_openvino_reads_the_file_and_names_what_it_cannot_convert():
    from kldiv_onnx.prepare import prepare

    assert prepare(build_model("sum"), "openvino").ok
    node = helper.make_node("Frob", ["input"], ["loss"], name="frob", domain="my.ops")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("my.ops", 1)]
    )
    with pytest.raises(ValueError, match=r"my\.ops\.Frob"):
        prepare(model, "openvino")
