"""build_model: both forms run in onnxruntime (composite body) and in onnx.reference after
inlining, against the float64 reference; the model is valid, typed and CANN-friendly."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest
from conftest import DTYPES, REDUCTIONS, SHAPES, assert_matches, make_inputs, scale_of
from onnx.reference import ReferenceEvaluator

from kldiv_onnx import DOMAIN, build_model, op_name, runtime
from kldiv_onnx._contract import IR_VERSION, variant_ops
from kldiv_onnx.reference import kl_div as reference

FORBIDDEN = {"CastLike", "IsNaN", "If", "Loop", "Scan"}


def _run_ort(model: onnx.ModelProto, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    sess = runtime.session(model, providers=["CPUExecutionProvider"], fused=False)
    return runtime.run(sess, {"input": x, "target": t})[0]


def _run_reference(model: onnx.ModelProto, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return ReferenceEvaluator(onnx.inliner.inline_local_functions(model)).run(
            None, {"input": x, "target": t}
        )[0]


@pytest.mark.parametrize("form", ["function", "inline"])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_model_matrix(form, shapes, log_target, reduction, dtype_name):
    x, t = make_inputs(*shapes, DTYPES[dtype_name], log_target)
    model = build_model(reduction, log_target, dtype_name, *shapes, form=form)
    ref = reference(x, t, reduction, log_target)
    scale = scale_of(x, t, reduction, log_target)
    assert_matches(_run_ort(model, x, t), ref, dtype_name, scale)
    out = _run_reference(model, x, t)
    if dtype_name == "bfloat16":  # onnx.reference returns bfloat16 as ml_dtypes arrays
        out = np.asarray(out).astype(DTYPES[dtype_name])
    assert_matches(np.asarray(out), ref, dtype_name, scale)


@pytest.mark.parametrize("form", ["function", "inline"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_valid_and_shape_inferred(form, reduction, dtype_name):
    model = build_model(reduction, False, dtype_name, ["batch", 10], [1, 10], form=form)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION <= 10
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.helper.np_dtype_to_tensor_dtype(DTYPES[dtype_name])
    dims = [d.dim_param or d.dim_value for d in out.shape.dim]
    assert dims == (["batch", 10] if reduction == "none" else [])


def test_function_form_is_one_custom_node():
    model = build_model("batchmean", True)
    (node,) = model.graph.node
    assert (node.domain, node.op_type) == (DOMAIN, "KLDivLoss_batchmean_logtarget")
    (function,) = model.functions
    assert (function.domain, function.name) == (node.domain, node.op_type)
    assert not function.overload  # never rely on the IR-10 overload field
    ops = {n.op_type for n in function.node}
    assert not ops & FORBIDDEN


def test_inline_form_has_standard_ops_only():
    model = build_model("mean", False, "bfloat16", form="inline")
    assert not model.functions
    assert {n.domain for n in model.graph.node} == {""}
    assert not {n.op_type for n in model.graph.node} & FORBIDDEN
    assert [o.domain for o in model.opset_import] == [""]


def test_every_variant_has_its_own_name():
    names = {op_name(r, lt) for r in REDUCTIONS for lt in (False, True)}
    assert len(names) == 8 == len(variant_ops())


def test_one_model_holds_several_variants():
    """Two variants side by side in one graph compute their own results (no overload)."""
    a = build_model("sum", False)
    b = build_model("mean", True)
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node(
                a.graph.node[0].op_type, ["input", "target"], ["s"], domain=DOMAIN
            ),
            onnx.helper.make_node(
                b.graph.node[0].op_type, ["input", "target"], ["m"], domain=DOMAIN
            ),
        ],
        "two",
        list(a.graph.input),
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, []) for n in "sm"],
    )
    model = onnx.helper.make_model(
        graph,
        opset_imports=a.opset_import,
        functions=[*a.functions, *b.functions],
        ir_version=a.ir_version,
    )
    onnx.checker.check_model(model, full_check=True)
    x, t = make_inputs((5, 4), (5, 4), np.dtype(np.float32), False)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    s, m = sess.run(None, {"input": x, "target": t})
    np.testing.assert_allclose(s, reference(x, t, "sum"), rtol=1e-5)
    np.testing.assert_allclose(m, reference(x, t, "mean", True), rtol=1e-5)
    s2, m2 = ReferenceEvaluator(model).run(None, {"input": x, "target": t})
    np.testing.assert_allclose([s2, m2], [s, m], rtol=1e-5)


@pytest.mark.parametrize("opset", [13, 14, 15, 18, 21])
def test_opsets(opset):
    model = build_model("batchmean", opset=opset)
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    assert model.functions[0].opset_import[0].version == opset
    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), False)
    np.testing.assert_allclose(_run_ort(model, x, t), reference(x, t, "batchmean"), rtol=1e-5)


def test_default_opset_is_cann_friendly():
    versions = {o.domain: o.version for o in build_model().opset_import}
    assert 13 <= versions[""] <= 15


def test_symbolic_and_unnamed_dims():
    model = build_model("none", input_shape=[None, "c"], target_shape=["n", 1])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and not dims[0].dim_param
    x, t = make_inputs((3, 4), (3, 1), np.dtype(np.float32), False)
    np.testing.assert_allclose(_run_ort(model, x, t), reference(x, t, "none"), rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reduction": "avg"}, "'avg'"),
        ({"form": "graph"}, "'graph'"),
        ({"opset": 12}, "opset must lie"),
        ({"opset": 99}, "opset must lie"),
        ({"input_shape": [2, 3], "target_shape": [4, 3]}, r"\(2, 3\) and target shape \(4, 3\)"),
        ({"input_shape": [-1]}, "dims must be"),
        ({"input_shape": "2,3"}, "sequence of dims"),
        ({"log_target": 2}, "log_target"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


@pytest.mark.parametrize("dtype", ["float64", "int32", np.int8])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype must be one of"):
        build_model(dtype=dtype)


def _generic_model(attrs: dict) -> onnx.ModelProto:
    node = onnx.helper.make_node("KLDivLoss", ["input", "target"], ["loss"], domain=DOMAIN, **attrs)
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node],
        "generic",
        [value(n, onnx.TensorProto.FLOAT, [3, 4]) for n in ("input", "target")],
        [value("loss", onnx.TensorProto.FLOAT, None)],
    )
    opsets = [onnx.helper.make_opsetid("", 15), onnx.helper.make_opsetid(DOMAIN, 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(
    ("attrs", "reduction", "log_target"),
    [
        ({}, "mean", False),
        ({"reduction": "sum", "log_target": 1}, "sum", True),
        ({"reduction": "none"}, "none", False),
    ],
)
def test_reference_ops_run_the_generic_op(attrs, reduction, log_target):
    """onnx.reference runs the generic KLDivLoss node (no function body) with reference_ops."""
    from kldiv_onnx.reference import reference_ops

    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), log_target)
    sess = ReferenceEvaluator(_generic_model(attrs), new_ops=reference_ops())
    (out,) = sess.run(None, {"input": x, "target": t})
    np.testing.assert_allclose(out, reference(x, t, reduction, log_target).astype(np.float32))
    assert out.dtype == np.float32


def test_reference_ops_reject_a_bad_log_target():
    from kldiv_onnx.reference import reference_ops

    x, t = make_inputs((3, 4), (3, 4), np.dtype(np.float32), False)
    sess = ReferenceEvaluator(_generic_model({"log_target": 2}), new_ops=reference_ops())
    with pytest.raises(ValueError, match="log_target=2 must be 0 or 1"):
        sess.run(None, {"input": x, "target": t})
