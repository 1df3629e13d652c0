"""Weighted k-NN classification on frozen features (DINO's protocol) and 1-NN; test clip scores averaged per video.

Each test clip votes with its k most cosine-similar training clips, each weighted by exp(similarity / temperature).
Votes are normalised per clip, so every clip of a test video counts equally in the video's average.
"""

from __future__ import annotations

import numpy as np

from xkd.eval.features import FeatureSet
from xkd.eval.metrics import evaluate_clip_scores


def knn_scores(train: FeatureSet, test: FeatureSet, k: int = 20, temperature: float = 0.07,
               chunk_size: int = 1024) -> np.ndarray:
    """Class votes [N_test, C] (each row sums to 1) from the k nearest training clips by cosine similarity."""
    if train.multilabel or test.multilabel:
        raise ValueError("k-NN classification needs single-label feature sets")
    k = min(k, len(train))
    gallery = train.l2_normalize().features
    queries = test.l2_normalize().features
    votes = np.zeros((len(test), test.num_classes), dtype=np.float64)
    for start in range(0, len(test), chunk_size):
        sim = queries[start:start + chunk_size] @ gallery.T  # [B, N_train]
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # [B, k]
        near_sim = np.take_along_axis(sim, nearest, axis=1).astype(np.float64)
        # subtracting the row maximum leaves the normalised weights unchanged and avoids overflow
        weights = np.exp((near_sim - near_sim.max(axis=1, keepdims=True)) / temperature)
        rows = np.arange(len(nearest))[:, None]
        np.add.at(votes[start:start + chunk_size], (rows, train.labels[nearest]), weights)
    return votes / votes.sum(axis=1, keepdims=True)


def knn_classify(train: FeatureSet, test: FeatureSet, k: int = 20, temperature: float = 0.07) -> dict:
    """Weighted k-NN and 1-NN top-1 on ``test`` videos. Returns ``protocol``, ``k``, ``metrics`` (top1, top5 with
    more than 5 classes, clip_top1, nn1_top1), ``predictions`` and ``confusion`` of the k-NN classifier."""
    if train.class_names != test.class_names:
        raise ValueError("train and test have different class names")
    result = evaluate_clip_scores(knn_scores(train, test, k, temperature), test)
    nearest = evaluate_clip_scores(knn_scores(train, test, 1, temperature), test)
    result["metrics"]["nn1_top1"] = nearest["metrics"]["top1"]
    result.update(protocol=f"{k}-NN (T={temperature:g})", k=k)
    return result
