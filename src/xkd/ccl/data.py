"""CCL's clips: every video is cut into non-overlapping windows of ``num_frames / video_fps`` seconds (spec §B6).

Training draws one window of each video per epoch (its frames are consecutive, as CCL's 16-frame random crop);
evaluation uses every window and averages their softmax per video. Fixing the windows to this grid makes a clip a
(file, window) pair, which is what the teacher-feature cache is keyed by.

The windows of a split are a :class:`~xkd.data.manifest.Manifest` with one row per window (its ``start`` / ``end``
set to the window), decoded by :class:`~xkd.data.dataset.ClipDataset`; with ``preload`` every window is decoded once
into a cache of :mod:`xkd.data.decoded` (the one ``xkd data predecode`` makes; :func:`predecode_windows`) and the
datasets read the arrays from it instead: small sets on a CPU, where decoding would cost more than the network.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xkd.ccl.config import CCLDataConfig
from xkd.data.dataset import ClipDataset, collate_clips
from xkd.data.decoded import predecode
from xkd.data.manifest import Manifest, read_manifest
from xkd.data.media import probe
from xkd.data.video_views import EvalVideoView, VideoView
from xkd.data.workers import init_worker

HOLDOUT_SEED = 0  # the validation hold-out (data.val_fraction) is part of the protocol, not of a run's seed
BUDGET_STREAM = 7919  # the label budget's draw: SeedSequence([BUDGET_STREAM, run.seed]), apart from the run's others


@dataclass
class Windows:
    """The clips of one split. ``manifest`` has one row per window; per window: ``video`` (row of the split's video
    manifest), ``clip`` (window number in its video), ``labels`` (class index). All arrays are [W]."""

    manifest: Manifest
    video: np.ndarray
    clip: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    duration: float

    def __len__(self) -> int:
        return len(self.manifest)

    def subset(self, picks: np.ndarray) -> Windows:
        """The windows at indices ``picks`` [K], in that order."""
        return Windows(Manifest([self.manifest[w] for w in picks], self.manifest.root), self.video[picks],
                       self.clip[picks], self.labels[picks], self.class_names, self.duration)

    def of_video(self) -> list[np.ndarray]:
        """The window indices of each video, in video order."""
        order = np.argsort(self.video, kind="stable")
        bounds = np.searchsorted(self.video[order], np.arange(self.video.max() + 2))
        return [order[bounds[v]:bounds[v + 1]] for v in range(self.video.max() + 1)]


def _holdout(train: Manifest, cfg: CCLDataConfig) -> np.ndarray:
    """Boolean mask [N] of the training rows held out for validation: ``round(val_fraction * n)`` random videos of
    each class (at least one, never all), with a fixed seed."""
    labels = np.array(train.labels_of(cfg.label_column))
    rng = np.random.default_rng(HOLDOUT_SEED)
    held = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        rows = np.flatnonzero(labels == label)
        count = min(max(1, round(cfg.val_fraction * len(rows))), len(rows) - 1)
        held[rng.permutation(rows)[:count]] = True
    return held


def label_budget(train: Manifest, cfg: CCLDataConfig, seed: int) -> np.ndarray:
    """Boolean mask [N] of the training rows that keep their label under ``cfg.labels_per_class`` (all when 0):
    that many random rows of each class (all of a smaller class), drawn from ``seed`` alone, so every variant of a
    seed gets the same subset."""
    labels = np.array(train.labels_of(cfg.label_column))
    if cfg.labels_per_class < 0:
        raise ValueError(f"data.labels_per_class must be >= 0, got {cfg.labels_per_class}")
    if cfg.labels_per_class == 0:
        return np.ones(len(labels), dtype=bool)
    rng = np.random.default_rng(np.random.SeedSequence([BUDGET_STREAM, seed]))
    keep = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        rows = np.flatnonzero(labels == label)
        keep[rng.permutation(rows)[:cfg.labels_per_class]] = True
    return keep


def load_split(cfg: CCLDataConfig, split: str) -> Manifest:
    """The rows of one split of the configured manifest. With ``val_fraction > 0`` the validation split is a
    class-stratified hold-out of the training split, and the training split is the rest."""
    manifest = read_manifest(cfg.manifest, root=cfg.root or None)
    if cfg.val_fraction > 0 and split in (cfg.train_split, cfg.val_split):
        train = manifest.filter(split=cfg.train_split)
        held = _holdout(train, cfg)
        keep = held if split == cfg.val_split else ~held
        rows = Manifest([r for r, k in zip(train, keep) if k], manifest.root)
    else:
        rows = manifest.filter(split=split)
    if len(rows) == 0:
        raise ValueError(f"{cfg.manifest} has no rows in split '{split}'")
    return rows


def class_names(cfg: CCLDataConfig) -> list[str]:
    """The sorted class names of ``cfg.label_column`` over the whole manifest (so every split shares one indexing)."""
    names = read_manifest(cfg.manifest, root=cfg.root or None).classes(cfg.label_column)
    if len(names) < 2:
        raise ValueError(f"column '{cfg.label_column}' of {cfg.manifest} has {len(names)} class(es); need at least 2")
    return names


def clip_windows(videos: Manifest, duration: float, label_column: str, names: list[str]) -> Windows:
    """Cut every video into ``max(1, floor(span / duration))`` windows, span = its ``end - start`` (or the probed
    length of the file when the manifest has no ``end``)."""
    index = {name: i for i, name in enumerate(names)}
    rows, video, clip, labels = [], [], [], []
    for v, (row, label) in enumerate(zip(videos, videos.labels_of(label_column))):
        if label not in index:
            raise ValueError(f"{row.path}: label {label!r} is not among the classes {names}")
        lo = row.start or 0.0
        hi = row.end if row.end is not None else probe(videos.resolve(row)).common_duration()
        count = max(1, math.floor((hi - lo) / duration + 1e-6))
        for k in range(count):
            start = lo + k * duration
            rows.append(replace(row, start=start, end=start + duration))
            video.append(v)
            clip.append(k)
            labels.append(index[label])
    return Windows(Manifest(rows, videos.root), np.array(video), np.array(clip), np.array(labels), list(names),
                   duration)


def window_dataset(windows: Windows, cfg: CCLDataConfig, need_video: bool = True, need_audio: bool = False,
                   sample_rate: int = 16000, decoded_cache: Path | None = None) -> ClipDataset:
    """Item ``w`` decodes window ``w`` exactly (raw uint8 video [T, H, W, 3] and/or float audio [S]), or reads it
    from ``decoded_cache`` (:func:`predecode_windows`)."""
    return ClipDataset(windows.manifest, windows.duration, cfg.video_fps, cfg.resize_short, sample_rate,
                       need_video=need_video, need_audio=need_audio, missing_audio="silence", bad_media="error",
                       clips_per_video=1, clip_sampling="uniform", decoded_cache=decoded_cache)


def predecode_windows(windows: Windows, cfg: CCLDataConfig, cache_root: str | Path, progress: bool = True) -> Path:
    """Decode the video of every window once into ``<cache_root>/decoded-<settings hash>`` (rows already there are
    kept), and return that folder for :func:`window_dataset`'s ``decoded_cache``."""
    decoding = window_dataset(windows, cfg).decoding  # the settings the datasets will ask the cache for
    digest = hashlib.sha1(json.dumps(asdict(decoding), sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_root) / f"decoded-{digest}"
    predecode(windows.manifest, folder, decoding, workers=cfg.num_workers, progress=progress)
    return folder


def iterate_windows(dataset: Dataset, batch_size: int, num_workers: int) -> Iterator[dict]:
    """Batches of ``dataset`` in window order (``index`` = the window numbers)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_clips, worker_init_fn=init_worker)
    yield from loader


class TrainClips(Dataset):
    """Item ``i``: one random window of video ``videos[i]`` (default: video ``i``) with the training view.

    Returns ``video`` float [3, T, S, S] in [0, 1] (the student normalises it) and ``index`` (the window drawn). The
    window and the view are drawn from a generator seeded by (seed, epoch, i), so an item does not depend on the
    worker that loads it. ``decoded_cache`` (:func:`predecode_windows`) replaces decoding.
    """

    def __init__(self, windows: Windows, cfg: CCLDataConfig, seed: int, decoded_cache: Path | None = None,
                 videos: np.ndarray | None = None):
        self.windows = windows
        by_video = windows.of_video()
        self.by_video = by_video if videos is None else [by_video[v] for v in videos]
        self.decoder = window_dataset(windows, cfg, decoded_cache=decoded_cache)
        self.view = VideoView(cfg.train_view, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.by_video)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, v: int) -> dict:
        state = np.random.SeedSequence([self.seed, self.epoch, v]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        choices = self.by_video[v]
        w = int(choices[torch.randint(len(choices), (), generator=generator)])
        return {"video": self.view(self.decoder[w]["video"], generator), "index": w}


class EvalClips(Dataset):
    """Item ``w``: window ``w`` with the test view (resize the short side to the crop size, centre crop), float
    [3, T, S, S] in [0, 1], plus ``index``."""

    def __init__(self, windows: Windows, cfg: CCLDataConfig, decoded_cache: Path | None = None):
        self.decoder = window_dataset(windows, cfg, decoded_cache=decoded_cache)
        size = cfg.train_view.crop_size
        self.view = EvalVideoView(size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), short_side=size)
        self.length = len(windows)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, w: int) -> dict:
        return {"video": self.view(self.decoder[w]["video"]), "index": w}
