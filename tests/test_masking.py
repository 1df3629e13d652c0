"""MAE random masking (spec §A4): kept count, mask semantics, restore indices, determinism."""

import pytest
import torch

from xkd.models.masking import random_masking


@pytest.mark.parametrize("n, ratio, kept", [(392, 0.85, 59), (560, 0.80, 112), (64, 0.75, 16), (10, 0.0, 10)])
def test_kept_count_is_rounded(n, ratio, kept):
    x_kept, mask, ids_restore = random_masking(torch.randn(3, n, 2), ratio)
    assert x_kept.shape == (3, kept, 2)
    assert mask.shape == (3, n) and ids_restore.shape == (3, n)
    assert (mask.sum(1) == n - kept).all()


def test_kept_tokens_mask_and_restore_agree():
    torch.manual_seed(0)
    B, N, D = 4, 50, 3
    # token j of sample b carries the value j in every channel, so kept tokens reveal their original index
    x = torch.arange(N, dtype=torch.float32).view(1, N, 1).expand(B, N, D) + 100 * torch.arange(B).view(B, 1, 1)
    x_kept, mask, ids_restore = random_masking(x, 0.7)
    K = x_kept.shape[1]
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) == {0.0, 1.0}
    for b in range(B):
        kept_idx = (x_kept[b, :, 0] - 100 * b).long()
        assert len(set(kept_idx.tolist())) == K  # no token kept twice
        assert (x_kept[b] == x[b, kept_idx]).all()
        expected = torch.ones(N)
        expected[kept_idx] = 0
        assert torch.equal(mask[b], expected)  # mask marks exactly the removed tokens
        # ids_restore inverts the shuffle: kept tokens first (in kept order), then removed tokens
        ids_shuffle = torch.argsort(ids_restore[b])
        assert torch.equal(ids_shuffle[:K], kept_idx)
        assert torch.equal(ids_shuffle[K:].sort().values, torch.nonzero(mask[b]).flatten())
        assert torch.equal(ids_shuffle[ids_restore[b]], torch.arange(N))


def test_restore_puts_tokens_back_in_order():
    torch.manual_seed(1)
    x = torch.randn(2, 20, 4)
    x_kept, mask, ids_restore = random_masking(x, 0.6)
    K = x_kept.shape[1]
    # append the removed tokens in shuffle order, then un-shuffle with ids_restore: the original sequence returns
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    removed = torch.gather(x, 1, ids_shuffle[:, K:, None].expand(-1, -1, 4))
    restored = torch.gather(torch.cat([x_kept, removed], 1), 1, ids_restore[:, :, None].expand(-1, -1, 4))
    torch.testing.assert_close(restored, x, rtol=0, atol=0)


def test_masks_differ_per_sample_and_generator_is_deterministic():
    x = torch.randn(8, 100, 2)
    _, m1, _ = random_masking(x, 0.5, generator=torch.Generator().manual_seed(7))
    _, m2, _ = random_masking(x, 0.5, generator=torch.Generator().manual_seed(7))
    _, m3, _ = random_masking(x, 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert len({tuple(row.tolist()) for row in m1}) == 8


def test_gradient_flows_to_kept_tokens_only():
    x = torch.randn(2, 12, 3, requires_grad=True)
    x_kept, mask, _ = random_masking(x, 0.5)
    x_kept.sum().backward()
    torch.testing.assert_close(x.grad, (1 - mask)[:, :, None].expand(-1, -1, 3))


@pytest.mark.parametrize("ratio", [1.0, -0.1, 0.99])
def test_rejects_ratios_that_keep_nothing(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.randn(1, 10, 2), ratio)


def test_given_noise_decides_the_mask():
    x = torch.randn(3, 10, 4)
    noise = torch.rand(3, 10)
    kept, mask, ids_restore = random_masking(x, 0.6, noise=noise)
    expected_keep = torch.argsort(noise, dim=1)[:, :4]
    torch.testing.assert_close(kept, torch.gather(x, 1, expected_keep.unsqueeze(-1).expand(-1, -1, 4)))
    # the same noise split in two halves gives the same masks as the whole batch
    _, mask_a, _ = random_masking(x[:2], 0.6, noise=noise[:2])
    _, mask_b, _ = random_masking(x[2:], 0.6, noise=noise[2:])
    torch.testing.assert_close(torch.cat([mask_a, mask_b]), mask)
    with pytest.raises(ValueError):
        random_masking(x, 0.6, noise=torch.rand(3, 9))
