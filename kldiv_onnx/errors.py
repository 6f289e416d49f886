"""Error messages in one line: what every layer that reports another library's error uses."""

from __future__ import annotations

import re


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ort_message(exc: BaseException) -> str:
    """The first line of an onnxruntime error, without its ``[ONNXRuntimeError] : 1 : FAIL :``
    prefix; of a node's failure, the node's own message."""
    line = first_line(exc)
    line = line.rpartition("Status Message: ")[2] or line
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)
