import math

import pytest
import torch

from xkd.losses.reconstruction import reconstruction_loss


def reference_loss(pred, target, mask, norm_pix=True, eps=1e-6):
    """Explicit loops in float64: normalise each masked target patch, MSE over P, mean over masked tokens."""
    total, count = 0.0, 0
    B, N, P = pred.shape
    for b in range(B):
        for n in range(N):
            if mask[b, n] == 0:
                continue
            t = [float(v) for v in target[b, n]]
            if norm_pix:
                mu = sum(t) / P
                var = sum((v - mu) ** 2 for v in t) / (P - 1)
                t = [(v - mu) / math.sqrt(var + eps) for v in t]
            total += sum((float(p) - v) ** 2 for p, v in zip(pred[b, n], t)) / P
            count += 1
    return total / count


def make_inputs(seed=0, B=2, N=5, P=6):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(B, N, P, generator=g, dtype=torch.float64)
    target = 3.0 * torch.randn(B, N, P, generator=g, dtype=torch.float64) + 1.5
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 1, 0, 1]], dtype=torch.float64)
    return pred, target, mask


@pytest.mark.parametrize("norm_pix", [True, False])
def test_matches_float64_reference(norm_pix):
    pred, target, mask = make_inputs()
    loss = reconstruction_loss(pred, target, mask, norm_pix=norm_pix)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference_loss(pred, target, mask, norm_pix), rel=1e-12)


def test_bool_mask_and_float32_inputs():
    pred, target, mask = make_inputs(seed=1)
    loss = reconstruction_loss(pred.float(), target.float(), mask.bool())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_loss(pred.float(), target.float(), mask), rel=1e-5)


def test_kept_tokens_do_not_matter():
    pred, target, mask = make_inputs(seed=2)
    base = reconstruction_loss(pred, target, mask)
    changed = pred.clone()
    changed[mask == 0] += 100.0
    assert torch.equal(reconstruction_loss(changed, target, mask), base)
    changed_target = target.clone()
    changed_target[mask == 0] *= -7.0
    assert torch.equal(reconstruction_loss(pred, changed_target, mask), base)
    changed[mask == 1] += 1.0  # a removed token does matter
    assert reconstruction_loss(changed, target, mask) != base


def test_gradient_only_reaches_masked_tokens():
    pred, target, mask = make_inputs(seed=3)
    pred.requires_grad_(True)
    reconstruction_loss(pred, target, mask).backward()
    assert torch.all(pred.grad[mask == 0] == 0)
    assert torch.all(pred.grad[mask == 1].abs().sum(-1) > 0)


def test_variance_is_unbiased():
    # target patch [0, 2]: mean 1, unbiased variance 2 (biased would be 1); pred 0 -> loss = 1 / (2 + eps)
    pred = torch.zeros(1, 1, 2)
    target = torch.tensor([[[0.0, 2.0]]])
    loss = reconstruction_loss(pred, target, torch.ones(1, 1), eps=1e-6)
    assert loss.item() == pytest.approx(1.0 / (2.0 + 1e-6), rel=1e-6)


def test_fp32_under_bf16_autocast():
    pred, target, mask = make_inputs(seed=4)
    pred_bf16, target_bf16 = pred.bfloat16(), target.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = reconstruction_loss(pred_bf16, target_bf16, mask)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_loss(pred_bf16.double(), target_bf16.double(), mask), rel=1e-5)


def test_nothing_masked_gives_zero():
    pred, target, _ = make_inputs(seed=5)
    assert reconstruction_loss(pred, target, torch.zeros(2, 5)).item() == 0.0


def test_shape_mismatch_raises():
    pred, target, mask = make_inputs()
    with pytest.raises(ValueError):
        reconstruction_loss(pred, target[:, :4], mask)
    with pytest.raises(ValueError):
        reconstruction_loss(pred, target, mask[:, :4])
