"""Cross-modal DINO distillation loss, its teacher temperature schedule (spec §A6) and balanced (Sinkhorn-Knopp)
teacher targets for small data (an opt-in deviation, docs/CONFIG.md).

One :class:`CrossModalDINOLoss` per direction (video teacher -> audio student, audio teacher -> video student).
The teacher and the student see different modalities, so unlike DINO no (teacher view, student view) pair is skipped.
The centre is an fp32 buffer, updated after the loss from the teacher outputs of every rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def teacher_temperature_schedule(
    warmup_temp: float, temp: float, warmup_epochs: int, total_epochs: int, iters_per_epoch: int = 1
) -> np.ndarray:
    """Teacher temperature per epoch (``iters_per_epoch`` = 1) or per iteration: [total_epochs * iters_per_epoch].

    As DINO: linear from ``warmup_temp`` (epoch 0) to ``temp`` (epoch ``warmup_epochs`` - 1), then constant. The
    value changes once per epoch; with ``iters_per_epoch`` > 1 each epoch's value is repeated for its iterations.
    A run shorter than the warm-up keeps the first ``total_epochs`` warm-up values.
    """
    if total_epochs < 1 or iters_per_epoch < 1 or warmup_epochs < 0:
        raise ValueError(f"need total_epochs >= 1, iters_per_epoch >= 1, warmup_epochs >= 0, got "
                         f"{total_epochs}, {iters_per_epoch}, {warmup_epochs}")
    warmup = np.linspace(warmup_temp, temp, warmup_epochs)
    constant = np.full(max(total_epochs - warmup_epochs, 0), float(temp))
    per_epoch = np.concatenate((warmup, constant))[:total_epochs]
    return np.repeat(per_epoch, iters_per_epoch)


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, temperature: float, iters: int = 3) -> Tensor:
    """Balanced soft assignments of the rows of ``scores`` [B, K] to K prototypes (SwAV; DINOv2's teacher): starting
    from exp(scores / τ), rows and columns are rescaled in turn so that, over the global batch (every rank's rows),
    each prototype receives the same mass and each row sums to 1. Computed in the log domain, so a row far below the
    batch's largest score (exp underflowing to 0 at a small τ) cannot empty a prototype and give 0 / 0. Returns
    [B, K], fp32, rows summing to 1."""
    distributed = dist.is_available() and dist.is_initialized()
    log_q = scores.float() / temperature
    rows = log_q.new_tensor(float(log_q.shape[0]))
    if distributed:
        dist.all_reduce(rows)
    log_k, log_rows = math.log(log_q.shape[1]), torch.log(rows)
    for _ in range(iters):
        log_q = log_q - _global_column_logsumexp(log_q, distributed) - log_k  # each prototype: 1 / K of the mass
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_rows  # each row: 1 / B_global
    return torch.exp(log_q + log_rows)


def _global_column_logsumexp(log_q: Tensor, distributed: bool) -> Tensor:
    """log of the sum over every rank's rows of exp(log_q), per column: [1, K]."""
    top = log_q.max(dim=0, keepdim=True).values
    if distributed:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    total = torch.exp(log_q - top).sum(dim=0, keepdim=True)
    if distributed:
        dist.all_reduce(total)
    return top + torch.log(total)


def entropy(p: Tensor) -> Tensor:
    """Mean entropy (nats) of the rows of ``p`` [..., K], which sum to 1."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1).mean()


class CrossModalDINOLoss(nn.Module):
    """Cross-entropy between the sharpened teacher distribution and the student distribution.

    out_dim: K, the head output size; student_temp: τ_s; center_momentum: m; teacher_temps: τ_t per optimiser step
    (:func:`teacher_temperature_schedule`, as DINO's loss holds its own), the last value used after the schedule ends.
    assignment: how the teacher's outputs become targets: ``center`` (DINO and XKD: subtract a running mean, then
    softmax) or ``sinkhorn`` (balanced over the batch by :func:`sinkhorn_knopp`, ``sinkhorn_iters`` iterations; the
    centre is then not used). After each call, :attr:`stats` holds the teachers' mean entropy and the entropy of their
    mean (ln K when the batch spreads over every prototype, 0 when it collapses onto one).
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 teacher_temps: Sequence[float] = (0.07,), assignment: str = "center",
                 sinkhorn_iters: int = 3) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.teacher_temps = [float(t) for t in teacher_temps]
        if not self.teacher_temps or min(self.teacher_temps) <= 0:
            raise ValueError(f"teacher temperatures must be positive and at least one, got {list(teacher_temps)[:5]}")
        if assignment not in ("center", "sinkhorn"):
            raise ValueError(f"assignment must be 'center' or 'sinkhorn', got {assignment!r}")
        self.assignment = assignment
        self.sinkhorn_iters = sinkhorn_iters
        self.stats: dict[str, Tensor] = {}
        self.register_buffer("center", torch.zeros(1, out_dim, dtype=torch.float32))

    def forward(self, student_out: Sequence[Tensor], teacher_out: Sequence[Tensor], step: int = 0) -> Tensor:
        """student_out: student views, each [B, K]; teacher_out: teacher views, each [B, K]; step: the optimiser step,
        which picks τ_t. Returns a scalar.

        loss = mean over all (teacher view, student view) pairs of mean_b[-Σ_k q_bk log p_bk], with
        q = softmax((t - c) / τ_t) (no gradient) and log p = log_softmax(s / τ_s). Computed in fp32 (float64 inputs
        stay float64). The centre is updated afterwards.
        """
        if not student_out or not teacher_out:
            raise ValueError("need at least one student view and one teacher view")
        shapes = {tuple(t.shape) for t in (*student_out, *teacher_out)}
        if len(shapes) != 1:
            raise ValueError(f"every view must have the same shape [B, K], got {sorted(shapes)}")
        tau_t = self.teacher_temps[min(step, len(self.teacher_temps) - 1)]
        device_type = student_out[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            log_p = [F.log_softmax(s.to(torch.promote_types(s.dtype, torch.float32)) / self.student_temp, dim=-1)
                     for s in student_out]
            if self.assignment == "sinkhorn":
                q = [sinkhorn_knopp(t.detach(), tau_t, self.sinkhorn_iters) for t in teacher_out]
            else:
                q = [F.softmax((t.detach().to(torch.promote_types(t.dtype, torch.float32)) - self.center) / tau_t,
                               dim=-1) for t in teacher_out]
            total = sum((-(qt * lp).sum(dim=-1)).mean() for qt in q for lp in log_p)
            loss = total / (len(q) * len(log_p))
            with torch.no_grad():
                self.stats = {"teacher_entropy": sum(entropy(qt) for qt in q) / len(q),
                              "teacher_marginal_entropy": sum(entropy(qt.mean(dim=0)) for qt in q) / len(q)}
        if self.assignment == "center":
            self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[Tensor]) -> None:
        """c <- m c + (1 - m) mean(teacher outputs); teacher_out: views, each [B, K].

        The mean runs over every view and sample of every rank (sums and counts are all-reduced, so ranks with
        different batch sizes still get the mean of the union). The centre stays fp32.
        """
        with torch.autocast(device_type=self.center.device.type, enabled=False):
            rows = torch.cat([t.detach().float() for t in teacher_out], dim=0)  # [V * B, K]
            stats = torch.cat([rows.sum(dim=0, keepdim=True), rows.new_full((1, 1), rows.shape[0])], dim=1)
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(stats)
            batch_center = stats[:, :-1] / stats[:, -1:]
            self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
