"""Pretraining micro-batches drawn from shards with resampling: item ``m`` of :class:`ShardStream` is this rank's
part of global micro-batch ``m``, a pure function of (seed, m, rank), so every rank runs the same number of steps
whatever the shard sizes, and a resumed run continues the stream at the exact micro-batch.

Global micro-batch ``m`` holds ``G = batch_size * world_size`` clips cut from ``G / N`` samples, ``N =
clips_per_decode`` clips per sample (``data.clips_per_decode``, default 1), in windows of ``window`` consecutive
samples of one shard: window ``k`` picks its shard with probability proportional to the shard's sample count and a
uniform start, both drawn from ``(seed, m)``; sample ``j`` is sample ``start + j % window`` of window ``j // window``
(wrapping round the shard), and clip ``i`` comes from sample ``i // N``. Rank ``r`` takes clips ``[r * batch_size,
(r + 1) * batch_size)`` (``batch_size`` a multiple of N, so a sample's clips stay on one rank), so a run on P
processes sees the clips a single process with P times the batch would see, as with files
(:mod:`xkd.data.sampler`). A window is read in place, one open and a few seeks
(:class:`~xkd.data.shard_reader.ShardSet`): reads stay sequential within a shard while every micro-batch mixes
``G / (N * window)`` draws of the corpus.

Each clip has its own generator seeded from ``(seed, m, i)``, which draws its window start and then its views. The
N windows of a sample are decoded in one pass (:meth:`xkd.data.media.Decoding.windows`: one open, one seek, the
frames shared), as VideoMAE V2's ``num_sample`` and MAE-ST's ``repeat_aug`` do: a micro-batch then holds N clips of
each video it draws, each with its own window and augmentation, consecutive in the batch. Decoding and views are the
same code as a file's (a sample's span is probed once per process). Bad-media policy as for files
(:class:`xkd.data.dataset.BadMediaPolicy`): with ``bad_media="skip"`` a sample that raises
:class:`~xkd.data.media.MediaError` is replaced (all its clips) by the next samples of its shard and recorded in the
batch's ``bad`` list (count them with :class:`~xkd.data.dataset.BadMediaReport`); ``"error"`` raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from xkd.data.dataset import BadMediaPolicy, Transform, collate_clips
from xkd.data.decoded import row_bounds
from xkd.data.manifest import row_from_record
from xkd.data.media import Decoding, MediaBytes, MediaError, clip_starts
from xkd.data.shard_reader import ShardSet


class ShardStream(Dataset):
    """``stream[m]``: this rank's collated part of global micro-batch ``m`` (``batch_size`` clips, see the module
    docstring); the fields are the transform's plus ``index`` (the manifest row), ``start`` (s) and ``bad``."""

    def __init__(
        self,
        shards: ShardSet,
        clip_duration: float,
        decoding: Decoding,
        transform: Transform,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        window: int = 8,
        seed: int = 0,
        bad_media: str = "skip",
        max_consecutive_bad: int = 50,
        clips_per_decode: int = 1,
    ):
        if min(batch_size, window, max_consecutive_bad, world_size, clips_per_decode) < 1 or not 0 <= rank < world_size:
            raise ValueError("need batch_size, window, max_consecutive_bad, clips_per_decode >= 1 and 0 <= rank < "
                             "world_size")
        if batch_size % clips_per_decode:
            raise ValueError(f"data.batch_size {batch_size} is not a multiple of data.clips_per_decode "
                             f"{clips_per_decode}: a sample's clips must stay in one micro-batch of one process")
        self.shards = shards
        self.clip_duration = clip_duration
        self.decoding = decoding
        self.transform = transform
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.window = window
        self.seed = seed
        self.bad_media = BadMediaPolicy(bad_media)
        self.max_consecutive_bad = max_consecutive_bad
        self.clips_per_decode = clips_per_decode
        counts = np.asarray(shards.counts, dtype=np.float64)
        self.weights = counts / counts.sum()
        self._spans: dict[str, float] = {}  # sample -> seconds of its span (per process, as for files)

    def windows(self, m: int) -> list[tuple[int, int]]:
        """(shard, start) of each window of global micro-batch ``m``."""
        n = -(-self.batch_size * self.world_size // (self.window * self.clips_per_decode))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 17, m]))
        shards = rng.choice(len(self.weights), size=n, p=self.weights)
        return [(int(k), int(rng.integers(self.shards.counts[k]))) for k in shards]

    def __getitem__(self, m: int) -> dict[str, Any]:
        if m < 0:
            raise IndexError(f"micro-batch {m} < 0")
        windows = self.windows(m)
        per = self.clips_per_decode
        first = self.rank * self.batch_size // per
        samples = range(first, first + self.batch_size // per)  # this rank's samples of the micro-batch
        items: list[dict[str, Any]] = []
        for k in sorted({j // self.window for j in samples}):  # the windows this rank reads, each in one pass
            shard, start = windows[k]
            mine = [j for j in samples if j // self.window == k]
            read = self.shards.read(shard, [start + j % self.window for j in mine])
            for j, (media, record) in zip(mine, read):
                clips = range(j * per, (j + 1) * per)
                items.extend(self._items(m, clips, shard, start + j % self.window, media, record))
        return collate_clips(items)

    def _items(self, m: int, clips: range, shard: int, position: int, media: MediaBytes,
               record: dict) -> list[dict[str, Any]]:
        """Clips ``clips`` of micro-batch ``m``, from one decode of the sample at ``position`` of ``shard``, or of the
        first good one after it."""
        generators = []
        for i in clips:
            state = np.random.SeedSequence([self.seed, 19, m, i]).generate_state(1, dtype=np.uint64)[0]
            generators.append(torch.Generator().manual_seed(int(state)))
        bad: list[tuple[str, str]] = []
        for k in range(self.max_consecutive_bad):
            if k:
                (media, record), = self.shards.read(shard, [position + k])
            row = row_from_record(record)
            lo, end = row_bounds(row)
            try:
                if media.name not in self._spans:
                    self._spans[media.name] = self.decoding.span(media, lo, end)
                span = self._spans[media.name]
                offsets = [clip_starts(span, self.clip_duration, 1, "random", g)[0] for g in generators]
                decoded = self.decoding.windows(media, [lo + o for o in offsets], self.clip_duration)
            except MediaError as e:
                bad.append(self.bad_media.skipped(e))
                continue
            except Exception as e:
                raise RuntimeError(f"loading {media.name} ({row.path}) failed: {type(e).__name__}: {e}") from e
            items = []
            for clip, generator in zip(decoded, generators):
                try:
                    data = self.transform(clip, generator)
                except Exception as e:
                    raise RuntimeError(f"transform of {media.name} ({row.path}) failed: {type(e).__name__}: {e}") \
                        from e
                items.append({**data, "index": int(Path(media.name).stem), "start": clip.start, "bad": []})
            items[0]["bad"] = bad
            return items
        last = "; ".join(f"{p} ({reason})" for p, reason in bad[-5:])
        raise RuntimeError(f"{len(bad)} consecutive bad samples in {self.shards.paths[shard]}; last: {last}")
