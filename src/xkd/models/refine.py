"""Cross-modal refinement of the teacher's tokens before pooling (spec §A5.3, ``cross_modal_attn`` / ``align_feats``).

The teacher of one modality weights its patch tokens by its own CLS attention, rescaled per head by the other
modality's attention mass, then pools them. The pooled vector keeps the norm of plain mean pooling.

Per head h, with v_{h,i} this modality's CLS->patch attention (N tokens) and a_{h,j} the other's (M tokens), the
released code builds the N x M outer product v_{h,i} a_{h,j} and averages it over j:
- ``mode="mean"``: ṽ_{h,i} = mean_j(v_{h,i} a_{h,j}) / v̄_h = v_{h,i} ā_h / v̄_h;
- ``mode="softmax"``: ṽ_{h,·} = softmax_i(mean_j(v_{h,i} a_{h,j})) = softmax_i(v_{h,i} ā_h), over the N tokens.
The token weights are w_i = mean_h ṽ_{h,i}. A global rescale of w does not change the pooled vector.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def cross_modal_weights(
    attn_self: Tensor, attn_other: Tensor, mode: Literal["mean", "softmax"] = "mean", eps: float = 1e-12
) -> Tensor:
    """Token weights from cross-modal attention: attn_self [B, H, N], attn_other [B, H, M] -> w [B, N].

    See the module docstring for both modes; computed in fp32 (float64 stays float64).
    """
    if attn_self.shape[:2] != attn_other.shape[:2]:
        raise ValueError(f"batch and head sizes differ: {tuple(attn_self.shape)} vs {tuple(attn_other.shape)}")
    dtype = torch.promote_types(torch.promote_types(attn_self.dtype, attn_other.dtype), torch.float32)
    v = attn_self.to(dtype)
    a_mean = attn_other.to(dtype).mean(dim=-1, keepdim=True)  # [B, H, 1]
    if mode == "mean":
        per_head = v * a_mean / v.mean(dim=-1, keepdim=True).clamp_min(eps)
    elif mode == "softmax":
        per_head = torch.softmax(v * a_mean, dim=-1)
    else:
        raise ValueError(f"unknown refine mode {mode!r}; expected 'mean' or 'softmax'")
    return per_head.mean(dim=1)


def refine_pool(tokens: Tensor, weights: Tensor, eps: float = 1e-12) -> Tensor:
    """Weighted mean pooling with the norm of plain mean pooling: tokens [B, N, D], weights [B, N] -> [B, D].

    Returns s * mean_i(w_i f_i) with s = ‖mean_i f_i‖ / ‖mean_i(w_i f_i)‖ (denominator clamped at ``eps``);
    computed in fp32 (float64 stays float64).
    """
    if tokens.shape[:2] != weights.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and weights {tuple(weights.shape)} disagree on [B, N]")
    dtype = torch.promote_types(torch.promote_types(tokens.dtype, weights.dtype), torch.float32)
    tokens, weights = tokens.to(dtype), weights.to(dtype)
    plain = tokens.mean(dim=1)  # [B, D]
    weighted = (weights.unsqueeze(-1) * tokens).mean(dim=1)  # [B, D]
    scale = plain.norm(dim=-1, keepdim=True) / weighted.norm(dim=-1, keepdim=True).clamp_min(eps)
    return scale * weighted
