"""Metrics shared by the evaluation protocols: top-k accuracy, mAP, confusion matrices, mean ± std."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score

from xkd.eval.features import FeatureSet, group_mean


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the k highest scores. scores: [N, C], labels: [N]. k is capped at C."""
    k = min(k, scores.shape[1])
    topk = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """FSD50K-style mAP: the mean over classes of sklearn's average precision. scores, targets: [N, C].

    Classes with no positive in ``targets`` have no defined AP and are skipped (not counted as zero).
    """
    has_positive = targets.sum(axis=0) > 0
    if not has_positive.any():
        raise ValueError("mAP is undefined: no class has a positive target")
    aps = [average_precision_score(targets[:, c], scores[:, c]) for c in np.flatnonzero(has_positive)]
    return float(np.mean(aps))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [C, C]: row = true class, column = predicted class. labels, preds: [N]."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def mean_std(values: Sequence[float], ddof: int = 0) -> tuple[float, float]:
    """(mean, std) over folds or runs. ddof=0 (default) is numpy's population std, defined for a single value;
    pass ddof=1 for the sample std (NaN for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(values.std(ddof=ddof)) if len(values) > ddof else float("nan")
    return float(values.mean()), std


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Save a confusion-matrix PNG; colours are row-normalised (per-class recall), counts printed up to 20 classes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    recall = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    size = 3.0 + 0.22 * n
    fontsize = 9 if n <= 20 else max(5.0, 9 - 0.08 * (n - 20))
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(np.arange(n), labels=class_names, rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(n), labels=class_names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    color = "white" if recall[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=fontsize - 1, color=color)
    fig.savefig(path, dpi=120)
    return path


def evaluate_clip_scores(clip_scores: np.ndarray, test: FeatureSet) -> dict:
    """Average clip scores over each test video's clips, then score the videos. clip_scores: [N, C] for test's rows.

    Single-label: ``metrics`` holds top1, top5 (only with more than 5 classes) and clip_top1 (each clip on its own);
    the result also holds ``predictions`` (video_ids, labels, preds: [V]), ``confusion`` ([C, C], rows = true
    class) and ``class_names``.
    Multi-label: ``metrics`` holds mAP (video level) and clip_mAP.
    """
    if clip_scores.shape != (len(test), test.num_classes):
        raise ValueError(f"clip_scores must be [{len(test)}, {test.num_classes}], got {clip_scores.shape}")
    ids, video_scores = group_mean(clip_scores, test.video_ids)
    _, labels = test.video_labels()
    if test.multilabel:
        metrics = {"mAP": mean_average_precision(video_scores, labels),
                   "clip_mAP": mean_average_precision(clip_scores, test.labels)}
        return {"metrics": metrics}
    metrics = {"top1": topk_accuracy(video_scores, labels, 1)}
    if test.num_classes > 5:
        metrics["top5"] = topk_accuracy(video_scores, labels, 5)
    metrics["clip_top1"] = topk_accuracy(clip_scores, test.labels, 1)
    preds = video_scores.argmax(axis=1)
    return {
        "metrics": metrics,
        "predictions": {"video_ids": ids, "labels": labels, "preds": preds},
        "confusion": confusion_matrix(labels, preds, test.num_classes),
        "class_names": list(test.class_names),
    }
