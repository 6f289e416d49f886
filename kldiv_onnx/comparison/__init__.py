"""``compare``: KL(P_base ‖ P_candidate) between two models' output distributions over a data
set, per sample with the project's KLDivLoss op, on one process or a Ray cluster.

Layout: :mod:`.data` (npz / Parquet shards read in row slices, the batch plan), :mod:`.models`
(the compared models, their checks, the KL model), :mod:`.engines` (local and Ray),
:mod:`.report` (statistics, table, JSON), :mod:`.plot`; its benchmark is
:mod:`kldiv_onnx.bench.compare`.
"""

from __future__ import annotations

from ..data_files import CASTS
from .core import DEFAULT_BATCH_SIZE, compare, provider_list
from .engines import ENGINES
from .models import KINDS
from .report import CompareReport

__all__ = [
    "CASTS",
    "DEFAULT_BATCH_SIZE",
    "ENGINES",
    "KINDS",
    "CompareReport",
    "compare",
    "provider_list",
]
