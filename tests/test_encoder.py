"""The encoder: masking, attention output, local views, shared blocks, and the released checkpoint layout (§A14)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.config import ModelConfig
from xkd.models.encoder import Encoder, audio_encoder, count_params, pooled, tiny_model_config, video_encoder
from xkd.models.masking import random_masking
from xkd.models.tokenizers import VideoTokenizer

CFG = tiny_model_config()  # video 16x32x32, (4,8,8) tubelets -> 4x4x4; audio 40x112, (4,16) -> 10x7; dim 64


def video(B=2, T=16, S=32):
    return torch.randn(B, 3, T, S, S)


def audio(B=2, T=112):
    return torch.randn(B, 1, 40, T)


# ----------------------------------------------------------------------- the released layout (spec §A14)

SPEC_VIDEO_KEYS = """
cls_token [1, 1, 768]
enc_pos_embed [1, 393, 768]
cuboid_embed.proj.weight [768, 3072]
cuboid_embed.proj.bias [768]
encoder.blocks.{i}.norm1.weight [768]
encoder.blocks.{i}.norm1.bias [768]
encoder.blocks.{i}.attn.qkv.weight [2304, 768]
encoder.blocks.{i}.attn.proj.weight [768, 768]
encoder.blocks.{i}.attn.proj.bias [768]
encoder.blocks.{i}.norm2.weight [768]
encoder.blocks.{i}.norm2.bias [768]
encoder.blocks.{i}.mlp.fc1.weight [3072, 768]
encoder.blocks.{i}.mlp.fc1.bias [3072]
encoder.blocks.{i}.mlp.fc2.weight [768, 3072]
encoder.blocks.{i}.mlp.fc2.bias [768]
encoder_norm.weight [768]
encoder_norm.bias [768]
"""


def spec_table(text: str, depth: int = 12) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in text.strip().splitlines():
        name, shape = line.split(" ", 1)
        dims = tuple(int(s) for s in shape.strip("[]").split(","))
        for i in range(depth) if "{i}" in name else [None]:
            out[name.replace("{i}", str(i))] = dims
    return out


def to_released(state: dict, tokenizer_name: str) -> dict:
    """Our encoder state dict -> the released backbone's names."""
    rules = [("tokenizer.", f"{tokenizer_name}."), ("blocks.", "encoder."), ("norm.", "encoder_norm."),
             ("pos_embed", "enc_pos_embed"), ("cls_token", "cls_token")]  # fmt: skip
    out = {}
    for k, v in state.items():
        old, new = next((o, n) for o, n in rules if k.startswith(o))
        out[new + k[len(old) :]] = v
    return out


@pytest.fixture(scope="module")
def paper_video_encoder():
    torch.manual_seed(0)
    return video_encoder(ModelConfig())


def test_paper_video_backbone_matches_released_keys_and_shapes(paper_video_encoder):
    expected = spec_table(SPEC_VIDEO_KEYS)
    assert len(expected) == 138
    got = {k: tuple(v.shape) for k, v in to_released(paper_video_encoder.state_dict(), "cuboid_embed").items()}
    assert got == expected
    assert count_params(paper_video_encoder) == sum(math.prod(s) for s in expected.values()) == 87_691_008


def test_paper_audio_backbone_matches_released_keys_and_shapes(paper_video_encoder):
    # share the blocks so only the audio-specific parts are built
    enc = audio_encoder(ModelConfig(), blocks=paper_video_encoder.blocks)
    expected = spec_table(
        SPEC_VIDEO_KEYS.replace("cuboid_embed", "patch_embed")
        .replace("[1, 393, 768]", "[1, 561, 768]")
        .replace("proj.weight [768, 3072]", "proj.weight [768, 64]")
    )
    got = {k: tuple(v.shape) for k, v in to_released(enc.state_dict(), "patch_embed").items()}
    assert got == expected and len(got) == 138
    assert count_params(enc) == sum(math.prod(s) for s in expected.values()) == 85_509_888


# ----------------------------------------------------------------------- a functional reference of the released forward


def _released_forward(sd, x, grid, new_grid, heads, mode):
    """The released backbone's forward, written from its state dict (names of §A14) with explicit loops."""
    B = x.shape[0]
    emb = "cuboid_embed" if mode == "video" else "patch_embed"
    W = sd[f"{emb}.proj.weight"]
    if mode == "video":
        pt, ph, pw = 4, 8, 8
        cubes = [
            x[:, :, t * pt : (t + 1) * pt, h * ph : (h + 1) * ph, w * pw : (w + 1) * pw].permute(0, 2, 3, 4, 1)
            for t in range(new_grid[0]) for h in range(new_grid[1]) for w in range(new_grid[2])
        ]  # fmt: skip
    else:
        pf, pt = 4, 16
        cubes = [
            x[:, :, f * pf : (f + 1) * pf, t * pt : (t + 1) * pt].permute(0, 2, 3, 1)
            for f in range(new_grid[0]) for t in range(new_grid[1])
        ]  # fmt: skip
    tokens = torch.stack([c.reshape(B, -1) for c in cubes], 1) @ W.T + sd[f"{emb}.proj.bias"]
    pos = sd["enc_pos_embed"]
    if tuple(new_grid) != tuple(grid):
        D = pos.shape[-1]
        patch_pos = pos[:, 1:].reshape(1, *grid, D).permute(0, len(grid) + 1, *range(1, len(grid) + 1))
        if mode == "video":
            scale = tuple((n + 0.1) / o for n, o in zip(new_grid, grid))
            patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="trilinear", align_corners=False)
        else:
            scale = (1, (new_grid[1] + 0.1) / grid[1])
            patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", align_corners=False)
        patch_pos = patch_pos.permute(0, *range(2, len(grid) + 2), 1).reshape(1, -1, D)
        pos = torch.cat([pos[:, :1], patch_pos], 1)
    tokens = tokens + pos[:, 1:]
    z = torch.cat([(sd["cls_token"] + pos[:, :1]).expand(B, -1, -1), tokens], 1)
    depth = len({k.split(".")[2] for k in sd if k.startswith("encoder.blocks.")})
    N, D = z.shape[1:]
    for i in range(depth):
        p = lambda n: sd[f"encoder.blocks.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(z, (D,), p("norm1.weight"), p("norm1.bias"), 1e-5)
        q, k, v = (h @ p("attn.qkv.weight").T).reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (D // heads) ** -0.5, dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, D) @ p("attn.proj.weight").T + p("attn.proj.bias")
        z = z + y
        h = F.layer_norm(z, (D,), p("norm2.weight"), p("norm2.bias"), 1e-5)
        h = F.gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
        z = z + h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
    return F.layer_norm(z, (D,), sd["encoder_norm.weight"], sd["encoder_norm.bias"], 1e-5), attn


@pytest.mark.parametrize(
    "mode, shape, new_grid",
    [
        ("video", (2, 3, 16, 32, 32), (4, 4, 4)),
        ("video", (2, 3, 4, 24, 24), (1, 3, 3)),  # a local view: resampled position embedding
        ("video", (1, 3, 8, 48, 48), (2, 6, 6)),  # larger than configured
        ("audio", (2, 1, 40, 112), (10, 7)),
        ("audio", (2, 1, 40, 32), (10, 2)),  # a local view
    ],
)
def test_encoder_matches_the_released_forward(mode, shape, new_grid):
    torch.manual_seed(1)
    enc = (video_encoder if mode == "video" else audio_encoder)(CFG).double()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so their names and order are exercised too
        for m in enc.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    x = torch.randn(*shape, dtype=torch.float64)
    out = enc(x, return_cls_attention=True)
    sd = to_released(enc.state_dict(), "cuboid_embed" if mode == "video" else "patch_embed")
    ref_tokens, ref_attn = _released_forward(sd, x, enc.tokenizer.grid, new_grid, CFG.encoder.heads, mode)
    assert out.grid == new_grid
    torch.testing.assert_close(out.tokens, ref_tokens)
    torch.testing.assert_close(out.cls_attention, ref_attn[:, :, 0, 1:])  # CLS -> patch row of the last block


def test_position_embedding_is_added_before_masking():
    torch.manual_seed(2)
    enc = video_encoder(CFG).double()
    x = torch.randn(2, 3, 16, 32, 32, dtype=torch.float64)
    out = enc(x, mask_ratio=0.75, generator=torch.Generator().manual_seed(5))
    # reference: embed + position, then mask with the same noise, then CLS (+ its position row), blocks, norm
    tokens = enc.tokenizer(x) + enc.pos_embed[:, 1:]
    kept, mask, ids_restore = random_masking(tokens, 0.75, torch.Generator().manual_seed(5))
    z = torch.cat([(enc.cls_token + enc.pos_embed[:, :1]).expand(2, -1, -1), kept], 1)
    torch.testing.assert_close(out.tokens, enc.norm(enc.blocks(z)))
    assert torch.equal(out.mask, mask) and torch.equal(out.ids_restore, ids_restore)


# ----------------------------------------------------------------------- behaviour at tiny size


@pytest.mark.parametrize("mode", ["video", "audio"])
@pytest.mark.parametrize("mask_ratio", [0.0, 0.75])
def test_forward_backward_every_parameter_gets_a_gradient(mode, mask_ratio):
    torch.manual_seed(3)
    enc = (video_encoder if mode == "video" else audio_encoder)(CFG)
    x = video() if mode == "video" else audio()
    out = enc(x, mask_ratio=mask_ratio, return_cls_attention=True)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.cls_attention).all()
    (pooled(out).square().sum() + out.tokens[:, 0].sum()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode, n, ratio, kept", [("video", 64, 0.85, 10), ("audio", 70, 0.80, 14)])
def test_masked_encoder_keeps_k_plus_one_tokens(mode, n, ratio, kept):
    enc = (video_encoder if mode == "video" else audio_encoder)(CFG)
    x = video(3) if mode == "video" else audio(3)
    out = enc(x, mask_ratio=ratio, return_cls_attention=True)
    assert out.tokens.shape == (3, 1 + kept, 64)
    assert out.mask.shape == (3, n) and (out.mask.sum(1) == n - kept).all()
    assert out.ids_restore.shape == (3, n)
    assert out.cls_attention.shape == (3, 4, kept)  # the CLS column is dropped, so a row sums to less than 1
    assert (out.cls_attention > 0).all() and (out.cls_attention.sum(-1) < 1).all()
    unmasked = enc(x)
    assert unmasked.tokens.shape == (3, 1 + n, 64) and unmasked.mask is None and unmasked.ids_restore is None
    assert unmasked.cls_attention is None


def test_attention_path_gives_the_same_tokens():
    torch.manual_seed(4)
    enc = video_encoder(CFG)
    x = video()
    torch.testing.assert_close(enc(x).tokens, enc(x, return_cls_attention=True).tokens, rtol=1e-5, atol=1e-5)


def test_generator_makes_masking_reproducible():
    enc = audio_encoder(CFG)
    x = audio()
    a = enc(x, mask_ratio=0.8, generator=torch.Generator().manual_seed(0))
    b = enc(x, mask_ratio=0.8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


def test_local_views_and_other_sizes():
    v, a = video_encoder(CFG), audio_encoder(CFG)
    assert v(video(T=4, S=24)).tokens.shape == (2, 1 + 1 * 3 * 3, 64)
    assert a(audio(T=32)).tokens.shape == (2, 1 + 10 * 2, 64)
    assert a(audio(T=224)).tokens.shape == (2, 1 + 10 * 14, 64)
    with pytest.raises(ValueError, match="frequency grid must stay 10"):
        a(torch.randn(1, 1, 20, 112))


def test_pooled_is_the_mean_of_patch_tokens_without_cls():
    out = video_encoder(CFG)(video())
    torch.testing.assert_close(pooled(out), out.tokens[:, 1:].mean(1))
    assert pooled(out).shape == (2, 64)
    assert not torch.allclose(pooled(out), out.tokens.mean(1))


def test_shared_blocks_share_parameters_and_gradients():
    v = video_encoder(CFG)
    a = audio_encoder(CFG, blocks=v.blocks)
    assert a.blocks is v.blocks
    assert a.blocks.blocks[0].attn.qkv.weight is v.blocks.blocks[0].attn.qkv.weight
    both = nn.ModuleList([v, a])
    assert count_params(both) == count_params(v) + count_params(a) - count_params(v.blocks)
    pooled(a(audio())).sum().backward()
    assert v.blocks.blocks[0].mlp.fc1.weight.grad is not None  # the audio loss trains the video encoder's blocks
    assert v.tokenizer.proj.weight.grad is None  # but not its tokenizer
    other = video_encoder(CFG)
    assert other.blocks is not v.blocks
    with pytest.raises(ValueError, match="shared blocks"):
        Encoder(VideoTokenizer(16, 32, (4, 8, 8), dim=64), 64, 3, 4, blocks=v.blocks)
    with pytest.raises(ValueError, match="tokenizer projects"):
        Encoder(VideoTokenizer(16, 32, (4, 8, 8), dim=32), 64, 2, 4)


def test_init_of_cls_and_position_embedding():
    torch.manual_seed(5)
    enc = video_encoder(ModelConfig(encoder=CFG.encoder, num_frames=32, frame_size=64, video_patch=(4, 8, 8)))
    assert enc.pos_embed.shape == (1, 1 + 8 * 8 * 8, 64)
    assert abs(enc.pos_embed.std().item() - 0.02) < 0.002 and enc.pos_embed.abs().max() < 0.1
    assert enc.cls_token.abs().sum() > 0 and enc.cls_token.std() < 0.05
    assert enc.norm.eps == 1e-5 and (enc.norm.weight == 1).all()


def test_count_params_trainable_only():
    enc = audio_encoder(CFG)
    total = count_params(enc)
    enc.cls_token.requires_grad_(False)
    assert count_params(enc, trainable_only=True) == total - 64
