"""Resampling of learnable position embeddings to another token grid (spec §A3).

Both functions take ``pe: [1, 1+N, D]`` (CLS row first, then the patch rows in grid order) and return
``[1, 1+N', D]`` with the CLS row unchanged. Equal grids return ``pe`` itself.

As in the released code (and DINO), the interpolation is driven by ``scale_factor = (new + 0.1) / old`` rather than
by the output size; the 0.1 keeps ``floor(old * scale)`` at ``new``. The sampling positions therefore differ slightly
from a size-driven resize, and we keep this convention so that released checkpoints give the same features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _split(pe: torch.Tensor, old_grid: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``pe [1, 1+N, D]`` -> (cls row [1, 1, D], patch rows [1, N, D]), checking N against ``old_grid``."""
    if pe.ndim != 3 or pe.shape[0] != 1:
        raise ValueError(f"position embedding must have shape [1, 1+N, D], got {list(pe.shape)}")
    n = math.prod(old_grid)
    if pe.shape[1] != n + 1:
        raise ValueError(f"position embedding has {pe.shape[1]} rows but grid {tuple(old_grid)} needs 1 + {n}")
    return pe[:, :1], pe[:, 1:]


def _scale_factors(old_grid: Sequence[int], new_grid: Sequence[int]) -> tuple[float, ...]:
    return tuple((new + 0.1) / old for old, new in zip(old_grid, new_grid))


def resample_video_pos_embed(
    pe: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int]
) -> torch.Tensor:
    """Trilinear resampling over the (T, H, W) token grid. ``pe: [1, 1+T*H*W, D] -> [1, 1+T'*H'*W', D]``."""
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if len(old_grid) != 3 or len(new_grid) != 3:
        raise ValueError(f"video grids are (T, H, W); got {old_grid} and {new_grid}")
    cls, patches = _split(pe, old_grid)
    if old_grid == new_grid:
        return pe
    D = pe.shape[-1]
    grid = patches.reshape(1, *old_grid, D).permute(0, 4, 1, 2, 3)  # [1, D, T, H, W]
    grid = F.interpolate(
        grid, scale_factor=_scale_factors(old_grid, new_grid), mode="trilinear", align_corners=False
    )
    patches = grid.permute(0, 2, 3, 4, 1).reshape(1, -1, D)
    return torch.cat([cls, patches], dim=1)


def resample_audio_pos_embed(
    pe: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int]
) -> torch.Tensor:
    """Bicubic resampling along time only over the (F, T) grid. ``pe: [1, 1+F*T, D] -> [1, 1+F*T', D]``.

    The frequency size must match: a spectrogram with another number of mel bins is an error.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if len(old_grid) != 2 or len(new_grid) != 2:
        raise ValueError(f"audio grids are (F, T); got {old_grid} and {new_grid}")
    if old_grid[0] != new_grid[0]:
        raise ValueError(
            f"audio position embeddings are resampled along time only: the frequency grid must stay "
            f"{old_grid[0]} patches, got {new_grid[0]} (is the number of mel bins different?)"
        )
    cls, patches = _split(pe, old_grid)
    if old_grid == new_grid:
        return pe
    D = pe.shape[-1]
    grid = patches.reshape(1, *old_grid, D).permute(0, 3, 1, 2)  # [1, D, F, T]
    scale = (1.0, _scale_factors(old_grid[1:], new_grid[1:])[0])  # a unit scale leaves frequency untouched
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, D)
    return torch.cat([cls, patches], dim=1)
