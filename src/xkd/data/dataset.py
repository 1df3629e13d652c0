"""A map-style dataset of decoded audio-visual clips over a manifest, with an explicit bad-media policy.

Item ``i`` is clip ``i % clips_per_video`` of manifest row ``i // clips_per_video``. Its window lies inside the row's
``start``/``end`` when given, else inside the whole file (the part covered by every needed stream). With
``clip_sampling="random"`` the start is drawn from a ``torch.Generator`` seeded from ``(seed, epoch, i)``, so an item
is the same whichever worker loads it and a resumed run sees the same clips; the same generator is passed on to the
transform. ``"uniform"`` gives ``clips_per_video`` evenly spaced windows (evaluation).

Bad-media policy. A file that raises :class:`~xkd.data.media.MediaError` (unreadable, truncated, too short, no
audio / video stream; see ``xkd.data.media.REASONS``) is handled by ``bad_media``:

- ``"skip"`` (training): the failure is recorded as ``(path, reason)`` in the item's ``bad`` list, logged once per
  file and process (``logging`` warning on ``xkd.data.dataset``), and the item is replaced by the next rows
  ``(row + k) % len(manifest)``, k = 1, 2, ..., with the same clip number, so every batch keeps its size and the
  replacement is deterministic. After ``max_consecutive_bad`` failures in a row the dataset gives up with a
  ``RuntimeError`` naming the last files and reasons (the data is probably broken; run ``xkd data check``).
- ``"error"``: the ``MediaError`` is raised, naming the file and the reason.

``missing_audio="skip"`` treats a file without an audio track as bad media (reason ``no-audio``); ``"silence"``
gives it a silent track. Collate with :func:`collate_clips` and accumulate the ``bad`` entries of every batch in the
main process with :class:`BadMediaReport` (DataLoader workers are separate processes and cannot share a counter).
Any other exception raised while loading an item is re-raised as ``RuntimeError`` naming the file and the row.

With ``decoded_cache`` (a folder made by ``xkd data predecode``, see :mod:`xkd.data.decoded`) windows are sliced
from pre-decoded arrays instead of being decoded from the media files; window starts then fall on the ``1 / fps``
frame grid. The cache must have been made with this dataset's fps, short side, sample rate and streams.

With ``persistent_workers=True`` each worker keeps the dataset copy it started with, so call :meth:`set_epoch` only
when the workers are (re)started, e.g. with the default ``persistent_workers=False``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from xkd.data.decoded import DecodedClips, row_bounds
from xkd.data.manifest import Manifest
from xkd.data.media import Clip, Decoding, MediaError, clip_starts
from xkd.host_memory import release_freed_host_memory

log = logging.getLogger(__name__)

Transform = Callable[[Clip, torch.Generator], dict[str, Any]]


class BadMediaPolicy:
    """What a dataset does with a :class:`MediaError` (``bad_media``, see the module docstring): ``"error"`` raises
    it; ``"skip"`` logs the file once per process and hands back ``(path, reason)`` for the item's ``bad`` list."""

    def __init__(self, mode: str):
        if mode not in ("skip", "error"):
            raise ValueError(f"bad_media must be 'skip' or 'error', got {mode!r}")
        self.mode = mode
        self._logged: set[str] = set()  # files already logged as bad by this process

    def skipped(self, error: MediaError) -> tuple[str, str]:
        """``(path, reason)`` of a skipped file; raises ``error`` under ``"error"``."""
        if self.mode == "error":
            raise error
        if error.path not in self._logged:
            self._logged.add(error.path)
            log.warning("skipping bad media %s (%s): %s", error.path, error.reason, error.message)
        return error.path, error.reason


class ClipDataset(Dataset):
    """Clips of ``clip_duration`` s: video uint8 ``[T, H, W, 3]`` at ``fps``, audio float32 ``[S]`` at ``sample_rate``.

    Without ``transform`` an item holds ``video`` and/or ``audio`` (as decoded); with it, the transform's dict. Every
    item also has ``index`` (the manifest row actually decoded), ``clip`` (clip number), ``start`` (seconds) and
    ``bad`` (list of ``(path, reason)`` replaced on the way to this item).
    """

    def __init__(
        self,
        manifest: Manifest,
        clip_duration: float,
        fps: float,
        short_side: int | None,
        sample_rate: int,
        need_video: bool = True,
        need_audio: bool = True,
        missing_audio: str = "skip",
        bad_media: str = "skip",
        clips_per_video: int = 1,
        clip_sampling: str = "random",
        transform: Transform | None = None,
        seed: int = 0,
        max_consecutive_bad: int = 50,
        decoded_cache: str | Path | None = None,
        decode_threads: int = 1,
    ):
        if missing_audio not in ("skip", "silence"):
            raise ValueError(f"missing_audio must be 'skip' or 'silence', got {missing_audio!r}")
        if clip_sampling not in ("random", "uniform"):
            raise ValueError(f"clip_sampling must be 'random' or 'uniform', got {clip_sampling!r}")
        if not (need_video or need_audio):
            raise ValueError("need_video and need_audio cannot both be False")
        if clips_per_video < 1 or max_consecutive_bad < 1:
            raise ValueError("clips_per_video and max_consecutive_bad must be >= 1")
        if len(manifest) == 0:
            raise ValueError("the manifest has no rows")
        self.manifest = manifest
        self.clip_duration = clip_duration
        self.fps = fps
        self.short_side = short_side
        self.sample_rate = sample_rate
        self.need_video = need_video
        self.need_audio = need_audio
        self.missing_audio = missing_audio
        self.bad_media = BadMediaPolicy(bad_media)
        self.clips_per_video = clips_per_video
        self.clip_sampling = clip_sampling
        self.transform = transform
        self.seed = seed
        self.max_consecutive_bad = max_consecutive_bad
        self.epoch = 0
        missing = "silence" if missing_audio == "silence" else "error"
        self.decoding = Decoding(fps, short_side, sample_rate, need_video, need_audio, missing, decode_threads)
        self.decoded = DecodedClips(decoded_cache, self.decoding) if decoded_cache else None
        self._spans: dict[int, float] = {}  # row -> seconds of its span (per process cache)

    def __len__(self) -> int:
        return len(self.manifest) * self.clips_per_video

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random windows (and transform randomness) items are drawn from."""
        self.epoch = epoch

    def generator(self, index: int) -> torch.Generator:
        """The item's random generator, a pure function of (seed, epoch, index)."""
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        row, clip_no = divmod(index, self.clips_per_video)
        generator = self.generator(index)
        bad: list[tuple[str, str]] = []
        n = len(self.manifest)
        for k in range(min(self.max_consecutive_bad, n)):
            r = (row + k) % n
            path = self.manifest.resolve(self.manifest[r])
            try:
                clip = self._decode(r, clip_no, generator)
            except MediaError as e:
                bad.append(self.bad_media.skipped(e))
                continue
            except Exception as e:
                raise RuntimeError(f"loading {path} (manifest row {r}) failed: {type(e).__name__}: {e}") from e
            try:
                data = self.transform(clip, generator) if self.transform is not None else self._raw(clip)
            except Exception as e:
                raise RuntimeError(f"transform of {path} (manifest row {r}) failed: {type(e).__name__}: {e}") from e
            return {**data, "index": r, "clip": clip_no, "start": clip.start, "bad": bad}
        last = "; ".join(f"{p} ({reason})" for p, reason in bad[-5:])
        raise RuntimeError(
            f"{len(bad)} consecutive bad media files from manifest row {row}; last: {last}. "
            "Run `xkd data check` on the manifest to list every bad file."
        )

    def _decode(self, row: int, clip_no: int, generator: torch.Generator) -> Clip:
        entry = self.manifest[row]
        path = self.manifest.resolve(entry)
        lo, end = row_bounds(entry)
        cached = self.decoded.row(path, lo, end) if self.decoded is not None else None
        if cached is not None:
            span = cached.span
        else:  # probed once per row and process
            source = self.manifest.source(entry)
            if row not in self._spans:
                self._spans[row] = self.decoding.span(source, lo, end)
            span = self._spans[row]
        if self.clip_sampling == "uniform":
            offset = clip_starts(span, self.clip_duration, self.clips_per_video, "uniform")[clip_no]
        else:
            offset = clip_starts(span, self.clip_duration, 1, "random", generator)[0]
        if cached is not None:
            return self.decoded.clip(cached, offset, self.clip_duration)
        return self.decoding.window(source, lo + offset, self.clip_duration)

    def _raw(self, clip: Clip) -> dict[str, torch.Tensor]:
        out = {}
        if self.need_video:
            out["video"] = clip.video
        if self.need_audio:
            out["audio"] = clip.audio
        return out


def _stack(values: list, key: str):
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, (bool, int, float)):
        return torch.tensor(values)
    if isinstance(first, (list, tuple)):  # a list of views: stack each position
        return [_stack(list(column), f"{key}[{i}]") for i, column in enumerate(zip(*values))]
    if isinstance(first, dict):
        return {k: _stack([v[k] for v in values], f"{key}.{k}") for k in first}
    raise TypeError(f"collate_clips cannot batch item field '{key}' of type {type(first).__name__}")


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: tensors are stacked (lists of tensors position by position), numbers become tensors, and the
    ``bad`` lists are concatenated into one list of ``(path, reason)``. In a DataLoader worker, the memory freed while
    making the batch is then handed back to the system (:mod:`xkd.data.workers`: once per batch)."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = [entry for v in values for entry in v] if key == "bad" else _stack(values, key)
    if get_worker_info() is not None:
        release_freed_host_memory()
    return batch


class BadMediaReport:
    """Accumulates the ``bad`` entries of collated batches (in the main process) for counts and a summary."""

    def __init__(self):
        self.files: dict[str, str] = {}  # path -> reason
        self.replacements = 0  # items replaced, counting repeats of the same file

    def update(self, batch_or_entries: dict[str, Any] | list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Add a collated batch's ``bad`` list (or a list of entries); returns the files seen for the first time."""
        entries = batch_or_entries.get("bad", []) if isinstance(batch_or_entries, dict) else batch_or_entries
        new = []
        for path, reason in entries:
            self.replacements += 1
            if path not in self.files:
                self.files[path] = reason
                new.append((path, reason))
        return new

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, int]:
        """Distinct bad files per reason, most frequent first."""
        return dict(Counter(self.files.values()).most_common())

    def summary(self) -> str:
        if not self.files:
            return "bad media: none"
        by_reason = ", ".join(f"{reason} {n}" for reason, n in self.counts().items())
        return f"bad media: {len(self.files)} files skipped ({self.replacements} replacements): {by_reason}"
