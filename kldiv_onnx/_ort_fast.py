"""onnxruntime's private Python internals, reached from this module only.

onnxruntime's public wrappers check their arguments on every call (``run_with_iobinding``
looks at the WebGPU graph capture, ``IOBinding.bind_input`` builds an ``OrtDevice``), a few
microseconds a run that a prepared call or a benchmark of small inputs would count. The
pybind objects behind them (``InferenceSession._sess``, ``IOBinding._iobinding``) skip
that; and the process-wide thread-pool switch exists only in the pybind module. A change of
those internals in a new onnxruntime release is then met here, in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import onnxruntime as ort


def bound_run(sess: ort.InferenceSession, binding: ort.IOBinding) -> tuple[Callable[[], None], Any]:
    """(run, native): ``run()`` runs ``sess`` over ``binding`` without the wrapper's per-run
    checks; ``native`` is the binding's pybind object, whose ``bind_input(name, device,
    element_type, shape, address)`` and ``bind_output(...)`` bind a buffer by address (device:
    :func:`cpu_device`). Keep ``sess`` and ``binding`` alive while they are used."""
    native = binding._iobinding
    return functools.partial(sess._sess.run_with_iobinding, native, None), native


def cpu_device() -> Any:
    """The pybind device object that ``bind_input``/``bind_output`` of a native binding take
    for CPU memory."""
    return ort.OrtDevice.make("cpu", 0)._get_c_device()


def set_global_thread_pool_sizes(intra_op: int, inter_op: int) -> None:
    """Create the process-wide thread pools every session with ``use_per_session_threads =
    False`` shares; raises when the process already has onnxruntime's environment."""
    from onnxruntime.capi import _pybind_state

    _pybind_state.set_global_thread_pool_sizes(intra_op, inter_op)
