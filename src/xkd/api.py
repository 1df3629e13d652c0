"""Load pretrained encoders and turn clips into features.

    import xkd
    enc = xkd.load("runs/xkd/weights.safetensors")           # or a run folder, or official XKD release files
    v = enc.encode_video(frames)      # [B, 3, T, H, W] normalised floats, or uint8 [B, T, H, W, 3]  -> [B, D]
    a = enc.encode_audio(waveforms)   # [B, S] 16 kHz waveforms, or log-mel [B, 1, F, T] / [B, F, T]  -> [B, D]

Features are the mean of the patch tokens after the final LayerNorm, CLS excluded (spec §A10).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from xkd.config import PretrainConfig, from_dict
from xkd.data.logmel import LogMel
from xkd.data.video_views import center_crop, normalize, resize_short_side
from xkd.engine.weights import WEIGHTS_FILE, encoder_part, encoder_roles, find_weights, list_parts, load_weights
from xkd.models.encoder import Encoder, audio_encoder, pooled, video_encoder

class InputShapeError(ValueError):
    """An input tensor of the wrong shape; the message names the expected shape."""


@dataclass
class Encoders:
    """A video and/or an audio encoder with the preprocessing of the config they were trained with."""

    video: Encoder | None
    audio: Encoder | None
    config: PretrainConfig
    role: str  # "student", "teacher" or "random"
    source: str
    steps: tuple[int, int] | None = None  # (steps trained, schedule length) of an xkd run; None when unknown

    def __post_init__(self) -> None:
        self._logmel: tuple | None = None
        for enc in (self.video, self.audio):
            if enc is not None:
                enc.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        enc = self.video or self.audio
        return next(enc.parameters()).device

    @property
    def dim(self) -> int:
        return (self.video or self.audio).dim

    @property
    def stopped_early(self) -> bool:
        """Whether the run these weights come from stopped before the end of its schedule (``--max-steps``)."""
        return self.steps is not None and self.steps[0] < self.steps[1]

    def describe(self) -> str:
        """One line for reports: the source, the role and, for a run stopped early, how far it got."""
        text = f"{self.source} ({self.role})"
        if self.stopped_early:
            text += f", STOPPED EARLY at step {self.steps[0]} of a {self.steps[1]}-step schedule"
        return text

    @property
    def logmel(self) -> LogMel:
        """The log-mel front end of the current ``config.data.logmel`` (rebuilt when the config changes)."""
        cfg = self.config.data.logmel
        if self._logmel is None or self._logmel[0] != cfg:
            self._logmel = (cfg, LogMel(cfg).to(self.device))
        return self._logmel[1]

    def to(self, device: str | torch.device) -> "Encoders":
        for enc in (self.video, self.audio):
            if enc is not None:
                enc.to(device)
        self._logmel = None
        return self

    # ------------------------------------------------------------------------------------------------ video
    def prepare_video(self, clips: Tensor) -> Tensor:
        """uint8 [B, T, H, W, 3] frames -> normalised float [B, 3, T, S, S]: short side resized to S, centre crop."""
        if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            raise InputShapeError(f"expected uint8 frames [B, T, H, W, 3], got {clips.dtype} {list(clips.shape)}")
        size = self.config.model.frame_size
        data = self.config.data
        out = []
        for clip in clips:
            video = clip.permute(3, 0, 1, 2).float() / 255.0  # [3, T, H, W]
            video = center_crop(resize_short_side(video, size), size)
            out.append(normalize(video, data.video_mean, data.video_std))
        return torch.stack(out)

    @torch.no_grad()
    def encode_video(self, clips: Tensor, batch_size: int = 32, tokens: bool = False) -> Tensor:
        """Video features [B, D] from normalised clips [B, 3, T, H, W] (float) or raw frames [B, T, H, W, 3] (uint8);
        with ``tokens`` the patch tokens [B, N, D] instead of their mean (CLS excluded).

        T, H and W must be multiples of the tubelet size (other sizes than the training size resample the position
        embedding)."""
        if self.video is None:
            raise ValueError(f"{self.source} holds no video encoder")
        if clips.dtype == torch.uint8:
            clips = self.prepare_video(clips)
        patch = self.config.model.video_patch
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise InputShapeError(f"expected video clips [B, 3, T, H, W] (T, H, W multiples of {list(patch)}), "
                                  f"got {list(clips.shape)}")
        if any(s % p for s, p in zip(clips.shape[2:], patch)):
            raise InputShapeError(f"video clips [B, 3, T, H, W] need T, H, W to be multiples of {list(patch)}, "
                                  f"got {list(clips.shape)}")
        return self._batched(self.video, clips, batch_size, tokens)

    # ------------------------------------------------------------------------------------------------ audio
    def prepare_audio(self, waveforms: Tensor) -> Tensor:
        """Waveforms [B, S] at the config's sample rate -> normalised log-mel [B, 1, F, T]."""
        if waveforms.ndim != 2 or not waveforms.is_floating_point():
            raise InputShapeError(f"expected float waveforms [B, S], got {waveforms.dtype} {list(waveforms.shape)}")
        return self.logmel(waveforms.to(self.device)).unsqueeze(1)

    @torch.no_grad()
    def encode_audio(self, audio: Tensor, batch_size: int = 32, tokens: bool = False) -> Tensor:
        """Audio features [B, D] from waveforms [B, S] or log-mel spectrograms [B, 1, F, T] / [B, F, T]; with
        ``tokens`` the patch tokens [B, N, D] instead of their mean (CLS excluded)."""
        if self.audio is None:
            raise ValueError(f"{self.source} holds no audio encoder")
        if audio.ndim == 2:
            audio = self.prepare_audio(audio)
        elif audio.ndim == 3:
            audio = audio.unsqueeze(1)
        n_mels = self.config.model.spec_size[0]
        patch = self.config.model.audio_patch
        if audio.ndim != 4 or audio.shape[1] != 1 or audio.shape[2] != n_mels or audio.shape[3] % patch[1]:
            raise InputShapeError(
                f"expected waveforms [B, S] or log-mel [B, 1, {n_mels}, T] with T a multiple of {patch[1]}, "
                f"got {list(audio.shape)}"
            )
        return self._batched(self.audio, audio, batch_size, tokens)

    def _batched(self, encoder: Encoder, x: Tensor, batch_size: int, tokens: bool) -> Tensor:
        outs = []
        for chunk in x.split(batch_size):
            out = encoder(chunk.to(self.device))
            outs.append(out.patch_tokens if tokens else pooled(out))
        return torch.cat(outs).float()


def _is_official(path: Path) -> bool:
    names = [p.name for p in path.iterdir()] if path.is_dir() else [path.name]
    return any(n.endswith((".pth.tar", ".pth", ".pt")) for n in names) and not (
        path.is_dir() and (path / WEIGHTS_FILE).is_file()
    )


def load(path: str | Path, role: str = "auto", device: str | torch.device = "cpu", **official_options) -> Encoders:
    """Encoders from a weights file, a run folder, or official XKD release files (``*.pth.tar``, file or folder).

    role: "teacher" (the EMA teachers), "student", or "auto" (teachers when the file has them, else students).
    official_options (official files only): ``num_frames``, ``frame_size``, ``spec_frames`` to build the encoders
    for another input size (position embeddings resampled once), ``heads`` and ``stored_*`` (see xkd.official).
    """
    if role not in ("auto", "teacher", "student"):
        raise ValueError(f"role must be 'auto', 'teacher' or 'student', got {role!r}")
    path = Path(path)
    if path.exists() and _is_official(path):
        from xkd.official import load_official_with_config

        encoders, model_cfg = load_official_with_config(path, **official_options)
        cfg = PretrainConfig(model=model_cfg)
        chosen = _choose_role(role, encoder_roles(encoders), str(path))
        video, audio = (encoders.get(encoder_part(m, chosen)) for m in ("video", "audio"))
        return Encoders(video, audio, cfg, chosen, str(path)).to(device)
    if official_options:
        raise TypeError(f"{sorted(official_options)} apply to official XKD files only; {path} is not one")
    file = find_weights(path)
    available = set(list_parts(file))
    chosen = _choose_role(role, encoder_roles(available), str(file))
    wanted = [encoder_part(m, chosen) for m in ("video", "audio")]
    parts, meta = load_weights(file, [p for p in wanted if p in available])
    if "config" not in meta:
        raise ValueError(f"{file} has no 'config' metadata: it is not an xkd weights file")
    cfg = from_dict(PretrainConfig, json.loads(meta["config"]), source=f"{file} (metadata)")
    steps = (int(meta["step"]), int(meta.get("schedule_steps", meta["step"]))) if "step" in meta else None
    built = {}
    for modality, build in (("video", video_encoder), ("audio", audio_encoder)):
        state = parts.get(encoder_part(modality, chosen))
        if state is not None:
            enc = build(cfg.model)
            enc.load_state_dict(state)
            built[modality] = enc
    return Encoders(built.get("video"), built.get("audio"), cfg, chosen, str(file), steps).to(device)


def load_roles(path: str | Path, role: str = "both", device: str | torch.device = "cpu") -> dict[str, Encoders]:
    """``{role: Encoders}``: with ``role="both"`` the teachers and the students when the weights hold both (the
    students alone otherwise), else the one role asked for (see :func:`load`)."""
    if role != "both":
        encoders = load(path, role=role, device=device)
        return {encoders.role: encoders}
    teacher = load(path, role="auto", device=device)
    if teacher.role != "teacher":
        return {teacher.role: teacher}
    return {"teacher": teacher, "student": load(path, role="student", device=device)}


def _choose_role(role: str, roles: set[str], source: str) -> str:
    if not roles:
        raise ValueError(f"{source} holds no student or teacher encoder")
    if role == "auto":
        return "teacher" if "teacher" in roles else "student"
    if role not in roles:
        raise ValueError(f"{source} has no {role} encoders (it has: {', '.join(sorted(roles))})")
    return role


BASELINE_SEED_OFFSET = 100_003  # baseline_seed(s) = s + this: never a pretraining seed of the same experiment


def baseline_seed(pretrain_seed: int) -> int:
    """The seed of the random-init baseline evaluated beside models pretrained with ``pretrain_seed``."""
    return pretrain_seed + BASELINE_SEED_OFFSET


def random_encoders(cfg: PretrainConfig, seed: int, device: str | torch.device = "cpu") -> Encoders:
    """Randomly initialised encoders of ``cfg``'s architecture, the untrained baseline of an evaluation, from their
    own ``seed`` (e.g. :func:`baseline_seed`).

    The seed must differ from ``cfg.run.seed``: a model pretrained with that seed starts from exactly these weights,
    so it would be scored against its own starting point. The caller's random state is left untouched.
    """
    if seed == cfg.run.seed:
        raise ValueError(f"the random-init baseline needs its own seed, not the pretraining seed {seed} "
                         f"(use xkd.api.baseline_seed({seed}) = {baseline_seed(seed)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        video, audio = video_encoder(cfg.model), audio_encoder(cfg.model)
    return Encoders(video, audio, cfg, "random", f"random init (seed {seed})").to(device)
