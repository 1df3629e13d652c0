"""Teacher features computed once per clip and kept on disk, keyed by (file, clip window): CCL precomputes its audio
teacher offline (spec §B2); this cache does it for every teacher. (Decoded frames have their own cache,
:mod:`xkd.data.decoded`.)

A cache root holds one folder per teacher, named by its :attr:`~xkd.ccl.teachers.Teacher.fingerprint` (weights
digest + preprocessing), so a changed teacher never reads stale features. Inside, ``shard-*.safetensors`` files
(written atomically with :func:`xkd.engine.weights.save_weights`) map a clip key to its tensor: ``[T, D]`` for an image
teacher (every frame of the clip), ``[N, D]`` for an audio teacher (its time steps; ``[0, D]`` when the file has no
audio track). The key hashes the resolved path, the file's size and modification time and the window, so an edited
file is recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from xkd.ccl.config import CCLDataConfig
from xkd.ccl.data import Windows, iterate_windows, window_dataset
from xkd.ccl.teachers import Teacher
from xkd.data.media import probe
from xkd.engine.weights import load_weights, save_weights

log = logging.getLogger(__name__)
SHARD_PART = "clips"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/xkd/ccl`` (``~/.cache/xkd/ccl`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xkd" / "ccl"


def clip_key(path: str | Path, start: float, duration: float) -> str:
    """The cache key of a clip: a hash of the resolved file, its size and mtime, and the window in seconds."""
    p = Path(path).resolve()
    stat = p.stat()
    text = f"{p}|{stat.st_size}|{stat.st_mtime_ns}|{start:.6f}|{duration:.6f}"
    return hashlib.sha1(text.encode()).hexdigest()


def window_keys(windows: Windows) -> list[str]:
    """The cache key of every window."""
    return [clip_key(windows.manifest.resolve(r), r.start, windows.duration) for r in windows.manifest]


class ClipCache:
    """The on-disk tensors of one producer: ``get`` / ``put`` by clip key; ``flush`` writes the new entries."""

    def __init__(self, root: str | Path, name: str):
        self.folder = Path(root) / name
        self.name = name
        self._entries: dict[str, Tensor] = {}
        self._new: dict[str, Tensor] = {}
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            parts, _ = load_weights(shard, parts=[SHARD_PART])
            self._entries.update(parts[SHARD_PART])

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Tensor:
        """The tensor stored under ``key`` (KeyError when absent)."""
        return self._entries[key]

    def put(self, key: str, value: Tensor) -> None:
        value = value.detach().to("cpu").contiguous().clone()
        self._entries[key] = value
        self._new[key] = value

    def flush(self) -> Path | None:
        """Write the entries added since the last flush as one new shard; returns its path (None if nothing new)."""
        if not self._new:
            return None
        path = self.folder / f"shard-{uuid.uuid4().hex}.safetensors"
        save_weights(path, {SHARD_PART: self._new}, {"producer": self.name, "entries": str(len(self._new))})
        self._new = {}
        return path


def _fill(cache: ClipCache, windows: Windows, keys: list[str], dataset_for, compute, label: str, progress: bool,
          flush_every: int = 2000) -> None:
    """Compute ``compute(batch) -> [B, ...]`` for the windows whose key the cache lacks, and store them."""
    missing = [w for w, k in enumerate(keys) if k not in cache]
    if not missing:
        return
    log.info("computing %s for %d clips into %s", label, len(missing), cache.folder)
    subset = windows.subset(np.array(missing))
    pending = 0
    bar = tqdm(total=len(missing), desc=label, unit="clip", disable=not progress)
    for batch in dataset_for(subset):
        values = compute(batch)
        for j, sub in enumerate(batch["index"].tolist()):
            cache.put(keys[missing[sub]], values[j])
        pending += len(values)
        bar.update(len(values))
        if pending >= flush_every:
            cache.flush()
            pending = 0
    bar.close()
    cache.flush()


def teacher_features(teacher: Teacher, windows: Windows, cfg: CCLDataConfig, root: str | Path,
                     progress: bool = True) -> list[Tensor]:
    """Every window's teacher features (image: [T, D] over its clean decoded frames in [0, 1]; audio: [N, D] from the
    audio decoded at the teacher's rate, [0, D] for files without audio), computed once into the cache under
    ``root``; in window order."""
    cache = ClipCache(root, teacher.fingerprint)
    keys = window_keys(windows)
    audio = teacher.modality == "audio"
    has_audio: dict[str, bool] = {}

    def batches(subset: Windows):
        dataset = window_dataset(subset, cfg, need_video=not audio, need_audio=audio, sample_rate=teacher.sample_rate)
        for batch in iterate_windows(dataset, cfg.eval_batch_size, cfg.num_workers):
            batch["paths"] = [str(subset.manifest.resolve(subset.manifest[i])) for i in batch["index"].tolist()]
            yield batch

    def compute(batch) -> list[Tensor]:
        if not audio:
            video = batch["video"]  # uint8 [B, T, H, W, 3]
            frames = video.flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0)
            return list(teacher.features(frames).view(video.shape[0], video.shape[1], -1))
        feats = list(teacher.features(batch["audio"]))
        for j, path in enumerate(batch["paths"]):
            if path not in has_audio:
                has_audio[path] = probe(path).has_audio
            if not has_audio[path]:
                feats[j] = feats[j].new_zeros(0, teacher.dim)
        return feats

    _fill(cache, windows, keys, batches, compute, f"teacher {teacher.name}", progress)
    return [cache.get(k) for k in keys]


class TeacherBank:
    """The cached features of the training windows, with CCL's per-step selection.

    Audio (``steps``): "mean" averages a clip's time steps, "random" draws one step per clip (the released code).
    Image: :meth:`frame` returns frame ``t`` of every clip (the frame index CCL draws once per batch).
    ``available[w]`` is False for clips without features (files without audio), which CCL leaves out of the teacher's
    terms.
    """

    def __init__(self, sequences: list[Tensor], dim: int):
        self.sequences = sequences
        self.dim = dim
        self.available = torch.tensor([len(s) > 0 for s in sequences])

    def select(self, windows: Tensor, steps: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Audio features of the windows [B] -> (x_t [B, D], available [B] bool); rows without features are zeros."""
        out = torch.zeros(len(windows), self.dim)
        for i, w in enumerate(windows.tolist()):
            seq = self.sequences[w]
            if len(seq) == 0:
                continue
            out[i] = seq.mean(0) if steps == "mean" else seq[int(torch.randint(len(seq), (), generator=generator))]
        return out, self.available[windows]

    def frame(self, windows: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """Image features of frame ``t`` of the windows [B] -> (x_t [B, D], available [B] bool)."""
        feats = torch.stack([self.sequences[w][min(t, len(self.sequences[w]) - 1)] for w in windows.tolist()])
        return feats, self.available[windows]


def standardization(sequences: list[Tensor], pool: bool) -> tuple[Tensor, float]:
    """Statistics to standardise a teacher's features: (mean [D], s) over the training clips, s the RMS of the
    per-dimension standard deviations (one scale for all dimensions, so dimensions that barely vary are not blown up).
    ``pool``: one vector per clip (the mean of its steps), else every step / frame counts. Empty clips are skipped."""
    rows = [seq.mean(0, keepdim=True) if pool else seq for seq in sequences if len(seq)]
    if not rows:
        raise ValueError("no teacher features to standardise with")
    feats = torch.cat(rows).double()
    return feats.mean(0).float(), float(feats.var(0, unbiased=False).mean().sqrt().clamp(min=1e-12))
