"""Against the real onnxruntime-cann wheel, without Ascend hardware (scripts/cann_env_test.sh).

Runs only where the imported onnxruntime is the CANN build; the main test run skips it.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from conftest import DTYPES, REDUCTIONS, assert_matches, make_inputs, scale_of

import kldiv_onnx
from kldiv_onnx import build_model, cann, native, providers, runtime
from kldiv_onnx.reference import kl_div as reference

if "CANNExecutionProvider" not in ort.get_available_providers():
    pytest.skip(
        "needs the onnxruntime-cann wheel: run scripts/cann_env_test.sh", allow_module_level=True
    )
CANN, CPU = providers.CANN, providers.CPU

pytestmark = pytest.mark.usefixtures("fresh_cache")


def test_installed_package_and_wheel():
    """The side environment imports the installed project beside onnxruntime-cann 1.24."""
    assert "site-packages" in kldiv_onnx.__file__, kldiv_onnx.__file__
    assert tuple(int(p) for p in ort.__version__.split(".")[:2]) >= (1, 24)
    assert int(np.__version__.split(".")[0]) < 2


def test_provider_listed_and_auto_order():
    assert CANN in ort.get_available_providers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", providers.CANNFallbackWarning)
        names, _ = providers.resolve("auto")
    status = cann.cann_status()
    assert names == ([CANN, CPU] if status.can_start else [CPU])


def test_no_toolkit_here_names_what_is_missing():
    status = cann.cann_status()
    if status.can_start:
        pytest.skip("an Ascend toolkit and device are present: the fallback is not exercised")
    text = status.describe()
    assert "libascendcl.so" in text or "toolkit" in text, text


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cann_session_falls_back_to_cpu_with_one_warning(reduction, log_target):
    if cann.cann_status().can_start:
        pytest.skip("CANN can start here")
    model = build_model(reduction, log_target, "float32", [4, 5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess = kldiv_onnx.session(model, providers=[CANN, CPU], fused=False)
    ours = [w for w in caught if issubclass(w.category, providers.CANNFallbackWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "cannot start" in str(ours[0].message)
    assert sess.get_providers() == [CPU]
    x, t = make_inputs((4, 5), (4, 5), DTYPES["float32"], log_target)
    got = runtime.run(sess, {"input": x, "target": t})[0]
    want = reference(x, t, reduction, log_target)
    assert_matches(got, want, "float32", scale_of(x, t, reduction, log_target))


def test_strict_raises():
    if cann.cann_status().can_start:
        pytest.skip("CANN can start here")
    with pytest.raises(providers.CANNUnavailableError, match="cannot start"):
        kldiv_onnx.session(build_model(), providers=[CANN, CPU], strict=True)


def test_onnxruntime_itself_falls_back():
    """Below the wrapper: this wheel lists CANN, and asking onnxruntime directly for it
    without the toolkit still gives a CPU session (what check_fallback guards against)."""
    if cann.cann_status().can_start:
        pytest.skip("CANN can start here")
    sess = ort.InferenceSession(build_model().SerializeToString(), providers=[CANN, CPU])
    assert sess.get_providers() == [CPU]


@pytest.mark.parametrize("form", ["function", "inline"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_exported_models_load_and_run(form, dtype):
    """IR 8, opset 15, every dtype: loads in this onnxruntime and matches the reference."""
    model = build_model("batchmean", False, dtype, [3, 7], form=form)
    assert model.ir_version == 8
    assert {o.domain: o.version for o in model.opset_import}[""] == 15
    sess = kldiv_onnx.session(model, providers=[CPU], fused=False)
    x, t = make_inputs((3, 7), (3, 7), DTYPES[dtype], False, seed=3)
    got = runtime.run(sess, {"input": x, "target": t})[0]
    want = reference(x, t, "batchmean")
    assert_matches(got, want, dtype, scale_of(x, t, "batchmean", False))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_native_library_in_this_onnxruntime(reduction, dtype):
    if not native.available():
        pytest.skip("native library not built into the installed package yet")
    model = build_model(reduction, True, dtype, [6, 9])
    sess = kldiv_onnx.session(model, providers=[CPU], fused=True)
    x, t = make_inputs((6, 9), (6, 9), DTYPES[dtype], True, seed=5)
    got = runtime.run(sess, {"input": x, "target": t})[0]
    want = reference(x, t, reduction, True)
    assert_matches(got, want, dtype, scale_of(x, t, reduction, True))
