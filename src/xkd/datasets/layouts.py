"""Readers for the official on-disk layouts of the datasets XKD trains and evaluates on, producing manifests.

Each ``read_<name>(root, ...)`` reads the official annotation files under ``root`` and returns a
:class:`~xkd.data.manifest.Manifest` whose paths are relative to ``root`` (spec §A10, §A10b). Layouts, their
annotation files and the manifest columns they fill:

- ``kinetics400``: ``train.csv``, ``validate.csv`` / ``val.csv``, ``test.csv``; label, split (train/val/test).
- ``kinetics_sound``: the same, kept to the 32 classes of §A10b; label, split.
- ``ucf101``: ``ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt``; label, split (train/test) of split N.
- ``hmdb51``: ``testTrainMulti_7030_splits/<class>_test_splitN.txt``; label, split (train/test) of split N.
- ``esc50``: ``meta/esc50.csv``; label (the category), fold (1..5).
- ``fsd50k``: ``FSD50K.ground_truth/{dev,eval,vocabulary}.csv``; labels (multi-label), split (train/val/test).
- ``vggsound``: ``vggsound.csv`` (no header); label, split (train/test), start/end for uncut videos.
- ``audioset``: ``{balanced_train,unbalanced_train,eval}_segments.csv``; labels (multi-label MIDs), split
  (train/test), start/end.

For UCF101 and HMDB51 only one official split is read at a time; its rows carry ``split`` train/test and leave
``fold`` empty, because ``fold`` in a manifest means a k-fold protocol (ESC-50), which the three UCF/HMDB splits
are not. A missing annotation file or media folder raises :class:`FileNotFoundError` describing the expected layout.
Media files listed in the annotations but absent on disk are logged with their count and left out, or raise
:class:`FileNotFoundError` with ``strict=True``.

The readers live in :mod:`xkd.datasets.video_layouts` (Kinetics-400, Kinetics-Sound, UCF101, HMDB51, VGGSound) and
:mod:`xkd.datasets.audio_layouts` (ESC-50, FSD50K, AudioSet), on the helpers of :mod:`xkd.datasets.layout_files`;
this module registers them in :data:`LAYOUTS` and exposes their public names.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

from xkd.data.manifest import Manifest
from xkd.datasets.audio_layouts import (
    AUDIOSET_SUBSETS,
    AUDIOSET_TEMPLATES,
    fsd50k_vocabulary,
    read_audioset,
    read_esc50,
    read_fsd50k,
)
from xkd.datasets.layout_files import AUDIO_EXTENSIONS, SPLITS, VIDEO_EXTENSIONS, normalise_split
from xkd.datasets.video_layouts import (
    KINETICS_SOUND_CLASSES,
    read_hmdb51,
    read_kinetics400,
    read_kinetics_sound,
    read_ucf101,
    read_vggsound,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AUDIOSET_SUBSETS",
    "AUDIOSET_TEMPLATES",
    "KINETICS_SOUND_CLASSES",
    "LAYOUTS",
    "SPLITS",
    "VIDEO_EXTENSIONS",
    "fsd50k_vocabulary",
    "manifest_summary",
    "normalise_split",
    "read_audioset",
    "read_esc50",
    "read_fsd50k",
    "read_hmdb51",
    "read_kinetics400",
    "read_kinetics_sound",
    "read_layout",
    "read_ucf101",
    "read_vggsound",
]

# ---------------------------------------------------------------------------------------------- registry, summary

LAYOUTS: dict[str, Callable[..., Manifest]] = {
    "kinetics400": read_kinetics400,
    "kinetics_sound": read_kinetics_sound,
    "ucf101": read_ucf101,
    "hmdb51": read_hmdb51,
    "esc50": read_esc50,
    "fsd50k": read_fsd50k,
    "vggsound": read_vggsound,
    "audioset": read_audioset,
}


def _layout_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def read_layout(name: str, root: str | Path, **kwargs) -> Manifest:
    """Read dataset ``name`` (a key of :data:`LAYOUTS`; case, '-' and '_' ignored, so 'UCF-101' works) at ``root``."""
    for known, reader in LAYOUTS.items():
        if _layout_key(known) == _layout_key(name):
            return reader(root, **kwargs)
    raise ValueError(f"unknown dataset layout {name!r}; known layouts: {', '.join(LAYOUTS)}")


def manifest_summary(manifest: Manifest) -> str:
    """A few lines for printing: row and class counts, rows per split and per fold."""
    rows = manifest.rows
    multi = sum(len(r.labels) > 1 for r in rows)
    unlabelled = sum(not r.labels for r in rows)
    head = f"{len(rows)} rows, {len(manifest.classes())} classes"
    if multi:
        head += f", {multi} multi-label rows"
    if unlabelled:
        head += f", {unlabelled} unlabelled rows"
    lines = [head]
    splits = Counter(r.split for r in rows if r.split)
    if splits:
        order = sorted(splits, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))
        lines.append("splits: " + ", ".join(f"{s} {splits[s]}" for s in order))
    folds = Counter(r.fold for r in rows if r.fold is not None)
    if folds:
        lines.append("folds: " + ", ".join(f"{f}: {folds[f]}" for f in sorted(folds)))
    return "\n".join(lines)
