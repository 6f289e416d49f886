"""Arrow (Parquet) columns as numpy model inputs, for :mod:`kldiv_onnx.data_files` (``run`` and
``validate`` read a Parquet file whole) and :mod:`kldiv_onnx.comparison.data` (``compare``
streams it in record batches): one column per model input, the rows on the first axis.

A scalar column feeds a 1-d input; a fixed-size list column (nested for more dims), or a list
column whose rows all have the same length, feeds a multi-dimensional one. Nulls and ragged
list columns are a ``ValueError`` naming the file, the column and the row. pyarrow is optional
(``kldiv-onnx[ray]``) and imported where Parquet is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pyarrow() -> Any:
    """pyarrow with its Parquet module; ``ImportError`` saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError(
            "reading Parquet needs pyarrow, which is not installed: pip install 'kldiv-onnx[ray]'"
        ) from exc
    return pyarrow


def row_type(pa: Any, arrow_type: Any) -> tuple[tuple[int, ...] | None, np.dtype]:
    """The per-row shape (``None`` where a list column's length is only known once read) and
    the numpy dtype of a column of ``arrow_type``."""
    shape: list[int] = []
    t = arrow_type
    while pa.types.is_fixed_size_list(t):
        shape.append(t.list_size)
        t = t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return None, _leaf_dtype(pa, t)
    return tuple(shape), _leaf_dtype(pa, t)


def _leaf_dtype(pa: Any, t: Any) -> np.dtype:
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise ValueError(f"Parquet type {t} is not a numeric tensor type")
    # an empty array's numpy dtype: DataType.to_pandas_dtype imports pandas (pyarrow 25), which
    # the ray extra does not bring
    return pa.nulls(0, type=t).to_numpy(zero_copy_only=False).dtype


def to_numpy(pa: Any, array: Any, name: str, where: str, first_row: int = 0) -> np.ndarray:
    """A (combined) Arrow array of scalars or (nested) lists → a numpy array (rows, *dims);
    ``ValueError`` for nulls or a ragged list column (``first_row``: the number of its first
    row in the file, for the message)."""
    if array.null_count:
        raise ValueError(f"{where}: column {name!r} has {array.null_count} null values")
    rows = len(array)
    dims: list[int] = []
    while True:
        t = array.type
        if pa.types.is_fixed_size_list(t):
            dims.append(t.list_size)
            array = array.flatten()
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            offsets = np.asarray(array.offsets)
            lengths = np.diff(offsets)
            if lengths.size and np.any(lengths != lengths[0]):
                bad = int(np.flatnonzero(lengths != lengths[0])[0])
                raise ValueError(
                    f"{where}: column {name!r} is ragged: row {first_row + bad} has "
                    f"{int(lengths[bad])} values, row {first_row} has {int(lengths[0])}"
                )
            dims.append(int(lengths[0]) if lengths.size else 0)
            array = array.flatten()
        else:
            break
        if array.null_count:
            raise ValueError(f"{where}: column {name!r} has null values inside its lists")
    values = array.to_numpy(zero_copy_only=False)
    return values.reshape((rows, *dims))
