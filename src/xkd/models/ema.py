"""EMA teachers (spec §A7, §A8): θ_T <- m θ_T + (1 - m) θ_S after every optimiser step.

Parameters are matched by name, so a teacher may hold a subset of the student (no decoder) and shared modules
are handled: ``named_parameters()`` lists a shared parameter once, under its first name.

MATS (spec §A8) shares the transformer blocks between the video and the audio teacher (and between the students).
The released code runs the video EMA and then the audio EMA, so the shared teacher blocks move twice per step
(effective momentum m_v m_a). :func:`ema_update_pairs` reproduces this by default (one update per pair) and, with
``update_shared_once=True``, updates every distinct teacher parameter once per step instead.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.distributed.tensor import DTensor


def teacher_from_student(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with ``requires_grad=False`` everywhere; train/eval mode is left as it was."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_T <- m θ_T + (1 - m) θ_S for every teacher parameter, taken from the student parameter of the same name.

    Every teacher parameter name must exist in the student with the same shape. m = 1 leaves the teacher
    bit-identical (nothing is computed); m = 0 copies the student exactly (``lerp`` is exact at both ends).
    """
    _ema_update(teacher, student, float(momentum), skip=set())


@torch.no_grad()
def ema_update_pairs(
    pairs: Sequence[tuple[nn.Module, nn.Module]],
    momentum: float | Sequence[float],
    update_shared_once: bool = False,
) -> None:
    """EMA several (teacher, student) pairs in order; momentum: one value, or one per pair.

    ``update_shared_once=False`` (the released MATS code): a teacher parameter shared by k pairs is updated k times.
    ``update_shared_once=True``: it is updated once, from the student of the first pair that holds it.
    """
    momenta = [float(momentum)] * len(pairs) if np.ndim(momentum) == 0 else [float(m) for m in momentum]
    if len(momenta) != len(pairs):
        raise ValueError(f"{len(momenta)} momenta for {len(pairs)} pairs")
    done: set[int] = set()
    for (teacher, student), m in zip(pairs, momenta):
        _ema_update(teacher, student, m, skip=done if update_shared_once else set())


def _local(t: torch.Tensor) -> torch.Tensor:
    """A sharded parameter's local shard (teacher and student are sharded alike, see xkd.engine.fsdp); else ``t``."""
    return t.to_local() if isinstance(t, DTensor) else t


def _ema_update(teacher: nn.Module, student: nn.Module, momentum: float, skip: set[int]) -> None:
    """Shared body of the EMA functions; adds the id of every visited teacher parameter to ``skip``."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    student_params = dict(student.named_parameters())
    targets, sources = [], []
    for name, t in teacher.named_parameters():
        s = student_params.get(name)
        if s is None:
            raise KeyError(f"teacher parameter {name!r} has no student parameter of the same name")
        if t.shape != s.shape:
            raise ValueError(f"shape mismatch for {name!r}: teacher {tuple(t.shape)}, student {tuple(s.shape)}")
        if id(t) in skip:
            continue
        skip.add(id(t))
        targets.append(_local(t))
        sources.append(_local(s.detach()).to(t.dtype))
    if momentum != 1.0 and targets:
        torch._foreach_lerp_(targets, sources, 1.0 - momentum)  # one multi-tensor kernel, not one call per tensor
