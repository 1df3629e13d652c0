"""Step-indexed batches: ranks partition the single-process batch, and a resumed sampler continues exactly."""

import pytest

from xkd.data.sampler import StepBatchSampler


def test_ranks_partition_the_global_batch():
    single = list(StepBatchSampler(50, batch_size=8, seed=3))
    ranks = [list(StepBatchSampler(50, batch_size=4, world_size=2, rank=r, seed=3)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 6
    for step, batch in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == batch


def test_accumulation_and_resume_offsets():
    full = StepBatchSampler(64, batch_size=4, accum_steps=2, seed=1)
    assert full.steps_per_epoch == 8 and len(full) == 16
    batches = list(full)
    resumed = StepBatchSampler(64, batch_size=4, accum_steps=2, seed=1)
    resumed.set_epoch(0, start_step=3)
    assert list(resumed) == batches[6:]
    assert sorted(i for b in batches for i in b) == list(range(64))


def test_epochs_reshuffle_and_epoch_size_wraps():
    s = StepBatchSampler(10, batch_size=5, seed=0)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    big = StepBatchSampler(10, batch_size=5, seed=0, epoch_size=25)
    assert big.steps_per_epoch == 5 and all(0 <= i < 10 for b in big for i in b)


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="no optimiser step"):
        StepBatchSampler(6, batch_size=4, world_size=2)
