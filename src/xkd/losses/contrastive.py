"""Cross-modal InfoNCE (CAV-MAE's contrastive term): the audio of a clip is the positive of its video, the other
clips' audio in the batch its negatives, on L2-normalised embeddings with a temperature.

Under torch.distributed the keys are gathered from every rank with their gradients and each rank scores its own rows
as queries, so the loss averaged over ranks (what DDP's gradient averaging optimises) is the loss of one process that
holds the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_gather
from torch.nn import functional as F


def _global_keys(x: Tensor) -> tuple[Tensor, int]:
    """The rows of ``x`` [B, D] of every rank, in rank order ([W B, D], carrying gradients to each rank's own rows),
    and the index of this rank's first row among them."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return torch.cat(all_gather(x)), dist.get_rank() * x.shape[0]


def _standardize(x: Tensor, everyone: Tensor) -> Tensor:
    """``x`` [B, D] standardised per dimension by the mean and std of ``everyone`` [W B, D] (the global batch)."""
    mean, var = everyone.mean(dim=0), everyone.var(dim=0, unbiased=False)
    return (x - mean) / (var + 1e-5).sqrt()


def info_nce(video: Tensor, audio: Tensor, temperature: float, symmetric: bool = True,
             standardize: bool = False) -> tuple[Tensor, Tensor]:
    """InfoNCE between ``video`` [B, D] and ``audio`` [B, D] (row i of each is clip i) -> (loss, top-1 accuracy).

    symmetric: the mean of video -> audio (each video picks its audio among the batch's) and audio -> video; False
    keeps video -> audio only, the direction of CAV-MAE's released code (a softmax over the audio of each video).
    standardize: each modality's embeddings are first standardised per dimension over the global batch (a batch norm
    without affine parameters, as in SimCLR's projection head), which removes the component every clip shares: at
    initialisation the pooled features of all clips point the same way, every similarity is nearly equal and the loss
    can sit at ln B for hundreds of steps.
    The accuracy (no gradient) is how often the positive scores highest, averaged like the loss.
    """
    video, audio = video.float(), audio.float()
    if standardize:
        video, audio = _standardize(video, _global_keys(video)[0]), _standardize(audio, _global_keys(audio)[0])
    video, audio = F.normalize(video, dim=-1), F.normalize(audio, dim=-1)
    all_video, first = _global_keys(video)
    all_audio, _ = _global_keys(audio)
    target = torch.arange(first, first + video.shape[0], device=video.device)
    directions = [(video, all_audio)] + ([(audio, all_video)] if symmetric else [])
    losses, hits = [], []
    for queries, keys in directions:
        logits = queries @ keys.t() / temperature  # [B, W B]
        losses.append(F.cross_entropy(logits, target))
        hits.append((logits.detach().argmax(dim=1) == target).float().mean())
    return sum(losses) / len(losses), sum(hits) / len(hits)
