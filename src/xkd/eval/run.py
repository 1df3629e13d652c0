"""Run an evaluation protocol over tasks and folds: extract features once per set of clips, then score each fold.

Protocols: ``svm`` (linear SVM, C chosen on a val split carved from train; ``paper_protocol`` picks the best C on
test as the original code did and says so), ``linear`` (linear probe; mAP for multi-label sets), ``knn``,
``retrieval`` (audio <-> video R@1/5/10 on the test set) and ``finetune`` (end-to-end, see xkd.eval.finetune).
Task modality ``av`` fuses the two modalities (per-modality L2 normalisation, then concatenation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xkd.api import Encoders
from xkd.data.manifest import Manifest
from xkd.eval.extract import ExtractOptions, extract_features
from xkd.eval.features import FeatureSet, fuse
from xkd.eval.knn import knn_classify
from xkd.eval.linear import linear_probe
from xkd.eval.report import run_folds, write_results
from xkd.eval.retrieval import cross_modal_retrieval
from xkd.eval.svm import AUDIO_CS, VIDEO_CS, svm_protocol
from xkd.eval.tasks import Fold, Task

log = logging.getLogger(__name__)

PROTOCOLS = ("svm", "linear", "knn", "retrieval", "finetune")


@dataclass
class EvalOptions:
    train_clips: int = 5  # augmented clips per training video (the paper: 25 for UCF/HMDB)
    test_clips: int = 3  # uniformly spaced clips per test video, scores averaged
    paper_protocol: bool = False  # SVM: select C on test (the original reporting), labelled as such
    seed: int = 0
    batch_size: int = 32
    num_workers: int = 2
    progress: bool = True
    linear_epochs: int = 100
    knn_k: int = 20


class FeatureCache:
    """Clip features of a task's manifest: augmented training clips and uniform test clips, extracted once."""

    def __init__(self, encoders: Encoders, opts: EvalOptions):
        self.encoders = encoders
        self.opts = opts
        self._store: dict[tuple, dict[str, FeatureSet]] = {}
        self.failed: dict[str, str] = {}

    def get(self, task: Task, rows: np.ndarray, train: bool, modalities: list[str]) -> dict[str, FeatureSet]:
        """Features of ``rows`` (labels of ``task``) for each modality."""
        key = (id(task.manifest), train, tuple(modalities))
        if key not in self._store:
            needed = np.unique(np.concatenate([f.train_rows if train else f.test_rows for f in task.folds]))
            sub = Manifest([task.manifest[i] for i in needed], task.manifest.root)
            opts = ExtractOptions(
                clips_per_video=self.opts.train_clips if train else self.opts.test_clips,
                augment=train and self.opts.train_clips > 0,
                seed=self.opts.seed,
                batch_size=self.opts.batch_size,
                num_workers=self.opts.num_workers,
                progress=self.opts.progress,
            )
            sets, failed = extract_features(self.encoders, sub, modalities, opts, label_column=None)
            self.failed.update(dict(failed))
            # back to the task manifest's row numbers
            self._store[key] = {m: FeatureSet(fs.features, needed[fs.video_ids], fs.labels, fs.class_names)
                                for m, fs in sets.items()}
        labels, names = task.labels(), task.class_names()
        out = {}
        for m, fs in self._store[key].items():
            keep = np.isin(fs.video_ids, rows)
            ids = fs.video_ids[keep]
            out[m] = FeatureSet(fs.features[keep], ids, labels[ids], names)
        return out


def _features(cache: FeatureCache, task: Task, rows: np.ndarray, train: bool) -> FeatureSet:
    sets = cache.get(task, rows, train, task.modalities())
    return fuse(sets["video"], sets["audio"]) if task.modality == "av" else sets[task.modality]


def run_fold(protocol: str, task: Task, fold: Fold, cache: FeatureCache, opts: EvalOptions) -> dict[str, Any]:
    """One protocol on one fold of a task."""
    if protocol == "retrieval":
        sets = cache.get(task, fold.test_rows, False, ["video", "audio"])
        return cross_modal_retrieval(sets["audio"], sets["video"])
    train, test = _features(cache, task, fold.train_rows, True), _features(cache, task, fold.test_rows, False)
    if protocol == "svm":
        if task.multilabel:
            raise ValueError(f"{task.name} is multi-label: use the 'linear' protocol (mAP)")
        cs = AUDIO_CS if task.modality == "audio" else VIDEO_CS
        return svm_protocol(train, test, Cs=cs, select="test" if opts.paper_protocol else "val", seed=opts.seed)
    if protocol == "linear":
        return linear_probe(train, test, epochs=opts.linear_epochs, seed=opts.seed,
                            warmup_epochs=min(10, opts.linear_epochs // 10))
    if protocol == "knn":
        return knn_classify(train, test, k=opts.knn_k)
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def evaluate(encoders: Encoders, tasks: list[Task], protocol: str, opts: EvalOptions) -> dict[str, dict]:
    """``{task name: run_folds result}`` for a feature-based protocol over every fold of every task."""
    cache = FeatureCache(encoders, opts)
    results = {}
    for task in tasks:
        missing = [m for m in task.modalities() if getattr(encoders, m) is None]
        if protocol == "retrieval":
            missing = [m for m in ("video", "audio") if getattr(encoders, m) is None]
        if missing:
            log.warning("skipping %s: the weights hold no %s encoder", task.name, " or ".join(missing))
            continue
        log.info("%s: %s over %d fold(s)", protocol, task.name, len(task.folds))
        results[task.name] = run_folds(lambda fold: run_fold(protocol, task, fold, cache, opts), task.folds)
    if cache.failed:
        log.warning("%d files could not be decoded and were left out", len(cache.failed))
    return results


def save_report(results: dict[str, dict], out_dir: str | Path, name: str) -> dict[str, Any]:
    """JSON + Markdown table + confusion matrices; returns the paths (see :func:`write_results`)."""
    return write_results(results, out_dir, name)
