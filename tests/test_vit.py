"""Our ViT block: attention paths agree, the qkv layout and parameter names match the released backbones."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.models.vit import Attention, Block, Mlp, Transformer


def explicit_attention(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output and the full [B, H, N, N] map, written out with matmuls and softmax."""
    B, N, D = x.shape
    q, k, v = attn.qkv(x).reshape(B, N, 3, attn.heads, D // attn.heads).permute(2, 0, 3, 1, 4)
    a = (q @ k.transpose(-2, -1) * attn.scale).softmax(dim=-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(B, N, D)), a


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_sdpa_output_and_cls_row_equal_explicit_attention(dtype, tol):
    torch.manual_seed(0)
    attn = Attention(32, 4).to(dtype)
    x = torch.randn(2, 9, 32, dtype=dtype)
    y_explicit, a = explicit_attention(attn, x)
    y, cls_row = attn(x, return_cls_attention=True)
    torch.testing.assert_close(attn(x), y_explicit, rtol=tol, atol=tol)
    torch.testing.assert_close(y, y_explicit, rtol=tol, atol=tol)
    assert cls_row.shape == (2, 4, 9)
    torch.testing.assert_close(cls_row, a[:, :, 0], rtol=tol, atol=tol)


def test_cpu_bf16_autocast_runs_sdpa_in_fp32(monkeypatch):
    """Under CPU bf16 autocast the linears run in bf16 but SDPA gets fp32 inputs (its bf16 CPU kernel is slow)."""
    torch.manual_seed(0)
    attn = Attention(32, 4)
    x = torch.randn(2, 9, 32, requires_grad=True)
    seen = []
    sdpa = F.scaled_dot_product_attention

    def recording_sdpa(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        out = sdpa(q, k, v, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
    assert seen == [(torch.float32,) * 3, torch.float32]
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    torch.testing.assert_close(y.float(), attn(x), rtol=0.05, atol=0.05)


def test_cls_attention_is_softmax_of_scaled_scores_per_head():
    """qkv rows are [q | k | v], each split into contiguous heads; scale is head_dim^-0.5; the row sums to 1."""
    torch.manual_seed(1)
    D, H = 24, 3
    hd = D // H
    attn = Attention(D, H).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    _, a = attn(x, return_cls_attention=True)
    W = attn.qkv.weight
    q, k = x @ W[:D].T, x @ W[D : 2 * D].T
    for h in range(H):
        qh, kh = q[..., h * hd : (h + 1) * hd], k[..., h * hd : (h + 1) * hd]
        expected = torch.softmax(qh[:, :1] @ kh.transpose(-2, -1) / math.sqrt(hd), dim=-1)  # [B, 1, N]: token 0
        torch.testing.assert_close(a[:, h], expected.squeeze(1))
    torch.testing.assert_close(a.sum(-1), torch.ones(2, H, dtype=torch.float64))
    assert (a >= 0).all()


def test_qkv_bias_switch():
    assert Attention(16, 2).qkv.bias is None
    assert Attention(16, 2, qkv_bias=True).qkv.bias.shape == (48,)
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)


def test_block_is_pre_ln_with_exact_gelu():
    torch.manual_seed(2)
    blk = Block(16, 2).double()
    assert blk.norm1.eps == 1e-5 and blk.norm2.eps == 1e-5
    assert blk.mlp.act.approximate == "none"
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    h = x + blk.attn(F.layer_norm(x, (16,), blk.norm1.weight, blk.norm1.bias, 1e-5))
    z = F.layer_norm(h, (16,), blk.norm2.weight, blk.norm2.bias, 1e-5)
    expected = h + blk.mlp.fc2(F.gelu(blk.mlp.fc1(z)))
    torch.testing.assert_close(blk(x), expected)
    y, a = blk(x, return_cls_attention=True)
    torch.testing.assert_close(y, expected)
    assert a.shape == (3, 2, 4)


def test_mlp_hidden_size():
    m = Mlp(8, 32)
    assert m.fc1.weight.shape == (32, 8) and m.fc2.weight.shape == (8, 32)


def test_transformer_parameter_names():
    names = {n: tuple(p.shape) for n, p in Transformer(16, 2, 4, mlp_ratio=2.0).named_parameters()}
    expected = {}
    for i in range(2):
        p = f"blocks.{i}."
        expected.update({
            p + "norm1.weight": (16,), p + "norm1.bias": (16,),
            p + "attn.qkv.weight": (48, 16),
            p + "attn.proj.weight": (16, 16), p + "attn.proj.bias": (16,),
            p + "norm2.weight": (16,), p + "norm2.bias": (16,),
            p + "mlp.fc1.weight": (32, 16), p + "mlp.fc1.bias": (32,),
            p + "mlp.fc2.weight": (16, 32), p + "mlp.fc2.bias": (16,),
        })  # fmt: skip
    assert names == expected


def test_transformer_init():
    torch.manual_seed(3)
    t = Transformer(64, 2, 4)
    for m in t.modules():
        if isinstance(m, nn.Linear):
            fan_out, fan_in = m.weight.shape
            bound = math.sqrt(6 / (fan_in + fan_out))  # xavier_uniform
            assert m.weight.abs().max() <= bound
            assert m.weight.abs().max() > 0.9 * bound
            if m.bias is not None:
                assert (m.bias == 0).all()
        elif isinstance(m, nn.LayerNorm):
            assert (m.weight == 1).all() and (m.bias == 0).all()


def test_transformer_forward_backward_and_last_attention():
    torch.manual_seed(4)
    t = Transformer(32, 3, 4)
    x = torch.randn(2, 7, 32)
    y = t(x)
    y2, a = t(x, return_last_cls_attention=True)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
    assert y.shape == (2, 7, 32) and a.shape == (2, 4, 7)
    # the row belongs to the last block: recompute it from the output of the first two blocks
    h = t.blocks[1](t.blocks[0](x))
    _, a_last = explicit_attention(t.blocks[2].attn, t.blocks[2].norm1(h))
    torch.testing.assert_close(a, a_last[:, :, 0])
    (y2.square().mean() + a.square().mean()).backward()
    for name, p in t.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(y).all()


def test_transformer_rejects_zero_depth():
    with pytest.raises(ValueError, match="depth"):
        Transformer(16, 0, 2)
