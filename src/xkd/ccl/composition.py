"""CCL's compositional embedding (spec §B4): a teacher feature plus a residual computed from both modalities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Composition(nn.Module):
    """x_tv = x_t + W [x_t / |x_t| ; x_v / |x_v|] + b, then logits_tv = FC(x_tv).

    One single linear layer (no nonlinearity) makes the residual; it lives in the teacher's feature space, so the
    composition is the (unnormalised) teacher feature moved towards the video. x_t: [B, D_t], x_v: [B, D_v] ->
    (logits_tv [B, num_classes], x_tv [B, D_t]).
    """

    def __init__(self, teacher_dim: int, video_dim: int, num_classes: int):
        super().__init__()
        self.residual = nn.Linear(teacher_dim + video_dim, teacher_dim)
        self.fc = nn.Linear(teacher_dim, num_classes)

    def forward(self, x_t: Tensor, x_v: Tensor) -> tuple[Tensor, Tensor]:
        r = self.residual(torch.cat((F.normalize(x_t, dim=1), F.normalize(x_v, dim=1)), dim=1))
        x_tv = x_t + r
        return self.fc(x_tv), x_tv
