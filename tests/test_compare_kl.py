"""compare's KL (the native KLDivRows op, and the same core called without onnxruntime through
``kldiv_onnx._core``, the way compare runs it) against an 80-bit long-double numpy reference:
accuracy at every size of KL and every kind, zeros, NaN and infinities, top-1 agreement as numpy's
argmax, thread independence, the same bits both ways, the numpy fallback, and the errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto, helper

from kldiv_onnx import native, runtime
from kldiv_onnx._contract import DOMAIN, ROWS_OP
from kldiv_onnx.comparison.models import KINDS, KLStage, kl_model, kl_rows

WAYS = ("op", "core")
"""The KLDivRows op in a session, and the core module (compare's way)."""


def reference(base: np.ndarray, candidate: np.ndarray, kind: str, t: float = 1.0) -> np.ndarray:
    """The textbook KL per row in long double (good to ~1e-19 |log p|)."""
    logs = []
    for z in (base, candidate):
        z = z.astype(np.longdouble)
        if kind == "probs":
            with np.errstate(divide="ignore"):
                logs.append(np.log(z / z.sum(axis=-1, keepdims=True)))
            continue
        z = z / np.longdouble(t) if kind == "logits" else z
        m = z.max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            logs.append(z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))
    lp, lq = logs
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p == 0, 0, p * (lp - lq))
    return terms.sum(axis=-1).astype(np.float64)


def rows(
    n: int, classes: int, noise: float, kind: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of scale 3 and a copy perturbed by ``noise``, as ``kind`` holds them."""
    rng = np.random.default_rng(seed)
    zb = 3 * rng.normal(size=(n, classes))
    zc = zb + noise * rng.normal(size=zb.shape)
    if kind != "logits":
        ls = [z - z.max(-1, keepdims=True) for z in (zb, zc)]
        ls = [z - np.log(np.exp(z).sum(-1, keepdims=True)) for z in ls]
        zb, zc = (np.exp(z) if kind == "probs" else z for z in ls)
    return zb.astype(np.float32), zc.astype(np.float32)


def run(base, candidate, kind="logits", temperature=1.0, threads=None, way="op"):
    if way == "core":
        kl, agree = np.empty(len(base)), np.empty(len(base), dtype=bool)
        native.core().row_kl(base, candidate, kind, temperature, kl, agree, threads or 0)
        return kl, agree
    sess = runtime.session(kl_model(kind, temperature), fused=True, threads=threads)
    return runtime.run(sess, {"base": base, "candidate": candidate})


def test_the_wheel_builds_the_core_module_with_the_library():
    assert native.available() and native.core() is not None


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", [1, 10, 100, 1000, 32001])
@pytest.mark.parametrize("noise", [1e-5, 1e-3, 0.3, 3.0])
def test_accurate_at_every_size_of_kl(kind, classes, noise, way):
    """Relative error ≤ 2e-6 from KL ~ 1e-11 (near-identical outputs) to KL ~ 10."""
    base, candidate = rows(8 if classes > 1000 else 37, classes, noise, kind)
    t = 2.5 if kind == "logits" else 1.0
    kl, agree = run(base, candidate, kind, t, way=way)
    want = reference(base, candidate, kind, t)
    assert kl.dtype == np.float64 and kl.shape == (len(base),)
    np.testing.assert_allclose(kl, want, rtol=2e-6, atol=1e-18)
    np.testing.assert_array_equal(agree, base.argmax(-1) == candidate.argmax(-1))


def test_resolves_what_the_textbook_float32_form_cannot():
    """Near-identical logits (KL ~ 1e-10): the op keeps 6 digits where log-softmax in float32,
    exp(lp) (lp - lq) summed in double, is off by more than the KL itself."""
    base, candidate = rows(64, 1000, 1e-5, "logits")
    want = reference(base, candidate, "logits")
    kl, _ = run(base, candidate)

    def log_softmax32(z):
        m = z.max(-1, keepdims=True)
        return (z - m) - np.log(np.exp(z - m).sum(-1, keepdims=True, dtype=np.float32))

    lp, lq = log_softmax32(base), log_softmax32(candidate)
    textbook = (np.exp(lp) * (lp - lq)).astype(np.float64).sum(-1)
    assert np.max(np.abs(kl / want - 1)) < 2e-6
    assert np.median(np.abs(textbook / want - 1)) > 1


@pytest.mark.parametrize("way", WAYS)
def test_zeros_infinities_and_nan(way):
    b = np.sin(np.arange(20, dtype=np.float32))
    c = np.cos(np.arange(20, dtype=np.float32))
    cases = np.stack([b, b, b, b, b, b, b])
    cand = np.stack([c, c, c, c, c, c, c])
    cases[1, 3] = -np.inf  # P = 0 there: adds 0
    cases[2, 3] = cand[2, 3] = -np.inf  # both 0 at the same class
    cand[3, 5] = -np.inf  # Q = 0 where P > 0: +inf
    cand[4, 17] = np.nan  # NaN: NaN, top-1 at the NaN (numpy's argmax)
    cases[5, 0] = np.inf  # +inf logit: NaN
    cand[6, 2] = cases[6, 2] + 100  # e^100 overflows float32: the float64 path
    kl, agree = run(cases, cand, way=way)
    want = reference(cases, cand, "logits")
    for i in (0, 1, 2, 6):
        assert kl[i] == pytest.approx(want[i], rel=2e-6), i
    assert kl[3] == np.inf and np.isnan(kl[4]) and np.isnan(kl[5])
    np.testing.assert_array_equal(agree, cases.argmax(-1) == cand.argmax(-1))
    same, _ = run(cases[:1], cases[:1], way=way)
    assert same[0] == 0.0


@pytest.mark.parametrize("way", WAYS)
def test_probs_with_zeros_and_negative_values(way):
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.25, 0.25, 0.5], [0.5, 0.5, 0.0]], np.float32)
    q = np.array(
        [[0.25, 0.75, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [0.5, 0.6, -0.1]], np.float32
    )
    kl, _ = run(p, q, "probs", way=way)
    assert kl[0] == pytest.approx(0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75), rel=1e-7)
    assert kl[1] == 0.0 and kl[2] == np.inf and np.isnan(kl[3])


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("classes", [10, 1500])
def test_the_same_bits_for_any_thread_count(way, classes):
    base, candidate = rows(300 * 1500 // classes, classes, 1e-2, "logits")
    one = run(base, candidate, threads=1, way=way)
    for threads in (2, 3):
        other = run(base, candidate, threads=threads, way=way)
        assert np.array_equal(one[0], other[0]) and np.array_equal(one[1], other[1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", [1, 7, 16, 17, 100, 127, 128, 129, 1000])
def test_the_core_module_gives_the_op_bits(kind, classes):
    """compare's way (the core module, every core) and the op in a session: the same bits, on
    ordinary rows and on rows with NaN, infinities and overflowing ratios."""
    base, candidate = rows(53, classes, 0.3, kind, seed=classes)
    base[3, 0] = np.nan
    candidate[5, classes - 1] = np.nan
    base[7, classes // 2] = -np.inf if kind != "probs" else 0.0
    candidate[9, 0] = np.inf
    candidate[11] = base[11] + (80.0 if kind != "probs" else 0.0)
    t = 1.5 if kind == "logits" else 1.0
    op = run(base, candidate, kind, t)
    core = run(base, candidate, kind, t, way="core")
    np.testing.assert_array_equal(core[0], op[0])
    np.testing.assert_array_equal(core[1], op[1])


def test_compare_runs_the_core_module_and_the_session_where_it_is_missing(monkeypatch):
    base, candidate = rows(40, 10, 0.3, "logits")
    model = kl_model("logits", 1.0).SerializeToString()
    stage = KLStage(model, "logits", 1.0, native.library_path(), None)
    assert stage.path == "core"
    monkeypatch.setattr(native, "core", lambda: None)
    fallback = KLStage(model, "logits", 1.0, native.library_path(), None)
    assert fallback.path == "session"
    assert KLStage(model, "logits", 1.0, None, None).path == "numpy"
    got, want = stage(base, candidate), fallback(base, candidate)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_fallback_agrees(kind):
    """Without the native library compare computes the same in float64 with numpy."""
    base, candidate = rows(64, 100, 0.3, kind)
    t = 2.0 if kind == "logits" else 1.0
    kl, agree = kl_rows(base, candidate, kind, t)
    op_kl, op_agree = run(base, candidate, kind, t)
    np.testing.assert_allclose(kl, op_kl, rtol=1e-6)
    np.testing.assert_array_equal(agree, op_agree)


def _model(attrs, dtype=TensorProto.FLOAT, rank=2):
    dims = ["n", "c"][:rank]
    node = helper.make_node(ROWS_OP, ["base", "candidate"], ["kl", "agree"], domain=DOMAIN, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, dtype, dims) for n in ("base", "candidate")],
        [
            helper.make_tensor_value_info("kl", TensorProto.DOUBLE, None),
            helper.make_tensor_value_info("agree", TensorProto.BOOL, None),
        ],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid(DOMAIN, 1)],
        ir_version=8,
    )


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"kind": "odds"}, "attribute kind=b'odds' is not one of 'logits', 'log-probs', 'probs'"),
        ({"kind": 3}, "attribute 'kind' must be a string"),
        ({"temperature": 0.0}, "attribute temperature=0.0 must be finite and > 0"),
        ({"temperature": float("inf")}, "temperature=inf must be finite"),
        ({"temperature": 2}, "attribute 'temperature' must be a float, got INT 2"),
    ],
)
def test_bad_attributes_name_the_op_and_value(attrs, message):
    with pytest.raises(Exception, match="KLDivRows") as info:
        runtime.session(_model(attrs), fused=True)
    assert message in str(info.value)


def test_bad_inputs_name_the_op_and_values():
    sess = runtime.session(_model({}), fused=True)
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(Exception, match=r"KLDivRows.*base shape \[2, 3\] and candidate shape"):
        sess.run(None, {"base": a, "candidate": np.zeros((2, 4), np.float32)})
    with pytest.raises(Exception, match=r"KLDivRows.*class axis \(the last\) has 0 entries"):
        sess.run(None, {"base": a[:, :0], "candidate": a[:, :0]})
    empty = sess.run(None, {"base": a[:0], "candidate": a[:0]})
    assert empty[0].shape == (0,) and empty[1].shape == (0,)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_core_module():
    """After the module's pool has run, a forked child (none of its threads) gives the same
    bits and exits."""
    base, candidate = rows(4000, 10, 0.1, "logits")
    want = run(base, candidate, way="core")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        got = run(base, candidate, way="core")
        os._exit(0 if np.array_equal(got[0], want[0]) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
