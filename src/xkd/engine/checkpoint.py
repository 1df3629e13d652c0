"""Run checkpoints for exact resume (the release format, clean weights, is :mod:`xkd.engine.weights`).

Run checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) hold the whole run state as a dict of tensors and
plain Python values, written with ``torch.save`` and read back with ``torch.load(weights_only=True)`` only, so a file
can never run code when loaded. The file layout is the ``torch.save`` payload followed by a 48-byte trailer::

    payload | b"XKDCKPT1" (8 bytes) | sha256(payload) (32 bytes) | len(payload) (uint64, little-endian)

The file is written to a temporary file in the same folder, fsynced, then moved into place with ``os.replace``, so a
crash leaves either the old file or the new complete one. On load the trailer and the digest are checked first: a
truncated, partial or corrupted file raises :class:`CheckpointError` and is never unpickled. The digest guards
against damage, not against a forged file; the ``weights_only`` loader is what refuses code.

Run checkpoints live in ``<run_dir>/checkpoints/step_<step>.pt`` (:func:`checkpoint_path`); :func:`latest_checkpoint`
returns the newest valid one. Under FSDP the model and optimiser shards sit beside it in ``step_<step>.dcp/``
(:mod:`xkd.engine.fsdp`), written before the ``.pt`` that names it, and pruned with it.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import re
import shutil
import struct
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
_STEP_NAME = re.compile(r"^step_(\d+)\.pt$")
_MAGIC = b"XKDCKPT1"
_TRAILER = struct.Struct("<8s32sQ")  # magic, sha256 digest of the payload, payload length
_CHUNK = 1 << 24

# Values torch.load(weights_only=True) rebuilds; checked by exact type because e.g. numpy.float64 subclasses float.
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)
_CONTAINERS = (dict, OrderedDict, list, tuple, set)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupted, or holds objects the safe loader refuses."""


# ----------------------------------------------------------------------------------------------------- file helpers


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX only; elsewhere the rename is left to the OS)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, fsync it, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # created by write(), umask applies
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _sha256(f: BinaryIO, length: int) -> bytes:
    """sha256 of the first ``length`` bytes of ``f``."""
    digest = hashlib.sha256()
    f.seek(0)
    remaining = length
    while remaining > 0:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.digest()


class _Prefix(io.RawIOBase):
    """Read-only, seekable view of the first ``size`` bytes of a binary file (the payload without its trailer)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        super().__init__()
        self._f = f
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._pos)
        got = self._f.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got


# ---------------------------------------------------------------------------------------------------- run checkpoints


def _check_loadable(obj: Any, where: str) -> None:
    """Raise CheckpointError if ``obj`` holds a value that ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN_TYPES:
        return
    if type(obj) in _CONTAINERS:
        if isinstance(obj, dict):
            for key, value in obj.items():
                _check_loadable(key, f"{where} key {key!r}")
                _check_loadable(value, f"{where}[{key!r}]")
        else:
            for i, value in enumerate(obj):
                _check_loadable(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which torch.load(weights_only=True) cannot "
        "read back: store tensors, numbers, strings and dict/list/tuple of them (see capture_rng_state for numpy)"
    )


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``<run_dir>/checkpoints/step_<step:09d>.pt``: the name :func:`latest_checkpoint` and ``keep_last`` look for."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:09d}.pt"


def _step_files(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``step_*.pt`` files in ``folder``, newest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_NAME.match(p.name))]
    return sorted(found, key=lambda sp: sp[0], reverse=True)


def _prune(path: Path, keep_last: int) -> None:
    """Delete the oldest ``step_*.pt`` files beside ``path``, keeping ``path`` and the ``keep_last - 1`` before it.

    Files with a higher step than ``path`` (left by an abandoned attempt) are not touched.
    """
    m = _STEP_NAME.match(path.name)
    if m is None:
        return
    older = [p for step, p in _step_files(path.parent) if step < int(m.group(1))]
    for p in older[keep_last - 1 :]:
        p.unlink(missing_ok=True)
        shutil.rmtree(p.with_suffix(".dcp"), ignore_errors=True)  # its sharded part, under run.strategy=fsdp


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any], keep_last: int = 0) -> Path:
    """Atomically write the run state ``state`` (see the module docstring for the file layout).

    ``state`` holds everything an exact resume needs, e.g. model / optimizer / scaler / loss-centre state dicts,
    ``step``, ``epoch``, the config as a dict, ``rng=capture_rng_state()`` and the sampler state. Values that the
    safe loader could not read back are refused here, before anything is written. ``keep_last > 0`` then deletes
    older ``step_*.pt`` files in the same folder so that ``keep_last`` remain. Returns the path written.
    """
    path = Path(path)
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    state = dict(state)
    _check_loadable(state, "state")

    def write(tmp: Path) -> None:
        with open(tmp, "wb+") as f:
            torch.save(state, f)
            length = f.tell()
            digest = _sha256(f, length)
            f.seek(length)
            f.write(_TRAILER.pack(_MAGIC, digest, length))

    atomic_write(path, write)
    if keep_last:
        _prune(path, keep_last)
    return path


def _verified_payload_length(f: BinaryIO, path: Path) -> int:
    """Check the trailer and digest of an open checkpoint file; return the payload length."""
    size = os.fstat(f.fileno()).st_size
    if size < _TRAILER.size:
        raise CheckpointError(f"{path}: {size} bytes, too short to be a complete checkpoint")
    f.seek(size - _TRAILER.size)
    magic, digest, length = _TRAILER.unpack(f.read(_TRAILER.size))
    if magic != _MAGIC:
        raise CheckpointError(
            f"{path}: no integrity trailer (the file is truncated, partial, or was not written by save_checkpoint)"
        )
    if length != size - _TRAILER.size:
        raise CheckpointError(f"{path}: payload is {size - _TRAILER.size} bytes but the trailer records {length}")
    if _sha256(f, length) != digest:
        raise CheckpointError(f"{path}: sha256 mismatch, the file is corrupted")
    return length


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete checkpoint whose digest matches."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        _verified_payload_length(f, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify then load a run state written by :func:`save_checkpoint`, with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` for a missing, partial or corrupted file, and for a payload holding anything but
    tensors and plain containers (such a payload is refused without being run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        length = _verified_payload_length(f, path)
        try:
            state = torch.load(_Prefix(f, length), map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{path}: refused by the safe loader (weights_only=True): the payload holds objects other than "
                f"tensors and plain containers. Loader message: {str(e).splitlines()[0]}"
            ) from None
        except RuntimeError as e:
            raise CheckpointError(f"{path}: unreadable payload: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: payload is a {type(state).__name__}, expected a dict")
    return state


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest valid ``<run_dir>/checkpoints/step_*.pt``, warning about and skipping invalid ones; None if none."""
    for _, path in _step_files(Path(run_dir) / CHECKPOINT_DIR):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping invalid checkpoint: {e}", stacklevel=2)
            continue
        return path
    return None


# ---------------------------------------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy (legacy global), torch CPU and CUDA generator states, in forms ``weights_only`` reads."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    return {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": py_gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set every generator back to a :func:`capture_rng_state` snapshot (CUDA states for the devices present)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
