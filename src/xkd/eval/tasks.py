"""Evaluation tasks: which rows train and which test, per fold, for each dataset (spec §A10).

A dataset is given as

- a manifest CSV: rows with ``split`` test are the test set and the others train (one fold), or, without a test
  split, leave-one-fold-out over the ``fold`` column (ESC-50 style);
- ``LAYOUT:ROOT`` for an official layout (``ucf101`` and ``hmdb51``: the 3 official splits; ``esc50``: 5 folds;
  ``fsd50k``, ``kinetics400``, ``kinetics_sound``, ``vggsound``: their train/test splits);
- ``av-digits`` or ``av-digits:DIR``: four tasks, video digit and video motion (image-index split), audio digit
  (leave-one-voice-out: train on the train split of four voices, test on the test split of the fifth) and audio+video
  digit (the same folds, features of both modalities fused). Their labels depend on left and right (motions, digits),
  so their classifier training views never flip.

``split="val"`` scores the validation split instead of the test split (train on ``train`` rows, score ``val`` rows): the
split on which evaluation defaults and recipes are chosen. Datasets without a ``val`` split refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xkd.data.manifest import Manifest, read_manifest
from xkd.datasets.avdigits import AVDIGITS_DIR

OFFICIAL_FOLDS = {"ucf101": 3, "hmdb51": 3}


@dataclass
class Fold:
    name: str
    train_rows: np.ndarray  # manifest row indices
    test_rows: np.ndarray

    def __str__(self) -> str:
        return self.name


@dataclass
class Task:
    """One evaluation: a label column, a modality ('video', 'audio' or 'av') and its folds over ``manifest``."""

    name: str
    manifest: Manifest
    label_column: str
    modality: str
    folds: list[Fold] = field(default_factory=list)
    flip: bool = True  # whether a horizontally flipped clip keeps its label (classifier training views may flip)

    @property
    def multilabel(self) -> bool:
        return self.label_column == "label" and any(len(r.labels) > 1 for r in self.manifest)

    def class_names(self) -> list[str]:
        return self.manifest.classes(self.label_column)

    def labels(self) -> np.ndarray:
        """[N] class indices, or [N, C] multi-hot for multi-label manifests."""
        names = self.class_names()
        index = {n: i for i, n in enumerate(names)}
        if self.multilabel:
            hot = np.zeros((len(self.manifest), len(names)), dtype=np.int64)
            for i, row in enumerate(self.manifest):
                hot[i, [index[lab] for lab in row.labels]] = 1
            return hot
        return np.array([index[v] for v in self.manifest.labels_of(self.label_column)], dtype=np.int64)

    def modalities(self) -> list[str]:
        return ["video", "audio"] if self.modality == "av" else [self.modality]


def _select(fold: int | None, folds: list[Fold]) -> list[Fold]:
    if fold is None:
        return folds
    chosen = [f for f in folds if f.name == str(fold)]
    if not chosen:
        raise ValueError(f"no fold {fold}; this dataset has folds {[f.name for f in folds]}")
    return chosen


def _val_split(manifest: Manifest, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, val mask) of a manifest with ``train`` and ``val`` splits."""
    splits = np.array([r.split for r in manifest])
    if not (splits == "val").any() or not (splits == "train").any():
        raise ValueError(f"{source} has no 'val' (and 'train') split to score: use split='test', whose "
                         "hyper-parameters are already chosen on a val split carved from the training rows")
    return splits == "train", splits == "val"


def split_or_fold_folds(manifest: Manifest, fold: int | None = None, split: str = "test") -> list[Fold]:
    """Train/test by the split column when a test split exists, else leave-one-fold-out over the fold column;
    ``split="val"``: train rows against val rows."""
    if split == "val":
        train, val = _val_split(manifest, "the manifest")
        return _select(fold, [Fold("val", np.flatnonzero(train), np.flatnonzero(val))])
    splits = np.array([r.split for r in manifest])
    if (splits == "test").any():
        return _select(fold, [Fold("test", np.flatnonzero(splits != "test"), np.flatnonzero(splits == "test"))])
    folds = np.array([-1 if r.fold is None else r.fold for r in manifest])
    if (folds < 0).all():
        raise ValueError("the manifest has neither a 'test' split nor a fold column: cannot evaluate")
    out = [Fold(str(k), np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in manifest.folds()]
    return _select(fold, out)


def avdigits_tasks(root: Path, fold: int | None = None, split: str = "test") -> list[Task]:
    manifest = read_manifest(root / "manifest.csv")
    splits = np.array([r.split for r in manifest])
    voices = np.array([r.fold for r in manifest])
    if split == "val":
        train, test = _val_split(manifest, str(root))
    else:
        train, test = splits != "test", splits == "test"
    by_split = [Fold(split, np.flatnonzero(train), np.flatnonzero(test))]
    # a voice with no clip in the scored split (e.g. a small build's val split) is no fold of the audio tasks
    by_voice = _select(fold, [Fold(str(k), np.flatnonzero(train & (voices != k)), np.flatnonzero(test & (voices == k)))
                              for k in manifest.folds() if (test & (voices == k)).any()])
    return [
        Task("video digit", manifest, "digit", "video", by_split, flip=False),
        Task("video motion", manifest, "motion", "video", by_split, flip=False),
        Task("audio digit", manifest, "digit", "audio", by_voice, flip=False),
        Task("audio+video digit", manifest, "digit", "av", by_voice, flip=False),
    ]


def with_fewer_training_videos(tasks: list[Task], per_class: int, seed: int = 0) -> list[Task]:
    """The same tasks with each fold's classifier training rows cut to at most ``per_class`` videos per label (the
    same seeded choice for every task of a manifest); the scored rows stay. For quick, noisier scores of many models,
    such as the points of a learning curve."""
    out = []
    for task in tasks:
        labels = task.labels()
        candidates = np.unique(np.concatenate([f.train_rows for f in task.folds]))
        order = np.random.default_rng(seed).permutation(candidates)
        kept = np.concatenate([order[labels[order] == c][:per_class] for c in np.unique(labels[order])])
        folds = [Fold(f.name, np.intersect1d(f.train_rows, kept), f.test_rows) for f in task.folds]
        out.append(Task(task.name, task.manifest, task.label_column, task.modality, folds, task.flip))
    return out


def _union(manifests: list[Manifest]) -> tuple[Manifest, dict[str, int]]:
    """All rows of several manifests over the same files, deduplicated by path, and path -> row of the union."""
    rows, index = [], {}
    for m in manifests:
        for r in m:
            if r.path not in index:
                index[r.path] = len(rows)
                rows.append(r)
    return Manifest(rows, manifests[0].root), index


def layout_tasks(name: str, root: Path, fold: int | None, label_column: str, modality: str,
                 split: str = "test") -> list[Task]:
    from xkd.datasets.layouts import read_layout

    key = name.lower().replace("-", "").replace("_", "")
    if key in OFFICIAL_FOLDS:
        if split == "val":
            raise ValueError(f"{name} has no 'val' split to score: use split='test', whose hyper-parameters are "
                             "already chosen on a val split carved from the training videos")
        numbers = [fold] if fold is not None else list(range(1, OFFICIAL_FOLDS[key] + 1))
        per_fold = [read_layout(name, root, fold=k) for k in numbers]
        union, index = _union(per_fold)
        folds = []
        for k, m in zip(numbers, per_fold):
            rows = np.array([index[r.path] for r in m])
            splits = np.array([r.split for r in m])
            folds.append(Fold(str(k), rows[splits == "train"], rows[splits == "test"]))
        return [Task(f"{name} {modality}", union, label_column, modality, folds)]
    manifest = read_layout(name, root)
    return [Task(f"{name} {modality}", manifest, label_column, modality, split_or_fold_folds(manifest, fold, split))]


def tasks_for(dataset: str, fold: int | None = None, label_column: str = "label", modality: str | None = None,
              task: str | None = None, split: str = "test") -> list[Task]:
    """Resolve a dataset argument (see the module docstring) into tasks; ``task`` keeps one by name; ``split`` is
    the split scored, "test" or "val"."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    name, _, rest = dataset.partition(":")
    if name.lower() in ("av-digits", "avdigits"):
        tasks = avdigits_tasks(Path(rest or AVDIGITS_DIR), fold, split)
        if modality:
            tasks = [t for t in tasks if t.modality == modality]
    elif rest and not Path(dataset).exists():
        tasks = layout_tasks(name, Path(rest), fold, label_column, modality or "video", split)
    else:
        path = Path(dataset)
        manifest = read_manifest(path)
        tasks = [Task(f"{path.stem} {modality or 'video'}", manifest, label_column, modality or "video",
                      split_or_fold_folds(manifest, fold, split))]
    if task:
        chosen = [t for t in tasks if t.name == task]
        if not chosen:
            raise ValueError(f"no task {task!r}; tasks: {[t.name for t in tasks]}")
        tasks = chosen
    return tasks
