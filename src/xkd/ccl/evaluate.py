"""CCL evaluation (spec §B6): recognition over every non-overlapping window with the softmax averaged per video, and
class-level retrieval (test videos query the training videos by cosine similarity of their mean x_v).

The checkpoint is chosen on the validation split by :func:`xkd.ccl.train.train_ccl`; this module only scores a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from xkd.ccl.config import CCLDataConfig
from xkd.ccl.data import EvalClips, Windows, iterate_windows
from xkd.eval.features import FeatureSet
from xkd.eval.metrics import evaluate_clip_scores
from xkd.eval.retrieval import retrieval_recall


@torch.no_grad()
def predict(student: nn.Module, windows: Windows, cfg: CCLDataConfig, device: torch.device,
            decoded_cache: Path | None = None) -> tuple[FeatureSet, np.ndarray]:
    """Run the student over every window: (features FeatureSet with x_v [W, D], softmax [W, C]), in window order.
    ``decoded_cache``: the windows decoded once (:func:`xkd.ccl.data.predecode_windows`)."""
    was_training = student.training
    student.eval()
    feats = np.zeros((len(windows), student.feature_dim), dtype=np.float32)
    probs = np.zeros((len(windows), len(windows.class_names)), dtype=np.float32)
    workers = 0 if decoded_cache is not None else cfg.num_workers  # reading the arrays is cheaper than a worker
    for batch in iterate_windows(EvalClips(windows, cfg, decoded_cache), cfg.eval_batch_size, workers):
        logits, x_v = student(batch["video"].to(device))
        idx = batch["index"].numpy()
        feats[idx] = x_v.float().cpu().numpy()
        probs[idx] = logits.float().softmax(dim=1).cpu().numpy()
    student.train(was_training)
    return FeatureSet(feats, windows.video, windows.labels, windows.class_names), probs


def recognition(features: FeatureSet, probs: np.ndarray) -> dict[str, float]:
    """Video top-1 (softmax averaged over a video's windows), top-5 when C > 5, and window-level clip_top1."""
    return evaluate_clip_scores(probs, features)["metrics"]


def retrieval(query: FeatureSet, gallery: FeatureSet, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Class-level R@k of query videos against gallery videos (window features averaged per video first)."""
    q, g = query.by_video_mean(), gallery.by_video_mean()
    return retrieval_recall(q.features, g.features, q.labels, g.labels, ks)
