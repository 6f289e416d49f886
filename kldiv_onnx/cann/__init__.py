"""onnxruntime's CANN execution provider (Ascend NPUs), in one place: the provider's tables
(:mod:`.tables`), its options and the wrapper's defaults (:mod:`.options`), whether it can
start here (:mod:`.status`) and where a model's nodes would run under it (:mod:`.placement`).
"""

from .options import CANN_DEFAULTS, cann_options
from .placement import MODES, Leaving, PlacementReport, check_placement
from .status import PROVIDER, CANNFallbackWarning, CannStatus, CANNUnavailableError, cann_status
from .tables import TABLE_FILE, Kernel, OptionSpec, Tables, tables

__all__ = [
    "CANN_DEFAULTS",
    "MODES",
    "PROVIDER",
    "TABLE_FILE",
    "CANNFallbackWarning",
    "CANNUnavailableError",
    "CannStatus",
    "Kernel",
    "Leaving",
    "OptionSpec",
    "PlacementReport",
    "Tables",
    "cann_options",
    "cann_status",
    "check_placement",
    "tables",
]
