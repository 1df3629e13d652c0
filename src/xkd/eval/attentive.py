"""Attentive probe on frozen patch tokens: a learned query attends over an encoder's tokens, then a linear classifier.

Mean pooling undersells masked-modelling features (the MAE and V-JEPA lines report attentive probes for this reason):
the probe lets a few learned queries choose which tokens to read. Only the probe trains; the encoder stays frozen and
its tokens are extracted once. For audio+video tasks the tokens of both modalities form one sequence, each modality
normalised by its own LayerNorm and marked by a learned modality embedding.

Hyper-parameters (learning rate x weight decay, :data:`ATTENTIVE_GRID`) are chosen on a validation split carved from
the training set (:mod:`xkd.eval.selection`); the probe is then retrained on the whole training set and the test split
is scored once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.eval.features import FeatureSet
from xkd.eval.metrics import evaluate_clip_scores
from xkd.eval.selection import edges, select_on_val, warn_edges

ATTENTIVE_LRS = (3e-4, 1e-3, 3e-3)
ATTENTIVE_WDS = (1e-3, 1e-2, 0.1)
ATTENTIVE_GRID = tuple(itertools.product(ATTENTIVE_LRS, ATTENTIVE_WDS))  # (lr, weight decay) candidates
PROTOCOL = "attentive probe, lr and wd selected on val"


class AttentiveProbe(nn.Module):
    """tokens [B, K, D] (``segments``: the token count of each modality, in order, summing to K) -> logits [B, C].

    Each modality's tokens go through their own LayerNorm plus a learned modality embedding; ``queries`` learned
    queries cross-attend over all tokens (``heads`` heads, one attention layer with its output projection); the
    attended queries are LayerNorm-ed, concatenated and classified by one Linear.
    """

    def __init__(self, dim: int, num_classes: int, segments: Sequence[int], queries: int = 1, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"token dim {dim} is not divisible by {heads} heads")
        self.segments = tuple(int(k) for k in segments)
        self.token_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in self.segments)
        self.modality = nn.Parameter(torch.zeros(len(self.segments), dim))
        self.query = nn.Parameter(torch.zeros(1, queries, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(queries * dim, num_classes)
        nn.init.trunc_normal_(self.modality, std=0.02)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != sum(self.segments):
            raise ValueError(f"expected {sum(self.segments)} tokens ({self.segments}), got {tokens.shape[1]}")
        parts = torch.split(tokens, self.segments, dim=1)
        x = torch.cat([norm(p) + self.modality[i] for i, (norm, p) in enumerate(zip(self.token_norms, parts))], 1)
        q = self.query.expand(x.shape[0], -1, -1)
        attended, _ = self.attn(q, x, x, need_weights=False)  # [B, Q, D]
        return self.fc(self.norm(attended).flatten(1))


def join_modalities(sets: Sequence[FeatureSet]) -> tuple[FeatureSet, list[int]]:
    """Token sets of the same clips ([N, K_m, D] each, rows aligned) -> one set [N, sum K_m, D] and the K_m."""
    first = sets[0]
    for fs in sets[1:]:
        if not np.array_equal(fs.video_ids, first.video_ids) or fs.features.shape[2] != first.features.shape[2]:
            raise ValueError("token sets to join must hold the same clips in the same order and one token dim")
    tokens = np.concatenate([fs.features for fs in sets], axis=1)
    return FeatureSet(tokens, first.video_ids, first.labels, list(first.class_names)), [fs.features.shape[1]
                                                                                           for fs in sets]


def train_probe(train: FeatureSet, segments: Sequence[int], lr: float, wd: float, epochs: int = 20,
                batch_size: int = 128, warmup_epochs: int = 3, queries: int = 1, heads: int = 4,
                seed: int = 0) -> AttentiveProbe:
    """Fit an :class:`AttentiveProbe` on every training clip (tokens [N, K, D]) with AdamW and a cosine schedule.
    Seeded; the caller's random state is left untouched."""
    if train.features.ndim != 3:
        raise ValueError("the attentive probe needs patch tokens [N, K, D] (extract with tokens=True)")
    x = torch.from_numpy(train.features)
    y = torch.as_tensor(train.labels, dtype=torch.long)
    steps_per_epoch = max(1, math.ceil(len(train) / batch_size))
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = AttentiveProbe(x.shape[2], train.num_classes, segments, queries, heads)
        decay = [p for n, p in probe.named_parameters() if p.ndim >= 2 and n not in ("modality", "query")]
        rest = [p for n, p in probe.named_parameters() if not (p.ndim >= 2 and n not in ("modality", "query"))]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
                                      lr=lr)
        probe.train()
        step = 0
        for _ in range(epochs):
            order = torch.randperm(len(train))
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                scale = step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) /
                                                                               max(1, total - warmup)))
                for group in optimizer.param_groups:
                    group["lr"] = lr * scale
                loss = F.cross_entropy(probe(x[idx].float()), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    return probe.eval()


@torch.no_grad()
def probe_scores(probe: AttentiveProbe, fs: FeatureSet, batch_size: int = 512) -> np.ndarray:
    """Class probabilities [N, C] of every clip of ``fs``."""
    x = torch.from_numpy(fs.features)
    logits = torch.cat([probe(x[i:i + batch_size].float()) for i in range(0, len(fs), batch_size)])
    return torch.softmax(logits, dim=1).double().numpy()


def attentive_probe(
    train: Sequence[FeatureSet] | FeatureSet,
    test: Sequence[FeatureSet] | FeatureSet,
    grid: Sequence[tuple[float, float]] = ATTENTIVE_GRID,
    epochs: int = 20,
    val_fraction: float = 0.2,
    seed: int = 0,
    **probe_options,
) -> dict:
    """Attentive probe of single-label token sets (one per modality, clips aligned); test clip probabilities averaged
    per video. Returns ``protocol``, ``hparams`` ({"lr", "wd"}), ``at_edge``, ``val_top1`` per candidate, ``metrics``
    (top1, top5 with more than 5 classes, clip_top1), ``predictions`` and ``confusion``."""
    train_sets = [train] if isinstance(train, FeatureSet) else list(train)
    test_sets = [test] if isinstance(test, FeatureSet) else list(test)
    if any(fs.multilabel for fs in train_sets + test_sets):
        raise ValueError("the attentive probe takes single-label sets (use the linear protocol for mAP)")
    joined_train, segments = join_modalities(train_sets)
    joined_test, test_segments = join_modalities(test_sets)
    if segments != test_segments or joined_train.class_names != joined_test.class_names:
        raise ValueError("train and test must have the same modalities, token counts and classes")

    def fit(fs: FeatureSet, lr: float, wd: float) -> AttentiveProbe:
        return train_probe(fs, segments, lr, wd, epochs=epochs, seed=seed, **probe_options)

    def val_top1(fit_part: FeatureSet, val: FeatureSet, candidate: tuple[float, float]) -> float:
        return evaluate_clip_scores(probe_scores(fit(fit_part, *candidate), val), val)["metrics"]["top1"]

    (lr, wd), scores = select_on_val(joined_train, list(grid), val_top1, val_fraction, seed)
    chosen = {"lr": lr, "wd": wd}
    at_edge = edges(chosen, {"lr": [c[0] for c in grid], "wd": [c[1] for c in grid]})
    warn_edges("attentive probe", chosen, at_edge)
    result = evaluate_clip_scores(probe_scores(fit(joined_train, lr, wd), joined_test), joined_test)
    result.update(protocol=PROTOCOL, hparams=chosen, at_edge=at_edge, epochs=epochs,
                  val_top1={f"lr={c[0]:g},wd={c[1]:g}": s for c, s in zip(grid, scores)},
                  num_train_clips=len(joined_train), num_test_videos=len(result["predictions"]["video_ids"]))
    return result
