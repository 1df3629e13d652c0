"""The official XKD release's checkpoint format (spec §A14): which keys and shapes its backbone state dicts hold, how
they map to our :class:`~xkd.models.encoder.Encoder`, and the architecture their shapes imply.

The release's names map to ours by prefix::

    cls_token                                              -> cls_token
    enc_pos_embed                                          -> pos_embed
    cuboid_embed.proj.* (video) / patch_embed.proj.* (audio) -> tokenizer.proj.*
    encoder.blocks.{i}.*                                   -> blocks.blocks.{i}.*
    encoder_norm.*                                         -> norm.*

Patch vectors are flattened ``(pt ph pw c)`` (video) and ``(pf pt c)`` (audio) in the release. The columns of the
patch-embedding weight are reordered to our tokenizer's order, which is read from the tokenizer itself (it is the
same order today, so the reordering is the identity, but a change of our tokenizer cannot silently break loading).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import torch

from xkd.config import EncoderConfig, ModelConfig
from xkd.engine.checkpoint import CheckpointError
from xkd.engine.weights import clean_param_name
from xkd.models.tokenizers import AudioTokenizer, VideoTokenizer

Modality = Literal["video", "audio"]

VIDEO_PATCH = (4, 16, 16)  # (pt, ph, pw) tubelets of 3 channels: 3,072 values per token
AUDIO_PATCH = (4, 16)  # (pf, pt) patches of 1 channel: 64 values per token
MEL_BINS = 80  # the release's log-mel front end; the original code refuses any other frequency size
PAPER_VIDEO_SIZE = (32, 112)  # (num_frames, frame_size) of the paper's 8x7x7 = 392 tokens
_PAPER_VIDEO_TOKENS = 8 * 7 * 7
_CHANNELS = {"video": 3, "audio": 1}
_EMBED = {"video": "cuboid_embed.proj", "audio": "patch_embed.proj"}
_BLOCK_PARAMS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
)  # fmt: skip
_BLOCK_INDEX = re.compile(r"^encoder\.blocks\.(\d+)\.")
# ------------------------------------------------------------------------------------------------- state dicts


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, also inside a ``{'state_dict': ...}`` / ``{'model': ...}`` wrapper, with
    ``module.`` / ``_orig_mod.`` prefixes removed."""
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((k for k in ("state_dict", "model") if k in obj), None)
        if inner is None:
            break
        obj = obj[inner]
    if not _is_tensor_dict(obj) or not obj:
        found = f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CheckpointError(f"{where}: not a state dict of tensors (found {found})")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in obj.items():
        key = clean_param_name(name)
        if key in out:
            raise CheckpointError(f"{where}: two tensors are named {key!r} once 'module.' prefixes are removed")
        out[key] = tensor
    return out


def _depth(sd: Mapping[str, torch.Tensor]) -> int:
    """1 + the highest block index among the keys (0 when there is no block)."""
    indices = [int(m.group(1)) for key in sd if (m := _BLOCK_INDEX.match(key))]
    return max(indices) + 1 if indices else 0


def _expected_keys(sd: Mapping[str, torch.Tensor], modality: Modality) -> set[str]:
    """The keys of a release backbone with as many blocks as ``sd`` has (at least one), with qkv biases if any
    block of ``sd`` has one."""
    qkv_bias = any(key.endswith(".attn.qkv.bias") for key in sd)
    params = _BLOCK_PARAMS + (("attn.qkv.bias",) if qkv_bias else ())
    keys = {"cls_token", "enc_pos_embed", "encoder_norm.weight", "encoder_norm.bias"}
    keys |= {f"{_EMBED[modality]}.weight", f"{_EMBED[modality]}.bias"}
    keys |= {f"encoder.blocks.{i}.{p}" for i in range(max(_depth(sd), 1)) for p in params}
    return keys


def _show(keys: list[str], limit: int = 10) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _check_keys(sd: Mapping[str, torch.Tensor], modality: Modality) -> None:
    """Raise CheckpointError naming the missing and the unexpected keys unless ``sd`` is a release backbone."""
    expected = _expected_keys(sd, modality)
    missing, unexpected = sorted(expected - sd.keys()), sorted(sd.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"not an official XKD {modality} backbone state dict (spec §A14): missing keys: {_show(missing)}; "
            f"unexpected keys: {_show(unexpected)}"
        )


def detect_official(state_dict: Any) -> Modality | None:
    """``"video"`` or ``"audio"`` when ``state_dict`` (possibly wrapped, see :func:`read_state_dict`) has the
    release backbone's keys, None otherwise."""
    try:
        sd = unwrap_state_dict(state_dict, "state dict")
    except CheckpointError:
        return None
    found = [m for m in _EMBED if f"{_EMBED[m]}.weight" in sd]
    if len(found) != 1 or not {"cls_token", "enc_pos_embed"} <= sd.keys() or _depth(sd) == 0:
        return None
    return found[0]


def _patch_permutation(modality: Modality) -> torch.Tensor:
    """[P]: for each column of our patch vector, the release's column holding the same input value."""
    if modality == "video":
        pt, ph, pw = VIDEO_PATCH
        c = _CHANNELS["video"]
        # the release's column of every value of one tubelet [C, pt, ph, pw]: vectors are (pt ph pw c)
        official = torch.arange(pt * ph * pw * c).reshape(pt, ph, pw, c).permute(3, 0, 1, 2)
        tokenizer = VideoTokenizer(pt, (ph, pw), VIDEO_PATCH, in_chans=c, dim=1)
    else:
        pf, pt = AUDIO_PATCH
        c = _CHANNELS["audio"]
        # one patch [C, pf, pt]: vectors are (pf pt c)
        official = torch.arange(pf * pt * c).reshape(pf, pt, c).permute(2, 0, 1)
        tokenizer = AudioTokenizer((pf, pt), AUDIO_PATCH, dim=1, in_chans=c)
    return tokenizer.patchify(official[None])[0, 0]


def _check_patch_weight(sd: Mapping[str, torch.Tensor], modality: Modality) -> None:
    """The patch embedding must take the release's 4x16x16x3 = 3,072 (video) / 4x16x1 = 64 (audio) values."""
    patch = VIDEO_PATCH if modality == "video" else AUDIO_PATCH
    patch_dim = math.prod(patch) * _CHANNELS[modality]
    weight = sd[f"{_EMBED[modality]}.weight"]
    if weight.ndim != 2 or weight.shape[1] != patch_dim:
        raise CheckpointError(
            f"{_EMBED[modality]}.weight has shape {list(weight.shape)}, expected [dim, {patch_dim}] for "
            f"{'x'.join(map(str, patch))} patches of {_CHANNELS[modality]} channel(s)"
        )


def _our_name(key: str, modality: Modality) -> str:
    for prefix, ours in (
        ("enc_pos_embed", "pos_embed"),
        (f"{_EMBED[modality]}.", "tokenizer.proj."),
        ("encoder.", "blocks."),
        ("encoder_norm.", "norm."),
    ):
        if key.startswith(prefix):
            return ours + key[len(prefix) :]
    return key  # cls_token


def official_to_ours(state_dict: Any, modality: Modality) -> dict[str, torch.Tensor]:
    """A release backbone state dict -> our :class:`Encoder` state dict (names mapped, patch-embedding weight
    columns in our tokenizer's order). Raises CheckpointError naming missing / unexpected keys."""
    if modality not in _EMBED:
        raise ValueError(f"modality must be 'video' or 'audio', got {modality!r}")
    sd = unwrap_state_dict(state_dict, f"{modality} state dict")
    _check_keys(sd, modality)
    _check_patch_weight(sd, modality)
    out = {_our_name(key, modality): tensor for key, tensor in sd.items()}
    out["tokenizer.proj.weight"] = out["tokenizer.proj.weight"][:, _patch_permutation(modality)]
    return out


# ------------------------------------------------------------------------------------------------ architecture


def _encoder_config(sd: Mapping[str, torch.Tensor], heads: int | None, where: str) -> EncoderConfig:
    cls = sd["cls_token"]
    if cls.ndim != 3 or cls.shape[:2] != (1, 1):
        raise CheckpointError(f"{where}: cls_token has shape {list(cls.shape)}, expected [1, 1, dim]")
    dim = cls.shape[-1]
    hidden = sd["encoder.blocks.0.mlp.fc1.weight"].shape[0]
    mlp_ratio = hidden / dim
    if int(dim * mlp_ratio) != hidden:
        raise CheckpointError(f"{where}: MLP width {hidden} is not int(dim * ratio) for dim {dim} and any ratio")
    if heads is None:
        if dim % 64:
            raise ValueError(f"{where}: dim {dim} is not a multiple of 64, so the number of heads cannot be "
                             "inferred; pass heads")
        heads = dim // 64
    elif heads < 1 or dim % heads:
        raise ValueError(f"{where}: dim {dim} is not divisible by heads {heads}")
    qkv_bias = "encoder.blocks.0.attn.qkv.bias" in sd
    return EncoderConfig(dim=dim, depth=_depth(sd), heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)


def _patch_rows(sd: Mapping[str, torch.Tensor], dim: int, where: str) -> int:
    """N: the position embedding's patch rows (its rows minus the CLS row)."""
    pe = sd["enc_pos_embed"]
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[1] < 2 or pe.shape[2] != dim:
        raise CheckpointError(f"{where}: enc_pos_embed has shape {list(pe.shape)}, expected [1, 1+N, {dim}]")
    return pe.shape[1] - 1


def _video_size(n: int, num_frames: int | None, frame_size: int | None) -> tuple[int, int]:
    """(num_frames, frame_size) of square frames whose 4x16x16 tubelet grid has ``n`` tokens."""
    pt, ph, pw = VIDEO_PATCH
    if num_frames is None and frame_size is None and n == _PAPER_VIDEO_TOKENS:
        return PAPER_VIDEO_SIZE  # 392 also fits 8x224x224; the release is the paper's size
    fits = [
        (n // (s * s) * pt, s * ph)
        for s in range(1, math.isqrt(n) + 1)
        if n % (s * s) == 0
        and (num_frames is None or n // (s * s) * pt == num_frames)
        and (frame_size is None or s * ph == frame_size)
    ]
    if len(fits) == 1:
        return fits[0]
    given = f" with num_frames={num_frames}, frame_size={frame_size}" if (num_frames or frame_size) else ""
    if not fits:
        raise ValueError(
            f"the video position embedding has {n} patch rows, which no input size fits{given} "
            f"(rows = num_frames/{pt} * (frame_size/{ph})^2 with {pt}x{ph}x{pw} tubelets)"
        )
    sizes = ", ".join(f"{t}x{s}x{s}" for t, s in fits)
    raise ValueError(
        f"the video position embedding has {n} patch rows, which several input sizes fit ({sizes} frames x H x W); "
        "pass num_frames and/or frame_size (the size the weights were trained at)"
    )


def _spec_size(n: int, spec_size: tuple[int, int] | None) -> tuple[int, int]:
    """(mel bins, frames) whose 4x16 patch grid has ``n`` tokens; the frequency side is 80 mel bins unless given."""
    pf, pt = AUDIO_PATCH
    if spec_size is not None:
        f, t = spec_size
        if f <= 0 or t <= 0 or f % pf or t % pt or (f // pf) * (t // pt) != n:
            raise ValueError(
                f"spec_size {tuple(spec_size)} does not fit the audio position embedding's {n} patch rows "
                f"(rows = mel_bins/{pf} * frames/{pt})"
            )
        return f, t
    rows_f = MEL_BINS // pf
    if n % rows_f:
        raise ValueError(
            f"the audio position embedding has {n} patch rows, not a multiple of {rows_f} ({MEL_BINS} mel bins in "
            f"{pf}-bin patches); pass spec_size=(mel_bins, frames)"
        )
    return MEL_BINS, n // rows_f * pt


def official_model_config(
    video_sd: Any = None,
    audio_sd: Any = None,
    heads: int | None = None,
    num_frames: int | None = None,
    frame_size: int | None = None,
    spec_size: tuple[int, int] | None = None,
) -> ModelConfig:
    """The :class:`ModelConfig` whose encoders fit release backbone state dicts.

    From the shapes: dim (cls_token), depth (block indices), MLP ratio (fc1), qkv_bias (key presence); ``heads``
    defaults to dim // 64 (12 for ViT-B). Patches are the release's 4x16x16 video tubelets and 4x16 audio patches.
    The input size is read from the position embedding's rows: 393 -> 32x112x112 and 561 -> 80x448 (the paper's);
    other row counts are inferred when a single size fits (audio: 80 mel bins), otherwise pass ``num_frames`` /
    ``frame_size`` / ``spec_size = (mel_bins, frames)``, the size the weights were trained at. Sizes of a modality
    without a state dict keep the given value or the paper's default.
    """
    if video_sd is None and audio_sd is None:
        raise ValueError("official_model_config needs a video and/or an audio state dict")
    encoders: dict[str, EncoderConfig] = {}
    sizes: dict[str, Any] = {}
    for modality, obj in (("video", video_sd), ("audio", audio_sd)):
        if obj is None:
            continue
        where = f"{modality} backbone"
        sd = unwrap_state_dict(obj, where)
        _check_keys(sd, modality)
        _check_patch_weight(sd, modality)
        enc = encoders[modality] = _encoder_config(sd, heads, where)
        n = _patch_rows(sd, enc.dim, where)
        if modality == "video":
            sizes["num_frames"], sizes["frame_size"] = _video_size(n, num_frames, frame_size)
        else:
            sizes["spec_size"] = _spec_size(n, spec_size)
    if len(set(map(dataclasses.astuple, encoders.values()))) > 1:
        raise ValueError(
            f"the video and audio backbones have different architectures ({encoders['video']} vs "
            f"{encoders['audio']}); one ModelConfig describes both"
        )
    cfg = ModelConfig(encoder=next(iter(encoders.values())), video_patch=VIDEO_PATCH, audio_patch=AUDIO_PATCH)
    given = {"num_frames": num_frames, "frame_size": frame_size, "spec_size": spec_size}
    given = {k: (tuple(v) if k == "spec_size" else v) for k, v in given.items() if v is not None}
    return dataclasses.replace(cfg, **{**given, **sizes})
