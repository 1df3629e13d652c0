"""Per-iteration schedules of pretraining (spec §A6, §A7, §A9), indexed by the global optimiser step.

Learning rate: linear warm-up from 0 then cosine to ``final_lr``; weight decay: cosine (constant 0.3 by default);
EMA momentum: cosine 0.997 -> 1; teacher temperatures: per-epoch linear warm-up then constant.
The schedule spans ``optim.steps`` iterations when set (``xkd pretrain --steps N``), else ``optim.epochs`` x
``iters_per_epoch``; the warm-ups keep the fraction of the schedule the recipe gives them (``warmup_epochs / epochs``).
The cosines end exactly at their final values on the last iteration, so a run that completes its schedule ends at
the recipe's end values (DINO's ``cosine_scheduler`` stops one step short). When ``run.max_steps`` stops a run early,
the run uses only the first ``total_iters`` values of the schedule (it sees the start of the recipe, not a compressed
copy of it) and says so in its summary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from xkd.config import LossConfig, OptimConfig
from xkd.losses.distillation import teacher_temperature_schedule


def cosine_schedule(
    base: float, final: float, total_iters: int, warmup_iters: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Values per iteration, [total_iters], with the semantics of DINO's ``cosine_scheduler``.

    Iterations 0..W-1 go linearly from ``warmup_start`` to ``base`` (both ends included); the remaining
    L = total_iters - W follow final + (base - final)(1 + cos(π k / (L - 1))) / 2 for k = 0..L-1, from ``base`` to
    exactly ``final`` (a single remaining iteration takes ``base``).
    """
    if total_iters < 1 or not 0 <= warmup_iters <= total_iters:
        raise ValueError(f"need total_iters >= 1 and 0 <= warmup_iters <= total_iters, got "
                         f"total_iters={total_iters}, warmup_iters={warmup_iters}")
    warmup = np.linspace(warmup_start, base, warmup_iters)
    k = np.arange(total_iters - warmup_iters, dtype=np.float64)
    cosine = final + 0.5 * (base - final) * (1.0 + np.cos(math.pi * k / max(len(k) - 1, 1)))
    return np.concatenate((warmup, cosine))


def step_decay(base: float, gamma: float, milestones: Sequence[int], epoch: int) -> float:
    """``base * gamma^k``, k the number of milestones at or before ``epoch`` (torch's MultiStepLR, CCL's schedule)."""
    return base * gamma ** sum(epoch >= m for m in milestones)


@dataclass
class Schedules:
    """Per-iteration arrays, all of length ``total_iters``; index them with the global optimiser step."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray  # EMA momentum of both teachers
    video_teacher_temp: np.ndarray
    audio_teacher_temp: np.ndarray

    def __len__(self) -> int:
        return len(self.lr)

    def at(self, step: int) -> dict[str, float]:
        """Every scheduled value at ``step``, by field name (for the optimiser, the EMA and the logs)."""
        return {f.name: float(getattr(self, f.name)[step]) for f in fields(self)}


def schedule_length(optim_cfg: OptimConfig, iters_per_epoch: int) -> int:
    """Iterations the schedules span: ``optim.steps`` when set, else ``optim.epochs`` x ``iters_per_epoch``."""
    return optim_cfg.steps if optim_cfg.steps > 0 else optim_cfg.epochs * iters_per_epoch


def build_schedules(optim_cfg: OptimConfig, loss_cfg: LossConfig, iters_per_epoch: int, total_iters: int) -> Schedules:
    """Schedules over :func:`schedule_length` iterations, truncated to the ``total_iters`` run.

    ``total_iters`` is the number of optimiser steps the run will take (<= the schedule length). The LR warm-up spans
    ``warmup_epochs / epochs`` of the schedule; the teacher temperature takes its per-epoch value at the fraction
    ``epochs * i / length`` of the schedule (with ``optim.steps`` unset: the epoch of iteration ``i``).
    """
    full = schedule_length(optim_cfg, iters_per_epoch)
    if iters_per_epoch < 1 or not 1 <= total_iters <= full:
        raise ValueError(f"need iters_per_epoch >= 1 and 1 <= total_iters <= schedule length = {full}, "
                         f"got iters_per_epoch={iters_per_epoch}, total_iters={total_iters}")
    epochs = optim_cfg.epochs
    warmup_iters = min(full, round(full * optim_cfg.warmup_epochs / epochs))
    lr = cosine_schedule(optim_cfg.lr, optim_cfg.final_lr, full, warmup_iters=warmup_iters)
    weight_decay = cosine_schedule(optim_cfg.weight_decay, optim_cfg.final_weight_decay, full)
    momentum = cosine_schedule(loss_cfg.ema_start, loss_cfg.ema_end, full)
    epoch_of_iter = np.arange(full, dtype=np.int64) * epochs // full  # [full]: the recipe epoch each iteration is in
    warmup_epochs = loss_cfg.teacher_temp_warmup_epochs
    video_temp = teacher_temperature_schedule(loss_cfg.video_teacher_temp_warmup, loss_cfg.video_teacher_temp,
                                              warmup_epochs, epochs)[epoch_of_iter]
    audio_temp = teacher_temperature_schedule(loss_cfg.audio_teacher_temp_warmup, loss_cfg.audio_teacher_temp,
                                              warmup_epochs, epochs)[epoch_of_iter]
    return Schedules(
        lr=lr[:total_iters],
        weight_decay=weight_decay[:total_iters],
        momentum=momentum[:total_iters],
        video_teacher_temp=video_temp[:total_iters],
        audio_teacher_temp=audio_temp[:total_iters],
    )
