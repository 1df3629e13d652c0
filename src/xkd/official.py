"""Read the official XKD release backbones (spec §A14) into our encoders, and convert them to our weights format.

The release publishes four ``torch.save``-d backbone state dicts, ``vid_student.pth.tar``, ``vid_teacher.pth.tar``,
``aud_student.pth.tar`` and ``aud_teacher.pth.tar`` (no heads, no decoders); :mod:`xkd.official_format` maps their
keys and shapes to our :class:`~xkd.models.encoder.Encoder`.

Files are read with ``torch.load(weights_only=True)`` only: a file holding anything but tensors and plain containers
is refused with :class:`~xkd.engine.checkpoint.CheckpointError` and nothing in it runs.

Another input size: the encoder is built for the requested size and the stored position embedding is resampled
once, at load time, with the function the encoder would otherwise apply at every forward
(:mod:`xkd.models.pos_embed`, the release's trilinear / time-only bicubic convention). Features are identical either
way; loading once keeps the encoder's configured grid equal to its input and makes a converted file's config
describe the encoder it holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from xkd.cli_help import HelpFormatter
from xkd.config import ModelConfig, PretrainConfig, to_dict
from xkd.engine.checkpoint import CheckpointError
from xkd.engine.weights import PRETRAIN_FORMAT, save_weights, weights_metadata
from xkd.models.encoder import Encoder, audio_encoder, video_encoder
from xkd.models.pos_embed import resample_audio_pos_embed, resample_video_pos_embed
from xkd.official_format import Modality, official_model_config, official_to_ours, unwrap_state_dict

# our part name -> the release's file stem
OFFICIAL_FILES = {
    "video_student": "vid_student",
    "video_teacher": "vid_teacher",
    "audio_student": "aud_student",
    "audio_teacher": "aud_teacher",
}
# e.g. vid_teacher.pth.tar, or a renamed download such as k400_vid_teacher.pth
_FILE_NAME = re.compile(r"^(?:.*[_-])?((?:vid|aud)_(?:student|teacher))\.(?:pth\.tar|pth|pt)$")


# ------------------------------------------------------------------------------------------------------- files


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read one ``torch.save`` file with ``torch.load(weights_only=True)`` and return its state dict of tensors
    (unwrapping ``{'state_dict': ...}`` / ``{'model': ...}`` and ``module.`` prefixes).

    Raises CheckpointError for a file the safe loader refuses (e.g. a pickle that would run code; it is not run) or
    cannot read, and for a file that holds no state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused by the safe loader torch.load(weights_only=True), nothing in it was run: the file is "
            f"not a torch checkpoint or holds objects other than tensors and plain containers. "
            f"Loader message: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {e}") from None
    return unwrap_state_dict(obj, str(path))


def official_files(path: str | os.PathLike) -> dict[str, Path]:
    """``{part: file}`` for an official backbone file or a folder of them (any subset of ``vid_student.pth.tar``,
    ``vid_teacher.pth.tar``, ``aud_student.pth.tar``, ``aud_teacher.pth.tar``; a prefix such as ``k400_`` is
    allowed), in the order video_student, video_teacher, audio_student, audio_teacher."""
    path = Path(path)
    stem_to_part = {stem: part for part, stem in OFFICIAL_FILES.items()}
    names = ", ".join(f"{stem}.pth.tar" for stem in OFFICIAL_FILES.values())
    if path.is_file():
        m = _FILE_NAME.match(path.name)
        if m is None:
            raise ValueError(f"{path}: cannot tell which backbone this file holds; official file names are {names}")
        return {stem_to_part[m.group(1)]: path}
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    found: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        m = _FILE_NAME.match(f.name)
        if m is None or not f.is_file():
            continue
        part = stem_to_part[m.group(1)]
        if part in found:
            raise ValueError(f"{path}: both {found[part].name} and {f.name} hold the {part} backbone")
        found[part] = f
    if not found:
        raise FileNotFoundError(f"{path}: no official XKD backbone files ({names})")
    return {part: found[part] for part in OFFICIAL_FILES if part in found}


def _modality(part: str) -> Modality:
    return "video" if part.startswith("video") else "audio"


def _grid(cfg: ModelConfig, modality: Modality) -> tuple[int, ...]:
    if modality == "video":
        return tuple(s // p for s, p in zip((cfg.num_frames, cfg.frame_size, cfg.frame_size), cfg.video_patch))
    return tuple(s // p for s, p in zip(cfg.spec_size, cfg.audio_patch))


def _load(
    path: str | os.PathLike,
    heads: int | None,
    num_frames: int | None,
    frame_size: int | None,
    spec_frames: int | None,
    stored_num_frames: int | None,
    stored_frame_size: int | None,
    stored_spec_size: tuple[int, int] | None,
) -> tuple[dict[str, Encoder], ModelConfig, dict[str, Path]]:
    """Encoders, the ModelConfig they are built with, and the files they came from."""
    files = official_files(path)
    mapped: dict[str, dict[str, torch.Tensor]] = {}
    first: dict[str, dict[str, torch.Tensor]] = {}
    for part, file in files.items():
        sd = read_state_dict(file)
        try:
            mapped[part] = official_to_ours(sd, _modality(part))
        except CheckpointError as e:
            raise CheckpointError(f"{file}: {e}") from None
        first.setdefault(_modality(part), sd)
    stored = official_model_config(
        first.get("video"), first.get("audio"), heads, stored_num_frames, stored_frame_size, stored_spec_size
    )
    new_size = {"num_frames": num_frames, "frame_size": frame_size}
    if spec_frames is not None:
        new_size["spec_size"] = (stored.spec_size[0], spec_frames)
    cfg = dataclasses.replace(stored, **{k: v for k, v in new_size.items() if v is not None})

    encoders: dict[str, Encoder] = {}
    for part, state in mapped.items():
        modality = _modality(part)
        encoder = video_encoder(cfg) if modality == "video" else audio_encoder(cfg)  # checks the new size
        resample = resample_video_pos_embed if modality == "video" else resample_audio_pos_embed
        try:
            state["pos_embed"] = resample(state["pos_embed"], _grid(stored, modality), _grid(cfg, modality))
            encoder.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"{files[part]}: does not fit the architecture inferred from the files ({stored.encoder}, video "
                f"{stored.num_frames}x{stored.frame_size}x{stored.frame_size}, audio {stored.spec_size}): {e}"
            ) from None
        encoders[part] = encoder
    return encoders, cfg, files


def load_official(path: str | os.PathLike, **options: Any) -> dict[str, Encoder]:
    """Official backbones (a file or a folder, see :func:`official_files`) as our encoders, loaded strictly:
    ``{"video_student" | "video_teacher" | "audio_student" | "audio_teacher": Encoder}``.

    Keyword options: ``num_frames`` / ``frame_size`` / ``spec_frames`` configure the encoders for another input size
    (the stored position embedding is resampled once, see the module docstring); ``stored_num_frames`` /
    ``stored_frame_size`` / ``stored_spec_size`` give the size the weights were trained at when the position embedding
    does not determine it (see :func:`official_model_config`); ``heads`` defaults to dim // 64.
    """
    return load_official_with_config(path, **options)[0]


def load_official_with_config(path: str | os.PathLike, **options: Any) -> tuple[dict[str, Encoder], ModelConfig]:
    """:func:`load_official` (same keyword options) that also returns the encoders' :class:`ModelConfig`."""
    keys = ("heads", "num_frames", "frame_size", "spec_frames", "stored_num_frames", "stored_frame_size",
            "stored_spec_size")
    unknown = set(options) - set(keys)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; known: {', '.join(keys)}")
    encoders, cfg, _ = _load(path, *(options.get(k) for k in keys))
    return encoders, cfg


def convert_official(
    src: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    heads: int | None = None,
    num_frames: int | None = None,
    frame_size: int | None = None,
    spec_frames: int | None = None,
    stored_num_frames: int | None = None,
    stored_frame_size: int | None = None,
    stored_spec_size: tuple[int, int] | None = None,
) -> Path:
    """Write official backbones (arguments as :func:`load_official`) as one of our safetensors weights files.

    Parts are named as ours (``video_student``, ``audio_teacher``, ...); metadata: ``format`` "xkd-weights-1",
    ``xkd_version``, ``method`` "xkd-official", ``config`` (JSON of a PretrainConfig whose ``model`` is the encoders'
    ModelConfig) and ``source`` (JSON list of the file names read). Returns the path written.
    """
    encoders, cfg, files = _load(
        src, heads, num_frames, frame_size, spec_frames, stored_num_frames, stored_frame_size, stored_spec_size
    )
    metadata = weights_metadata(PRETRAIN_FORMAT, to_dict(PretrainConfig(method="xkd", model=cfg)), method="xkd-official",
                                source=json.dumps([f.name for f in files.values()]))
    return save_weights(out_path, {part: enc.state_dict() for part, enc in encoders.items()}, metadata)


# --------------------------------------------------------------------------------------------------------- CLI


def _cmd_convert(args: argparse.Namespace) -> int:
    out = convert_official(
        args.src,
        args.out,
        heads=args.heads,
        num_frames=args.num_frames,
        frame_size=args.frame_size,
        spec_frames=args.spec_frames,
        stored_num_frames=args.stored_num_frames,
        stored_frame_size=args.stored_frame_size,
        stored_spec_size=tuple(args.stored_spec_size) if args.stored_spec_size else None,
    )
    print(f"converted {', '.join(official_files(args.src))} -> {out}")
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xkd convert-official SRC OUT`` on an argparse subparsers object; returns the new parser."""
    p = subparsers.add_parser(
        "convert-official",
        help="convert the official XKD release backbones to an xkd weights file",
        description=(
            "Read the official XKD release backbones (vid_student.pth.tar, vid_teacher.pth.tar, aud_student.pth.tar,\n"
            "aud_teacher.pth.tar: one file or a folder holding any of them) with torch.load(weights_only=True) only,\n"
            "and write them as one safetensors weights file that xkd loads like its own (parts video_student,\n"
            "video_teacher, audio_student, audio_teacher). The architecture is read from the tensor shapes."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("src", help="an official backbone file or a folder of them")
    p.add_argument("out", help="the .safetensors weights file to write")
    p.add_argument("--heads", type=int, default=None, help="attention heads (unset: dim // 64, 12 for ViT-B)")
    p.add_argument("--num-frames", type=int, default=None,
                   help="configure the video encoders for this many frames, resampling the position embedding "
                        "(unset: the stored size)")
    p.add_argument("--frame-size", type=int, default=None,
                   help="configure the video encoders for this frame side in pixels (unset: the stored size)")
    p.add_argument("--spec-frames", type=int, default=None,
                   help="configure the audio encoders for this many spectrogram frames (unset: the stored size)")
    p.add_argument("--stored-num-frames", type=int, default=None,
                   help="frames the weights were trained at, when the position embedding leaves it ambiguous")
    p.add_argument("--stored-frame-size", type=int, default=None,
                   help="frame side the weights were trained at, when the position embedding leaves it ambiguous")
    p.add_argument("--stored-spec-size", type=int, nargs=2, default=None, metavar=("MELS", "FRAMES"),
                   help="spectrogram size the weights were trained at (unset: 80 mel bins, frames from the rows)")
    p.set_defaults(func=_cmd_convert)
    return p
