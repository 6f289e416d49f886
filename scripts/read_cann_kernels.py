"""Read the CANN provider's single-operator kernel registry out of an onnxruntime-cann wheel.

The provider library keeps its symbol table: every registered kernel appears as
``BuildKernelCreateInfo<kCannExecutionProvider_<Op>_kOnnxDomain_ver<start>[_<end>][_<type>...]>``.
This script turns those names into the ``single_op`` table of
``kldiv_onnx/data/cann_ort_<version>.json`` and checks that the provider option names in that
file occur in the library's strings. Usage::

    pip download onnxruntime-cann==1.24.4 --no-deps -d /tmp/cannwheel
    python scripts/read_cann_kernels.py /tmp/cannwheel/onnxruntime_cann-1.24.4-*.whl \
        kldiv_onnx/data/cann_ort_1.24.4.json
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

PROVIDER = "onnxruntime/capi/libonnxruntime_providers_cann.so"
_SYMBOL = re.compile(
    rb"BuildKernelCreateInfoINS0_\d+kCannExecutionProvider_([A-Za-z0-9]+)_kOnnxDomain_ver"
    rb"([0-9_]*?)((?:_[A-Za-z][A-Za-z0-9]*_t|_[A-Za-z][A-Za-z0-9]*)*)EEENS_"
)
# C++ type names in kernel class names → ONNX tensor element type names.
_TYPES = {
    "MLFloat16": "float16",
    "BFloat16": "bfloat16",
    "float": "float32",
    "double": "float64",
    "bool": "bool",
    "int8_t": "int8",
    "int16_t": "int16",
    "int32_t": "int32",
    "int64_t": "int64",
    "uint8_t": "uint8",
    "uint16_t": "uint16",
    "uint32_t": "uint32",
    "uint64_t": "uint64",
}


def kernels(library: bytes) -> list[dict]:
    """One entry per (op, since, until) with the element types of its first type constraint
    (``None``: the class name carries no type, the kernel takes several)."""
    table: dict[tuple[str, int, int | None], set[str] | None] = {}
    for match in _SYMBOL.finditer(library):
        op, versions, types = (g.decode() for g in match.groups())
        parts = [int(v) for v in versions.strip("_").split("_")]
        since, until = parts[0], (parts[1] if len(parts) > 1 else None)
        key = (op, since, until)
        names = re.findall(r"[A-Za-z][A-Za-z0-9]*_t|[A-Za-z][A-Za-z0-9]*", types)
        if not names:
            table[key] = None  # the kernel def lists its types itself
            continue
        found = table.setdefault(key, set())
        if found is not None:
            found.add(_TYPES[names[0]])
    return [
        {
            "op": op,
            "since": since,
            "until": until,
            "types": None if types is None else sorted(types),
        }
        for (op, since, until), types in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        if not op.startswith("Memcpy")
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, data_path = Path(argv[0]), Path(argv[1])
    with zipfile.ZipFile(wheel) as zf:
        library = zf.read(PROVIDER)
    data = json.loads(data_path.read_text())
    missing = [name for name in data["provider_options"] if name.encode() not in library]
    if missing:
        print(f"option names not in {PROVIDER}: {missing}", file=sys.stderr)
        return 1
    data["single_op"]["kernels"] = kernels(library)
    data_path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(data['single_op']['kernels'])} kernel entries written to {data_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
