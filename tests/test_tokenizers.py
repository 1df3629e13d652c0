"""Tokenisers (flattening order of spec §A14) and position-embedding resampling (spec §A3)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.models.pos_embed import resample_audio_pos_embed, resample_video_pos_embed
from xkd.models.tokenizers import AudioTokenizer, VideoTokenizer


def video_tok(**kw):
    return VideoTokenizer(frames=8, size=(16, 24), patch=(2, 4, 8), in_chans=3, dim=12, **kw)


def test_video_shapes_and_grid():
    tok = video_tok()
    assert tok.grid == (4, 4, 3) and tok.num_patches == 48 and tok.patch_dim == 2 * 4 * 8 * 3
    assert isinstance(tok.proj, nn.Linear) and tok.proj.weight.shape == (12, 192)
    x = torch.randn(2, 3, 8, 16, 24)
    assert tok.patchify(x).shape == (2, 48, 192)
    assert tok(x).shape == (2, 48, 12)
    # another input size: the grid follows the input
    small = torch.randn(2, 3, 4, 8, 8)
    assert tok.grid_for(small) == (2, 2, 1) and tok(small).shape == (2, 4, 12)


@pytest.mark.parametrize("c, t, h, w", [(0, 0, 0, 0), (2, 5, 13, 22), (1, 3, 6, 9), (0, 7, 15, 23)])
def test_video_single_pixel_lands_where_the_order_predicts(c, t, h, w):
    """Tokens (t h w) time-major; vector (pt ph pw c), channel fastest."""
    tok = video_tok()
    pt, ph, pw = tok.patch
    T, H, W = tok.grid
    x = torch.zeros(1, 3, 8, 16, 24)
    x[0, c, t, h, w] = 1.0
    p = tok.patchify(x)
    token = (t // pt) * H * W + (h // ph) * W + (w // pw)
    vec = ((t % pt) * ph * pw + (h % ph) * pw + (w % pw)) * 3 + c
    assert p[0, token, vec] == 1.0 and p.abs().sum() == 1.0


def test_video_round_trip():
    tok = video_tok()
    x = torch.randn(2, 3, 8, 16, 24)
    torch.testing.assert_close(tok.unpatchify(tok.patchify(x)), x, rtol=0, atol=0)
    small = torch.randn(1, 3, 4, 8, 16)
    torch.testing.assert_close(tok.unpatchify(tok.patchify(small), tok.grid_for(small)), small, rtol=0, atol=0)


def test_video_rejects_bad_inputs():
    tok = video_tok()
    with pytest.raises(ValueError, match="not divisible"):
        tok(torch.randn(1, 3, 8, 16, 20))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        tok(torch.randn(1, 1, 8, 16, 24))
    with pytest.raises(ValueError, match="expected"):
        tok.unpatchify(torch.randn(1, 47, 192))
    with pytest.raises(ValueError, match="not divisible"):
        VideoTokenizer(frames=6, size=16, patch=(4, 16, 16), dim=8)


def test_video_size_int_is_square():
    assert VideoTokenizer(frames=32, size=112, patch=(4, 16, 16), dim=8).grid == (8, 7, 7)


def audio_tok():
    return AudioTokenizer(spec_size=(16, 64), patch=(4, 16), dim=12)


def test_audio_shapes_and_grid():
    tok = audio_tok()
    assert tok.grid == (4, 4) and tok.num_patches == 16 and tok.patch_dim == 64
    assert isinstance(tok.proj, nn.Linear) and tok.proj.weight.shape == (12, 64)
    assert tok(torch.randn(2, 1, 16, 64)).shape == (2, 16, 12)
    local = torch.randn(2, 1, 16, 32)
    assert tok.grid_for(local) == (4, 2) and tok(local).shape == (2, 8, 12)
    assert AudioTokenizer(dim=8).grid == (20, 28)  # the paper's 80x448 -> 560 tokens


@pytest.mark.parametrize("f, t", [(0, 0), (15, 63), (5, 17), (9, 40)])
def test_audio_single_bin_lands_where_the_order_predicts(f, t):
    """Tokens (f t) frequency-major; vector (pf pt c)."""
    tok = audio_tok()
    pf, pt = tok.patch
    x = torch.zeros(1, 1, 16, 64)
    x[0, 0, f, t] = 1.0
    p = tok.patchify(x)
    token = (f // pf) * tok.grid[1] + (t // pt)
    vec = (f % pf) * pt + (t % pt)
    assert p[0, token, vec] == 1.0 and p.abs().sum() == 1.0


def test_audio_round_trip_and_errors():
    tok = audio_tok()
    x = torch.randn(3, 1, 16, 96)
    torch.testing.assert_close(tok.unpatchify(tok.patchify(x), tok.grid_for(x)), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not divisible"):
        tok(torch.randn(1, 1, 16, 40))
    with pytest.raises(ValueError, match=r"\[B, 1, F, T\]"):
        tok(torch.randn(1, 16, 64))


def test_proj_init_is_xavier_with_zero_bias():
    tok = VideoTokenizer(frames=4, size=16, patch=(4, 16, 16), dim=768)
    bound = (6 / (768 + 3072)) ** 0.5
    assert tok.proj.weight.abs().max() <= bound and tok.proj.weight.abs().max() > 0.9 * bound
    assert (tok.proj.bias == 0).all()


# ---------------------------------------------------------------- position-embedding resampling


def test_video_pos_embed_identity_and_local_grid():
    pe = torch.randn(1, 1 + 8 * 7 * 7, 6)
    assert resample_video_pos_embed(pe, (8, 7, 7), (8, 7, 7)) is pe
    local = resample_video_pos_embed(pe, (8, 7, 7), (2, 6, 6))  # 8x96x96 local view
    assert local.shape == (1, 1 + 72, 6)
    torch.testing.assert_close(local[:, 0], pe[:, 0], rtol=0, atol=0)
    up = resample_video_pos_embed(pe, (8, 7, 7), (8, 14, 14))  # a larger eval size
    assert up.shape == (1, 1 + 8 * 14 * 14, 6)


def test_video_pos_embed_follows_the_released_scale_factor_convention():
    """Values linear in t are sampled at (i + 0.5) * old / (new + 0.1) - 0.5 (scale_factor-driven, as released)."""
    T, H, W = 8, 7, 7
    t = torch.arange(T, dtype=torch.float64).view(T, 1, 1).expand(T, H, W)
    pe = torch.cat([torch.full((1, 1, 1), -3.0, dtype=torch.float64), t.reshape(1, -1, 1)], dim=1)
    out = resample_video_pos_embed(pe, (T, H, W), (2, 6, 6))[0, 1:, 0].view(2, 6, 6)
    expected = torch.tensor([(i + 0.5) * T / 2.1 - 0.5 for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(out, expected.view(2, 1, 1).expand(2, 6, 6))


def test_video_pos_embed_row_order_is_t_h_w():
    """A marker on patch row (t, h, w) stays at the same place when the grid only grows along W."""
    pe = torch.zeros(1, 1 + 2 * 3 * 4, 1)
    pe[0, 1 + (1 * 3 + 2) * 4 + 0, 0] = 1.0  # (t=1, h=2, w=0)
    out = resample_video_pos_embed(pe, (2, 3, 4), (2, 3, 8))[0, 1:, 0].view(2, 3, 8)
    assert out[1, 2].abs().sum() > 0.5
    assert out[0].abs().sum() == 0 and out[1, :2].abs().sum() == 0


def test_audio_pos_embed_time_only():
    pe = torch.randn(1, 1 + 20 * 28, 6)
    assert resample_audio_pos_embed(pe, (20, 28), (20, 28)) is pe
    local = resample_audio_pos_embed(pe, (20, 28), (20, 7))  # 80x112 local view
    assert local.shape == (1, 1 + 140, 6)
    torch.testing.assert_close(local[:, 0], pe[:, 0], rtol=0, atol=0)
    # rows that only vary with frequency are untouched along frequency
    f_only = torch.arange(20.0).view(20, 1, 1).expand(20, 28, 6).reshape(1, -1, 6)
    pe_f = torch.cat([pe[:, :1], f_only], dim=1)
    out = resample_audio_pos_embed(pe_f, (20, 28), (20, 7))[0, 1:].view(20, 7, 6)
    torch.testing.assert_close(out, torch.arange(20.0).view(20, 1, 1).expand(20, 7, 6))


def test_audio_pos_embed_matches_bicubic_with_released_scale():
    pe = torch.randn(1, 1 + 5 * 12, 3, dtype=torch.float64)
    out = resample_audio_pos_embed(pe, (5, 12), (5, 4))
    grid = pe[:, 1:].reshape(1, 5, 12, 3).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(1, 4.1 / 12), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, -1, 3))


def test_pos_embed_errors():
    with pytest.raises(ValueError, match="frequency grid must stay 20"):
        resample_audio_pos_embed(torch.randn(1, 1 + 560, 4), (20, 28), (10, 28))
    with pytest.raises(ValueError, match="needs 1 \\+ 392"):
        resample_video_pos_embed(torch.randn(1, 392, 4), (8, 7, 7), (2, 6, 6))
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        resample_video_pos_embed(torch.randn(1, 1 + 392, 4), (8, 49), (2, 36))
