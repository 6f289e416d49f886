"""``kldiv_onnx._core.row_kl`` at its edges: outputs it cannot write in place are refused (a
wrong dtype with TypeError, a wrong shape or a strided array with ValueError) instead of being
filled as a temporary copy, and a process forked while another thread runs it computes the right
KL in the child (the core's thread pool is fork-safe). The KL is checked against a float64 numpy
reference."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from kldiv_onnx import native

core = native.core()
pytestmark = pytest.mark.skipif(core is None, reason="kldiv_onnx._core is not built")

ROWS, CLASSES = 64, 300


def logits(rows: int = ROWS, classes: int = CLASSES, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    base = 3 * rng.normal(size=(rows, classes))
    candidate = base + 0.5 * rng.normal(size=base.shape)
    return base.astype(np.float32), candidate.astype(np.float32)


def reference(base: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """KL(softmax(base) || softmax(candidate)) per row in float64."""
    lp, lq = (
        z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))[:, None]
        for z in (base.astype(np.float64), candidate.astype(np.float64))
    )
    return (np.exp(lp) * (lp - lq)).sum(-1)


def test_row_kl_writes_the_callers_arrays():
    base, candidate = logits()
    kl, agree = np.full(ROWS, np.nan), np.zeros(ROWS, dtype=bool)
    core.row_kl(base, candidate, "logits", 1.0, kl, agree)
    np.testing.assert_allclose(kl, reference(base, candidate), rtol=1e-5)
    assert np.array_equal(agree, base.argmax(-1) == candidate.argmax(-1))


WRONG_OUTPUTS = {
    "kl float32": (TypeError, "kl", lambda: np.zeros(ROWS, np.float32), None),
    "kl int64": (TypeError, "kl", lambda: np.zeros(ROWS, np.int64), None),
    "agree uint8": (TypeError, "agree", None, lambda: np.zeros(ROWS, np.uint8)),
    "agree float64": (TypeError, "agree", None, lambda: np.zeros(ROWS)),
    "kl strided": (ValueError, "kl", lambda: np.zeros(2 * ROWS)[::2], None),
    "kl reversed": (ValueError, "kl", lambda: np.zeros(ROWS)[::-1], None),
    "agree strided": (ValueError, "agree", None, lambda: np.zeros(2 * ROWS, bool)[::2]),
    "kl 2-D column": (ValueError, "kl", lambda: np.zeros((ROWS, 1)), None),
    "kl too short": (ValueError, "kl", lambda: np.zeros(ROWS - 1), None),
    "agree too long": (ValueError, "agree", None, lambda: np.zeros(ROWS + 1, bool)),
}


@pytest.mark.parametrize("case", WRONG_OUTPUTS, ids=str)
def test_row_kl_refuses_an_output_it_cannot_write_in_place(case):
    error, name, make_kl, make_agree = WRONG_OUTPUTS[case]
    base, candidate = logits()
    kl = make_kl() if make_kl else np.zeros(ROWS)
    agree = make_agree() if make_agree else np.zeros(ROWS, dtype=bool)
    with pytest.raises(error, match=name):
        core.row_kl(base, candidate, "logits", 1.0, kl, agree)
    assert not kl.any() and not agree.any()  # nothing written anywhere


def test_row_kl_refuses_a_read_only_output():
    base, candidate = logits()
    kl = np.zeros(ROWS)
    kl.flags.writeable = False
    with pytest.raises(TypeError):
        core.row_kl(base, candidate, "logits", 1.0, kl, np.zeros(ROWS, dtype=bool))


def test_row_kl_still_converts_its_inputs():
    """Inputs are read, not written: float64 or strided rows are converted as before."""
    base, candidate = logits()
    kl, agree = np.empty(ROWS), np.empty(ROWS, dtype=bool)
    wide = np.zeros((ROWS, 2 * CLASSES), np.float32)
    wide[:, ::2] = candidate
    core.row_kl(base.astype(np.float64), wide[:, ::2], "logits", 1.0, kl, agree)
    np.testing.assert_allclose(kl, reference(base, candidate), rtol=1e-5)


FORKS = 12
CHILD_DEADLINE_S = 10.0


def _wait(pid: int, deadline: float) -> int | None:
    """The child's exit code, or None when it is still running at the deadline (then killed)."""
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_while_row_kl_runs_computes_the_kl():
    """Forks while another thread keeps the core's pool busy (its workers and locks taken);
    each child must finish on its own, with the float64 reference's KL."""
    base, candidate = logits()
    want = reference(base, candidate)
    big = logits(rows=512, classes=2000, seed=1)
    stop = threading.Event()

    def busy() -> None:
        kl, agree = np.empty(512), np.empty(512, dtype=bool)
        while not stop.is_set():
            core.row_kl(*big, "logits", 1.0, kl, agree, 0)

    thread = threading.Thread(target=busy)
    thread.start()
    outcomes = []
    try:
        for k in range(FORKS):
            time.sleep(0.002 * (k % 4))
            with warnings.catch_warnings():  # Python 3.12+ warns of fork in a threaded process
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: no pytest machinery, exit status only
                code = 1
                try:
                    kl, agree = np.empty(ROWS), np.empty(ROWS, dtype=bool)
                    core.row_kl(base, candidate, "logits", 1.0, kl, agree, 0)
                    code = 0 if np.allclose(kl, want, rtol=1e-5, atol=0) else 3
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            outcomes.append(_wait(pid, time.monotonic() + CHILD_DEADLINE_S))
    finally:
        stop.set()
        thread.join()
    hung = outcomes.count(None)
    assert hung == 0, f"{hung} of {FORKS} children deadlocked"
    assert outcomes == [0] * FORKS, f"children's exit codes {outcomes} (3: a wrong KL)"
