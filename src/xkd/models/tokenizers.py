"""Patch tokenisers: video tubelets and spectrogram patches, flattened then projected by a Linear (spec §A3, §A14).

The flattening order is the released checkpoints' order, so their ``proj`` weights load unchanged:

- video ``x: [B, C, T, H, W]``: tokens ordered ``(t h w)`` (time-major), each vector ordered ``(pt ph pw c)``;
- audio ``x: [B, 1, F, T]`` (mel bins x frames): tokens ordered ``(f t)`` (frequency-major), each vector ``(pf pt c)``.

Inputs of any size divisible by the patch are accepted; ``grid_for(x)`` gives the token grid of an input, and
``resample_pos_embed`` moves a position embedding from the configured grid to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from xkd.models.pos_embed import resample_audio_pos_embed, resample_video_pos_embed


def _init_proj(proj: nn.Linear) -> None:
    # a Linear patch embedding gets the same xavier_uniform init as every other Linear (MAE)
    nn.init.xavier_uniform_(proj.weight)
    nn.init.zeros_(proj.bias)


class VideoTokenizer(nn.Module):
    """Non-overlapping ``pt x ph x pw`` tubelets -> Linear. ``forward(x [B, C, T, H, W]) -> [B, N, dim]``.

    ``frames`` and ``size`` (an int or ``(H, W)``) set the configured grid ``(T/pt, H/ph, W/pw)``.
    """

    def __init__(
        self,
        frames: int,
        size: int | Sequence[int],
        patch: Sequence[int] = (4, 16, 16),
        in_chans: int = 3,
        dim: int = 768,
    ):
        super().__init__()
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.patch = tuple(patch)
        self.in_chans = in_chans
        self.dim = dim
        self.patch_dim = math.prod(self.patch) * in_chans
        self._grid = self._grid_of((frames, *size))
        self.proj = nn.Linear(self.patch_dim, dim)
        _init_proj(self.proj)

    def _grid_of(self, thw: Sequence[int]) -> tuple[int, int, int]:
        if any(s <= 0 or s % p for s, p in zip(thw, self.patch)):
            raise ValueError(f"video size (T, H, W) = {tuple(thw)} is not divisible by the tubelet {self.patch}")
        return tuple(s // p for s, p in zip(thw, self.patch))

    @property
    def grid(self) -> tuple[int, int, int]:
        """The configured token grid (T', H', W')."""
        return self._grid

    @property
    def num_patches(self) -> int:
        """Tokens on the configured grid."""
        return math.prod(self._grid)

    def grid_for(self, x: torch.Tensor) -> tuple[int, int, int]:
        """Token grid (T', H', W') of an input ``x: [B, C, T, H, W]``."""
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"video input must be [B, {self.in_chans}, T, H, W], got {list(x.shape)}")
        return self._grid_of(x.shape[2:])

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, T, H, W] -> [B, N, pt*ph*pw*C]``, tokens in (t h w) order, vectors in (pt ph pw c) order."""
        t, h, w = self.grid_for(x)
        pt, ph, pw = self.patch
        B, C = x.shape[:2]
        x = x.reshape(B, C, t, pt, h, ph, w, pw)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, t, h, w, pt, ph, pw, C]
        return x.reshape(B, t * h * w, self.patch_dim)

    def unpatchify(self, x: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
        """Inverse of :meth:`patchify`: ``x: [B, N, pt*ph*pw*C] -> [B, C, T, H, W]`` on ``grid`` (default: the
        configured grid)."""
        t, h, w = self._grid if grid is None else tuple(grid)
        if x.ndim != 3 or x.shape[1] != t * h * w or x.shape[2] != self.patch_dim:
            raise ValueError(f"expected [B, {t * h * w}, {self.patch_dim}] for grid {(t, h, w)}, got {list(x.shape)}")
        pt, ph, pw = self.patch
        B = x.shape[0]
        x = x.reshape(B, t, h, w, pt, ph, pw, self.in_chans)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C, t, pt, h, ph, w, pw]
        return x.reshape(B, self.in_chans, t * pt, h * ph, w * pw)

    def resample_pos_embed(self, pe: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``pe: [1, 1+N, D]`` for the configured grid -> ``[1, 1+N', D]`` for ``grid`` (trilinear)."""
        return resample_video_pos_embed(pe, self._grid, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.patchify(x))


class AudioTokenizer(nn.Module):
    """Non-overlapping ``pf x pt`` spectrogram patches -> Linear. ``forward(x [B, 1, F, T]) -> [B, N, dim]``.

    ``spec_size = (F, T)`` sets the configured grid ``(F/pf, T/pt)``; inputs may have another length T.
    """

    def __init__(
        self,
        spec_size: Sequence[int] = (80, 448),
        patch: Sequence[int] = (4, 16),
        dim: int = 768,
        in_chans: int = 1,
    ):
        super().__init__()
        self.patch = tuple(patch)
        self.in_chans = in_chans
        self.dim = dim
        self.patch_dim = math.prod(self.patch) * in_chans
        self._grid = self._grid_of(tuple(spec_size))
        self.proj = nn.Linear(self.patch_dim, dim)
        _init_proj(self.proj)

    def _grid_of(self, ft: Sequence[int]) -> tuple[int, int]:
        if any(s <= 0 or s % p for s, p in zip(ft, self.patch)):
            raise ValueError(f"spectrogram size (F, T) = {tuple(ft)} is not divisible by the patch {self.patch}")
        return tuple(s // p for s, p in zip(ft, self.patch))

    @property
    def grid(self) -> tuple[int, int]:
        """The configured token grid (F', T')."""
        return self._grid

    @property
    def num_patches(self) -> int:
        """Tokens on the configured grid."""
        return math.prod(self._grid)

    def grid_for(self, x: torch.Tensor) -> tuple[int, int]:
        """Token grid (F', T') of an input ``x: [B, 1, F, T]``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"spectrogram input must be [B, {self.in_chans}, F, T], got {list(x.shape)}")
        return self._grid_of(x.shape[2:])

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, F, T] -> [B, N, pf*pt*C]``, tokens in (f t) order, vectors in (pf pt c) order."""
        f, t = self.grid_for(x)
        pf, pt = self.patch
        B, C = x.shape[:2]
        x = x.reshape(B, C, f, pf, t, pt)
        x = x.permute(0, 2, 4, 3, 5, 1)  # [B, f, t, pf, pt, C]
        return x.reshape(B, f * t, self.patch_dim)

    def unpatchify(self, x: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
        """Inverse of :meth:`patchify`: ``x: [B, N, pf*pt*C] -> [B, C, F, T]`` on ``grid`` (default: configured)."""
        f, t = self._grid if grid is None else tuple(grid)
        if x.ndim != 3 or x.shape[1] != f * t or x.shape[2] != self.patch_dim:
            raise ValueError(f"expected [B, {f * t}, {self.patch_dim}] for grid {(f, t)}, got {list(x.shape)}")
        pf, pt = self.patch
        B = x.shape[0]
        x = x.reshape(B, f, t, pf, pt, self.in_chans)
        x = x.permute(0, 5, 1, 3, 2, 4)  # [B, C, f, pf, t, pt]
        return x.reshape(B, self.in_chans, f * pf, t * pt)

    def resample_pos_embed(self, pe: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``pe: [1, 1+N, D]`` for the configured grid -> ``[1, 1+N', D]`` for ``grid`` (bicubic along time)."""
        return resample_audio_pos_embed(pe, self._grid, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.patchify(x))
