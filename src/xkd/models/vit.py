"""Our own pre-LN ViT block (spec §A3, §A14): multi-head attention, MLP, block and a stack of blocks.

Parameter names follow the released XKD backbones (``blocks.{i}.norm1``, ``.attn.qkv``, ``.attn.proj``, ``.norm2``,
``.mlp.fc1``, ``.mlp.fc2``) so official checkpoints load by prefix. LayerNorms use torch's default eps 1e-5, GELU is
exact, the attention scale is head_dim^-0.5, and there is no dropout or drop-path.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def init_vit_weights(module: nn.Module) -> None:
    """Initialise one module in place: xavier_uniform Linear weights (the JAX ViT / MAE choice), zero biases,
    LayerNorm weight 1 and bias 0. Use with ``model.apply(init_vit_weights)``."""
    if isinstance(module, nn.Linear):
        # qkv is initialised as one [3D, D] matrix, as in MAE
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Attention(nn.Module):
    """Multi-head self-attention, computed with ``scaled_dot_product_attention``.

    ``forward(x [B, N, D])`` returns ``y [B, N, D]``. With ``return_cls_attention=True`` it returns
    ``(y, cls_attn [B, H, N])``: the attention row of token 0 (CLS), softmax(q_0 K^T scale) per head, computed on its
    own so the N x N map is never formed (the teachers' refinement needs only this row).
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_cls_attention: bool = False):
        B, N, D = x.shape
        # [B, N, 3*D] -> 3 x [B, H, N, D/H]
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # torch's CPU flash attention is several times slower in bf16 than in fp32 (backward above all), and
            # CPU autocast would cast fp32 inputs back to bf16
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=self.scale).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        y = self.proj(y.transpose(1, 2).reshape(B, N, D))
        if not return_cls_attention:
            return y
        cls_attn = (q[:, :, :1] @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # [B, H, 1, N]
        return y, cls_attn.squeeze(2)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2. ``x: [B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``. ``x: [B, N, D]``.

    With ``return_cls_attention=True`` returns ``(x, cls_attn [B, H, N])`` (see :class:`Attention`).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, return_cls_attention: bool = False):
        if return_cls_attention:
            y, cls_attn = self.attn(self.norm1(x), return_cls_attention=True)
        else:
            y = self.attn(self.norm1(x))
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return (x, cls_attn) if return_cls_attention else x


class Transformer(nn.Module):
    """A stack of ``depth`` blocks, without a final norm. One instance may be shared by two encoders (MAS).

    ``forward(x [B, N, D])`` returns ``[B, N, D]``; with ``return_last_cls_attention=True`` it returns
    ``(x, cls_attn [B, H, N])``, the CLS attention row of the last block.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.dim, self.depth, self.heads = dim, depth, heads
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.apply(init_vit_weights)

    def forward(self, x: torch.Tensor, return_last_cls_attention: bool = False):
        for blk in self.blocks[:-1]:
            x = blk(x)
        return self.blocks[-1](x, return_cls_attention=return_last_cls_attention)
