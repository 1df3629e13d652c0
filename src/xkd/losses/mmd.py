"""Domain alignment loss: maximum mean discrepancy with a sum of Gaussian kernels (spec §A6).

MMD²(X, Y) = mean K(X, X) + mean K(Y, Y) - 2 mean K(X, Y), the biased estimator (diagonals included),
with K(x, y) = Σ_γ exp(-γ ‖x - y‖²). On LayerNorm-ed 8192-d head outputs the kernel is nearly saturated (‖x - y‖² is in
the thousands for unrelated samples), so the kernel means are worth logging: ``return_stats=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_GAMMAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances: x [B, D], y [B', D] -> [B, B'], >= 0.

    The differences are formed explicitly (not ‖x‖² + ‖y‖² - 2 x·y), so identical rows give exactly 0 even
    for large-norm vectors, where the expanded form loses the small distances the large γ respond to.
    """
    return torch.cdist(x, y, p=2.0, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


def gaussian_kernel(d2: Tensor, gammas: Sequence[float]) -> Tensor:
    """Σ_γ exp(-γ d2) for squared distances d2 [B, B'] -> [B, B']."""
    return sum(torch.exp(-g * d2) for g in gammas)


def mmd_loss(
    x: Tensor, y: Tensor, gammas: Sequence[float] = DEFAULT_GAMMAS, return_stats: bool = False
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Biased MMD² between the sets x: [B, D] and y: [B', D]; a scalar, computed in fp32 (float64 stays float64).

    With ``return_stats`` also returns detached scalars: ``kxx``, ``kyy``, ``kxy`` (kernel means) and ``d2_xy``
    (mean squared cross-distance), to log how saturated the kernel is.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected x [B, D] and y [B', D], got {tuple(x.shape)} and {tuple(y.shape)}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(dtype)
        d2_xy = squared_distances(x, y)
        kxx = gaussian_kernel(squared_distances(x, x), gammas).mean()
        kyy = gaussian_kernel(squared_distances(y, y), gammas).mean()
        kxy = gaussian_kernel(d2_xy, gammas).mean()
        loss = kxx + kyy - 2.0 * kxy
    if not return_stats:
        return loss
    stats = {"kxx": kxx.detach(), "kyy": kyy.detach(), "kxy": kxy.detach(), "d2_xy": d2_xy.detach().mean()}
    return loss, stats
