"""The native kernel (libkldiv_onnx_ops.so) run by onnxruntime, against the float64 reference.

Single-node models are built by hand (domain ``kldiv_onnx`` opset 1, no function body), so
what runs is the registered kernel or nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper

import kldiv_onnx
from kldiv_onnx import doctor, native
from kldiv_onnx._contract import DOMAIN, GENERIC_OP, REDUCTIONS, op_name, variant_ops
from kldiv_onnx.native import (
    ENV_VAR,
    ISA_ENV_VAR,
    LIBRARY_NAME,
    LibraryDamagedError,
    active_target,
    api_version,
    available,
    library_path,
)
from kldiv_onnx.reference import kl_div, pointwise

DTYPES = {
    "float32": (np.dtype(np.float32), TensorProto.FLOAT, 2.0**-24),
    "float16": (np.dtype(np.float16), TensorProto.FLOAT16, 2.0**-11),
    "bfloat16": (np.dtype(ml_dtypes.bfloat16), TensorProto.BFLOAT16, 2.0**-8),
}


# ------------------------------------------------------------------------------------- helpers
def make_model(op, dtype="float32", attrs=None, t_dtype=None, x_shape=None, t_shape=None):
    onnx_type = DTYPES[dtype][1]
    t_type = DTYPES[t_dtype or dtype][1]
    node = helper.make_node(op, ["x", "t"], ["y"], domain=DOMAIN, name="n0", **(attrs or {}))
    graph = helper.make_graph(
        [node],
        "kldiv",
        [
            helper.make_tensor_value_info("x", onnx_type, x_shape),
            helper.make_tensor_value_info("t", t_type, t_shape),
        ],
        [helper.make_tensor_value_info("y", onnx_type, None)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid(DOMAIN, 1)],
        ir_version=8,
    )
    return model.SerializeToString()


def session(model, threads=1, profile_prefix=None):
    options = ort.SessionOptions()
    options.register_custom_ops_library(library_path())
    options.intra_op_num_threads = threads
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


_SESSIONS: dict[tuple, ort.InferenceSession] = {}


def cached_session(op, dtype, threads=1):
    key = (op, dtype, threads)
    if key not in _SESSIONS:
        _SESSIONS[key] = session(make_model(op, dtype), threads)
    return _SESSIONS[key]


def run(sess, x, t, out_shape):
    """Runs through IOBinding (onnxruntime's numpy bridge has no bfloat16)."""
    binding = sess.io_binding()
    onnx_type = {np.dtype(v[0]): v[1] for v in DTYPES.values()}[x.dtype]
    raw = np.uint16 if x.dtype.itemsize == 2 else np.float32
    # Keep the buffers alive until the run: some onnxruntime versions (1.24) hold no reference.
    # Not np.ascontiguousarray: numpy < 2 makes a 0-d array 1-d.
    buffers = [np.array(arr, order="C", copy=True).view(raw) for arr in (x, t)]
    for name, buffer in zip(("x", "t"), buffers, strict=True):
        value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buffer, onnx_type)
        binding.bind_ortvalue_input(name, value)
    out = np.empty(out_shape, dtype=raw)
    binding.bind_ortvalue_output(
        "y", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(out, onnx_type)
    )
    sess.run_with_iobinding(binding)
    return out.view(x.dtype)


def sample(shape_x, shape_t, log_target, dtype, seed=0, zeros=True):
    """input = log_softmax-like values, target = softmax-like (or its log); some target zeros."""
    rng = np.random.default_rng(seed)
    x = np.log(rng.uniform(1e-3, 1.0, size=shape_x))
    t = rng.uniform(0.0, 1.0, size=shape_t)
    if zeros and t.size:
        t.reshape(-1)[:: max(1, t.size // 3)] = 0.0
    if log_target:
        t = np.log(np.where(t == 0, 1e-3, t))
    np_dtype = DTYPES[dtype][0]
    return np.asarray(x).astype(np_dtype), np.asarray(t).astype(np_dtype)


def scale(x, t, log_target):
    """Magnitude of each loss term: the scale of float32 rounding errors."""
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64)
    with np.errstate(all="ignore"):
        if log_target:
            s = np.exp(t) * (np.abs(t) + np.abs(x))
        else:
            s = np.where(
                t == 0, 0.0, np.abs(t) * (np.abs(np.log(np.where(t == 0, 1, t))) + np.abs(x))
            )
    return np.broadcast_to(s, np.broadcast_shapes(x.shape, t.shape))


def check(got, x, t, reduction, log_target, dtype):
    eps = DTYPES[dtype][2]
    want = kl_div(x.astype(np.float64), t.astype(np.float64), reduction, log_target)
    s = scale(x, t, log_target)
    if reduction != "none":
        s = np.asarray(s.sum())
        if reduction == "mean" and s.size:
            s = s / max(1, int(np.prod(np.broadcast_shapes(x.shape, t.shape))))
        elif reduction == "batchmean" and x.ndim and x.shape[0]:
            s = s / x.shape[0]
    assert got.shape == want.shape
    got64 = got.astype(np.float64)
    tol = 2 * eps * np.abs(want) + 1e-5 * s + (6e-8 if dtype == "float16" else 0.0) + 1e-30
    # the float64 result rounded to the dtype (a value just past float32's range is inf there)
    with np.errstate(invalid="ignore", over="ignore"):
        rounded = want.astype(DTYPES[dtype][0]).astype(np.float64)
        ok = (np.isnan(want) & np.isnan(got64)) | (got64 == want) | (got64 == rounded)
        ok |= np.abs(got64 - want) <= tol
    assert ok.all(), f"got {got64[~ok][:5]} want {want[~ok][:5]}"


# ------------------------------------------------------------------------------------- library
def test_library_is_found():
    assert available()
    assert library_path().endswith("libkldiv_onnx_ops.so")


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not installed")
def test_only_the_entry_points_are_exported():
    """RegisterCustomOps for onnxruntime, KLDivOnnxActiveTarget and KLDivOnnxOrtApiVersion
    for the doctor; nothing else."""
    out = subprocess.run(
        ["nm", "-D", "--defined-only", library_path()], capture_output=True, text=True, check=True
    ).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert symbols == {"RegisterCustomOps", "KLDivOnnxActiveTarget", "KLDivOnnxOrtApiVersion"}


def _python(code, *args, env=None, cwd=None):
    """Runs `code` in a fresh interpreter (the SIMD choice and the library are per process);
    `env` entries set to None are removed from the environment."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={k: v for k, v in environment.items() if v is not None},
        cwd=cwd,
        check=False,
    )


_ACTIVE_TARGET = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.KLDivOnnxActiveTarget.restype = ctypes.c_char_p
print(lib.KLDivOnnxActiveTarget().decode())
"""


@pytest.mark.parametrize("isa", [None, "avx3", "avx2", "scalar", "sse9"])
def test_active_target_is_readable_with_ctypes(isa):
    proc = _python(_ACTIVE_TARGET, library_path(), env={ISA_ENV_VAR: isa})
    assert proc.returncode == 0, proc.stderr
    target = proc.stdout.strip()
    if isa == "sse9":
        assert target == "error: kldiv_onnx: KLDIV_ONNX_ISA='sse9' is not one of avx3, avx2, scalar"
    elif isa == "scalar":
        assert target == "scalar"
    else:
        assert target in ("avx3", "avx2", "scalar")
        if isa == "avx2":
            assert target != "avx3"


_CORE_TARGET = """
import ctypes, sys
from kldiv_onnx import native
lib = ctypes.CDLL(native.library_path())
lib.KLDivOnnxActiveTarget.restype = ctypes.c_char_p
core = native.core()
print(lib.KLDivOnnxActiveTarget().decode(), core.active_target() if core else None)
"""


@pytest.mark.parametrize("isa", [None, "avx2", "scalar", "sse9"])
def test_the_core_module_takes_the_librarys_simd_path(isa, tmp_path):
    """compare's core module applies KLDIV_ONNX_ISA as the library does; a value naming no path
    leaves it out (the library then reports the error). Run outside the source tree: the
    installed package."""
    proc = _python(_CORE_TARGET, env={ISA_ENV_VAR: isa}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    library, core = proc.stdout.strip().rsplit(" ", 1)
    if isa == "sse9":
        assert library.startswith("error: ") and core == "None"
    else:
        assert core == library


def test_unknown_isa_value_fails_registration():
    code = (
        "import onnxruntime as ort, sys\n"
        "ort.SessionOptions().register_custom_ops_library(sys.argv[1])\n"
    )
    proc = _python(code, library_path(), env={ISA_ENV_VAR: "sse9"})
    assert proc.returncode != 0
    assert "KLDIV_ONNX_ISA='sse9' is not one of avx3, avx2, scalar" in proc.stderr


_BUILD_AND_DROP = """
import sys
import numpy as np, onnxruntime as ort
lib, model_path, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = open(model_path, "rb").read()
x, t = np.full(4, -1.0, np.float32), np.full(4, 0.5, np.float32)
def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def cycle():
    options = ort.SessionOptions()
    options.register_custom_ops_library(lib)
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "t": t})
for _ in range(50):
    cycle()
before = rss_kib()
for _ in range(cycles):
    cycle()
print((rss_kib() - before) / cycles)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc (Linux)")
def test_building_and_dropping_sessions_does_not_leak(tmp_path):
    """onnxruntime unloads the library with the last session using it; it stays resident (and
    registration allocates nothing new), so 1,000 build-and-drop cycles grow RSS < 8 KiB each."""
    model = tmp_path / "m.onnx"
    model.write_bytes(make_model("KLDivLoss_sum"))
    proc = _python(_BUILD_AND_DROP, library_path(), model, 1000)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 8.0, f"{proc.stdout.strip()} KiB per cycle"


_API_VERSION = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.KLDivOnnxOrtApiVersion.restype = ctypes.c_uint32
print(lib.KLDivOnnxOrtApiVersion())
"""


def test_api_version_is_read_from_the_library():
    """api_version() is what the library's KLDivOnnxOrtApiVersion answers in a process of its
    own, no newer than the C API of the onnxruntime that loads it here (its minor release
    number), and what the doctor shows."""
    proc = _python(_API_VERSION, library_path())
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == api_version()
    assert 1 <= api_version() <= int(ort.__version__.split(".")[1])
    session(make_model("KLDivLoss_sum"))  # this onnxruntime provides it
    assert f"requests C API {api_version()}" in doctor.report()


@pytest.mark.parametrize("op", ["KLDivLoss_avg", "KLDivLoss_mean_logtarget_x", "kldivloss_mean"])
def test_names_outside_the_contract_are_not_registered(op):
    """The loaded library registers the contract's names (next test) and nothing near them: a
    body-less node with another name finds no kernel."""
    with pytest.raises(Exception, match=op):
        session(make_model(op))


@pytest.mark.parametrize("op", [*variant_ops(), GENERIC_OP])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_contract_op_is_registered(op, dtype):
    x, t = sample((3, 4), (3, 4), op.endswith("_logtarget"), dtype)
    reduction, log_target = variant_ops().get(op, ("mean", False))
    out_shape = (3, 4) if reduction == "none" else ()
    got = run(cached_session(op, dtype), x, t, out_shape)
    check(got, x, t, reduction, log_target, dtype)


# ------------------------------------------------------------------------------------- values
SHAPES = [
    ((), ()),
    ((7,), ()),
    ((), (7,)),
    ((1,), (1,)),
    ((2, 3, 4), (2, 3, 4)),
    ((10007,), (10007,)),
    ((4, 3, 50), (3, 50)),  # leading broadcast of target
    ((50,), (4, 3, 50)),  # leading broadcast of input
    ((60, 3), (60, 1)),  # trailing broadcast, short rows
    ((5, 300), (5, 1)),  # trailing broadcast, long rows
    ((3, 1, 40), (3, 5, 40)),  # middle broadcast
    ((9, 1), (1, 130)),  # outer product
    ((2, 1, 3, 1, 2), (1, 4, 1, 5, 1)),  # rank 5
    ((0, 3), (3,)),
    ((2, 0), (2, 0)),
    ((0,), ()),
]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_matches_reference(shapes, reduction, log_target, dtype):
    x, t = sample(*shapes, log_target, dtype, seed=len(str(shapes)))
    out_shape = np.broadcast_shapes(*shapes) if reduction == "none" else ()
    got = run(cached_session(op_name(reduction, log_target), dtype), x, t, out_shape)
    check(got, x, t, reduction, log_target, dtype)
    # the generic op with the same configuration as attributes: the same bits
    attrs_got = run(session_generic(reduction, log_target, dtype), x, t, out_shape)
    assert attrs_got.tobytes() == got.tobytes()


def session_generic(reduction, log_target, dtype):
    key = (GENERIC_OP, reduction, log_target, dtype)
    if key not in _SESSIONS:
        model = make_model(
            GENERIC_OP, dtype, attrs={"reduction": reduction, "log_target": int(log_target)}
        )
        _SESSIONS[key] = session(model)
    return _SESSIONS[key]


def test_generic_op_defaults_to_mean_without_log_target():
    x, t = sample((4, 5), (4, 5), False, "float32")
    got = run(cached_session(GENERIC_OP, "float32"), x, t, ())
    check(got, x, t, "mean", False, "float32")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("log_target", [False, True])
def test_special_values(dtype, log_target):
    inf, nan = np.inf, np.nan
    x = np.array([-inf, nan, 1.0, inf, 0.0, 2.0, -inf, inf, 0.5, -1.0])
    t = np.array([0.0, -0.0, -1.0, 0.0, nan, inf, 1.0, inf, 1e-3, -inf])
    np_dtype = DTYPES[dtype][0]
    x, t = x.astype(np_dtype), t.astype(np_dtype)
    got = run(cached_session(op_name("none", log_target), dtype), x, t, x.shape)
    check(got, x, t, "none", log_target, dtype)
    if not log_target:
        assert (got[:2] == 0).all()  # t == 0 gives 0 even for x = -inf or NaN
        assert np.isnan(got[2].astype(np.float32))  # t < 0


@settings(max_examples=80, deadline=None)
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=5, max_side=6),
    reduction=st.sampled_from(REDUCTIONS),
    log_target=st.booleans(),
    dtype=st.sampled_from(list(DTYPES)),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_shapes(shapes, reduction, log_target, dtype, seed):
    x_shape, t_shape = shapes.input_shapes
    x, t = sample(x_shape, t_shape, log_target, dtype, seed=seed)
    out_shape = shapes.result_shape if reduction == "none" else ()
    got = run(cached_session(op_name(reduction, log_target), dtype), x, t, out_shape)
    check(got, x, t, reduction, log_target, dtype)


@settings(max_examples=40, deadline=None)
@given(
    values=hnp.arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.one_of(
            st.floats(-1e4, 1e4, width=32), st.sampled_from([np.inf, -np.inf, np.nan, 0.0])
        ),
    ),
    log_target=st.booleans(),
)
def test_hypothesis_values(values, log_target):
    # input and target from the same draw: any float32 values, incl. inf and NaN
    x = values
    t = np.roll(values, 1) if not log_target else np.clip(np.roll(values, 1), -80, 80)
    got = run(cached_session(op_name("none", log_target), "float32"), x, t, x.shape)
    check(got, x, t, "none", log_target, "float32")


# ------------------------------------------------------------------------------------- threads
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_bitwise_identical_for_1_and_2_threads(reduction):
    n = 2**22 + 123
    x, t = sample((n,), (n,), False, "float32", seed=5, zeros=False)
    outs = [
        run(
            session(make_model(op_name(reduction, False)), threads=k),
            x,
            t,
            (n,) if reduction == "none" else (),
        )
        for k in (1, 2)
    ]
    np.testing.assert_array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))


def test_broadcast_beyond_2_to_31_elements():
    n, m = 65537, 32771  # (n, 1) against (1, m): 2.15e9 elements
    rng = np.random.default_rng(3)
    x = rng.uniform(-3, -1, size=(n, 1)).astype(np.float32)
    t = rng.uniform(0.1, 1.0, size=(1, m)).astype(np.float32)
    x64, t64 = x.astype(np.float64).ravel(), t.astype(np.float64).ravel()
    total = n * np.sum(t64 * np.log(t64)) - x64.sum() * t64.sum()
    got = run(session(make_model("KLDivLoss_sum"), threads=2), x, t, ())
    np.testing.assert_allclose(float(got), total, rtol=1e-5)
    got = run(session(make_model("KLDivLoss_batchmean"), threads=2), x, t, ())
    np.testing.assert_allclose(float(got), total / n, rtol=1e-5)


@pytest.mark.parametrize("log_target", [False, True])
def test_float32_sum_of_2_to_24_within_2e_6(log_target):
    """float32 reductions over 2**24 elements lie within 2e-6 relative of float64."""
    n = 2**24
    x, t = sample((n,), (n,), log_target, "float32", seed=7, zeros=False)
    want = float(kl_div(x, t, "sum", log_target))
    got = run(session(make_model(op_name("sum", log_target)), threads=2), x, t, ())
    assert abs(float(got) - want) <= 2e-6 * abs(want)


# ------------------------------------------------------------------------------------- profiler
def test_profiler_shows_the_fused_node(tmp_path):
    sess = session(make_model("KLDivLoss_batchmean"), profile_prefix=tmp_path / "prof")
    x, t = sample((64, 32), (64, 32), False, "float32")
    run(sess, x, t, ())
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    ops = {e.get("args", {}).get("op_name") for e in events if e.get("cat") == "Node"}
    assert "KLDivLoss_batchmean" in ops
    assert not ops & {"Log", "Mul", "ReduceSum", "Sub", "Where", "Exp"}


# ------------------------------------------------------------------------------------- errors
def test_non_broadcastable_shapes_fail_at_run():
    sess = cached_session("KLDivLoss_sum", "float32")
    x = np.zeros((4, 5), np.float32)
    t = np.zeros((3,), np.float32)
    with pytest.raises(Exception, match=r"KLDivLoss_sum.*\[4, 5\].*\[3\].*not broadcastable"):
        sess.run(None, {"x": x, "t": t})


def test_non_broadcastable_static_shapes_fail_at_creation():
    model = make_model("KLDivLoss_mean", x_shape=[4, 5], t_shape=[3])
    with pytest.raises(Exception, match=r"KLDivLoss_mean.*not broadcastable.*5 vs 3"):
        session(model)


def test_mismatched_dtypes_fail_at_load():
    with pytest.raises(Exception, match="KLDivLoss_mean"):
        session(make_model("KLDivLoss_mean", "float32", t_dtype="float16"))


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"reduction": "avg"}, "reduction='avg' is not one of"),
        ({"reduction": "Mean"}, "reduction='Mean' is not one of"),
        ({"reduction": 1}, "'reduction' must be a string"),
        ({"log_target": 2}, "log_target=2 must be 0 or 1"),
        ({"log_target": -1}, "log_target=-1 must be 0 or 1"),
        ({"log_target": 1.0}, "'log_target' must be an int"),
    ],
)
def test_bad_attributes_fail_at_creation(attrs, message):
    with pytest.raises(Exception, match=f"KLDivLoss \\(node 'n0'\\).*{message}"):
        session(make_model(GENERIC_OP, attrs=attrs))


def raw_attribute_model(op, attributes):
    """A one-node model whose node carries the given AttributeProtos as they are."""
    model = onnx.load_from_string(make_model(op))
    model.graph.node[0].attribute.extend(attributes)
    return model


_SUBGRAPH = helper.make_graph([], "empty", [], [])
# (attributes, message the kernel gives): wrong types, NUL bytes, invalid UTF-8.
BAD_ATTRIBUTES = {
    "reduction INTS": ([helper.make_attribute("reduction", [1])], "'reduction' must be a string"),
    "reduction STRINGS": ([helper.make_attribute("reduction", ["sum"])], "another type"),
    "reduction TENSOR": (
        [helper.make_attribute("reduction", helper.make_tensor("v", TensorProto.FLOAT, [1], [1]))],
        "got TENSOR",
    ),
    "reduction FLOATS": ([helper.make_attribute("reduction", [1.5])], "got FLOATS [1.5]"),
    "reduction GRAPH": ([helper.make_attribute("reduction", _SUBGRAPH)], "another type"),
    "reduction INT": ([helper.make_attribute("reduction", 1)], "got INT 1"),
    "reduction NUL": (
        [helper.make_attribute("reduction", b"sum\0junk")],
        "'reduction' contains a NUL byte: b'sum\\x00junk'",
    ),
    "reduction trailing NUL": ([helper.make_attribute("reduction", b"sum\0")], "NUL byte"),
    "reduction not UTF-8": (
        [helper.make_attribute("reduction", b"s\xffum")],
        "'reduction' is not valid UTF-8: b's\\xffum'",
    ),
    "reduction empty": ([helper.make_attribute("reduction", b"")], "reduction='' is not one of"),
    "log_target FLOAT": ([helper.make_attribute("log_target", 1.0)], "got FLOAT 1.0"),
    "log_target INTS": ([helper.make_attribute("log_target", [1])], "got INTS [1]"),
    "log_target STRING": ([helper.make_attribute("log_target", "1")], "got STRING b'1'"),
    "log_target STRINGS": ([helper.make_attribute("log_target", ["1"])], "another type"),
    "log_target empty INTS": (
        [helper.make_attribute("log_target", [], attr_type=onnx.AttributeProto.INTS)],
        "another type",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ATTRIBUTES))
def test_attribute_of_wrong_type_or_bytes_fails_at_creation(case):
    """Not read as absent (the default) nor cut at a NUL: an error naming the attribute."""
    attributes, message = BAD_ATTRIBUTES[case]
    name = attributes[0].name
    with pytest.raises(Exception, match=f"KLDivLoss \\(node 'n0'\\): attribute '?{name}") as info:
        session(raw_attribute_model(GENERIC_OP, attributes).SerializeToString())
    assert message in str(info.value)


GOOD_ATTRIBUTES = {
    "none": [],
    "sum": [helper.make_attribute("reduction", "sum")],
    "batchmean log_target": [
        helper.make_attribute("reduction", "batchmean"),
        helper.make_attribute("log_target", 1),
    ],
    "log_target 0": [helper.make_attribute("log_target", 0)],
    "log_target 2": [helper.make_attribute("log_target", 2)],
    "reduction avg": [helper.make_attribute("reduction", "avg")],
}


@pytest.mark.parametrize("op", [GENERIC_OP, "KLDivLoss_sum", "KLDivLoss_batchmean_logtarget"])
@pytest.mark.parametrize("case", [*BAD_ATTRIBUTES, *GOOD_ATTRIBUTES])
def test_reference_ops_agree_with_the_kernel_on_attributes(op, case):
    """reference_ops() refuses exactly what the kernel refuses, and computes the same loss."""
    from onnx.reference import ReferenceEvaluator

    from kldiv_onnx.reference import reference_ops

    attributes = BAD_ATTRIBUTES[case][0] if case in BAD_ATTRIBUTES else GOOD_ATTRIBUTES[case]
    model = raw_attribute_model(op, attributes)
    x, t = sample((3, 4), (3, 4), op.endswith("_logtarget"), "float32")
    try:
        got = run(session(model.SerializeToString()), x, t, ())
    except Exception:  # any refusal
        got = None
    try:
        want = ReferenceEvaluator(model, new_ops=reference_ops()).run(None, {"x": x, "t": t})[0]
    except ValueError:
        want = None
    assert (got is None) == (want is None), (got, want)
    if got is not None:
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    ("op", "attrs", "message"),
    [
        ("KLDivLoss_mean", {"reduction": "sum"}, "reduction='sum' contradicts the op name"),
        ("KLDivLoss_sum_logtarget", {"log_target": 0}, "log_target=0 contradicts the op name"),
        ("KLDivLoss_none", {"log_target": 1}, "log_target=1 contradicts the op name"),
        ("KLDivLoss_batchmean", {"reduction": "bad"}, "reduction='bad' is not one of"),
    ],
)
def test_contradicting_attribute_on_variant_fails(op, attrs, message):
    with pytest.raises(Exception, match=f"{op} \\(node 'n0'\\).*{message}"):
        session(make_model(op, attrs=attrs))


def test_consistent_attribute_on_variant_is_accepted():
    sess = session(
        make_model("KLDivLoss_sum_logtarget", attrs={"reduction": "sum", "log_target": 1})
    )
    x, t = sample((3,), (3,), True, "float32")
    check(run(sess, x, t, ()), x, t, "sum", True, "float32")


def test_pointwise_reference_is_what_none_returns():
    # sanity of the harness itself: 'none' through the kernel equals reference.pointwise
    x, t = sample((5, 6), (6,), False, "float32")
    got = run(cached_session("KLDivLoss_none", "float32"), x, t, (5, 6))
    np.testing.assert_allclose(got, pointwise(x, t), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- function
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kernel_overrides_the_function_body(tmp_path, reduction, log_target):
    """The exporter's one-node model (function form): with the library registered the kernel
    runs (the profiler shows the custom node only); without it the body runs. Same data, same
    result within float32 rounding."""
    from kldiv_onnx.export import build_model

    model = build_model(reduction, log_target, "float32", (8, 16), form="function")
    x, t = sample((8, 16), (8, 16), log_target, "float32")
    feeds = {"input": x, "target": t}
    fused = session(model.SerializeToString(), profile_prefix=tmp_path / "prof")
    got = fused.run(None, feeds)[0]
    with open(fused.end_profiling()) as f:
        ops = {e.get("args", {}).get("op_name") for e in json.load(f) if e.get("cat") == "Node"}
    assert ops == {op_name(reduction, log_target)}
    body = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, body.run(None, feeds)[0], rtol=1e-5, atol=1e-6)
    check(got, x, t, reduction, log_target, "float32")


# ------------------------------------------------------------------------------------- ISA paths
_ISA_SCRIPT = """
import sys
import numpy as np
import kldiv_onnx
from kldiv_onnx.reference import sample
x, t = sample((257, 131), np.dtype(sys.argv[1]), 11)
lt = np.log(np.maximum(t.astype(np.float64), 1e-4)).astype(x.dtype)
for target, log_target in ((t, False), (lt, True)):
    for reduction in ("none", "sum"):
        out = kldiv_onnx.kl_div(x, target, reduction, log_target, backend="fused")
        ref = kldiv_onnx.reference_kl_div(x, target, reduction, log_target)
        err = np.abs(out.astype(np.float64) - ref)
        print(float(np.max(err / (np.abs(ref) + 1e-3))))
"""


@pytest.mark.parametrize("isa", ["avx2", "scalar"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_capped_isa_paths_through_onnxruntime(isa, dtype, tmp_path):
    """KLDIV_ONNX_ISA caps the SIMD path chosen at load: the AVX2 and scalar loops (besides the
    best one this CPU has, used everywhere else) give the reference's results in onnxruntime."""
    env = {**os.environ, ISA_ENV_VAR: isa}
    proc = subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT, dtype],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # `python -c` puts the working directory first on sys.path
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    errors = [float(line) for line in proc.stdout.split()]
    assert len(errors) == 4
    assert max(errors) <= (1e-5 if dtype == "float32" else 2.0**-10)


# ------------------------------------------------------------------------------------- damage
def _damaged_copy(tmp_path, how):
    """A copy of the library, truncated to a third or with 200 KiB of its code overwritten."""
    data = bytearray(Path(library_path()).read_bytes())
    if how == "truncated":
        data = data[: len(data) // 3]
    else:
        data[0x1000 : 0x1000 + 200 * 1024] = b"\xff" * (200 * 1024)
    path = tmp_path / f"{how}-{LIBRARY_NAME}"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("how", "reason"),
    [("truncated", "truncated"), ("corrupt", "loading it in a separate process failed")],
)
def test_a_damaged_library_is_refused_before_loading(tmp_path, monkeypatch, how, reason):
    """A truncated copy used to kill the process (SIGBUS in register_custom_ops_library)."""
    path = _damaged_copy(tmp_path, how)
    monkeypatch.setenv(ENV_VAR, str(path))
    with pytest.raises(LibraryDamagedError, match=f"{re.escape(str(path))}.*damaged.*{reason}"):
        library_path()
    with pytest.warns(RuntimeWarning, match="damaged native library"):
        assert not available()
    report = doctor.report()
    assert "native library: DAMAGED" in report
    assert str(path) in report


def test_auto_backend_falls_back_to_the_composite_on_a_damaged_library(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(_damaged_copy(tmp_path, "truncated")))
    x, t = sample((4, 5), (4, 5), False, "float32")
    with pytest.warns(RuntimeWarning, match="using the composite"):
        got = kldiv_onnx.kl_div(x, t, "batchmean", backend="auto")
    want = kldiv_onnx.kl_div(x, t, "batchmean", backend="composite")
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(LibraryDamagedError):
        kldiv_onnx.kl_div(x, t, "batchmean", backend="fused")


_COUNT_PROBES = """
import subprocess, sys
spawned = []
real_run = subprocess.run
def counting_run(*args, **kwargs):
    spawned.append(args)
    return real_run(*args, **kwargs)
subprocess.run = counting_run
from kldiv_onnx import native
print(native.library_path())
print(len(spawned))
"""


def _fresh_check(tmp_path, monkeypatch) -> tuple[Path, list[Path]]:
    """A copy of the library as ``$KLDIV_ONNX_LIBRARY``, an empty cache folder as
    ``$XDG_CACHE_HOME``, no answer of ``library_path()`` in memory; and the list of paths the
    expensive check (the throw-away process) is run on from now on."""
    path = tmp_path / "lib" / LIBRARY_NAME
    path.parent.mkdir()
    shutil.copyfile(library_path(), path)
    monkeypatch.setenv(ENV_VAR, str(path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_RESOLVED", {})
    checked: list[Path] = []
    full_check = native._full_check

    def counting(p: Path) -> str:
        checked.append(p)
        return full_check(p)

    monkeypatch.setattr(native, "_full_check", counting)
    return path, checked


def _forget(monkeypatch) -> None:
    """What a new process starts with: no answer of ``library_path()`` in memory."""
    monkeypatch.setattr(native, "_RESOLVED", {})


def test_a_passed_check_is_not_redone_by_the_next_process(tmp_path, monkeypatch):
    """The first process loads the library in a throw-away process and remembers the pass
    under the file's identity in the cache folder; the second spawns nothing."""
    path, _ = _fresh_check(tmp_path, monkeypatch)
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", _COUNT_PROBES], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        runs.append(proc.stdout.split())
    assert runs == [[str(path), "1"], [str(path), "0"]]
    (cache,) = (tmp_path / "cache" / "kldiv-onnx").iterdir()
    st = path.stat()
    want = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    assert json.loads(cache.read_text())["identity"] == want


def test_a_changed_library_is_checked_again(tmp_path, monkeypatch):
    """A new mtime, a new size, or a same-size rewrite with the old mtime put back (its ctime
    still moves) each cost the full check again; the rewrite with damaged bytes is refused."""
    path, checked = _fresh_check(tmp_path, monkeypatch)
    library_path()
    _forget(monkeypatch)
    library_path()
    assert len(checked) == 1  # the second "process" remembered the pass
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _forget(monkeypatch)
    library_path()
    assert len(checked) == 2
    with path.open("ab") as f:
        f.write(b"\0" * 16)  # trailing bytes: still a loadable library, but another file
    _forget(monkeypatch)
    library_path()
    assert len(checked) == 3
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0x1000 : 0x1000 + 200 * 1024] = b"\xff" * (200 * 1024)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    _forget(monkeypatch)
    with pytest.raises(LibraryDamagedError, match="loading it in a separate process failed"):
        library_path()
    assert len(checked) == 4


def test_a_truncated_library_is_refused_even_when_remembered(tmp_path, monkeypatch):
    """The cheap ELF check runs in every process, before the remembered verdict is read."""
    path, checked = _fresh_check(tmp_path, monkeypatch)
    library_path()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    _forget(monkeypatch)
    with pytest.raises(LibraryDamagedError, match="truncated"):
        library_path()
    assert len(checked) == 1


@pytest.mark.parametrize("cache", ["a file", "garbage"])
def test_an_unusable_cache_means_checking_every_time(tmp_path, monkeypatch, cache):
    """A cache folder that cannot be made (a file in its place) or a cache file that is not
    ours: no error, and no pass remembered."""
    path, checked = _fresh_check(tmp_path, monkeypatch)
    if cache == "a file":
        (tmp_path / "cache").write_text("not a folder")
    for _ in range(2):
        _forget(monkeypatch)
        assert library_path() == str(path)
        if cache == "garbage":
            native._cache_file(path).write_text("{not json")
    assert len(checked) == 2


def test_library_path_is_resolved_once(monkeypatch):
    """After the first call nothing touches the file system (issue 14: two stats per call)."""
    first = library_path()

    def no_file_system(*args, **kwargs):
        raise AssertionError("library_path() touched the file system")

    monkeypatch.setattr(os, "stat", no_file_system)
    monkeypatch.setattr(Path, "is_file", no_file_system)
    assert library_path() == first
    assert available()


def test_a_missing_library_is_still_file_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nothing.so"))
    with pytest.raises(FileNotFoundError, match=r"nothing\.so") as info:
        library_path()
    assert not isinstance(info.value, LibraryDamagedError)


def test_a_build_without_the_probes_reads_as_unknown(monkeypatch):
    """A library that loads but exports neither probe (an older build; here the core module,
    another shared object of the package) gives None and "unknown", not an error."""
    other = native.core()
    if other is None:
        pytest.skip("kldiv_onnx._core not built")
    monkeypatch.setenv(ENV_VAR, other.__file__)
    assert api_version() is None
    assert active_target() == "unknown (a build without KLDivOnnxActiveTarget)"
    assert "requests C API unknown (a build without KLDivOnnxOrtApiVersion)" in doctor.report()


def test_doctor_shows_the_simd_path_the_kernel_chose():
    assert f"native kernel SIMD path: {active_target()}" in doctor.report()
    assert active_target() in ("avx3", "avx2", "scalar")
