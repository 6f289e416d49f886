"""``compare``: the KL divergence between two models' output distributions over a data set."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

import onnxruntime as ort

from .. import native
from .. import providers as _providers
from ..data_files import CASTS
from . import models
from .data import Dataset
from .engines import ENGINES, OPENVINO, Job, Results, run_local
from .progress import Progress
from .ray_engine import run_ray
from .report import CompareReport, build_report

EngineFn = Callable[[Job, Dataset, Progress], tuple[Results, list[list[str]]]]
RUNNERS: dict[str, EngineFn] = {"local": run_local, "ray": run_ray}

DEFAULT_BATCH_SIZE = 256


def provider_list(provider: str | Sequence[str] | None) -> str | list[str]:
    """A model's providers as the session policy takes them: ``None`` or ``'auto'`` → ``'auto'``;
    a name, a short name (``cpu``, ``cann``, ``CUDA``…, any case) or a comma-separated list →
    full names; ``openvino`` → OpenVINO's CPU device (through :mod:`kldiv_onnx.openvino`, not
    onnxruntime); ``ValueError`` for a name onnxruntime does not know."""
    if provider is None or provider == "auto":
        return "auto"
    if isinstance(provider, str) and provider.strip().lower() == OPENVINO.lower():
        return [OPENVINO]  # not an onnxruntime provider: the model runs on OpenVINO's CPU
    parts = provider.split(",") if isinstance(provider, str) else list(provider)
    known = list(dict.fromkeys([*ort.get_available_providers(), _providers.CANN, _providers.CPU]))
    names = []
    for part in parts:
        text = str(part).strip()
        match = [
            k
            for k in known
            if text.lower() in (k.lower(), k.lower().removesuffix("executionprovider"))
        ]
        if not match:
            short = [k.removesuffix("ExecutionProvider") for k in known]
            raise ValueError(f"unknown provider {text!r}; known here: {', '.join(short)}")
        names.append(match[0])
    return names


def _check_args(
    kind: str,
    temperature: float,
    batch_size: int,
    engine: str,
    limit: int | None,
    cast: str,
    ray_timeout: float,
) -> None:
    if kind not in models.KINDS:
        raise ValueError(f"kind must be one of {', '.join(models.KINDS)}, got {kind!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if temperature != 1.0 and kind != "logits":
        raise ValueError(f"temperature divides logits: it needs kind 'logits', not {kind!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be an int >= 1, got {batch_size!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    if cast not in CASTS:
        raise ValueError(f"cast must be one of {', '.join(CASTS)}, got {cast!r}")
    if (
        isinstance(ray_timeout, bool)
        or not isinstance(ray_timeout, (int, float))
        or not 0 < ray_timeout < math.inf
    ):
        raise ValueError(f"ray timeout must be a finite number of seconds > 0, got {ray_timeout!r}")


def compare(
    base: models.ModelLike,
    candidate: models.ModelLike,
    data: str | os.PathLike,
    *,
    output: str | None = None,
    kind: str = "logits",
    temperature: float = 1.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    engine: str = "local",
    base_provider: str | Sequence[str] | None = None,
    candidate_provider: str | Sequence[str] | None = None,
    limit: int | None = None,
    cast: str = "no",
    ray_timeout: float = 30.0,
    progress: bool = False,
    verbose: bool = False,
) -> CompareReport:
    """KL(P_base ‖ P_candidate) per sample over ``data``, and its statistics.

    ``base``/``candidate``: model paths, bytes or ``ModelProto``s taking the same inputs.
    ``data``: an ``.npz`` (keys = input names), a folder of ``.npz`` shards, or Parquet (a file
    or a folder; one column per input, fixed-size list columns for multi-dimensional inputs);
    see :mod:`kldiv_onnx.comparison.data`. ``output``: the compared output where the models have
    several. ``kind``: what the output holds along its last (class) axis: ``'logits'``
    (divided by ``temperature``, then softmax), ``'log-probs'`` (softmax) or ``'probs'``
    (divided by their sum). A sample is
    one position of the output's leading axes (one data row for a ``(batch, classes)`` output),
    numbered in C order.

    Each batch of ``batch_size`` rows is read, run through both models (each on its own
    providers through :mod:`kldiv_onnx.providers`: ``None`` means the default policy) and
    reduced to its per-sample KL and top-1 agreement by the native ``KLDivRows`` op (float32
    math, float64 sums, about 1e-7 relative error at any KL size; numpy in float64 where the
    library is not built); only one float per sample is kept.
    ``engine='ray'`` runs the batches on a pool of Ray actors (``RAY_ADDRESS`` points at a
    cluster, which must answer within ``ray_timeout`` seconds: ``ValueError`` otherwise).
    ``limit``: only the first ``limit`` rows. ``cast``: data of another dtype than a model's
    input is refused (``'no'``), cast where every value survives the cast unchanged
    (``'exact'``: float64 copies of float32 values, int64 below 2**24, bool and float16 to
    float32; any other value raises), or cast as numpy does (``'any'``). ``progress``: progress
    on stderr (a bar on a terminal, a line every few seconds elsewhere). ``verbose``: Ray's own
    log lines too.

    NaN samples (a NaN in either output's row) are counted and listed, and left out of every
    statistic, top-1 agreement included. Raises ``ValueError`` (one line) for a bad argument,
    unreadable or mismatched models, or data that does not fit them.
    """
    _check_args(kind, temperature, batch_size, engine, limit, cast, ray_timeout)
    providers = (provider_list(base_provider), provider_list(candidate_provider))
    t_start = time.perf_counter()
    base_info = models.load(base, "base")
    candidate_info = models.load(candidate, "candidate")
    outputs = models.pick_outputs(base_info, candidate_info, output)
    dataset = Dataset(data)
    try:
        feed_types = models.check_data(
            base_info, candidate_info, dataset.columns(), batch_size, cast
        )
        rows = dataset.rows if limit is None else min(limit, dataset.rows)
        if rows == 0:
            raise ValueError(f"data {os.fspath(data)!r} holds no samples")
        fixed = [
            t.dims[0]
            for info in (base_info, candidate_info)
            for t in info.inputs.values()
            if t.dims and isinstance(t.dims[0], int)
        ]
        if fixed and rows % fixed[0]:
            raise ValueError(
                f"the models take batches of exactly {fixed[0]} rows; {rows} rows are not a "
                "multiple of it"
            )
        job = Job(
            data=os.path.abspath(data),  # Ray workers need not share the working directory
            rows=rows,
            batch_size=batch_size,
            base=base_info.data,
            candidate=candidate_info.data,
            kl=models.kl_model(kind, float(temperature)).SerializeToString(),
            kind=kind,
            temperature=float(temperature),
            outputs=outputs,
            feed_types=feed_types,
            providers=providers,
            verbose=verbose,
            library=native.library_path() if native.available() else None,
            cast=cast,
            ray_timeout=float(ray_timeout),
        )
        bar = Progress(rows, progress)
        finished = False
        try:
            results, running = RUNNERS[engine](job, dataset, bar)
            finished = True
        finally:
            bar.close(finished)
    finally:
        dataset.close()
    t_stats = time.perf_counter()
    values = results.values
    results.close()
    assert values is not None  # rows > 0: at least one batch ran
    report = build_report(
        values,
        results.agree,
        models={"base": base_info.label, "candidate": candidate_info.label},
        output={"base": outputs[0], "candidate": outputs[1]},
        kind=kind,
        temperature=float(temperature),
        providers={"base": list(running[0]), "candidate": list(running[1])},
        engine=engine,
        batch_size=batch_size,
        kl_op=models.KL_WAYS[models.kl_way(job.library)],
        data=os.fspath(data),
        rows=rows,
        timings={},
    )
    end = time.perf_counter()
    wall = end - t_start
    report.timings.update(
        {k: round(v, 6) for k, v in results.timings.items()},
        startup_s=round(results.startup_s, 6),
        **({} if results.ray_init_s is None else {"ray_init_s": round(results.ray_init_s, 6)}),
        stats_s=round(end - t_stats, 6),
        wall_s=round(wall, 6),
        samples_per_s=round(values.size / wall, 3),
        # the steady rate: the fixed start-up (Ray: starting the cluster, the actors and their
        # sessions) left out
        samples_per_s_after_startup=round(values.size / max(wall - results.startup_s, 1e-9), 3),
    )
    return report
