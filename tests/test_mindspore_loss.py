"""kldiv_onnx.mindspore: the KLDivLoss Cell on MindSpore's CPU (forward and gradients against
float64 numpy and MindSpore's own ops.kl_div, PyNative and graph mode, optimiser steps), and
export_onnx."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import DTYPES, REDUCTIONS, assert_matches, make_inputs, scale_of

from kldiv_onnx import runtime
from kldiv_onnx.cli import main
from kldiv_onnx.reference import kl_div as reference

ms = pytest.importorskip("mindspore")
kms = pytest.importorskip("kldiv_onnx.mindspore")
ops, nn = ms.ops, ms.nn
MS_DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}
SHAPES = [((4, 5), (4, 5)), ((3, 4, 5), (5,)), ((1, 6), (4, 1)), ((), ()), ((4,), ())]


@pytest.fixture(autouse=True)
def cpu_pynative():
    # the device can be set only before the first kernel runs (another test module may have run
    # one already, on MindSpore's CPU build's default device, the CPU)
    if ms.get_context("device_target") != "CPU":
        ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _tensor(a: np.ndarray, dtype: str):
    return ms.Tensor(np.asarray(a, np.float32)).astype(MS_DTYPES[dtype])


def _numpy(tensor, dtype: str) -> np.ndarray:
    return tensor.astype(ms.float32).asnumpy().astype(DTYPES[dtype])  # exact for 16-bit types


def _reference_grads(x, t, reduction, log_target, dout=1.0):
    """d(loss)/dx and d(loss)/dt in float64 (0 for t where t == 0 without a log-target)."""
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    shape = np.broadcast_shapes(x.shape, t.shape)
    xb, tb = np.broadcast_to(x, shape), np.broadcast_to(t, shape)
    if log_target:
        gx, gt = -np.exp(tb), np.exp(tb) * (tb - xb + 1)
    else:
        with np.errstate(divide="ignore"):
            gx, gt = -tb, np.where(tb == 0, 0.0, np.log(np.where(tb == 0, 1, tb)) + 1 - xb)
    scale = np.asarray(dout, np.float64)
    if reduction == "mean":
        scale = scale / max(int(np.prod(shape)), 1)
    elif reduction == "batchmean" and x.ndim:
        scale = scale / x.shape[0]

    def sum_to(g: np.ndarray, target: tuple) -> np.ndarray:
        g = g * scale
        lead = g.ndim - len(target)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, d in enumerate(target) if d == 1 and g.shape[lead + i] != 1
        )
        return g.sum(axis=axes, keepdims=True).reshape(target)

    return sum_to(gx, x.shape), sum_to(gt, t.shape)


class Summed(nn.Cell):
    """A scalar of the loss for ms.grad: the loss itself, or its sum for 'none' (MindSpore's
    CPU has no bfloat16 ReduceSum, even over a 0-d tensor)."""

    def __init__(self, loss) -> None:
        super().__init__()
        self.loss = loss

    def construct(self, x, t):
        out = self.loss(x, t)
        return out if out.ndim == 0 else out.sum()


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_forward_matches_float64_reference(shapes, log_target, reduction, dtype_name):
    x, t = make_inputs(*shapes, DTYPES[dtype_name], log_target)
    out = kms.KLDivLoss(reduction, log_target)(_tensor(x, dtype_name), _tensor(t, dtype_name))
    assert out.dtype == MS_DTYPES[dtype_name]
    want = reference(x, t, reduction, log_target)
    assert_matches(_numpy(out, dtype_name), want, dtype_name, scale_of(x, t, reduction, log_target))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype_name", ["float32", "float16"])
def test_matches_mindspore_ops_kl_div(reduction, dtype_name):
    """MindSpore's CPU op (equal shapes, log_target=False, computed in the dtype)."""
    x, t = make_inputs((6, 9), (6, 9), DTYPES[dtype_name], False)
    xm, tm = ms.Tensor(x), ms.Tensor(t)
    want = ops.kl_div(xm, tm, reduction).asnumpy().astype(np.float64)
    ours = kms.KLDivLoss(reduction)(xm, tm).asnumpy().astype(np.float64)
    rtol = {"float32": 1e-5, "float16": 4e-3}[dtype_name]
    assert np.all(np.abs(ours - want) <= rtol * (np.abs(want) + scale_of(x, t, reduction, False)))
    # the input gradient too (MindSpore's gives the target a zero gradient)
    g_ours = ms.grad(Summed(kms.KLDivLoss(reduction)), grad_position=0)(xm, tm).asnumpy()
    g_ms = ms.grad(lambda a, b: ops.kl_div(a, b, reduction).sum(), grad_position=0)(xm, tm)
    np.testing.assert_allclose(g_ours.astype(np.float64), g_ms.asnumpy(), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("shapes", SHAPES[:3], ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradients_match_float64_reference(shapes, log_target, reduction):
    x, t = make_inputs(*shapes, np.dtype(np.float32), log_target)
    gx, gt = ms.grad(Summed(kms.KLDivLoss(reduction, log_target)), grad_position=(0, 1))(
        ms.Tensor(x), ms.Tensor(t)
    )
    want_x, want_t = _reference_grads(x, t, reduction, log_target)
    assert gx.shape == x.shape and gt.shape == t.shape
    np.testing.assert_allclose(gx.asnumpy(), want_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gt.asnumpy(), want_t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_gradients_keep_the_dtype(dtype_name):
    x, t = make_inputs((3, 4), (3, 4), DTYPES[dtype_name], False)
    gx, gt = ms.grad(Summed(kms.KLDivLoss("batchmean")), grad_position=(0, 1))(
        _tensor(x, dtype_name), _tensor(t, dtype_name)
    )
    assert gx.dtype == gt.dtype == MS_DTYPES[dtype_name]
    want_x, want_t = _reference_grads(x, t, "batchmean", False)
    rtol = {"float16": 2e-3, "bfloat16": 1e-2}[dtype_name]
    np.testing.assert_allclose(_numpy(gx, "float32"), want_x, rtol=rtol, atol=rtol * 0.1)
    np.testing.assert_allclose(_numpy(gt, "float32"), want_t, rtol=rtol, atol=rtol)


@pytest.mark.parametrize(
    ("reduction", "log_target", "shapes"),
    [("batchmean", False, ((4, 5), (4, 5))), ("none", True, ((3, 4, 5), (5,)))],
    ids=str,
)
def test_graph_mode(reduction, log_target, shapes):
    x, t = make_inputs(*shapes, np.dtype(np.float32), log_target)
    ms.set_context(mode=ms.GRAPH_MODE)
    net = Summed(kms.KLDivLoss(reduction, log_target))
    out = net(ms.Tensor(x), ms.Tensor(t))
    gx, gt = ms.grad(net, grad_position=(0, 1))(ms.Tensor(x), ms.Tensor(t))
    want = reference(x, t, reduction, log_target).sum()
    np.testing.assert_allclose(float(out.asnumpy()), want, rtol=1e-5)
    want_x, want_t = _reference_grads(x, t, reduction, log_target)
    np.testing.assert_allclose(gx.asnumpy(), want_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gt.asnumpy(), want_t, rtol=1e-4, atol=1e-5)


class Student(nn.Cell):
    def __init__(self, loss) -> None:
        super().__init__()
        ms.set_seed(0)
        self.fc = nn.Dense(6, 4)
        self.loss = loss

    def construct(self, x, t):
        return self.loss(ops.log_softmax(self.fc(x), -1), t)


class OpsKLDiv(nn.Cell):
    def construct(self, x, t):
        return ops.kl_div(x, t, "batchmean")


def _train(loss, steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    x = ms.Tensor(rng.standard_normal((16, 6)).astype(np.float32))
    t = ms.Tensor(rng.dirichlet(np.ones(4), 16).astype(np.float32))
    net = Student(loss)
    optimizer = nn.SGD(net.trainable_params(), learning_rate=0.5)
    step = nn.TrainOneStepCell(net, optimizer)
    losses = [float(step(x, t).asnumpy()) for _ in range(steps)]
    return [losses, *(p.asnumpy() for p in net.trainable_params())]


def test_optimiser_steps_track_ops_kl_div():
    ours = _train(kms.KLDivLoss("batchmean"), 20)
    theirs = _train(OpsKLDiv(), 20)
    assert ours[0][-1] < 0.9 * ours[0][0]  # it learns
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        kms.KLDivLoss("average")
    with pytest.raises(ValueError, match="log_target"):
        kms.KLDivLoss("sum", log_target=2)
    loss = kms.KLDivLoss("sum")
    with pytest.raises(TypeError, match="Int32"):
        loss(ms.Tensor(np.zeros(3, np.int32)), ms.Tensor(np.zeros(3, np.int32)))
    with pytest.raises(TypeError, match="Float16"):
        loss(ms.Tensor(np.zeros(3, np.float32)), ms.Tensor(np.zeros(3, np.float16)))
    with pytest.raises(ValueError, match="do not broadcast"):
        loss(ms.Tensor(np.zeros((2, 3), np.float32)), ms.Tensor(np.zeros((4,), np.float32)))


def test_export_onnx_backbone_plus_loss(tmp_path):
    backbone = Student(kms.KLDivLoss()).fc
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    t = rng.dirichlet(np.ones(4), 5).astype(np.float32)
    path = tmp_path / "student.onnx"
    model = kms.export_onnx(
        backbone, kms.KLDivLoss("batchmean"), ms.Tensor(x), file_name=path, log_softmax=True
    )
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert [n.op_type for n in model.graph.node if n.domain == "kldiv_onnx"] == [
        "KLDivLoss_batchmean"
    ]
    logits_name = model.graph.output[0].name
    sess = runtime.session(model, providers=["CPUExecutionProvider"])
    logits, loss = runtime.run(sess, {model.graph.input[0].name: x, "target": t})
    want_logits = backbone(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-6)
    log_p = ops.log_softmax(ms.Tensor(want_logits), -1).asnumpy()
    np.testing.assert_allclose(loss, reference(log_p, t, "batchmean"), rtol=1e-5)
    ms_loss = kms.KLDivLoss("batchmean")(ms.Tensor(log_p), ms.Tensor(t)).asnumpy()
    np.testing.assert_allclose(loss, ms_loss, rtol=1e-5)
    assert logits_name != "kldiv_loss"
    assert main(["check", "--provider", "cann", str(path)]) == 0


def test_without_mindspore_the_import_says_not_installed():
    code = (
        "import sys; sys.modules['mindspore'] = None\n"
        "try:\n    import kldiv_onnx.mindspore\n"
        "except ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "MindSpore, which is not installed: pip install 'kldiv-onnx[mindspore]'" in done.stdout
