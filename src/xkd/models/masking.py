"""Per-sample random token masking, MAE style (spec §A4)."""

from __future__ import annotations

import torch


def random_masking(
    x: torch.Tensor,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of K = round(N * (1 - mask_ratio)) tokens per sample.

    Each sample's tokens are shuffled by an argsort of uniform noise; the first K are kept.

    x: [B, N, D]; generator: optional, on ``x.device``, for reproducible masks; noise: optional [B, N] uniform
    noise to use instead of drawing it (the trainer draws it for the global batch, so that masks do not depend on
    how the batch is split across processes).
    Returns ``x_kept [B, K, D]`` (in shuffled order), ``mask [B, N]`` (float32, 0 is keep, 1 is remove, in the
    original token order) and ``ids_restore [B, N]`` (``x_shuffled.gather(1, ids_restore)`` restores the order).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    B, N, D = x.shape
    keep = round(N * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no token out of {N}")

    if noise is None:
        noise = torch.rand(B, N, device=x.device, generator=generator)
    elif noise.shape != (B, N):
        raise ValueError(f"noise must have shape [B, N] = {[B, N]}, got {list(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)

    ids_keep = ids_shuffle[:, :keep]
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))

    mask = torch.ones(B, N, device=x.device, dtype=torch.float32)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to the original token order
    return x_kept, mask, ids_restore
