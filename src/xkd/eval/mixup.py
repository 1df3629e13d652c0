"""Batch-level mixup and cutmix with label smoothing, for video and spectrogram fine-tuning (spec §A10).

The semantics are timm's ``Mixup`` in batch mode: sample ``i`` is mixed with sample ``B - 1 - i`` (the flipped batch),
``lam ~ Beta(alpha, alpha)``; when both mixup and cutmix are on, cutmix is chosen with probability ``switch_prob``.
A cutmix box covers the last two axes (H, W of every frame of a video ``[B, 3, T, H, W]``, so the box is the same in
all frames; F, T of a spectrogram ``[B, 1, F, T]``), is clipped to the input, and ``lam`` is corrected to the area that
was actually kept. Targets are ``lam * t_i + (1 - lam) * t_flip(i)`` with smoothed one-hot (or multi-hot) rows ``t``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def smooth_targets(y: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Soft targets [B, C]: ``(1 - smoothing) * t + smoothing / C`` with ``t`` the one-hot rows of class indices
    ``y: [B]`` or the given multi-hot rows ``y: [B, C]``. Single-label rows sum to 1."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if y.ndim == 1:
        t = torch.nn.functional.one_hot(y.long(), num_classes).float()
    elif y.ndim == 2 and y.shape[1] == num_classes:
        t = y.float()
    else:
        raise ValueError(f"labels must be [B] class indices or [B, {num_classes}] multi-hot, got {list(y.shape)}")
    return t * (1.0 - smoothing) + smoothing / num_classes


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(alpha, alpha), reproducible from the torch generator (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """A box ``(top, bottom, left, right)`` of about ``(1 - lam)`` of the area, centred uniformly, clipped to the
    ``height x width`` input (timm's ``rand_bbox``)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (), generator=generator).item())
    cx = int(torch.randint(0, width, (), generator=generator).item())
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def mixup_cutmix(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    smoothing: float = 0.0,
    generator: torch.Generator | None = None,
    prob: float = 1.0,
    switch_prob: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Mix a batch. x: [B, 3, T, H, W] or [B, 1, F, T]; y: [B] class indices or [B, C] multi-hot.

    Returns ``(mixed x, soft targets [B, C] float)``; ``x`` itself is not modified. With probability ``1 - prob`` (or
    when both alphas are 0) the batch is returned unmixed with smoothed targets. All draws come from ``generator``
    (torch's global generator when None).
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"alphas must be >= 0, got mixup {mixup_alpha}, cutmix {cutmix_alpha}")
    targets = smooth_targets(y, num_classes, smoothing).to(x.device)
    # one coin per decision, always drawn, so turning one option off does not shift the other draws
    mix_coin = torch.rand((), generator=generator).item()
    switch_coin = torch.rand((), generator=generator).item()
    if mix_coin >= prob or (mixup_alpha == 0 and cutmix_alpha == 0):
        return x, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or switch_coin < switch_prob)
    lam = _beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    flipped = x.flip(0)
    if use_cutmix:
        height, width = x.shape[-2:]
        top, bottom, left, right = cutmix_box(height, width, lam, generator)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = flipped[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    else:
        mixed = lam * x + (1.0 - lam) * flipped
    return mixed, lam * targets + (1.0 - lam) * targets.flip(0)
