import math

import numpy as np
import pytest
import torch

from xkd.config import LossConfig, OptimConfig
from xkd.engine.schedules import Schedules, build_schedules, cosine_schedule, step_decay


def reference_cosine(base, final, total, warmup, start):
    """DINO's cosine_scheduler written out with a loop, except that the cosine reaches ``final`` on the last
    iteration (DINO's stops one step short)."""
    values = []
    for i in range(total):
        if i < warmup:
            values.append(start + (base - start) * (i / (warmup - 1) if warmup > 1 else 1.0))
        else:
            k, length = i - warmup, total - warmup
            values.append(final + 0.5 * (base - final) * (1 + math.cos(math.pi * k / max(length - 1, 1))))
    return values


def test_cosine_schedule_warmup_and_end_values():
    s = cosine_schedule(1e-4, 1e-6, total_iters=50, warmup_iters=10, warmup_start=0.0)
    assert s.shape == (50,)
    assert s[0] == 0.0
    assert s[5] == pytest.approx(1e-4 * 5 / 9, rel=1e-12)
    assert s[9] == pytest.approx(1e-4, rel=1e-12) and s[10] == pytest.approx(1e-4, rel=1e-12)
    assert s[-1] == pytest.approx(1e-6, rel=1e-12)  # the last value is the final one
    assert np.all(np.diff(s[:10]) > 0) and np.all(np.diff(s[10:]) < 0)
    np.testing.assert_allclose(s, reference_cosine(1e-4, 1e-6, 50, 10, 0.0), rtol=1e-12, atol=0)


def test_cosine_schedule_without_warmup_and_constant():
    np.testing.assert_allclose(cosine_schedule(2.0, 1.0, 7), reference_cosine(2.0, 1.0, 7, 0, 0.0), rtol=1e-12)
    np.testing.assert_array_equal(cosine_schedule(0.3, 0.3, 5), np.full(5, 0.3))
    np.testing.assert_allclose(cosine_schedule(1.0, 0.0, 4, warmup_iters=4, warmup_start=0.5), [0.5, 2 / 3, 5 / 6, 1.0])


def test_cosine_schedule_rejects_bad_lengths():
    with pytest.raises(ValueError):
        cosine_schedule(1.0, 0.0, total_iters=5, warmup_iters=6)
    with pytest.raises(ValueError):
        cosine_schedule(1.0, 0.0, total_iters=0)


def test_build_schedules_follows_the_configured_epochs():
    optim = OptimConfig(epochs=10, lr=1e-4, final_lr=0.0, warmup_epochs=3)
    loss = LossConfig(video_teacher_temp_warmup=0.09, video_teacher_temp=0.11, audio_teacher_temp_warmup=0.04,
                      audio_teacher_temp=0.06, teacher_temp_warmup_epochs=3)
    ipe = 4
    s = build_schedules(optim, loss, iters_per_epoch=ipe, total_iters=40)
    assert isinstance(s, Schedules) and len(s) == 40
    np.testing.assert_allclose(s.lr, reference_cosine(1e-4, 0.0, 40, 12, 0.0), rtol=1e-12, atol=1e-20)
    np.testing.assert_array_equal(s.weight_decay, np.full(40, 0.3))
    np.testing.assert_allclose(s.momentum, cosine_schedule(0.997, 1.0, 40), rtol=0, atol=0)
    assert s.momentum[0] == 0.997
    # teacher temperatures change once per epoch: 0.09, 0.10, 0.11, then constant
    np.testing.assert_allclose(s.video_teacher_temp[::ipe], [0.09, 0.10] + [0.11] * 8, rtol=1e-12)
    np.testing.assert_allclose(s.audio_teacher_temp[::ipe], [0.04, 0.05] + [0.06] * 8, rtol=1e-12)
    assert np.all(s.video_teacher_temp[4:8] == s.video_teacher_temp[4])
    values = s.at(5)
    assert values == {"lr": s.lr[5], "weight_decay": 0.3, "momentum": s.momentum[5],
                      "video_teacher_temp": s.video_teacher_temp[5], "audio_teacher_temp": s.audio_teacher_temp[5]}


def test_steps_size_every_schedule_to_the_run():
    """optim.steps = 30: every schedule spans exactly 30 steps, warm-ups keep the recipe's fraction."""
    optim = OptimConfig(epochs=10, steps=30, lr=1e-3, final_lr=1e-5, warmup_epochs=2, weight_decay=0.04,
                        final_weight_decay=0.4)
    loss = LossConfig(video_teacher_temp_warmup=0.04, video_teacher_temp=0.07, audio_teacher_temp_warmup=0.04,
                      audio_teacher_temp=0.07, teacher_temp_warmup_epochs=4, ema_start=0.99, ema_end=1.0)
    s = build_schedules(optim, loss, iters_per_epoch=1000, total_iters=30)  # the dataset's epoch size is irrelevant
    assert len(s) == 30
    assert s.lr[0] == 0.0 and s.lr[5] == pytest.approx(1e-3)  # warm-up: 2 of 10 epochs = 6 of 30 steps
    assert s.lr[-1] == pytest.approx(1e-5, rel=1e-12)
    assert s.weight_decay[0] == pytest.approx(0.04) and s.weight_decay[-1] == pytest.approx(0.4, rel=1e-12)
    assert s.momentum[0] == 0.99 and s.momentum[-1] == 1.0
    # teacher temperature: 4 warm-up "epochs" of 3 steps each (0.04, 0.05, 0.06, 0.07), then constant
    np.testing.assert_allclose(s.video_teacher_temp[::3], [0.04, 0.05, 0.06] + [0.07] * 7, rtol=1e-12)
    assert s.video_teacher_temp[-1] == 0.07


def test_max_steps_truncates_instead_of_compressing():
    optim, loss = OptimConfig(epochs=6, warmup_epochs=2), LossConfig(teacher_temp_warmup_epochs=30)
    full = build_schedules(optim, loss, iters_per_epoch=5, total_iters=30)
    short = build_schedules(optim, loss, iters_per_epoch=5, total_iters=7)
    assert len(short) == 7
    for name in ("lr", "weight_decay", "momentum", "video_teacher_temp", "audio_teacher_temp"):
        np.testing.assert_array_equal(getattr(short, name), getattr(full, name)[:7])
    assert short.lr[6] < 1e-4  # still warming up: the warm-up spans 2 configured epochs = 10 iterations
    with pytest.raises(ValueError):
        build_schedules(optim, loss, iters_per_epoch=5, total_iters=31)


def test_paper_defaults():
    s = build_schedules(OptimConfig(), LossConfig(), iters_per_epoch=2, total_iters=1600)
    assert s.lr[0] == 0.0 and s.lr[59] == pytest.approx(1e-4) and s.lr[-1] < 1e-9
    assert np.all(s.video_teacher_temp == 0.1) and np.all(s.audio_teacher_temp == 0.07)
    assert s.momentum[0] == 0.997 and s.momentum[-1] == pytest.approx(1.0, abs=1e-8)


def test_ema_momentum_is_a_cosine_that_ends_exactly_at_its_final_value():
    K = 101
    m = cosine_schedule(0.997, 1.0, K)
    assert m.shape == (K,)
    assert m[0] == 0.997
    assert m[K // 2] == pytest.approx(0.9985, abs=1e-12)
    assert m[-1] == 1.0  # ends exactly at the final momentum
    assert np.all(np.diff(m) > 0)
    for k in (7, 33, 81):
        assert m[k] == pytest.approx(1.0 - 0.5 * (1 - 0.997) * (1 + math.cos(math.pi * k / (K - 1))), abs=1e-15)


def test_step_decay_is_multistep_lr():
    milestones, gamma = [3, 5], 0.1
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)
    for epoch in range(8):
        assert step_decay(0.5, gamma, milestones, epoch) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
        optimizer.step()
        reference.step()

