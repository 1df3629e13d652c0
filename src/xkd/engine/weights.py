"""The weights file every xkd tool writes and reads: one safetensors file of named parts and string metadata.

Keys are ``<part>.<param>`` (e.g. ``video_student.blocks.0.attn.qkv.weight``) without wrapper prefixes (``module.``,
``_orig_mod.``); a part name has no dot. The header's metadata maps str to str: ``format``, ``xkd_version``,
``config`` (the run's config as JSON; :func:`weights_metadata`) and what the writer adds.

========================  ============================  ====================  ==========================================
file                      written by                    ``format``            parts
========================  ============================  ====================  ==========================================
``weights.safetensors``   ``xkd pretrain``,             ``xkd-weights-1``     encoders ``{video,audio}_{student,teacher}``
                          ``xkd convert-official``                            (:func:`encoder_part`), heads
                                                                              ``..._head`` (:func:`head_part`), decoders
                                                                              ``{video,audio}_decoder``, cav-mae's
                                                                              ``{video,audio}_projection``
``best.safetensors``      ``xkd train-ccl``             ``xkd-ccl-weights-1`` ``student``, ``compositions``,
                                                                              ``projections``
``finetuned.safetensors`` ``xkd eval finetune``         ``xkd-finetune-1``    ``classifier``
========================  ============================  ====================  ==========================================

The CCL teacher-feature cache stores its shards with the same writer. A damaged file (truncated, not safetensors, a
header that lies about its size) raises :class:`~xkd.engine.checkpoint.CheckpointError` naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xkd.engine.checkpoint import CheckpointError, atomic_write
from xkd.version import __version__

WEIGHTS_FILE = "weights.safetensors"  # a pretraining run's weights, <run>/weights.safetensors
SNAPSHOT_DIR = "snapshots"  # <run>/snapshots/step_*.safetensors: weights along the run (run.snapshot_every)
CCL_WEIGHTS_FILE = "best.safetensors"  # a CCL run's selected student
FINETUNED_FILE = "finetuned.safetensors"
PRETRAIN_FORMAT, CCL_FORMAT, FINETUNE_FORMAT = "xkd-weights-1", "xkd-ccl-weights-1", "xkd-finetune-1"
ROLES = ("student", "teacher")


def encoder_part(modality: str, role: str) -> str:
    """``video_student``, ``audio_teacher``, ...: the part of one encoder."""
    return f"{modality}_{role}"


def head_part(modality: str, role: str) -> str:
    """``video_teacher_head``, ...: the projection head that follows an encoder."""
    return f"{encoder_part(modality, role)}_head"


def decoder_part(modality: str) -> str:
    return f"{modality}_decoder"


def projection_part(modality: str) -> str:
    """``video_projection``, ``audio_projection``: cav-mae's map of a student's pooled features into the shared
    space."""
    return f"{modality}_projection"


def encoder_roles(parts: Iterable[str]) -> set[str]:
    """The roles (:data:`ROLES`) that have an encoder among ``parts``."""
    return {role for part in parts for role in ROLES if part in (encoder_part("video", role), encoder_part("audio", role))}


def weights_metadata(fmt: str, config: Mapping[str, Any], **extra: str) -> dict[str, str]:
    """The metadata every writer stores: ``format``, ``xkd_version``, ``config`` (JSON), then ``extra``."""
    return {"format": fmt, "xkd_version": __version__, "config": json.dumps(config), **extra}


def find_weights(path: Path) -> Path:
    """The weights file of a path: the file itself, or the run folder's weights.safetensors."""
    if path.is_dir():
        if (path / WEIGHTS_FILE).is_file():
            return path / WEIGHTS_FILE
        raise FileNotFoundError(f"{path} holds no {WEIGHTS_FILE} (nor official XKD .pth.tar files)")
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    return path


def clean_param_name(name: str) -> str:
    """Drop wrapper components: leading ``module.`` (DDP / DataParallel) and any ``_orig_mod.`` (torch.compile)."""
    parts = [p for p in name.split(".") if p != "_orig_mod"]
    while len(parts) > 1 and parts[0] == "module":
        parts.pop(0)
    return ".".join(parts)


def save_weights(
    path: str | os.PathLike,
    parts: Mapping[str, Mapping[str, torch.Tensor]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write one safetensors file with keys ``<part>.<param>`` and ``metadata`` (str -> str) in its header.

    ``parts``: e.g. ``{"video_student": model.state_dict(), "audio_teacher": ...}``; part names have no dot.
    Parameter names lose ``module.`` / ``_orig_mod.`` wrapper prefixes; tensors are stored contiguous on the CPU,
    and a tensor whose storage another one already uses (tied weights, views) is cloned. Written atomically.
    """
    path = Path(path)
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str (serialise configs with json.dumps); got {key!r}: {value!r}")
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for part, state_dict in parts.items():
        if not part or "." in part:
            raise ValueError(f"part name {part!r} must be non-empty and contain no '.'")
        for name, tensor in state_dict.items():
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{part}.{name} is a {type(tensor).__name__}, not a tensor")
            key = f"{part}.{clean_param_name(name)}"
            if key in tensors:
                raise ValueError(f"two parameters map to {key!r} once wrapper prefixes are removed")
            t = tensor.detach().cpu().contiguous()
            if t.numel() and t.untyped_storage().data_ptr() in seen_storages:
                t = t.clone()
            seen_storages.add(t.untyped_storage().data_ptr())
            tensors[key] = t
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_weights(
    path: str | os.PathLike, parts: Iterable[str] | None = None, device: str = "cpu"
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    """Read a :func:`save_weights` file: ``({part: {param: tensor}}, metadata)``; ``parts`` limits what is read."""
    wanted = None if parts is None else set(parts)
    out: dict[str, dict[str, torch.Tensor]] = {}
    with open_safetensors(path, device) as f:
        metadata = dict(f.metadata() or {})
        for key in f.keys():
            part, _, name = key.partition(".")
            if wanted is None or part in wanted:
                out.setdefault(part, {})[name] = f.get_tensor(key)
    if wanted is not None and wanted - out.keys():
        raise KeyError(f"{path}: no part(s) {sorted(wanted - out.keys())}; the file has {list_parts(path)}")
    return out, metadata


def list_parts(path: str | os.PathLike) -> list[str]:
    """The sorted part names in a :func:`save_weights` file (reads only the header)."""
    with open_safetensors(path) as f:
        return sorted({key.partition(".")[0] for key in f.keys()})


@contextlib.contextmanager
def open_safetensors(path: str | os.PathLike, device: str = "cpu"):
    """``safe_open`` of any safetensors file (``with open_safetensors(p) as f: f.keys(), f.get_tensor(k)``), with a
    damaged file (truncated, not safetensors, a header that lies about its size) raised as :class:`CheckpointError`
    naming the file, not as the reader's own error."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no weights file {path}")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            yield f
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors weights file ({err}); "
                              "it may be truncated or damaged, or another format") from None
