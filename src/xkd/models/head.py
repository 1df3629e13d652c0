"""The DINO projection head ``2048-gelu-3-256-8192-norm3`` (spec §A3), one per network.

Linear-LN-GELU-Linear-LN-GELU-Linear (-> bottleneck) -> L2-normalise -> weight-normalised Linear with unit
magnitude (DINO's weight_norm with weight_g fixed at 1) -> LayerNorm without affine.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.config import ModelConfig


class UnitNormLinear(nn.Module):
    """A bias-free Linear whose weight rows are normalised to unit L2 norm at every call.

    Equal to ``weight_norm(nn.Linear(in_dim, out_dim, bias=False))`` with ``weight_g`` frozen at 1: the magnitude
    is 1 by construction, however the direction ``weight [out_dim, in_dim]`` is trained or decayed.
    ``x: [B, in_dim] -> [B, out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default, which DINO's last layer keeps

    def normalized_weight(self) -> torch.Tensor:
        """[out_dim, in_dim] with unit-norm rows: the weight actually applied."""
        return F.normalize(self.weight, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x W_n^T with W_n = W / ||W||_row equals (x W^T) / ||W||_row: the division runs on the [B, out_dim] output,
        # not on the [out_dim, in_dim] weight (and its gradient), which is the larger one at training batch sizes
        norms = torch.linalg.vector_norm(self.weight, dim=1).clamp_min(1e-12)  # F.normalize's eps
        return F.linear(x, self.weight) / norms


class DINOHead(nn.Module):
    """``forward(x [B, in_dim]) -> [B, out_dim]``; each output row has mean 0 and variance 1 (non-affine LN)."""

    def __init__(self, in_dim: int = 768, hidden: int = 2048, bottleneck: int = 256, out_dim: int = 8192):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.last_layer = UnitNormLinear(bottleneck, out_dim)
        self.last_norm = nn.LayerNorm(out_dim, elementwise_affine=False)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)  # DINO's head init
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)  # [B, bottleneck], unit norm
        return self.last_norm(self.last_layer(x))


def dino_head(cfg: ModelConfig) -> DINOHead:
    """The head sized by ``cfg`` (input: the encoder's pooled feature)."""
    return DINOHead(cfg.encoder.dim, cfg.head_hidden, cfg.head_bottleneck, cfg.head_out)
