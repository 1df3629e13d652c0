import math

import pytest
import torch
import torch.nn.functional as F

from xkd.losses.mmd import DEFAULT_GAMMAS, mmd_loss


def reference_kernel_mean(a, b, gammas):
    """mean_{i,j} Σ_γ exp(-γ ‖a_i - b_j‖²) with explicit loops in float64."""
    total = 0.0
    for a_row in a.tolist():
        for b_row in b.tolist():
            d2 = sum((u - v) ** 2 for u, v in zip(a_row, b_row))
            total += sum(math.exp(-g * d2) for g in gammas)
    return total / (len(a) * len(b))


def reference_mmd(x, y, gammas=DEFAULT_GAMMAS):
    return reference_kernel_mean(x, x, gammas) + reference_kernel_mean(y, y, gammas) - 2 * reference_kernel_mean(
        x, y, gammas)


def test_default_gammas_are_the_papers():
    assert DEFAULT_GAMMAS == (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)


def test_matches_float64_reference_with_different_set_sizes():
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    y = 0.3 * torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.2
    loss, stats = mmd_loss(x, y, return_stats=True)
    assert loss.item() == pytest.approx(reference_mmd(x, y), rel=1e-10)
    assert stats["kxx"].item() == pytest.approx(reference_kernel_mean(x, x, DEFAULT_GAMMAS), rel=1e-10)
    assert stats["kyy"].item() == pytest.approx(reference_kernel_mean(y, y, DEFAULT_GAMMAS), rel=1e-10)
    assert stats["kxy"].item() == pytest.approx(reference_kernel_mean(x, y, DEFAULT_GAMMAS), rel=1e-10)
    d2 = sum(((a - b) ** 2).sum().item() for a in x for b in y) / (4 * 6)
    assert stats["d2_xy"].item() == pytest.approx(d2, rel=1e-10)


def test_custom_gammas():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(2, 2, generator=g, dtype=torch.float64)
    assert mmd_loss(x, y, gammas=(0.5,)).item() == pytest.approx(reference_mmd(x, y, (0.5,)), rel=1e-10)


def test_identical_sets_give_zero_and_different_sets_positive():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 8, generator=g)
    assert mmd_loss(x, x.clone()).item() == 0.0
    assert mmd_loss(x, x + 0.05).item() > 0
    assert mmd_loss(x, torch.randn(5, 8, generator=g)).item() > 0


def test_fp32_is_exact_on_large_norm_head_outputs():
    # LayerNorm-ed 8192-d vectors (‖x‖² ≈ 8192): the kernel diagonal must stay exactly Σ_γ exp(0) = 7.
    g = torch.Generator().manual_seed(3)
    x = F.layer_norm(torch.randn(3, 8192, generator=g), (8192,))
    y = F.layer_norm(x + 0.01 * torch.randn(3, 8192, generator=g), (8192,))
    loss, stats = mmd_loss(x, y, return_stats=True)
    assert loss.dtype == torch.float32
    assert stats["kxx"].item() == pytest.approx(reference_kernel_mean(x.double(), x.double(), DEFAULT_GAMMAS), rel=1e-5)
    assert loss.item() == pytest.approx(reference_mmd(x.double(), y.double()), rel=1e-4)


def test_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(4, 6, generator=g).bfloat16(), torch.randn(3, 6, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mmd_loss(x, y)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_mmd(x.double(), y.double()), rel=1e-5)


def test_gradient_finite_at_zero_distance_and_gradcheck():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mmd_loss(x, x.detach()).backward()  # every diagonal distance is 0
    assert torch.isfinite(x.grad).all()
    assert torch.autograd.gradcheck(lambda a, b: mmd_loss(a, b, gammas=(0.1, 1.0)), (x, y))


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        mmd_loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError):
        mmd_loss(torch.randn(3, 4, 1), torch.randn(3, 4, 1))
