"""Sample-level views: the global and local views of one pretraining clip, and the downstream feature views.

A clip is any object with ``.video`` (uint8 [T, H, W, 3], already resized to the short side) and ``.audio``
(float [S], the same time window), e.g. :class:`xkd.data.media.Clip`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from xkd.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig, PretrainConfig
from xkd.data.audio_views import AudioView, EvalAudioView, LogMel, svm_train_audio_view
from xkd.data import logmel as mel_front_end
from xkd.data.dataset import ClipDataset
from xkd.data.manifest import read_manifest
from xkd.data.video_views import (EvalVideoView, MildVideoView, VideoView, finish_views, svm_train_video_config,
                                  to_float)

TRAIN_VIEWS = ("mild", "strong")  # the classifier's training views: EvalViews(train_view=...)


class PretrainViews:
    """The XKD pretraining views of one clip (spec §A2).

    ``views(clip, generator)`` returns ``dict(frames=[global, local_1, ..., local_n], audio=[global, local])``:
    - frames[0]: [3, T, S, S], a random view of the whole clip (``data.video_global``);
    - frames[k>0]: [3, T // temporal_ratio, s, s], a random view (``data.video_local``) of a random run of
      ``T // temporal_ratio`` contiguous frames of the clip (not of the global view); ``data.num_local_views`` of them;
    - audio[0]: [1, F, T_a], the whole window (``data.audio_global``);
    - audio[1]: [1, F, t_a], a short segment (``data.audio_local``).
    With ``data.video_views_on: device`` the frames are uint8 crops and ``frame_params`` holds each one's remaining
    draws (:class:`~xkd.data.video_views.VideoView` ``deferred``; :func:`training_frames` finishes them).
    ``logmel``: the log-mel front end (default: the one ``data.logmel`` describes).
    """

    def __init__(self, data: DataConfig, logmel: LogMel | None = None):
        logmel = logmel if logmel is not None else mel_front_end.LogMel(data.logmel)
        self.temporal_ratio = data.temporal_ratio
        self.num_local_views = data.num_local_views
        self.deferred = data.video_views_on == "device"
        self.video_global = VideoView(data.video_global, data.video_mean, data.video_std, deferred=self.deferred)
        self.video_local = VideoView(data.video_local, data.video_mean, data.video_std, deferred=self.deferred)
        sample_rate = data.logmel.sample_rate
        self.audio_global = AudioView(data.audio_global, logmel, sample_rate)
        self.audio_local = AudioView(data.audio_local, logmel, sample_rate)

    def __call__(self, clip: Any, generator: torch.Generator) -> dict[str, list[Tensor]]:
        video = clip.video
        num_frames = video.shape[0]
        local_len = num_frames // self.temporal_ratio
        if local_len < 1:
            raise ValueError(f"a clip of {num_frames} frames has no local view at temporal_ratio {self.temporal_ratio}")
        frames = [self.video_global(video, generator)]
        for _ in range(self.num_local_views):
            start = int(torch.randint(0, num_frames - local_len + 1, (), generator=generator).item())
            frames.append(self.video_local(video[start : start + local_len], generator))
        audio = [self.audio_global(clip.audio, generator), self.audio_local(clip.audio, generator)]
        if self.deferred:
            return {"frames": [f for f, _ in frames], "frame_params": [p for _, p in frames], "audio": audio}
        return {"frames": frames, "audio": audio}


def training_frames(batch: dict[str, Any], data: DataConfig, device: torch.device) -> list[Tensor]:
    """A pretraining batch's video views on ``device``: [global [B, 3, T, S, S], local [B, 3, t, s, s], ...], as the
    loader made them, or, when it deferred them (``data.video_views_on: device``: uint8 crops and their draws in
    ``batch["frame_params"]``), finished there in one batched pass per view."""
    frames = [v.to(device, non_blocking=True) for v in batch["frames"]]
    if "frame_params" not in batch:
        return frames
    configs = [data.video_global] + [data.video_local] * (len(frames) - 1)
    return [finish_views(to_float(v), p, c.blur_kernel, data.video_mean, data.video_std)
            for v, p, c in zip(frames, batch["frame_params"], configs)]


class EvalViews:
    """Views for downstream feature extraction (spec §A10).

    ``views(clip, generator=None)`` returns ``dict(video=..., audio=...)``; a modality whose attribute is None
    (e.g. ESC-50 has no video) is left out.
    - test (``train_view=None``): video centre view [3, T, S, S] (or [3, 3, T, S, S] with ``three_crop``, see
      :class:`EvalVideoView`) and audio log-mel [1, F, T_a]; deterministic.
    - classifier training views (need a generator), audio volume jitter ``1 -+ volume_jitter`` on the whole window:
      ``"mild"``: the test view with a small random zoom / shift (``crop_scale`` of its area) and a flip when
      ``flip`` (:class:`MildVideoView`); ``"strong"``: the original SVM augmentation, RRC scale (0.08, 1), flip,
      colour jitter, gray p=0.2 (spec §A10).
    """

    def __init__(
        self,
        logmel: LogMel,
        sample_rate: int,
        crop_size: int = 112,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        short_side: int | None = None,
        three_crop: bool = False,
        train_view: str | None = None,
        flip: bool = True,
        crop_scale: Sequence[float] = (1.0, 1.0),
        volume_jitter: float = 0.1,
    ):
        if train_view is not None and train_view not in TRAIN_VIEWS:
            raise ValueError(f"train_view must be None or one of {TRAIN_VIEWS}, got {train_view!r}")
        if train_view and three_crop:
            raise ValueError("three_crop is a test-time view; it cannot be combined with a training view")
        self.augment = train_view is not None
        if train_view == "strong":
            self.video_view = VideoView(svm_train_video_config(crop_size), mean, std)
        elif train_view == "mild":
            self.video_view = MildVideoView(crop_size, mean, std, short_side, crop_scale, flip)
        if self.augment:
            self.audio_view = svm_train_audio_view(logmel, sample_rate, volume_jitter)
        else:
            self.video_view = EvalVideoView(crop_size, mean, std, short_side=short_side, three_crop=three_crop)
            self.audio_view = EvalAudioView(logmel)

    def __call__(self, clip: Any, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        if self.augment and generator is None:
            raise ValueError("augmented views need a torch.Generator")
        out = {}
        for name, view in (("video", self.video_view), ("audio", self.audio_view)):
            x = getattr(clip, name, None)
            if x is not None:
                out[name] = view(x, generator) if self.augment else view(x)
        return out


def pretrain_dataset(cfg: PretrainConfig, manifest: str | None = None) -> ClipDataset:
    """The pretraining dataset: clips of ``data.clip_duration`` s of ``manifest`` (default ``data.manifest``) turned
    into XKD views (spec §A2)."""
    d = cfg.data
    path = manifest or d.manifest
    if not path:
        raise ValueError("no manifest: set data.manifest in the config or pass --set data.manifest=PATH")
    rows = read_manifest(path, root=d.root or None)
    if d.split:
        rows = rows.filter(split=d.split)
        if not len(rows):
            raise ValueError(f"{path}: no rows of split '{d.split}' (set data.split='' to use every row)")
    views = PretrainViews(d)
    return ClipDataset(
        rows,
        clip_duration=d.clip_duration,
        fps=d.video_fps,
        short_side=d.resize_short,
        sample_rate=d.logmel.sample_rate,
        missing_audio=d.missing_audio,
        bad_media=d.bad_media,
        transform=views,
        seed=cfg.run.seed,
        decoded_cache=d.decoded_cache or None,
        decode_threads=d.decode_threads,
    )
