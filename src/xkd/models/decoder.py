"""The MAE reconstruction decoder, one per modality (spec §A3).

embed (enc_dim -> dim) -> un-shuffle with mask tokens -> + own position embedding -> blocks -> pred (dim -> patch_dim).
Unlike MAE there is no LayerNorm before ``pred``. The CLS token passes through and is dropped at the output.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xkd.config import ModelConfig
from xkd.models.encoder import Encoder
from xkd.models.vit import Transformer, init_vit_weights


class Decoder(nn.Module):
    """``forward(tokens [B, 1+K, enc_dim], ids_restore [B, N]) -> [B, N, patch_dim]`` (predicted patches, token order).

    Works on the configured grid only (``num_patches`` tokens), which is where masking is used (global views).
    """

    def __init__(
        self,
        num_patches: int,
        patch_dim: int,
        enc_dim: int = 768,
        dim: int = 384,
        depth: int = 4,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
    ):
        super().__init__()
        self.num_patches = num_patches
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, dim))
        self.blocks = Transformer(dim, depth, heads, mlp_ratio, qkv_bias)
        self.pred = nn.Linear(dim, patch_dim)
        init_vit_weights(self.embed)
        init_vit_weights(self.pred)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def unshuffle(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Put kept tokens back in place and fill removed places with the mask token.

        x: [B, 1+K, dim] (CLS first, kept tokens in shuffled order); ids_restore: [B, N]. Returns [B, 1+N, dim].
        """
        B, L, dim = x.shape
        N = ids_restore.shape[1]
        if N != self.num_patches:
            raise ValueError(f"decoder built for {self.num_patches} tokens, ids_restore has {N}")
        if not 1 <= L - 1 <= N:
            raise ValueError(f"got {L - 1} kept tokens for {N} positions")
        patches = torch.cat([x[:, 1:], self.mask_token.expand(B, N - (L - 1), -1)], dim=1)  # [B, N, dim] shuffled
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
        return torch.cat([x[:, :1], patches], dim=1)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.unshuffle(self.embed(tokens), ids_restore) + self.pos_embed
        x = self.pred(self.blocks(x))  # no LayerNorm before pred (spec §A3)
        return x[:, 1:]  # drop CLS


def decoder_for(encoder: Encoder, cfg: ModelConfig) -> Decoder:
    """The decoder that reconstructs ``encoder``'s patches on its configured grid, sized by ``cfg``."""
    tok = encoder.tokenizer
    return Decoder(
        tok.num_patches, tok.patch_dim, encoder.dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads
    )
