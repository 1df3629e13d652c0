"""The views of end-to-end fine-tuning (spec §A10): train augmentations and the deterministic test views.

Video train view: ``FinetuneConfig.video_view`` (random resized crop, flip, normalise), then random erasing. Audio train
view: gain, log-mel, BYOL-A random resize crop, SpecAugment time warp, frequency and time masks. Test view: video
short side scaled to the crop, then one centre or three left / centre / right crops; audio the whole window.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xkd.config import AudioViewConfig, FinetuneConfig
from xkd.data.audio_views import AudioView, EvalAudioView
from xkd.data.logmel import LogMel
from xkd.data.video_views import EvalVideoView, VideoView


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_erasing(
    video: Tensor,
    p: float,
    generator: torch.Generator,
    area: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> Tensor:
    """With probability ``p``, fill one box with N(0, 1) noise in every frame (timm's ``RandomErasing``, mode
    "pixel", on normalised clips). video: [C, T, H, W]; the box has area ~U(area) of a frame and log-uniform aspect
    h / w in ``ratio`` (10 tries, else nothing is erased). Returns a new tensor when erasing."""
    if torch.rand((), generator=generator).item() >= p:
        return video
    c, t, height, width = video.shape
    for _ in range(10):
        target = height * width * _uniform(*area, generator)
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
        h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            top, left = _randint(0, height - h, generator), _randint(0, width - w, generator)
            out = video.clone()
            out[..., top : top + h, left : left + w] = torch.randn((c, t, h, w), generator=generator)
            return out
    return video


def time_warp(spec: Tensor, window: int, generator: torch.Generator) -> Tensor:
    """SpecAugment time warp. spec: [C, F, T] -> [C, F, T]: a point ``c ~ U{window..T-1-window}`` moves to
    ``c + U{-window..window}``; the frames on each side are stretched linearly to fill their new span. Unchanged when
    ``window == 0`` or the spectrogram has at most ``2 * window + 1`` frames."""
    n_time = spec.shape[-1]
    if window <= 0 or n_time <= 2 * window + 1:
        return spec
    centre = _randint(window, n_time - 1 - window, generator)
    target = min(max(centre + _randint(-window, window, generator), 1), n_time - 1)
    n_freq = spec.shape[-2]
    left = F.interpolate(spec[None, ..., :centre], size=(n_freq, target), mode="bilinear", align_corners=False)
    right = F.interpolate(spec[None, ..., centre:], size=(n_freq, n_time - target), mode="bilinear",
                          align_corners=False)
    return torch.cat([left, right], dim=-1)[0]


def mask_bands(spec: Tensor, axis: int, count: int, max_width: int, generator: torch.Generator) -> Tensor:
    """SpecAugment masks: ``count`` bands of U{0..max_width} bins along ``axis`` (-2 frequency, -1 time), each at a
    uniform position, set to 0 (the mean of a normalised log-mel). spec: [C, F, T] -> a new [C, F, T]."""
    out = spec.clone()
    size = spec.shape[axis]
    for _ in range(count):
        width = _randint(0, min(max_width, size), generator)
        start = _randint(0, size - width, generator)
        out.narrow(axis, start, width).zero_()
    return out


class VideoTrainView:
    """``view(clip, generator) -> {"x": [3, T, S, S]}``: ``cfg.video_view`` (RRC, flip, ...) at ``crop_size``, then
    random erasing."""

    def __init__(self, cfg: FinetuneConfig, crop_size: int, mean, std):
        self.view = VideoView(replace(cfg.video_view, crop_size=crop_size), mean, std)
        self.random_erase = cfg.random_erase

    def __call__(self, clip: Any, generator: torch.Generator) -> dict[str, Tensor]:
        return {"x": random_erasing(self.view(clip.video, generator), self.random_erase, generator)}


class AudioTrainView:
    """``view(clip, generator) -> {"x": [1, F, T]}``: gain -> log-mel -> random resize crop -> time warp ->
    frequency masks -> time masks."""

    def __init__(self, cfg: FinetuneConfig, logmel: LogMel, sample_rate: int):
        view_cfg = AudioViewConfig(duration=None, gain=(1.0 - cfg.gain_jitter, 1.0 + cfg.gain_jitter),
                                   random_resize_crop=cfg.audio_resize_crop)
        self.view = AudioView(view_cfg, logmel, sample_rate)
        self.cfg = cfg

    def __call__(self, clip: Any, generator: torch.Generator) -> dict[str, Tensor]:
        cfg = self.cfg
        x = time_warp(self.view(clip.audio, generator), cfg.time_warp, generator)
        x = mask_bands(x, -2, cfg.freq_masks, cfg.freq_mask_width, generator)
        return {"x": mask_bands(x, -1, cfg.time_masks, cfg.time_mask_width, generator)}


class TestView:
    """Deterministic evaluation views of one clip: ``view(clip, generator=None) -> {"x": [V, ...]}``.

    Video: the short side scaled to ``crop_size``, then V = 1 centre crop or V = 3 left / centre / right crops,
    each [3, T, S, S]. Audio: V = 1 log-mel [1, F, T] of the whole window.
    """

    def __init__(self, modality: str, crops: int, crop_size: int | None, mean, std, logmel: LogMel | None):
        self.modality = modality
        self.crops = crops
        if modality == "video":
            self.view = EvalVideoView(crop_size, mean, std, short_side=crop_size, three_crop=crops == 3)
        else:
            self.view = EvalAudioView(logmel)

    def __call__(self, clip: Any, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x = self.view(clip.video if self.modality == "video" else clip.audio)
        return {"x": x if self.crops == 3 else x.unsqueeze(0)}
