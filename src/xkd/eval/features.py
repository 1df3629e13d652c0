"""Extracted features as the evaluation protocols consume them: one row per clip, grouped by source video.

A :class:`FeatureSet` holds ``features: [N, D]`` for N clips (or patch tokens ``[N, K, D]`` for the attentive probe),
the id of the video each clip came from, and the labels (``[N]`` class indices, or ``[N, C]`` multi-hot for
multi-label sets such as FSD50K). Several clips of one video share
its id, so protocols can average clip scores per video and keep all clips of a video on one side of a split.

``.npz`` files written by :meth:`FeatureSet.save` are plain numpy (``features``, ``video_ids``, ``labels``,
``class_names``) and load with ``np.load(path)`` without xkd.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def group_mean(values: np.ndarray, video_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average rows that share a video id. values: [N, ...], video_ids: [N] -> (ids [V] sorted, means [V, ...])."""
    ids, inverse, counts = np.unique(video_ids, return_inverse=True, return_counts=True)
    sums = np.zeros((len(ids),) + values.shape[1:], dtype=np.float64)
    np.add.at(sums, inverse, values)
    return ids, sums / counts.reshape((-1,) + (1,) * (values.ndim - 1))


def _clip_index(video_ids: np.ndarray) -> np.ndarray:
    """Rank of each row among the rows of its video, in row order. video_ids: [N] -> [N]."""
    order = np.argsort(video_ids, kind="stable")
    sorted_ids = video_ids[order]
    starts = np.r_[0, np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_ids)]))
    rank = np.empty(len(video_ids), dtype=np.int64)
    rank[order] = np.arange(len(video_ids)) - run_start
    return rank


@dataclass
class FeatureSet:
    """Clip features with their video ids and labels.

    features: [N, D] float32, or patch tokens [N, K, D] (float16 kept, to halve their memory); video_ids: [N] int;
    labels: [N] int class indices or [N, C] multi-hot (0/1); class_names: C names, index-aligned with the labels.
    """

    features: np.ndarray
    video_ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        features = np.asarray(self.features)
        self.features = features if features.dtype == np.float16 and features.ndim == 3 else features.astype(
            np.float32, copy=False)
        self.video_ids = np.asarray(self.video_ids, dtype=np.int64)
        labels = np.asarray(self.labels)
        self.class_names = [str(name) for name in self.class_names]
        n = len(self.features)
        if self.features.ndim not in (2, 3):
            raise ValueError(f"features must be [N, D] (or tokens [N, K, D]), got shape {self.features.shape}")
        if self.video_ids.shape != (n,):
            raise ValueError(f"video_ids must be [{n}], got shape {self.video_ids.shape}")
        if labels.ndim == 1:
            if labels.shape != (n,):
                raise ValueError(f"labels must be [{n}], got shape {labels.shape}")
            if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise ValueError(f"labels must lie in [0, {len(self.class_names)}), "
                                 f"got [{labels.min()}, {labels.max()}]")
            self.labels = labels.astype(np.int64)
        elif labels.ndim == 2:
            if labels.shape != (n, len(self.class_names)):
                raise ValueError(f"multi-hot labels must be [{n}, {len(self.class_names)}], got shape {labels.shape}")
            if not np.isin(labels, (0, 1)).all():
                raise ValueError("multi-hot labels must contain only 0 and 1")
            self.labels = labels.astype(np.uint8)
        else:
            raise ValueError(f"labels must be [N] or [N, C], got shape {labels.shape}")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, mask: np.ndarray) -> FeatureSet:
        """Rows selected by a boolean mask [N] or an index array."""
        return FeatureSet(self.features[mask], self.video_ids[mask], self.labels[mask], list(self.class_names))

    def video_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """One label per video: (ids [V] sorted, labels [V] or [V, C]); raises if a video's clips disagree."""
        ids, first, inverse = np.unique(self.video_ids, return_index=True, return_inverse=True)
        labels = self.labels[first]
        if not (labels[inverse] == self.labels).all():
            raise ValueError("clips of the same video carry different labels")
        return ids, labels

    def by_video_mean(self) -> FeatureSet:
        """One row per video, the mean of its clip features: [V, D], rows in sorted video-id order."""
        ids, labels = self.video_labels()
        _, means = group_mean(self.features, self.video_ids)
        return FeatureSet(means, ids, labels, list(self.class_names))

    def l2_normalize(self, eps: float = 1e-12) -> FeatureSet:
        """Each row scaled to unit L2 norm (zero rows stay zero)."""
        norms = np.linalg.norm(self.features, axis=1, keepdims=True)
        return FeatureSet(self.features / np.maximum(norms, eps), self.video_ids, self.labels, list(self.class_names))

    def save(self, path: str | Path) -> Path:
        """Write a plain-numpy ``.npz`` (features, video_ids, labels, class_names)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, features=self.features, video_ids=self.video_ids, labels=self.labels,
                     class_names=np.array(self.class_names, dtype=np.str_))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Read a file written by :meth:`save` (no pickles)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["features"], data["video_ids"], data["labels"], data["class_names"].tolist())


def fuse(a: FeatureSet, b: FeatureSet) -> FeatureSet:
    """Audio-visual fusion: L2-normalise each modality, then concatenate. [N, Da] + [N, Db] -> [N, Da + Db].

    Rows are paired by (video id, clip rank within the video), so the two sets may list their rows in any order but
    must hold the same clips per video; the output follows the row order of ``a``.
    """
    if a.class_names != b.class_names:
        raise ValueError("cannot fuse feature sets with different class names")
    if a.features.ndim != 2 or b.features.ndim != 2:
        raise ValueError("fuse takes pooled features [N, D]; the attentive probe takes the tokens of each modality")
    key_a = np.stack([a.video_ids, _clip_index(a.video_ids)], axis=1)
    key_b = np.stack([b.video_ids, _clip_index(b.video_ids)], axis=1)
    order_a = np.lexsort(key_a.T[::-1])
    order_b = np.lexsort(key_b.T[::-1])
    if len(a) != len(b) or not np.array_equal(key_a[order_a], key_b[order_b]):
        raise ValueError("cannot fuse: the two feature sets do not hold the same clips per video id")
    b_for_a = np.empty(len(a), dtype=np.int64)
    b_for_a[order_a] = order_b
    if not np.array_equal(a.labels, b.labels[b_for_a]):
        raise ValueError("cannot fuse: paired clips carry different labels")
    fa, fb = a.l2_normalize(), b.l2_normalize()
    return FeatureSet(np.concatenate([fa.features, fb.features[b_for_a]], axis=1), a.video_ids, a.labels,
                      list(a.class_names))


def split_by_video(fs: FeatureSet, val_fraction: float, seed: int = 0) -> tuple[FeatureSet, FeatureSet]:
    """Carve a validation split from a training set: all clips of a video land on one side.

    Single-label sets are stratified: a class with n >= 2 videos sends round(val_fraction * n) of them, at least one
    and at most n - 1, to validation; a class with one video keeps it in train. Multi-label sets draw videos at random.
    Returns (train, val).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    ids, labels = fs.video_labels()
    if fs.multilabel:
        n_val = min(max(int(round(val_fraction * len(ids))), 1), len(ids) - 1)
        val_ids = rng.permutation(ids)[:n_val]
    else:
        val_ids = []
        for c in np.unique(labels):
            class_ids = rng.permutation(ids[labels == c])
            n = len(class_ids)
            n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
            val_ids.append(class_ids[:n_val])
        val_ids = np.concatenate(val_ids)
    if len(val_ids) == 0:
        raise ValueError(f"too few videos ({len(ids)}) to carve a validation split")
    is_val = np.isin(fs.video_ids, val_ids)
    return fs.subset(~is_val), fs.subset(is_val)
