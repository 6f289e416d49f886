"""A KL-divergence comparison for Polygraphy: ``compare_outputs`` for ``--compare-func-script``.

Polygraphy compares runtimes output by output with elementwise metrics; for classifiers the
question is rather how far the candidate's distribution is from the base's. With this file::

    polygraphy run base.onnx --onnxrt --save-inputs inputs.json --save-outputs base.json
    KL=$(python -c 'import kldiv_onnx.polygraphy_compare as m; print(m.__file__)')
    KLDIV_ONNX_POLYGRAPHY_MAX_KL=1e-4 polygraphy run candidate.onnx --onnxrt \\
        --load-inputs inputs.json --load-outputs base.json --compare-func-script "$KL"

each floating-point output is read as rows over its last axis (classes) and compared row by
row with the project's per-row KL (the native core's ``KLDivRows``, numpy float64 where the core
is not built): KL(P_base ‖ P_candidate), the base being Polygraphy's second result (the
outputs ``--load-outputs`` loaded; with two runners, the second one, e.g. ``--onnxrt`` in
``polygraphy run m.onnx --trt --onnxrt``).
It logs per output the mean, median, p90, p99, p99.9 and max of the row KL and the top-1
agreement, and passes an output when the chosen statistic is at most the threshold (a NaN
fails). Other outputs (integers, booleans) must be equal. Polygraphy passes the function no
options, so it reads the environment:

* ``KLDIV_ONNX_POLYGRAPHY_MAX_KL``: the threshold, a float >= 0 (default ``1e-3``);
* ``KLDIV_ONNX_POLYGRAPHY_STATISTIC``: what is held to it: ``mean`` (default), ``median``,
  ``p90``, ``p99``, ``p999`` or ``max``;
* ``KLDIV_ONNX_POLYGRAPHY_KIND``: what the outputs hold: ``logits`` (default), ``log-probs``
  or ``probs``;
* ``KLDIV_ONNX_POLYGRAPHY_TEMPERATURE``: the softmax temperature of logits (default 1).

A bad value raises ``ValueError`` naming the variable. The file imports the package absolutely
(Polygraphy loads it by path, outside the package), so ``kldiv_onnx`` must be installed. It is
not named ``polygraphy.py``: Polygraphy imports the script by its base name, which would be
Polygraphy itself.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from kldiv_onnx import native
from kldiv_onnx._contract import ROW_KINDS
from kldiv_onnx.comparison.models import kl_rows
from kldiv_onnx.comparison.report import kl_statistics

MAX_KL_VAR = "KLDIV_ONNX_POLYGRAPHY_MAX_KL"
STATISTIC_VAR = "KLDIV_ONNX_POLYGRAPHY_STATISTIC"
KIND_VAR = "KLDIV_ONNX_POLYGRAPHY_KIND"
TEMPERATURE_VAR = "KLDIV_ONNX_POLYGRAPHY_TEMPERATURE"
DEFAULT_MAX_KL = 1e-3
STATISTICS = ("mean", "median", "p90", "p99", "p999", "max")


def _float(var: str, default: float, *, positive: bool) -> float:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    ok = value > 0 if positive else value >= 0
    if not (ok and math.isfinite(value)):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{var} must be a finite number {need}, got {text!r}")
    return value


def _choice(var: str, choices: tuple[str, ...]) -> str:
    text = os.environ.get(var, "").strip() or choices[0]
    if text not in choices:
        raise ValueError(f"{var} must be one of {', '.join(choices)}, got {text!r}")
    return text


def settings() -> dict[str, Any]:
    """The comparison's settings from the environment (see the module docstring)."""
    return {
        "max_kl": _float(MAX_KL_VAR, DEFAULT_MAX_KL, positive=False),
        "statistic": _choice(STATISTIC_VAR, STATISTICS),
        "kind": _choice(KIND_VAR, ROW_KINDS),
        "temperature": _float(TEMPERATURE_VAR, 1.0, positive=True),
    }


def row_kl(
    base: np.ndarray, candidate: np.ndarray, kind: str, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of two ``(n, classes)`` float32 arrays: KL(P_base ‖ P_candidate) (float64) and
    whether the top-1 classes agree; the native core where built, else numpy float64."""
    core = native.core()
    if core is None:
        return kl_rows(base, candidate, kind, temperature)
    kl, agree = np.empty(base.shape[0]), np.empty(base.shape[0], dtype=bool)
    core.row_kl(base, candidate, kind, temperature, kl, agree, 0)
    return kl, agree


def _is_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" or array.dtype == ml_dtypes.bfloat16


def _rows(array: np.ndarray) -> np.ndarray:
    classes = array.shape[-1] if array.ndim else 1
    flat = np.asarray(array, dtype=np.float32).reshape(-1, max(classes, 1))
    return np.ascontiguousarray(flat)


def _log(line: str, *, error: bool = False) -> None:
    try:
        from polygraphy.logger import G_LOGGER
    except ImportError:  # called outside Polygraphy
        print(line, file=sys.stderr if error else sys.stdout)
        return
    (G_LOGGER.error if error else G_LOGGER.info)(line)


def compare_output(name: str, base: np.ndarray, candidate: np.ndarray, config: dict) -> bool:
    """Compare one output (see the module docstring), log its statistics; True on a pass."""
    base, candidate = np.asarray(base), np.asarray(candidate)
    if base.shape != candidate.shape:
        _log(f"FAILED | {name}: shapes {base.shape} and {candidate.shape} differ", error=True)
        return False
    if not (_is_float(base) and _is_float(candidate)):
        equal = bool(np.array_equal(base, candidate))
        _log(f"{'PASSED' if equal else 'FAILED'} | {name}: {base.dtype} values compared exactly",
             error=not equal)  # fmt: skip
        return equal
    kl, agree = row_kl(_rows(base), _rows(candidate), config["kind"], config["temperature"])
    stats = kl_statistics(kl)
    value = stats[config["statistic"]]
    nans = int(np.isnan(kl).sum())
    passed = nans == 0 and kl.size > 0 and value <= config["max_kl"]
    top1 = float(agree.mean()) if agree.size else math.nan
    _log(
        f"{'PASSED' if passed else 'FAILED'} | {name}: KL over {kl.size} rows: "
        f"mean {stats['mean']:.3e}, median {stats['median']:.3e}, p90 {stats['p90']:.3e}, "
        f"p99 {stats['p99']:.3e}, p99.9 {stats['p999']:.3e}, max {stats['max']:.3e}; "
        f"top-1 agreement {top1:.4f}; NaN rows {nans}; "
        f"{config['statistic']} {value:.3e} {'<=' if passed else 'is not <='} "
        f"{config['max_kl']:.3e} ({MAX_KL_VAR})",
        error=not passed,
    )
    return passed


def compare_outputs(
    candidate: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]
) -> OrderedDict[str, bool]:
    """Polygraphy's comparison function: ``(IterationResult, IterationResult) ->
    OrderedDict[output name, passed]``. Polygraphy passes the run under test first and the
    reference (the loaded outputs) second; every output of the reference is compared (one
    the candidate lacks fails)."""
    config = settings()
    results: OrderedDict[str, bool] = OrderedDict()
    for name, array in base.items():
        if name not in candidate:
            _log(f"FAILED | {name}: not among the candidate's outputs", error=True)
            results[name] = False
            continue
        results[name] = compare_output(name, array, candidate[name], config)
    return results
