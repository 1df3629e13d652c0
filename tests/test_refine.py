import math

import pytest
import torch

from xkd.models.refine import cross_modal_weights, refine_pool


def attention_rows(B, H, n, seed):
    """CLS->patch rows of a real softmax attention map: [B, H, n] (the CLS column is dropped, so rows sum < 1)."""
    g = torch.Generator().manual_seed(seed)
    attn = torch.softmax(2.0 * torch.randn(B, H, n + 1, n + 1, generator=g, dtype=torch.float64), dim=-1)
    return attn[:, :, 0, 1:]


def outer_product_weights(attn_self, attn_other, mode):
    """The released code's way, with explicit loops: per head build the N x M outer product, average over
    the other modality's tokens, normalise ('mean': divide by this modality's mean attention; 'softmax':
    softmax over tokens), then average the heads."""
    B, H, N = attn_self.shape
    out = torch.zeros(B, N, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            outer = torch.outer(attn_self[b, h], attn_other[b, h])  # [N, M]
            per_token = outer.mean(dim=1)  # [N]
            if mode == "mean":
                per_token = per_token / attn_self[b, h].mean()
            else:
                exp = [math.exp(v) for v in per_token.tolist()]
                per_token = torch.tensor([e / sum(exp) for e in exp], dtype=torch.float64)
            out[b] += per_token / H
    return out


def reference_pool(tokens, weights):
    """s * mean_i(w_i f_i), s = ‖mean_i f_i‖ / ‖mean_i(w_i f_i)‖, with explicit loops over samples and tokens."""
    pooled = []
    for f, w in zip(tokens, weights):
        plain = sum(f[i] for i in range(len(f))) / len(f)
        weighted = sum(w[i] * f[i] for i in range(len(f))) / len(f)
        pooled.append(weighted * (plain.norm() / weighted.norm()))
    return torch.stack(pooled)


@pytest.mark.parametrize("mode", ["mean", "softmax"])
def test_weights_equal_the_outer_product_computation(mode):
    video, audio = attention_rows(2, 3, 6, seed=0), attention_rows(2, 3, 9, seed=1)
    for attn_self, attn_other in ((video, audio), (audio, video)):
        weights = cross_modal_weights(attn_self, attn_other, mode=mode)
        assert weights.shape == (attn_self.shape[0], attn_self.shape[2])
        torch.testing.assert_close(weights, outer_product_weights(attn_self, attn_other, mode), rtol=1e-12, atol=0)


def test_mean_mode_closed_form_and_softmax_mode_sums_to_one():
    video, audio = attention_rows(2, 4, 5, seed=2), attention_rows(2, 4, 7, seed=3)
    ratio = audio.mean(-1, keepdim=True) / video.mean(-1, keepdim=True)
    torch.testing.assert_close(cross_modal_weights(video, audio, "mean"), (video * ratio).mean(1))
    torch.testing.assert_close(cross_modal_weights(video, audio, "softmax").sum(-1), torch.ones(2, dtype=torch.float64))


def test_weights_in_fp32_for_low_precision_attention():
    video, audio = attention_rows(1, 2, 4, seed=4).bfloat16(), attention_rows(1, 2, 3, seed=5).bfloat16()
    assert cross_modal_weights(video, audio).dtype == torch.float32


def test_unknown_mode_and_bad_shapes_raise():
    video, audio = attention_rows(2, 3, 4, seed=6), attention_rows(2, 3, 5, seed=7)
    with pytest.raises(ValueError):
        cross_modal_weights(video, audio, mode="max")
    with pytest.raises(ValueError):
        cross_modal_weights(video, audio[:, :2])
    with pytest.raises(ValueError):
        refine_pool(torch.randn(2, 4, 3), torch.rand(2, 5))


def test_pool_matches_reference_and_keeps_the_mean_pool_norm():
    g = torch.Generator().manual_seed(8)
    tokens = torch.randn(3, 6, 5, generator=g, dtype=torch.float64) + 0.5
    weights = cross_modal_weights(attention_rows(3, 2, 6, seed=9), attention_rows(3, 2, 4, seed=10))
    pooled = refine_pool(tokens, weights)
    torch.testing.assert_close(pooled, reference_pool(tokens, weights), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pooled.norm(dim=-1), tokens.mean(dim=1).norm(dim=-1), rtol=1e-12, atol=0)
    assert not torch.allclose(pooled, tokens.mean(dim=1))  # non-uniform weights change the direction


def test_pool_is_invariant_to_a_global_rescale_of_weights_and_uniform_weights_give_mean_pooling():
    g = torch.Generator().manual_seed(11)
    tokens = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    weights = torch.rand(2, 5, generator=g, dtype=torch.float64) + 0.1
    rescaled = refine_pool(tokens, 37.0 * weights)
    torch.testing.assert_close(rescaled, refine_pool(tokens, weights), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(refine_pool(tokens, torch.full((2, 5), 0.2, dtype=torch.float64)), tokens.mean(dim=1))


def test_pool_is_finite_for_zero_weights():
    pooled = refine_pool(torch.randn(1, 3, 4), torch.zeros(1, 3))
    assert torch.isfinite(pooled).all()
