"""CCL objectives: NCE against a float64 reference, one-class batches, symmetric KL."""

import math

import pytest
import torch

from xkd.ccl.losses import log1mexp, multi_positive_nce, pair_nce, symmetric_kl


def nce_reference(f1, f2, labels, tau):
    """The spec's formula, written out with Python loops in float64."""
    f1 = [row / row.norm() for row in f1.double()]
    f2 = [row / row.norm() for row in f2.double()]
    total = 0.0
    n = len(f1)
    for i in range(n):
        s = [float(f1[i] @ f2[j]) / tau for j in range(n)]
        z = sum(math.exp(v) for v in s)
        p = [math.exp(v) / z for v in s]
        pos = [-math.log(p[j]) for j in range(n) if labels[j] == labels[i]]
        neg = [-math.log(1.0 - p[j]) for j in range(n) if labels[j] != labels[i]]
        total += sum(pos) / len(pos) + (sum(neg) / len(neg) if neg else 0.0)
    return total / n


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nce_equals_float64_reference(tau):
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(12, 7, generator=g), torch.randn(12, 7, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 4, 2])
    ref = nce_reference(f1, f2, labels, tau)
    assert multi_positive_nce(f1.double(), f2.double(), labels, tau).item() == pytest.approx(ref, rel=1e-12)
    assert multi_positive_nce(f1, f2, labels, tau).item() == pytest.approx(ref, rel=1e-5)


def test_nce_is_not_symmetric_and_pair_loss_sums_both_directions():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    ab, ba = multi_positive_nce(a, b, y, 0.5), multi_positive_nce(b, a, y, 0.5)
    assert not torch.isclose(ab, ba)
    assert torch.allclose(pair_nce(a, b, y, 0.5), ab + ba)


@pytest.mark.parametrize("batch", [1, 5])
def test_one_class_batch_is_finite_and_keeps_the_positive_term(batch):
    g = torch.Generator().manual_seed(2)
    f1 = torch.randn(batch, 4, generator=g, requires_grad=True)
    f2 = torch.randn(batch, 4, generator=g, requires_grad=True)
    labels = torch.zeros(batch, dtype=torch.long)
    loss = multi_positive_nce(f1, f2, labels, 0.1)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(f1.grad).all() and torch.isfinite(f2.grad).all()
    # every j is a positive, so l_i = mean_j -log P_ij (for B = 1, P_11 = 1 and the loss is 0)
    assert loss.item() == pytest.approx(nce_reference(f1.detach(), f2.detach(), labels, 0.1), abs=1e-6)


def test_extreme_similarities_stay_finite():
    # row 0 matches its negative perfectly and everything else is opposite: P rounds to 1 in float32
    f1 = torch.tensor([[1.0, 0.0]] * 4, requires_grad=True)
    f2 = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 0, 0])
    loss = multi_positive_nce(f1, f2, labels, 0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f1.grad).all() and torch.isfinite(f2.grad).all()


def test_log1mexp_matches_direct_formula():
    x = torch.tensor([-1e-6, -0.1, -0.69, -0.7, -5.0, -50.0], dtype=torch.float64)
    assert torch.allclose(log1mexp(x), torch.log(1 - torch.exp(x)), rtol=1e-9)


def test_symmetric_kl_matches_half_sum_of_kls_and_reaches_both_sides():
    g = torch.Generator().manual_seed(3)
    lp = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    lq = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    p, q = lp.softmax(1), lq.softmax(1)
    ref = 0.5 * ((p * (p / q).log()).sum(1) + (q * (q / p).log()).sum(1)).mean()
    out = symmetric_kl(lp, lq)
    assert out.item() == pytest.approx(ref.item(), rel=1e-12)
    out.backward()
    assert lp.grad.abs().sum() > 0 and lq.grad.abs().sum() > 0
    assert symmetric_kl(lp, lp).item() == pytest.approx(0.0, abs=1e-15)
