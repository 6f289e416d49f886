"""The "kernel in cache vs torch.log" section of ``kldiv-onnx bench``: the fused kernel's whole
loss against one ``torch.log`` of the target, per element, one thread, inputs in cache.

The target: float32 at :data:`KERNEL_LOG_TARGET_SIZE` elements (2**18), reduction ``batchmean``
(and ``none``), no slower per element than ``torch.log(t, out=o)`` on one thread
(``torch.set_num_threads(1)``): the whole loss for the price of one log. The other sizes
(2**14, 2**16: both inputs fit the L2 cache there) separate the kernel's arithmetic from the
cache traffic at 2**18, where the two inputs (2 MiB) exceed a 1 MiB L2.

What is timed, per SIMD target the CPU supports: the library picks its target once, at load,
from ``$KLDIV_ONNX_ISA`` (:data:`kldiv_onnx.native.ISA_ENV_VAR`), so each target runs in its own
subprocess (``python -m kldiv_onnx.bench.kernel_log``). There, the fused node runs in a bare
onnxruntime session (one intra-op thread) through an IOBinding whose inputs *and output* are
bound to preallocated numpy buffers, as ``torch.log`` writes into a preallocated ``o``; so a
call is onnxruntime's fixed per-run cost plus the kernel, and that fixed cost is reported on
its own (``session_us``: the same session on a 16-element input). Rounds alternate the
contestants in a new random order each; each times a batch of consecutive calls
(:func:`~.timer.side_by_side`); the fastest round per contestant (the ``min`` of
:class:`~.timer.Stats`) is kept, as for a microbenchmark in cache.

Which targets run is the core's answer, not a guess from the CPU's flags: each subprocess asks
the library which target it dispatched under the cap (:func:`kldiv_onnx.native.active_target`)
and reports a target the library runs lower than asked as unsupported, before timing.

torch is not needed: without it the torch.log column reads "not installed" and no ratio is
judged. The section lives in ``result["kernel_log"]``; :mod:`.verdicts` judges it, :mod:`.report`
prints it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .. import native
from .._ort_fast import bound_run
from ..arrays import to_ortvalue
from ..export import build_model
from ..reference import sample
from ..runtime import session_options
from .config import KERNEL_LOG_ROUNDS, shape_of
from .timer import Stats, side_by_side

KERNEL_LOG_SIZES = (2**14, 2**16, 2**18)
KERNEL_LOG_TARGET_SIZE = 2**18
"""The size at which the target is judged (the other sizes are reported, not judged)."""
KERNEL_LOG_TARGET = 1.0
"""The most the fused float32 call may take per element, over torch.log's, at 2**18."""
KERNEL_LOG_ISAS = ("avx3", "avx2")
KERNEL_LOG_REDUCTIONS = ("batchmean", "none")
KERNEL_LOG_BATCH_S = 0.5e-3
"""Each round times a batch of consecutive calls of about this long, per contestant."""
KERNEL_LOG_WARMUP = 3
"""Untimed calls of each contestant before its batch is sized (caches, onnxruntime's first-run
set-up)."""
KERNEL_LOG_MAX_BATCH = 1000
_OVERHEAD_SIZE = 16
_TIMEOUT_S = 600


def kernel_vs_log(
    rounds: int = KERNEL_LOG_ROUNDS,
    sizes: tuple[int, ...] = KERNEL_LOG_SIZES,
    isas: tuple[str, ...] = KERNEL_LOG_ISAS,
) -> dict[str, Any]:
    """The section: one subprocess per SIMD target, each timing the fused op (``batchmean``,
    ``none``) and ``torch.log`` side by side at every size. A target the library does not
    dispatch here (the CPU lacks it) is reported as unsupported; no library, as skipped."""
    section: dict[str, Any] = {
        "dtype": "float32",
        "threads": 1,
        "rounds": rounds,
        "sizes": list(sizes),
        "target_size": KERNEL_LOG_TARGET_SIZE,
        "target": KERNEL_LOG_TARGET,
        "fused": "onnxruntime session, 1 intra-op thread, IOBinding with inputs and output "
        "bound to preallocated buffers",
        "torch_log": "torch.log(t, out=o), torch.set_num_threads(1); t: the same target with "
        "its zeros (10 %) made the smallest normal float (log(0) is MKL's slow path)",
        "timing": "rounds alternate the contestants in random order, each timed over a batch "
        f"of calls of about {KERNEL_LOG_BATCH_S * 1e3:g} ms; the fastest round (min) per "
        "contestant",
        "library": None,
        "rows": [],
    }
    try:
        library = native.library_path()
    except FileNotFoundError as exc:
        reason = f"native library not available: {exc}"
        section["rows"] = [{"isa": isa, "status": "skipped", "error": reason} for isa in isas]
        return section
    section["library"] = library
    package_root = str(Path(__file__).resolve().parents[2])
    for isa in isas:
        env = dict(os.environ)
        env[native.ISA_ENV_VAR] = isa
        env[native.ENV_VAR] = library  # the very library the parent checked
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        argv = [sys.executable, "-m", "kldiv_onnx.bench.kernel_log", str(rounds)]
        argv += [str(s) for s in sizes]
        try:
            proc = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            section["rows"].append(
                {"isa": isa, "status": "failed", "error": f"timed out after {_TIMEOUT_S} s"}
            )
            continue
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            section["rows"].append({"isa": isa, "status": "failed", "error": why[:400]})
            continue
        section["rows"].append(json.loads(lines[-1]))
    return section


# ----------------------------------------------------------------------------- the worker


def _fastest_per_call(
    calls: dict[str, Any], rounds: int, rng: np.random.Generator
) -> dict[str, float]:
    """Seconds per call of each contestant: the fastest of ``rounds`` alternating rounds."""
    times = side_by_side(
        calls,
        rounds,
        warmup=KERNEL_LOG_WARMUP,
        batch_s=KERNEL_LOG_BATCH_S,
        max_batch=KERNEL_LOG_MAX_BATCH,
        rng=rng,
    )
    return {name: Stats.of(spent).min_s for name, spent in times.items()}


def _bound_session(reduction: str, size: int, library: str) -> Any:
    """A call running the fused node once over pre-bound inputs and output."""
    so = session_options(1, library)
    so.log_severity_level = 3
    model = build_model(reduction, False, "float32", ["batch", "classes"]).SerializeToString()
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    shape = shape_of(size)
    x, t = sample(shape, np.dtype(np.float32), 0)
    out = np.empty(shape if reduction == "none" else (), np.float32)
    values = [to_ortvalue(x), to_ortvalue(t), to_ortvalue(out)]
    binding = sess.io_binding()
    for arg, value in zip(sess.get_inputs(), values, strict=False):
        binding.bind_ortvalue_input(arg.name, value)
    binding.bind_ortvalue_output(sess.get_outputs()[0].name, values[2])
    run, _ = bound_run(sess, binding)

    def call() -> None:
        run()

    call.keep = (sess, binding, values)  # type: ignore[attr-defined]
    return call


def _worker(rounds: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    """In the subprocess: every size's contestants, side by side, for the target this process
    was given (``$KLDIV_ONNX_ISA``); unsupported, untimed, where the core dispatches a lower
    one."""
    library = native.library_path()
    active = native.active_target()
    isa = os.environ.get(native.ISA_ENV_VAR) or active  # no cap: the widest the core runs
    if active != isa:  # the core dispatches a lower target here: this one cannot run
        return {"isa": isa, "status": "unsupported", "error": f"library runs {active}"}
    row: dict[str, Any] = {
        "isa": isa,
        "status": "ok",
        "active": active,
        "torch": None,
        "sizes": [],
    }
    try:
        import torch
    except ImportError:
        torch = None
        row["torch"] = "not installed"
    else:
        torch.set_num_threads(1)
        row["torch"] = torch.__version__
    rng = np.random.default_rng(0)
    small = {r: _bound_session(r, _OVERHEAD_SIZE, library) for r in KERNEL_LOG_REDUCTIONS}
    overhead = _fastest_per_call(small, max(5, rounds // 4), rng)
    row["session_us"] = {r: overhead[r] * 1e6 for r in KERNEL_LOG_REDUCTIONS}
    for size in sizes:
        calls = {r: _bound_session(r, size, library) for r in KERNEL_LOG_REDUCTIONS}
        if torch is not None:
            target = sample(shape_of(size), np.dtype(np.float32), 0)[1]
            # log(0) sends torch.log (MKL's vsLn) down a slow error path, 20x slower: its
            # input is the target with its zeros made the smallest normal float
            target = np.where(target == 0, np.finfo(np.float32).tiny, target)
            t = torch.from_numpy(target)
            o = torch.empty_like(t)
            calls["torch.log"] = lambda t=t, o=o: torch.log(t, out=o)
        fastest = _fastest_per_call(calls, rounds, rng)
        ns = {name: fastest[name] * 1e9 / size for name in calls}
        log_ns = ns.get("torch.log")
        row["sizes"].append(
            {
                "size": size,
                "ns_per_element": {
                    name: ns.get(name) for name in (*KERNEL_LOG_REDUCTIONS, "torch.log")
                },
                "over_log": {
                    r: (ns[r] / log_ns if log_ns else None) for r in KERNEL_LOG_REDUCTIONS
                },
            }
        )
    return row


if __name__ == "__main__":  # the subprocess: rounds, then the sizes
    print(json.dumps(_worker(int(sys.argv[1]), tuple(int(a) for a in sys.argv[2:]))))
