"""The ViT encoder shared by students and teachers of both modalities (spec §A3, §A4, §A14).

tokenizer -> + position embedding -> optional random masking -> prepend CLS (+ its position row) -> blocks -> norm.

State-dict names map to the released backbones by prefix::

    cls_token        -> cls_token
    pos_embed        -> enc_pos_embed
    tokenizer.proj.  -> cuboid_embed.proj.   (video)  /  patch_embed.proj.  (audio)
    blocks.          -> encoder.             (so blocks.blocks.{i}.attn.qkv -> encoder.blocks.{i}.attn.qkv)
    norm.            -> encoder_norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from xkd.config import EncoderConfig, ModelConfig
from xkd.models.masking import random_masking
from xkd.models.tokenizers import AudioTokenizer, VideoTokenizer
from xkd.models.vit import Transformer


@dataclass
class EncoderOutput:
    """What :class:`Encoder` returns.

    tokens: [B, 1+K, D] after the final LayerNorm, CLS first (K = N when unmasked).
    grid: the input's token grid ((T', H', W') or (F', T')).
    mask: [B, N], 0 keep, 1 removed (only when masked). ids_restore: [B, N] (only when masked).
    patches: [B, N, P], the patchified input, every token (only when masked: the reconstruction target).
    cls_attention: [B, H, K], the last block's attention from CLS to each patch token (softmax over all 1+K keys, CLS
    column dropped; only when asked).
    """

    tokens: torch.Tensor
    grid: tuple[int, ...]
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    cls_attention: torch.Tensor | None = None
    patches: torch.Tensor | None = None

    @property
    def patch_tokens(self) -> torch.Tensor:
        """[B, K, D]: the tokens without CLS."""
        return self.tokens[:, 1:]


def pooled(out: EncoderOutput) -> torch.Tensor:
    """The clip feature [B, D]: mean of the patch tokens, CLS excluded (spec §A10). Visible tokens only when masked."""
    return out.patch_tokens.mean(dim=1)


class Encoder(nn.Module):
    """ViT encoder over one modality's tokens. ``forward(x, mask_ratio, return_cls_attention) -> EncoderOutput``.

    ``blocks``: pass an existing :class:`Transformer` to share it between two encoders (the MAS student);
    otherwise a new one is built from ``dim, depth, heads, mlp_ratio, qkv_bias``.
    """

    def __init__(
        self,
        tokenizer: VideoTokenizer | AudioTokenizer,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        blocks: Transformer | None = None,
    ):
        super().__init__()
        if tokenizer.dim != dim:
            raise ValueError(f"tokenizer projects to {tokenizer.dim} but the encoder dim is {dim}")
        if blocks is not None and (blocks.dim, blocks.depth, blocks.heads) != (dim, depth, heads):
            raise ValueError(
                f"shared blocks have (dim, depth, heads) = {(blocks.dim, blocks.depth, blocks.heads)}, "
                f"expected {(dim, depth, heads)}"
            )
        self.dim = dim
        self.tokenizer = tokenizer
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + tokenizer.num_patches, dim))
        self.blocks = blocks if blocks is not None else Transformer(dim, depth, heads, mlp_ratio, qkv_bias)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def pos_embed_for(self, grid: tuple[int, ...]) -> torch.Tensor:
        """Position embedding [1, 1+N, D] for an input token grid, resampled when it differs from the configured one."""
        if tuple(grid) == self.tokenizer.grid:
            return self.pos_embed
        return self.tokenizer.resample_pos_embed(self.pos_embed, grid)

    def forward(
        self,
        x: torch.Tensor,
        mask_ratio: float = 0.0,
        return_cls_attention: bool = False,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """x: [B, C, T, H, W] (video) or [B, 1, F, T] (audio). ``mask_ratio > 0`` keeps round(N(1-r)) tokens,
        chosen by ``noise`` [B, N] when given (see :func:`random_masking`)."""
        grid = self.tokenizer.grid_for(x)
        pos_embed = self.pos_embed_for(grid)  # [1, 1+N, D]
        pos = pos_embed[:, 1:]
        mask = ids_restore = patches = None
        if mask_ratio > 0:
            # Mask the raw patches and project only the kept ones: the projection acts on each token alone, so
            # this equals projecting all N tokens, adding the position embedding and masking (spec §A4).
            patches = self.tokenizer.patchify(x)
            kept, mask, ids_restore = random_masking(patches, mask_ratio, generator, noise)
            ids_keep = torch.argsort(ids_restore, dim=1)[:, : kept.shape[1]]  # [B, K]
            pos = torch.gather(pos.expand(x.shape[0], -1, -1), 1, ids_keep.unsqueeze(-1).expand(-1, -1, self.dim))
            x = self.tokenizer.proj(kept) + pos  # [B, K, D]
        else:
            x = self.tokenizer(x) + pos  # [B, N, D]

        cls = (self.cls_token + pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # [B, 1+K, D]

        cls_attention = None
        if return_cls_attention:
            x, cls_row = self.blocks(x, return_last_cls_attention=True)
            cls_attention = cls_row[:, :, 1:]
        else:
            x = self.blocks(x)
        return EncoderOutput(self.norm(x), grid, mask, ids_restore, cls_attention, patches)


def _encoder(tokenizer: VideoTokenizer | AudioTokenizer, enc: EncoderConfig, blocks: Transformer | None) -> Encoder:
    return Encoder(tokenizer, enc.dim, enc.depth, enc.heads, enc.mlp_ratio, enc.qkv_bias, blocks=blocks)


def video_encoder(cfg: ModelConfig, blocks: Transformer | None = None) -> Encoder:
    """The video encoder for ``cfg`` (input [B, 3, num_frames, frame_size, frame_size] on the configured grid)."""
    tokenizer = VideoTokenizer(cfg.num_frames, cfg.frame_size, cfg.video_patch, in_chans=3, dim=cfg.encoder.dim)
    return _encoder(tokenizer, cfg.encoder, blocks)


def audio_encoder(cfg: ModelConfig, blocks: Transformer | None = None) -> Encoder:
    """The audio encoder for ``cfg`` (input [B, 1, spec_size[0], spec_size[1]] on the configured grid)."""
    tokenizer = AudioTokenizer(cfg.spec_size, cfg.audio_patch, dim=cfg.encoder.dim)
    return _encoder(tokenizer, cfg.encoder, blocks)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def tiny_model_config() -> ModelConfig:
    """A CPU-sized preset for tests and smoke runs: ViT dim 64, depth 2, 4 heads; video 16x32x32 with (4, 8, 8)
    tubelets (4x4x4 tokens); audio 40x112 with (4, 16) patches (10x7 tokens); decoder 32/1/4; head 128-32-256."""
    return ModelConfig(
        encoder=EncoderConfig(dim=64, depth=2, heads=4, mlp_ratio=4.0, qkv_bias=False),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
        head_hidden=128,
        head_bottleneck=32,
        head_out=256,
        num_frames=16,
        frame_size=32,
        video_patch=(4, 8, 8),
        spec_size=(40, 112),
        audio_patch=(4, 16),
    )
