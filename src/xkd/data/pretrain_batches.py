"""Where pretraining batches come from: media files through a manifest (``data.manifest``) or WebDataset shards
(``data.shards``). Either way the run sees the same thing: steps per epoch, and for any (epoch, step) a loader of
this rank's micro-batches from that step on, a pure function of (seed, step, rank), so ``--resume`` continues the
stream exactly.

Files: :class:`~xkd.data.dataset.ClipDataset` items batched by :class:`~xkd.data.sampler.StepBatchSampler` (each
epoch a permutation of the manifest). Shards: :class:`~xkd.data.shard_stream.ShardStream`, windows of consecutive
samples drawn with resampling, ``data.clips_per_decode`` clips cut from each decoded sample (an epoch is
``run.epoch_size`` clips, else the shards' sample count times ``clips_per_decode``: each sample decoded once per
epoch on average). Decoding and views are the same code for both; a warning is logged when the shards were
re-encoded below what the config decodes (short side, frame rate, sample rate).
"""

from __future__ import annotations

import logging

from torch.utils.data import DataLoader

from xkd.config import PretrainConfig
from xkd.data.dataset import collate_clips
from xkd.data.media import Decoding
from xkd.data.sampler import StepBatchSampler, steps_per_epoch
from xkd.data.shard_reader import ShardSet
from xkd.data.shard_stream import ShardStream
from xkd.data.views import PretrainViews, pretrain_dataset
from xkd.data.workers import init_worker

log = logging.getLogger(__name__)


class PretrainBatches:
    """This rank's micro-batches of a pretraining run (``cfg.data``), ``world_size`` processes."""

    def __init__(self, cfg: PretrainConfig, world_size: int = 1, rank: int = 0):
        d, accum = cfg.data, cfg.optim.accum_steps
        self.accum_steps = accum
        self.num_workers = d.num_workers
        self.samples_per_step = d.batch_size * world_size * accum
        if d.shards:
            if d.decoded_cache:
                raise ValueError("data.decoded_cache cannot be used with data.shards (the shards hold the media)")
            if d.manifest:
                log.info("data.shards is set: reading %s, not data.manifest", d.shards)
            shards = ShardSet(d.shards)
            shards.check_split(d.split)
            for problem in shards.unlike(d.resize_short, d.video_fps, d.logmel.sample_rate) if rank == 0 else []:
                log.warning("%s: %s", d.shards, problem)
            missing = "silence" if d.missing_audio == "silence" else "error"
            decoding = Decoding(d.video_fps, d.resize_short, d.logmel.sample_rate, missing_audio=missing,
                                threads=d.decode_threads)
            self.stream = ShardStream(shards, d.clip_duration, decoding, PretrainViews(d), d.batch_size, world_size,
                                      rank, window=d.shard_window, seed=cfg.run.seed, bad_media=d.bad_media,
                                      clips_per_decode=d.clips_per_decode)
            self.sampler = None
            epoch_size = cfg.run.epoch_size or shards.samples * d.clips_per_decode  # each sample decoded once
            self.steps_per_epoch = steps_per_epoch(epoch_size, d.batch_size, world_size, accum)
        else:
            if d.clips_per_decode != 1:
                raise ValueError(f"data.clips_per_decode={d.clips_per_decode} needs data.shards (files are read one "
                                 "clip per decode); shard the manifest with `xkd data shard` or set it to 1")
            self.dataset = pretrain_dataset(cfg)
            self.sampler = StepBatchSampler(len(self.dataset), d.batch_size, world_size, rank, accum,
                                            seed=cfg.run.seed, epoch_size=cfg.run.epoch_size)
            self.steps_per_epoch = self.sampler.steps_per_epoch

    def loader(self, epoch: int, step_in_epoch: int, pin_memory: bool = False) -> DataLoader:
        """This rank's micro-batches of ``epoch`` from its step ``step_in_epoch`` to its end (``accum_steps`` per
        optimiser step)."""
        common = dict(num_workers=self.num_workers, pin_memory=pin_memory, worker_init_fn=init_worker)
        if self.sampler is None:
            first = (epoch * self.steps_per_epoch + step_in_epoch) * self.accum_steps
            last = (epoch + 1) * self.steps_per_epoch * self.accum_steps
            return DataLoader(self.stream, batch_size=None, sampler=range(first, last), **common)
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, step_in_epoch)
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_clips, **common)
