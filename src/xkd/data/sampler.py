"""Step-indexed batch sampling: the same global batches whatever the number of processes, resumable at any step.

Epoch ``e`` shuffles the dataset with a permutation seeded by ``(seed, e)``. Optimiser step ``s`` of the epoch
consumes ``accum_steps`` micro-batches; micro-batch ``j`` of step ``s`` is the global slice
``perm[(s * accum + j) * G : ... + G]`` with ``G = batch_size * world_size``, and rank ``r`` takes its
``batch_size`` rows. So a 2-process run sees exactly the rows a 1-process run with twice the batch sees, and a
resumed run restarts at the exact micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def steps_per_epoch(epoch_size: int, batch_size: int, world_size: int, accum_steps: int) -> int:
    """Optimiser steps in an epoch of ``epoch_size`` samples; an error when it holds none."""
    per_step = batch_size * world_size * accum_steps
    if epoch_size < per_step:
        raise ValueError(
            f"an epoch of {epoch_size} samples holds no optimiser step of {per_step} samples "
            f"(batch_size {batch_size} x processes {world_size} x accum_steps {accum_steps}): "
            "use a smaller batch or more data"
        )
    return epoch_size // per_step


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's index lists for the micro-batches of one epoch, from step ``start_step`` on."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        accum_steps: int = 1,
        seed: int = 0,
        epoch_size: int = 0,
    ):
        if batch_size < 1 or accum_steps < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError("need batch_size >= 1, accum_steps >= 1 and 0 <= rank < world_size")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.accum_steps = accum_steps
        self.seed = seed
        self.epoch_size = epoch_size or num_samples
        self.epoch = 0
        self.start_step = 0
        self.steps_per_epoch = steps_per_epoch(self.epoch_size, batch_size, world_size, accum_steps)

    @property
    def samples_per_step(self) -> int:
        """Samples in one optimiser step, over all processes and micro-batches."""
        return self.batch_size * self.world_size * self.accum_steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch and the step within it to start from (for resume)."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside [0, {self.steps_per_epoch}]")
        self.epoch = epoch
        self.start_step = start_step

    def permutation(self) -> np.ndarray:
        """This epoch's order of sample indices, [epoch_size] (wrapping around when epoch_size > num_samples)."""
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        reps = -(-self.epoch_size // self.num_samples)
        perm = torch.cat([torch.randperm(self.num_samples, generator=g) for _ in range(reps)])
        return perm[: self.epoch_size].numpy()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.permutation()
        global_batch = self.batch_size * self.world_size
        for micro in range(self.start_step * self.accum_steps, self.steps_per_epoch * self.accum_steps):
            lo = micro * global_batch + self.rank * self.batch_size
            yield perm[lo : lo + self.batch_size].tolist()
