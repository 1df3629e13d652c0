"""Linear probe on frozen features (spec §A10): a linear classifier trained with AdamW and a cosine schedule.

Single-label sets (e.g. Kinetics) use cross-entropy and top-1; multi-label sets (FSD50K) use binary cross-entropy,
dropout 0.3 and mAP. As in MAE's linear probe, a BatchNorm without affine parameters may whiten the features first.
When several weight decays are given (default :data:`LINEAR_WDS`), the best one is chosen on a validation split carved
from the training set (:mod:`xkd.eval.selection`; a choice at the edge of the grid is reported), then the head is
retrained on the whole training set; the test split is only used by that final head.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.engine.schedules import cosine_schedule
from xkd.eval.features import FeatureSet
from xkd.eval.metrics import evaluate_clip_scores
from xkd.eval.selection import edges, select_on_val, warn_edges

LINEAR_WDS = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0)  # AdamW weight decays of the head, selected on val


class LinearHead(nn.Module):
    """[B, D] -> [B, C]: optional BatchNorm (no affine), dropout, then one Linear with orthogonal init."""

    def __init__(self, dim: int, num_classes: int, batchnorm: bool = True, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.orthogonal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.norm(x)))


def train_head(train: FeatureSet, epochs: int, lr: float, wd: float, batch_size: int, warmup_epochs: int = 0,
               batchnorm: bool = True, dropout: float = 0.0, seed: int = 0, device: str = "cpu") -> LinearHead:
    """Fit a :class:`LinearHead` on every training clip (features: [N, D]). Weight decay spares the bias.

    Each epoch visits a fresh permutation in full batches (one smaller batch when N < batch_size). Seeded, and
    deterministic on CPU; the caller's CPU random state is left untouched.
    """
    x = torch.as_tensor(train.features, device=device)
    y = torch.as_tensor(train.labels, device=device)
    y = y.float() if train.multilabel else y.long()
    steps_per_epoch = max(1, len(train) // batch_size)
    total_steps = epochs * steps_per_epoch
    lrs = cosine_schedule(lr, 0.0, total_steps, min(warmup_epochs * steps_per_epoch, total_steps))  # per step
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = LinearHead(train.features.shape[1], train.num_classes, batchnorm, dropout).to(device)
        optimizer = torch.optim.AdamW([{"params": [head.fc.weight], "weight_decay": wd},
                                       {"params": [head.fc.bias], "weight_decay": 0.0}], lr=lr)
        head.train()
        step = 0
        for _ in range(epochs):
            order = torch.randperm(len(train)).to(device)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = float(lrs[step])
                logits = head(x[idx])
                if train.multilabel:
                    loss = F.binary_cross_entropy_with_logits(logits, y[idx])
                else:
                    loss = F.cross_entropy(logits, y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    return head


@torch.no_grad()
def head_scores(head: LinearHead, fs: FeatureSet, device: str = "cpu", batch_size: int = 4096) -> np.ndarray:
    """Class probabilities [N, C]: softmax for single-label sets, sigmoid for multi-label sets."""
    head.eval()
    x = torch.as_tensor(fs.features, device=device)
    logits = torch.cat([head(x[i:i + batch_size]) for i in range(0, len(fs), batch_size)])
    probs = torch.sigmoid(logits) if fs.multilabel else torch.softmax(logits, dim=1)
    return probs.double().cpu().numpy()


def linear_probe(
    train: FeatureSet,
    test: FeatureSet,
    epochs: int = 100,
    lr: float = 0.01,
    wd: float | Sequence[float] = LINEAR_WDS,
    batch_size: int = 256,
    warmup_epochs: int = 10,
    val_fraction: float = 0.2,
    batchnorm: bool = True,
    dropout: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Linear probe; test clip probabilities averaged per video.

    wd: one weight decay, or several: then each is trained on a video-grouped val split carved from ``train`` and
    the one with the best val top-1 (mAP for multi-label; ties to the earlier value) is retrained on all of ``train``.
    dropout: None means 0.3 for multi-label sets (the FSD50K recipe) and 0 otherwise.
    Returns ``protocol``, ``wd``, ``hparams`` ({"wd": wd}), ``at_edge`` (["wd"] when the chosen wd ends the grid;
    0 counts as no edge, there is nothing below it), ``metrics`` (single-label: top1, top5 with more than 5 classes,
    clip_top1, plus ``predictions`` and ``confusion``; multi-label: mAP, clip_mAP) and, when wd was chosen,
    ``val_<metric>`` per candidate.
    """
    if train.class_names != test.class_names or train.multilabel != test.multilabel:
        raise ValueError("train and test must have the same classes and label kind")
    if dropout is None:
        dropout = 0.3 if train.multilabel else 0.0
    wds = [float(wd)] if np.isscalar(wd) else [float(w) for w in wd]
    metric = "mAP" if train.multilabel else "top1"

    def fit(fs: FeatureSet, weight_decay: float) -> LinearHead:
        return train_head(fs, epochs, lr, weight_decay, batch_size, warmup_epochs, batchnorm, dropout, seed, device)

    def val_score(fit_part: FeatureSet, val: FeatureSet, weight_decay: float) -> float:
        return evaluate_clip_scores(head_scores(fit(fit_part, weight_decay), val, device), val)["metrics"][metric]

    result_extra = {}
    at_edge: list[str] = []
    if len(wds) > 1:
        best_wd, scores = select_on_val(train, wds, val_score, val_fraction, seed)
        protocol = "wd selected on val"
        result_extra[f"val_{metric}"] = {f"{w:g}": score for w, score in zip(wds, scores)}
        at_edge = [name for name in edges({"wd": best_wd}, {"wd": wds}) if best_wd > 0]
        warn_edges("linear probe", {"wd": best_wd}, at_edge)
    else:
        best_wd = wds[0]
        protocol = "fixed hyper-parameters"
    result = evaluate_clip_scores(head_scores(fit(train, best_wd), test, device), test)
    result.update(protocol=f"linear probe, {protocol}", wd=best_wd, hparams={"wd": best_wd}, at_edge=at_edge,
                  epochs=epochs, lr=lr, **result_extra)
    return result
