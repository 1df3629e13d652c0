"""Masked reconstruction loss of the MAE students (spec §A6).

Each target patch is normalised by its own mean and unbiased variance (``norm_pix_loss``), the squared error is
averaged over the patch values, then over the masked tokens only: visible tokens never contribute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_loss(
    pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True, eps: float = 1e-6
) -> Tensor:
    """Mean squared error over the removed tokens.

    pred: [B, N, P] decoder output for every token; target: [B, N, P] the patchified input;
    mask: [B, N], 1 = removed (reconstructed), 0 = kept. With ``norm_pix`` each target patch becomes
    (t - mean) / sqrt(var + eps), var the unbiased variance over P. Returns a scalar, computed in fp32 (or float64
    when the inputs are float64) even under autocast; the target gets no gradient. A mask with no removed token
    gives 0.
    """
    if pred.shape != target.shape or pred.shape[:2] != mask.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)}, target {tuple(target.shape)}, "
                         f"mask {tuple(mask.shape)}")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred = pred.to(dtype)
        target = target.detach().to(dtype)
        mask = mask.to(dtype)
        if norm_pix:
            # layer_norm divides by the biased variance v_b = v (P - 1) / P, so
            # (t - mean) / sqrt(v + eps) = layer_norm(t, eps (P - 1) / P) sqrt((P - 1) / P); one fused pass on CPU
            p = target.shape[-1]
            shrink = (p - 1) / p
            target = F.layer_norm(target, (p,), eps=eps * shrink) * shrink**0.5
        per_token = F.mse_loss(pred, target, reduction="none").mean(dim=-1)  # [B, N]
        return (per_token * mask).sum() / mask.sum().clamp_min(1.0)
