"""Sessions (cache, threads) and the provider policy (ordering, CANN options, fallback)."""

from __future__ import annotations

import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DTYPES, assert_matches, make_inputs, scale_of

import kldiv_onnx
from kldiv_onnx import build_model, cann, native, providers, runtime
from kldiv_onnx.reference import kl_div as reference

CANN, CPU = providers.CANN, providers.CPU

pytestmark = pytest.mark.usefixtures("fresh_cache")


# --- cache -----------------------------------------------------------------------------------


def test_same_content_same_session_whatever_the_container(tmp_path):
    model = build_model("sum", False, "float32", [2, 3])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    first = kldiv_onnx.session(model)
    assert kldiv_onnx.session(model) is first
    assert kldiv_onnx.session(model.SerializeToString()) is first
    assert kldiv_onnx.session(build_model("sum", False, "float32", [2, 3])) is first
    assert kldiv_onnx.session(path) is first
    assert kldiv_onnx.session(str(path)) is first
    assert runtime.cache_info() == 1


def test_other_options_other_session():
    model = build_model()
    base = kldiv_onnx.session(model, fused=False)
    assert kldiv_onnx.session(model, fused=False, threads=1) is not base
    assert kldiv_onnx.session(model, fused=False, providers=[CPU]) is base  # 'auto' is CPU here


def test_changed_file_gives_a_new_session(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(build_model("sum"), path)
    old = kldiv_onnx.session(path, fused=False)
    onnx.save(build_model("mean"), path)
    new = kldiv_onnx.session(path, fused=False)
    assert new is not old
    x, t = make_inputs((2, 3), (2, 3), DTYPES["float32"], False)
    got = runtime.run(new, {"input": x, "target": t})[0]
    np.testing.assert_allclose(got, reference(x, t, "mean"), rtol=1e-6)


def test_lru_bound_and_clear(monkeypatch):
    monkeypatch.setattr(runtime, "CACHE_SIZE", 3)
    models = [build_model("sum", False, "float32", [n, 2]) for n in range(1, 6)]
    first = kldiv_onnx.session(models[0], fused=False)
    kldiv_onnx.session(models[1], fused=False)
    kldiv_onnx.session(models[2], fused=False)
    assert kldiv_onnx.session(models[0], fused=False) is first  # touched: most recent now
    kldiv_onnx.session(models[3], fused=False)  # evicts models[1], the least recent
    assert runtime.cache_info() == 3
    assert kldiv_onnx.session(models[0], fused=False) is first
    kldiv_onnx.session(models[4], fused=False)
    assert runtime.cache_info() == 3
    runtime.clear_cache()
    assert runtime.cache_info() == 0
    assert kldiv_onnx.session(models[0], fused=False) is not first


def test_concurrent_builds_give_one_session():
    model = build_model("batchmean", True, "float16", [5, 4]).SerializeToString()
    barrier = threading.Barrier(8)

    def build(_: int) -> int:
        barrier.wait()
        return id(kldiv_onnx.session(model, fused=False))

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(build, range(8)))
    assert len(ids) == 1
    assert runtime.cache_info() == 1


@pytest.mark.parametrize("fused", [False] + ([True] if native.available() else []))
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_eight_threads_many_runs_on_one_session(fused, dtype_name):
    """8 threads × 25 runs, each with its own inputs, on one cached session."""
    model = build_model("batchmean", False, dtype_name, ["b", 33])
    sess = kldiv_onnx.session(model, fused=fused, threads=2)
    cases = [
        make_inputs((1 + i % 7, 33), (1 + i % 7, 33), DTYPES[dtype_name], False, seed=i)
        for i in range(8 * 25)
    ]

    def work(worker: int) -> list[tuple[int, np.ndarray]]:
        assert kldiv_onnx.session(model, fused=fused, threads=2) is sess
        return [
            (i, runtime.run(sess, {"input": cases[i][0], "target": cases[i][1]})[0])
            for i in range(worker, len(cases), 8)
        ]

    with ThreadPoolExecutor(8) as pool:
        results = [r for chunk in pool.map(work, range(8)) for r in chunk]
    assert len(results) == len(cases)
    for i, got in results:
        x, t = cases[i]
        assert_matches(
            got, reference(x, t, "batchmean"), dtype_name, scale_of(x, t, "batchmean", False)
        )


# --- fused= and the first provider -------------------------------------------------------------


class _FakeSession:
    """Stands in for InferenceSession: records what it was built with."""

    def __init__(self, data, sess_options=None, providers=None, provider_options=None):
        self.providers = list(providers)
        self.provider_options = provider_options
        self.registered = sess_options.registered

    def get_providers(self):
        return self.providers


class _FakeOptions:
    def __init__(self):
        self.registered: list[str] = []

    def register_custom_ops_library(self, path):
        self.registered.append(path)


@pytest.fixture
def fake_cann(monkeypatch):
    """onnxruntime reports CANN and the toolkit looks complete; sessions are recorded only."""
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CANN, CPU])
    monkeypatch.setattr(
        providers,
        "cann_status",
        lambda available=None: cann.CannStatus((), "/opt/ascend", ("d0",)),
    )
    monkeypatch.setattr(runtime.ort, "InferenceSession", _FakeSession)
    monkeypatch.setattr(runtime.ort, "SessionOptions", _FakeOptions)
    monkeypatch.setattr(native, "available", lambda: True)
    monkeypatch.setattr(native, "library_path", lambda: "/fake/libkldiv_onnx_ops.so")


def test_cann_session_gets_the_composite_form(fake_cann):
    sess = kldiv_onnx.session(build_model())
    assert sess.providers == [CANN, CPU]
    assert sess.registered == []  # fused=None: never the CPU kernel on a CANN session
    assert sess.provider_options[0]["precision_mode"] == "must_keep_origin_dtype"
    assert sess.provider_options[0]["dump_om_model"] == "0"


def test_cann_session_registers_the_library_only_when_asked(fake_cann):
    assert kldiv_onnx.session(build_model(), fused=True).registered == [
        "/fake/libkldiv_onnx_ops.so"
    ]
    assert kldiv_onnx.session(build_model(), providers=[CPU]).registered == [
        "/fake/libkldiv_onnx_ops.so"
    ]
    assert kldiv_onnx.session(build_model(), providers=[CPU], fused=False).registered == []


# --- provider ordering -------------------------------------------------------------------------


def test_auto_puts_cann_first_when_it_can_start(fake_cann, monkeypatch):
    monkeypatch.setattr(
        providers.ort, "get_available_providers", lambda: ["AzureExecutionProvider", CPU, CANN]
    )
    names, options = providers.resolve("auto")
    assert names == [CANN, CPU]
    assert options[0]["precision_mode"] == "must_keep_origin_dtype"
    assert options[1] == {}


def test_auto_without_cann_is_cpu_only(monkeypatch):
    monkeypatch.setattr(
        providers.ort, "get_available_providers", lambda: ["AzureExecutionProvider", CPU]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: nothing asked for CANN
        assert providers.resolve("auto") == ([CPU], [{}])


def test_explicit_list_is_respected(fake_cann):
    assert providers.resolve([CPU, CANN])[0] == [CPU, CANN]
    assert providers.resolve([CPU])[0] == [CPU]


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("cpu", "'auto' or a list"),
        ([], "non-empty"),
        ([CPU, CPU], "listed twice"),
        (["CUDAExecutionProvider"], "CUDAExecutionProvider"),
    ],
)
def test_bad_provider_lists(requested, message):
    with pytest.raises(ValueError, match=message):
        providers.resolve(requested)


def test_options_for_a_provider_not_requested():
    with pytest.raises(ValueError, match="not requested"):
        providers.resolve([CPU], {CANN: {"device_id": 0}})


# --- CANN options ------------------------------------------------------------------------------


def test_cann_option_defaults_and_overrides():
    assert cann.cann_options() == {
        "precision_mode": "must_keep_origin_dtype",
        "dump_om_model": "0",
        "op_select_impl_mode": "high_precision",
    }
    out = cann.cann_options(
        {
            "precision_mode": "force_fp32",
            "dump_om_model": True,
            "device_id": 1,
            "npu_mem_limit": "4294967296",
            "arena_extend_strategy": "kSameAsRequested",
            "enable_cann_graph": False,
            "optypelist_for_implmode": "Log,Exp",
        }
    )
    assert out == {
        "precision_mode": "force_fp32",
        "dump_om_model": "1",
        "op_select_impl_mode": "high_precision",
        "device_id": "1",
        "npu_mem_limit": "4294967296",
        "arena_extend_strategy": "kSameAsRequested",
        "enable_cann_graph": "0",
        "optypelist_for_implmode": "Log,Exp",
    }


def test_every_option_name_is_the_1_24_set():
    specs = cann.tables().options
    assert sorted(specs) == sorted(
        [
            "device_id",
            "npu_mem_limit",
            "arena_extend_strategy",
            "enable_cann_graph",
            "enable_cann_subgraph",
            "dump_graphs",
            "dump_om_model",
            "precision_mode",
            "op_select_impl_mode",
            "optypelist_for_implmode",
        ]
    )
    for name, (value, reason) in cann.CANN_DEFAULTS.items():
        assert name in specs and reason
        assert value != specs[name].ort_default, name  # a wrapper default differs, or why?


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"precision_mode_v2": "force_fp32"}, "precision_mode_v2"),  # newer onnxruntime's key
        ({"input_format": "ND"}, "input_format"),  # not parsed by the 1.24.4 provider
        ({"device": 0}, "'device'"),
        ({"precision_mode": "fp32"}, "precision_mode"),
        ({"precision_mode": "FORCE_FP32"}, "precision_mode"),
        ({"op_select_impl_mode": "precise"}, "op_select_impl_mode"),
        ({"arena_extend_strategy": "next_power_of_two"}, "arena_extend_strategy"),
        ({"device_id": -1}, "device_id"),
        ({"device_id": True}, "device_id"),
        ({"device_id": "zero"}, "device_id"),
        ({"npu_mem_limit": 1.5}, "npu_mem_limit"),
        ({"dump_om_model": "yes"}, "dump_om_model"),
        ({"enable_cann_graph": 2}, "enable_cann_graph"),
        ({"optypelist_for_implmode": "Log,,Exp"}, "optypelist_for_implmode"),
        ({"optypelist_for_implmode": ["Log"]}, "optypelist_for_implmode"),
    ],
)
def test_bad_cann_options_name_the_key(options, named):
    with pytest.raises(ValueError, match=named):
        cann.cann_options(options)


def test_bad_cann_options_fail_before_the_fallback():
    """Validation does not depend on whether this machine has an NPU."""
    with pytest.raises(ValueError, match="precision_mode"):
        providers.resolve([CANN, CPU], {CANN: {"precision_mode": "fp16"}})


# --- CANN cannot start: fallback or error ---------------------------------------------------


@pytest.mark.skipif(CANN in ort.get_available_providers(), reason="the CPU wheel's case")
def test_cpu_wheel_falls_back_with_one_warning():
    model = build_model("mean", False, "float32", [4, 5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess = kldiv_onnx.session(model, providers=[CANN, CPU], fused=False)
    assert [w.category for w in caught] == [providers.CANNFallbackWarning]
    text = str(caught[0].message)
    assert "cannot start" in text and "onnxruntime-cann" in text and "running on CPU" in text
    assert caught[0].filename == __file__  # points at the caller of session()
    assert sess.get_providers() == [CPU]
    x, t = make_inputs((4, 5), (4, 5), DTYPES["float32"], False)
    got = runtime.run(sess, {"input": x, "target": t})[0]
    assert_matches(got, reference(x, t, "mean"), "float32", scale_of(x, t, "mean", False))


@pytest.mark.skipif(CANN in ort.get_available_providers(), reason="the CPU wheel's case")
def test_cann_alone_falls_back_to_cpu():
    with pytest.warns(providers.CANNFallbackWarning):
        names, options = providers.resolve([CANN])
    assert (names, options) == ([CPU], [{}])


@pytest.mark.skipif(CANN in ort.get_available_providers(), reason="the CPU wheel's case")
def test_strict_raises_naming_what_is_missing():
    with pytest.raises(providers.CANNUnavailableError, match="onnxruntime-cann"):
        kldiv_onnx.session(build_model(), providers=[CANN, CPU], strict=True)
    assert runtime.cache_info() == 0


def test_missing_toolkit_is_named(monkeypatch, tmp_path):
    """The CANN wheel is there but the toolkit is not: the message says which part."""
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CANN, CPU])
    monkeypatch.delenv("ASCEND_TOOLKIT_HOME", raising=False)
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path / "nowhere"))
    status = cann.cann_status()
    assert not status.can_start
    text = status.describe()
    assert "onnxruntime-cann build" not in text
    assert f"ASCEND_HOME_PATH={tmp_path / 'nowhere'} is not a directory" in text
    with pytest.warns(providers.CANNFallbackWarning, match="ASCEND_HOME_PATH"):
        assert providers.resolve("auto")[0] == [CPU]


def test_unloadable_library_is_named(monkeypatch, tmp_path):
    """A toolkit folder whose libascendcl.so is not a loadable library: the loader's reason."""
    lib64 = tmp_path / "lib64"
    lib64.mkdir()
    (lib64 / "libascendcl.so").write_bytes(b"not an ELF file")
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CANN, CPU])
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path))
    cann.status._probe_library.cache_clear()
    status = cann.cann_status()
    assert status.toolkit == str(tmp_path)
    assert "libascendcl.so" in status.describe() and str(lib64) in status.describe()


def test_complete_toolkit_can_start(monkeypatch, tmp_path):
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CANN, CPU])
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path))
    monkeypatch.setattr(cann.status, "_probe_library", lambda name, folders, ld: None)
    monkeypatch.setattr(cann.status.glob, "glob", lambda pattern: ["/dev/davinci0"])
    status = cann.cann_status()
    assert status.can_start and status.devices == ("/dev/davinci0",)
    assert status.describe().startswith("can start")


def test_no_device_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CANN, CPU])
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path))
    monkeypatch.setattr(cann.status, "_probe_library", lambda name, folders, ld: None)
    monkeypatch.setattr(cann.status.glob, "glob", lambda pattern: [])
    assert cann.cann_status().missing == ("an Ascend NPU device (no /dev/davinci<N>)",)


def test_check_fallback_catches_a_provider_that_did_not_start():
    class Sess:
        def get_providers(self):
            return [CPU]

    with pytest.warns(providers.CANNFallbackWarning, match="could not start"):
        providers.check_fallback(Sess(), [CANN, CPU], strict=False)
    with pytest.raises(providers.CANNUnavailableError):
        providers.check_fallback(Sess(), [CANN, CPU], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        providers.check_fallback(Sess(), [CPU], strict=True)


def test_a_session_build_does_not_block_cache_hits(monkeypatch, fresh_cache):
    """Sessions are built outside the cache lock: while one is being built, a cached one is
    returned at once, and a second caller of the one being built gets that very session."""
    model_a, model_b = build_model("sum"), build_model("mean")
    cached = kldiv_onnx.session(model_b, fused=False)
    real = runtime.ort.InferenceSession
    building, release = threading.Event(), threading.Event()

    def slow(*args, **kwargs):
        building.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", slow)
    got: dict[str, object] = {}
    first = threading.Thread(target=lambda: got.setdefault("a1", kldiv_onnx.session(model_a)))
    first.start()
    assert building.wait(30)
    hit = threading.Thread(
        target=lambda: got.setdefault("b", kldiv_onnx.session(model_b, fused=False))
    )
    hit.start()
    hit.join(10)
    assert not hit.is_alive() and got["b"] is cached  # not blocked by the build of A
    second = threading.Thread(target=lambda: got.setdefault("a2", kldiv_onnx.session(model_a)))
    second.start()
    release.set()
    first.join(30)
    second.join(30)
    assert got["a1"] is got["a2"]


def test_share_thread_pool_keeps_one_pool():
    """32 cached sessions with onnxruntime's default threads hold one pool, not 32."""
    import subprocess
    import sys

    script = (
        "import os, numpy as np, kldiv_onnx\n"
        "from kldiv_onnx import runtime\n"
        "runtime.share_thread_pool()\n"
        "for i in range(32):\n"
        "    m = kldiv_onnx.build_model('sum', input_shape=[i + 1, 4])\n"
        "    x = np.zeros((i + 1, 4), np.float32)\n"
        "    runtime.run(runtime.session(m), {'input': x, 'target': x})\n"
        "assert runtime.cache_info() == 32\n"
        "try:\n"
        "    runtime.session(kldiv_onnx.build_model('mean'), threads=1)\n"
        "except ValueError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('threads= accepted')\n"
        "print(len(os.listdir('/proc/self/task')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) <= 8 + (os.cpu_count() or 1)


# --- onnxruntime's private objects -----------------------------------------------------------

PRIVATE = re.compile(r"\._sess\b|\._iobinding\b|_pybind_state|\._get_c_device\b")


def test_one_module_reaches_onnxruntimes_private_objects():
    """A change of onnxruntime's internals is met in one place: ``_ort_fast``."""
    root = Path(kldiv_onnx.__file__).resolve().parent
    reaching = {
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if PRIVATE.search(path.read_text(encoding="utf-8"))
    }
    assert reaching == {"_ort_fast.py"}
