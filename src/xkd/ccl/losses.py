"""CCL's objectives (spec §B5): multi-positive contrastive NCE, the symmetric pair loss, and the symmetric KL.

Fixes over the released code (spec §B8): the negative mask is a boolean complement (``~same``, never ``1 - bool``),
and a row without negatives (a one-class batch) contributes only its positive term instead of 0 / 0 = NaN.
``log(1 - P)`` is computed from ``log P`` with :func:`log1mexp`, exact where ``1 - P`` is tiny; ``P`` is capped at
``1 - 1e-7`` in that term (the float32 counterpart of the released code's ``+ 1e-10``), so the loss and its gradient
stay finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_P_CAP = math.log1p(-1e-7)  # log of the largest P used in -log(1 - P)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate over the whole range (Mächler, 2012). x: any shape."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def multi_positive_nce(f1: Tensor, f2: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Multi-class contrastive NCE(f1, f2, y) of CCL. f1: [B, D], f2: [B, D], labels: [B] -> scalar.

    With unit-normalised rows, s_ij = f1_i . f2_j / temperature and P_ij = softmax_j(s_ij). Positives are the j with
    y_j = y_i (i itself included), negatives all others. Per row:
    l_i = mean_{j pos} -log P_ij + mean_{j neg} -log(1 - P_ij), the second term 0 when row i has no negative.
    The loss is the mean of l_i over rows.
    """
    if f1.shape != f2.shape or f1.ndim != 2:
        raise ValueError(f"f1 and f2 must both be [B, D], got {tuple(f1.shape)} and {tuple(f2.shape)}")
    logits = F.normalize(f1, dim=1) @ F.normalize(f2, dim=1).T / temperature  # [B, B]
    log_p = logits.log_softmax(dim=1)
    same = labels[:, None] == labels[None, :]  # [B, B], the diagonal is always a positive
    other = ~same
    zero = log_p.new_zeros(())
    pos = torch.where(same, -log_p, zero).sum(1) / same.sum(1)
    # positives get a harmless stand-in before log1mexp, so no inf (and no NaN gradient) is ever formed
    neg_log_p = torch.where(other, log_p, log_p.new_full((), -1.0)).clamp(max=_LOG_P_CAP)
    neg = torch.where(other, -log1mexp(neg_log_p), zero).sum(1) / other.sum(1).clamp(min=1)
    return (pos + neg).mean()


def pair_nce(a: Tensor, b: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """The symmetric pair loss C(a, b) = NCE(a, b) + NCE(b, a). a, b: [B, D], labels: [B] -> scalar."""
    return multi_positive_nce(a, b, labels, temperature) + multi_positive_nce(b, a, labels, temperature)


def symmetric_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """CCL's "JSD": 0.5 [KL(p || q) + KL(q || p)], p and q the softmax of the two logits, batch mean; no side detached.

    logits_p, logits_q: [B, C] -> scalar. Equals 0.5 sum_c (p_c - q_c)(log p_c - log q_c) per row.
    """
    log_p, log_q = logits_p.log_softmax(dim=1), logits_q.log_softmax(dim=1)
    return 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(1).mean()
