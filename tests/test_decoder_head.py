"""The reconstruction decoder (un-shuffle, CLS drop, no final LN) and the DINO head (unit weight norm, output LN)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.config import ModelConfig
from xkd.models.decoder import Decoder, decoder_for
from xkd.models.encoder import audio_encoder, tiny_model_config, video_encoder
from xkd.models.head import DINOHead, dino_head
from xkd.models.masking import random_masking

CFG = tiny_model_config()


def small_decoder(N=12, patch_dim=20):
    torch.manual_seed(0)
    return Decoder(num_patches=N, patch_dim=patch_dim, enc_dim=16, dim=8, depth=2, heads=2)


# ----------------------------------------------------------------------- decoder


def test_decoder_layout():
    d = small_decoder()
    assert d.embed.weight.shape == (8, 16) and d.pred.weight.shape == (20, 8)
    assert d.mask_token.shape == (1, 1, 8) and d.pos_embed.shape == (1, 13, 8)
    assert not any(isinstance(m, nn.LayerNorm) for n, m in d.named_modules() if not n.startswith("blocks"))
    assert d.blocks.blocks[0].attn.qkv.bias is None


def test_unshuffle_puts_kept_tokens_back_and_fills_mask_tokens():
    d = small_decoder()
    x = torch.randn(3, 12, 8)
    kept, mask, ids_restore = random_masking(x, 0.5)
    cls = torch.randn(3, 1, 8)
    full = d.unshuffle(torch.cat([cls, kept], 1), ids_restore)
    assert full.shape == (3, 13, 8)
    torch.testing.assert_close(full[:, :1], cls)
    keep = mask == 0
    torch.testing.assert_close(full[:, 1:][keep], x[keep])
    torch.testing.assert_close(full[:, 1:][~keep], d.mask_token[0, 0].expand(int((~keep).sum()), 8))


def test_decoder_output_is_in_token_order_and_drops_cls():
    d = small_decoder().double()
    B, N = 2, 12
    tokens = torch.randn(B, 1 + N, 16, dtype=torch.float64)
    identity = torch.arange(N).expand(B, N)
    out = d(tokens, identity)
    assert out.shape == (B, N, 20)
    # shuffling the (unmasked) inputs and passing the matching ids_restore gives the same prediction
    perm = torch.stack([torch.randperm(N) for _ in range(B)])
    shuffled = torch.cat([tokens[:, :1], torch.gather(tokens[:, 1:], 1, perm[:, :, None].expand(-1, -1, 16))], 1)
    torch.testing.assert_close(d(shuffled, torch.argsort(perm, 1)), out)
    # the output holds the N patch rows only: the CLS row is dropped, yet CLS still informs the patches
    manual = d.pred(d.blocks(d.unshuffle(d.embed(tokens), identity) + d.pos_embed))
    torch.testing.assert_close(out, manual[:, 1:])
    other_cls = tokens.clone()
    other_cls[:, 0] += 1.0
    assert not torch.allclose(d(other_cls, identity), out)


def test_decoder_rejects_wrong_token_counts():
    d = small_decoder()
    with pytest.raises(ValueError, match="built for 12"):
        d(torch.randn(1, 5, 16), torch.arange(10)[None])
    with pytest.raises(ValueError, match="kept tokens"):
        d(torch.randn(1, 14, 16), torch.arange(12)[None])


@pytest.mark.parametrize("mode", ["video", "audio"])
def test_encoder_decoder_forward_backward(mode):
    torch.manual_seed(1)
    enc = (video_encoder if mode == "video" else audio_encoder)(CFG)
    dec = decoder_for(enc, CFG)
    x = torch.randn(2, 3, 16, 32, 32) if mode == "video" else torch.randn(2, 1, 40, 112)
    out = enc(x, mask_ratio=0.75)
    pred = dec(out.tokens, out.ids_restore)
    assert pred.shape == (2, enc.tokenizer.num_patches, enc.tokenizer.patch_dim)
    assert torch.isfinite(pred).all()
    ((pred - enc.tokenizer.patchify(x)).square().mean(-1) * out.mask).sum().backward()
    for name, p in list(dec.named_parameters()) + list(enc.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_paper_decoder_sizes():
    dec = Decoder(num_patches=392, patch_dim=3072)
    assert dec.embed.weight.shape == (384, 768) and dec.pred.weight.shape == (3072, 384)
    assert dec.pos_embed.shape == (1, 393, 384) and len(dec.blocks.blocks) == 4 and dec.blocks.heads == 12


# ----------------------------------------------------------------------- head


def test_head_output_is_layer_normalised():
    torch.manual_seed(2)
    head = dino_head(CFG)
    z = head(torch.randn(5, 64) * 10)
    assert z.shape == (5, 256)
    torch.testing.assert_close(z.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)
    assert not head.last_norm.elementwise_affine


def test_head_structure_and_paper_sizes():
    head = DINOHead()
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.GELU, nn.Linear, nn.LayerNorm, nn.GELU, nn.Linear]
    assert [head.mlp[i].weight.shape for i in (0, 3, 6)] == [(2048, 768), (2048, 2048), (256, 2048)]
    assert head.last_layer.weight.shape == (8192, 256)
    assert head.last_norm.normalized_shape == (8192,)
    assert head.mlp[2].approximate == "none"


def test_head_forward_is_the_documented_composition():
    torch.manual_seed(3)
    head = DINOHead(16, 32, 8, 40).double()
    x = torch.randn(4, 16, dtype=torch.float64)
    b = F.normalize(head.mlp(x), dim=-1)
    w = head.last_layer.weight
    expected = F.layer_norm(b @ (w / w.norm(dim=1, keepdim=True)).T, (40,))
    torch.testing.assert_close(head(x), expected)


def test_head_weight_norm_magnitude_stays_one_under_training():
    torch.manual_seed(4)
    head = DINOHead(16, 32, 8, 40)
    opt = torch.optim.AdamW(head.parameters(), lr=0.1, weight_decay=0.3)
    before = head.last_layer.weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        head(torch.randn(6, 16)).logsumexp(-1).mean().backward()
        opt.step()
    assert not torch.allclose(head.last_layer.weight, before)  # the direction did train
    assert not torch.allclose(head.last_layer.weight.norm(dim=1), before.norm(dim=1))  # and its raw norm moved
    torch.testing.assert_close(head.last_layer.normalized_weight().norm(dim=1), torch.ones(40))
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_head_state_dict_round_trip():
    torch.manual_seed(5)
    a, b = DINOHead(16, 32, 8, 40), DINOHead(16, 32, 8, 40)
    x = torch.randn(3, 16)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert set(a.state_dict()) == {
        "mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias", "mlp.3.weight", "mlp.3.bias",
        "mlp.4.weight", "mlp.4.bias", "mlp.6.weight", "mlp.6.bias", "last_layer.weight",
    }  # fmt: skip


def test_head_init():
    torch.manual_seed(6)
    head = DINOHead(256, 512, 64, 128)
    for i in (0, 3, 6):
        w = head.mlp[i].weight
        assert abs(w.std().item() - 0.02) < 0.002 and (head.mlp[i].bias == 0).all()


def test_config_factories_agree_with_the_config():
    cfg = ModelConfig()
    assert dino_head(cfg).last_layer.weight.shape == (cfg.head_out, cfg.head_bottleneck)
    tiny = decoder_for(audio_encoder(CFG), CFG)
    assert tiny.num_patches == 70 and tiny.pred.weight.shape == (64, CFG.decoder_dim)
    assert len(tiny.blocks.blocks) == CFG.decoder_depth and tiny.embed.weight.shape == (CFG.decoder_dim, 64)
