"""Retrieval by cosine similarity: recall at k, and cross-modal (audio <-> video) retrieval of videos.

A query is a hit at k when one of its k most similar gallery items shares its key. With class labels as keys this is
class-level retrieval, as CCL reports it; with video ids as keys it is instance-level (find the other modality of the
same video).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from xkd.eval.features import FeatureSet


def retrieval_recall(query: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                     ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024) -> dict[str, float]:
    """Recall@k for each k. query: [Nq, D], gallery: [Ng, D], query_labels: [Nq], gallery_labels: [Ng].

    Returns {"R@k": fraction of queries with a same-key item among their top-k}; k is capped at Ng.
    """
    if len(query) != len(query_labels) or len(gallery) != len(gallery_labels):
        raise ValueError("each feature row needs exactly one label")
    kmax = min(max(ks), len(gallery))
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    hits = []
    for start in range(0, len(q), chunk_size):
        sim = q[start:start + chunk_size] @ g.T  # [B, Ng]
        ranked = np.argsort(-sim, axis=1, kind="stable")[:, :kmax]  # [B, kmax], most similar first
        hits.append(gallery_labels[ranked] == query_labels[start:start + chunk_size, None])
    hits = np.concatenate(hits)
    hit_within = np.logical_or.accumulate(hits, axis=1)  # [Nq, kmax]: column j = a hit among the top j + 1
    return {f"R@{k}": float(hit_within[:, min(k, kmax) - 1].mean()) for k in ks}


def cross_modal_retrieval(audio: FeatureSet, video: FeatureSet, ks: Sequence[int] = (1, 5, 10),
                          level: Literal["class", "instance"] = "class") -> dict:
    """Audio -> video and video -> audio retrieval of test videos (clip features averaged per video first).

    level="class": a hit retrieves a video of the query's class; level="instance": the query's own video.
    Returns ``protocol`` and ``metrics`` {"a2v_R@k", "v2a_R@k"}.
    """
    if audio.multilabel or video.multilabel:
        raise ValueError("cross-modal retrieval needs single-label feature sets")
    if level not in ("class", "instance"):
        raise ValueError(f"level must be 'class' or 'instance', got {level!r}")
    if audio.class_names != video.class_names:
        raise ValueError("audio and video have different class names")
    a, v = audio.by_video_mean(), video.by_video_mean()
    a_keys, v_keys = (a.labels, v.labels) if level == "class" else (a.video_ids, v.video_ids)
    metrics = {}
    for name, r in (("a2v", retrieval_recall(a.features, v.features, a_keys, v_keys, ks)),
                    ("v2a", retrieval_recall(v.features, a.features, v_keys, a_keys, ks))):
        metrics.update({f"{name}_{key}": value for key, value in r.items()})
    return {"protocol": f"cross-modal retrieval ({level} level)", "metrics": metrics}
