"""Reading and writing files: the one model loader, and writes that never leave half a file.

:func:`load_model` takes a path, bytes or a ``ModelProto``. A path's external data is read
from the model's own folder, wherever the process runs; an empty file, a folder, random bytes
or a missing data file is a ``ValueError`` (a missing model file a ``FileNotFoundError``) that
names the path.

Every write goes to a temporary file in the target folder and is renamed over the target only
once complete (:func:`atomic_write`, :func:`save_model`): a failure (a full disk, a file-size
limit) leaves the target as it was and no partial file behind, so ``embed m.onnx m.onnx``
cannot destroy its input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import onnx
from onnx import ModelProto

from .errors import first_line

ModelLike = ModelProto | bytes | str | os.PathLike
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**20
"""Models whose serialised size would pass this (protobuf's 2 GiB limit, less a margin) are
saved with their tensors as external data."""


def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a ``Path`` if it names a readable, non-empty regular file.

    Raises ``FileNotFoundError`` when nothing is there, ``ValueError`` for a folder, a device,
    an empty or unreadable file; each message names the path.
    """
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot read {what} {os.fspath(path)!r}: no such file") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: {first_line(exc)}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: it is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: not a regular file")
    if info.st_size == 0:
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: the file is empty")
    if not os.access(p, os.R_OK):
        raise ValueError(f"cannot read {what} {os.fspath(path)!r}: permission denied")
    return p


def _check_parsed(model: ModelProto, source: str) -> ModelProto:
    # protobuf parses many byte strings (an empty one among them) as a valid, empty message
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ValueError(f"cannot read {source}: not an ONNX model (no graph or no IR version)")
    return model


def load_model(model: ModelLike, what: str = "model", *, external_data: bool = True) -> ModelProto:
    """A ``ModelProto`` from a path, serialised bytes or a ``ModelProto`` (then a copy, so the
    caller's is never modified).

    ``external_data``: read a path's external tensors from the model's folder (``False``
    leaves them as references, for checks that read only the graph).
    """
    if isinstance(model, ModelProto):
        copy = ModelProto()
        copy.CopyFrom(model)
        return copy
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise ValueError(f"cannot read {what}: empty bytes are not an ONNX model")
        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ValueError(f"cannot read {what}: not an ONNX model: {first_line(exc)}") from exc
        return _check_parsed(proto, what)
    if isinstance(model, (str, os.PathLike)):
        path = check_input_file(model, what)
        try:
            proto = onnx.load(os.fspath(path), load_external_data=False)
        except Exception as exc:
            raise ValueError(
                f"cannot read {what} {os.fspath(model)!r}: not an ONNX model: {first_line(exc)}"
            ) from exc
        _check_parsed(proto, f"{what} {os.fspath(model)!r}")
        if external_data and uses_external_data(proto):
            try:
                onnx.load_external_data_for_model(proto, str(path.resolve().parent))
            except Exception as exc:
                raise ValueError(
                    f"cannot read {what} {os.fspath(model)!r}: its external data: {first_line(exc)}"
                ) from exc
        return proto
    raise TypeError(
        f"{what} must be an onnx.ModelProto, bytes or a path, got {type(model).__name__}"
    )


def uses_external_data(model: ModelProto) -> bool:
    """Whether any initializer of the main graph keeps its data in another file."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def saved_with_external_data(path: str | os.PathLike) -> bool:
    """Whether the model file at ``path`` keeps tensors in external data files."""
    return uses_external_data(load_model(path, external_data=False))


def check_output_path(
    path: str | os.PathLike, what: str = "output", *, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """``path`` as a ``Path`` if a file can be written there: its folder exists and is
    writable, it is not a folder or a device (``/dev/full``), and it is none of ``inputs``
    (the files the command reads: a report written over one would destroy it). ``ValueError``
    otherwise."""
    p = Path(path)
    name = os.fspath(path)
    if not name:
        raise ValueError(f"cannot write {what}: empty path")
    with contextlib.suppress(FileNotFoundError):
        info = p.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ValueError(f"cannot write {what} {name!r}: it is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"cannot write {what} {name!r}: not a regular file")
        for source in inputs:
            with contextlib.suppress(OSError):
                if os.path.samefile(p, source):
                    raise ValueError(
                        f"cannot write {what} {name!r}: it is the input {os.fspath(source)!r}"
                    )
    folder = p.resolve().parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {what} {name!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what} {name!r}: folder {str(folder)!r} is not writable")
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; once the block ends without an error it
    replaces ``path`` (a rename), otherwise it is removed. ``OSError`` while writing becomes a
    ``ValueError`` naming ``path``."""
    target = check_output_path(path, what)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.resolve().parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if target.exists():  # keep the permissions of a file being replaced
            shutil.copymode(target, tmp_path)
        else:
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except OSError as exc:
        raise ValueError(f"cannot write {what} {os.fspath(path)!r}: {first_line(exc)}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "output") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, what) as tmp:
        tmp.write_bytes(data)


def save_model(
    model: ModelProto, path: str | os.PathLike, *, external_data: bool | None = None
) -> None:
    """Save ``model`` to ``path`` atomically.

    ``external_data``: keep the initializers in ``<name>.data`` beside the model (``None``:
    when the model already referenced external data or would pass 2 GiB). The result loads
    from any folder: the data file is named relative to the model.
    """
    target = check_output_path(path, "model")
    if external_data is None:
        external_data = uses_external_data(model) or model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    if not external_data:
        try:
            data = model.SerializeToString()
        except ValueError as exc:  # protobuf refuses messages over 2 GiB
            raise ValueError(f"cannot write model {os.fspath(path)!r}: {exc}") from exc
        write_bytes(target, data, "model")
        return
    folder = target.resolve().parent
    location = f"{target.name}.data"
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=folder))
    try:
        copy = ModelProto()
        copy.CopyFrom(model)
        onnx.save_model(
            copy,
            str(staging / target.name),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=location,
            size_threshold=1024,
        )
        if (staging / location).exists():
            os.replace(staging / location, folder / location)
        os.replace(staging / target.name, target)
    except OSError as exc:
        raise ValueError(f"cannot write model {os.fspath(path)!r}: {first_line(exc)}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
