"""Run an evaluation protocol over tasks and folds: extract features once per set of clips, then score each fold.

Protocols: ``svm`` (linear SVM on standardised features, C chosen on a val split carved from train;
``paper_protocol`` reproduces the original reporting: strongly augmented training clips, raw features, the best C on
test, and says so), ``ridge`` (a least-squares linear classifier on standardised features, alpha chosen on val; exact
and fast), ``linear`` (linear probe; mAP for multi-label sets), ``attentive`` (a cross-attention pooling
probe over the frozen patch tokens, xkd.eval.attentive), ``knn``, ``retrieval`` (audio <-> video R@1/5/10 on the test
set) and ``finetune`` (end-to-end, see xkd.eval.finetune). Task modality ``av`` fuses the two modalities
(per-modality L2 normalisation, then concatenation; the attentive probe attends over both token sequences).

Classifier training clips are ``train_clips`` random windows per training video seen through the mild training view
(the test view with a small random zoom / shift, flipped only where the task allows: xkd.data.views.EvalViews); test
clips are ``test_clips`` uniformly spaced windows through the test view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import numpy as np

from xkd.api import Encoders
from xkd.data.manifest import Manifest
from xkd.eval.extract import ExtractOptions, extract_features
from xkd.eval.attentive import attentive_probe
from xkd.eval.features import FeatureSet, fuse
from xkd.eval.knn import knn_classify
from xkd.eval.linear import LINEAR_WDS, linear_probe
from xkd.eval.report import run_folds, write_results
from xkd.eval.retrieval import cross_modal_retrieval
from xkd.eval.svm import AUDIO_CS, SVM_CS, VIDEO_CS, ridge_protocol, svm_protocol
from xkd.eval.tasks import Fold, Task

log = logging.getLogger(__name__)

PROTOCOLS = ("svm", "ridge", "linear", "attentive", "knn", "retrieval", "finetune")


@dataclass
class EvalOptions:
    train_clips: int = 3  # random training clips per training video (the paper: 25 for UCF/HMDB)
    test_clips: int = 3  # uniformly spaced clips per test video, scores averaged
    train_view: str = "mild"  # the classifier's training view: "mild" (the test view jittered) or "strong"
    crop_scale: tuple[float, float] = (1.0, 1.0)  # the mild view's random zoom (area fraction of the test crop);
    # none by default: on the AV-Digits val split a zoom of 0.8-1 or 0.9-1 did not help (docs/EVALUATION.md)
    standardize: bool = True  # SVM: standardise the features (statistics of the training clips)
    svm_cs: tuple[float, ...] = SVM_CS  # SVM: the C grid searched on the val split
    linear_wds: tuple[float, ...] = LINEAR_WDS  # linear probe: the weight-decay grid searched on the val split
    paper_protocol: bool = False  # the original reporting: strong views, raw features, the paper's C grid on test
    seed: int = 0
    batch_size: int = 32
    num_workers: int = 2
    progress: bool = True
    linear_epochs: int = 100
    attentive_epochs: int = 20
    knn_k: int = 20

    @property
    def effective_train_view(self) -> str:
        return "strong" if self.paper_protocol else self.train_view


class FeatureCache:
    """Clip features of a task manifest's rows for several models: training clips (random windows through the
    classifier training view) and uniform test clips, each decoded once and encoded by every model, for every
    modality a model has; pooled vectors, or patch tokens for the attentive probe."""

    def __init__(self, models: Mapping[str, Encoders], opts: EvalOptions):
        self.models = dict(models)
        self.opts = opts
        self._store: dict[tuple, dict[str, dict[str, FeatureSet]]] = {}
        self.failed: dict[str, str] = {}

    def _extract(self, task: Task, train: bool, tokens: bool) -> dict[str, dict[str, FeatureSet]]:
        key = (id(task.manifest), train, train and task.flip, tokens)
        if key not in self._store:
            needed = np.unique(np.concatenate([f.train_rows if train else f.test_rows for f in task.folds]))
            sub = Manifest([task.manifest[i] for i in needed], task.manifest.root)
            modalities = [m for m in ("video", "audio") if any(getattr(e, m) is not None for e in self.models.values())]
            opts = ExtractOptions(
                clips_per_video=self.opts.train_clips if train else self.opts.test_clips,
                train_view=self.opts.effective_train_view if train else None,
                flip=task.flip,
                crop_scale=self.opts.crop_scale,
                tokens=tokens,
                seed=self.opts.seed,
                batch_size=self.opts.batch_size,
                num_workers=self.opts.num_workers,
                progress=self.opts.progress,
            )
            sets, failed = extract_features(self.models, sub, modalities, opts, label_column=None)
            self.failed.update(dict(failed))
            # back to the task manifest's row numbers
            self._store[key] = {
                model: {m: FeatureSet(fs.features, needed[fs.video_ids], fs.labels, fs.class_names)
                        for m, fs in per.items()}
                for model, per in sets.items()
            }
        return self._store[key]

    def get(self, model: str, task: Task, rows: np.ndarray, train: bool, tokens: bool = False) -> dict[str, FeatureSet]:
        """``model``'s features (or patch tokens) of ``rows`` with the labels of ``task``, per modality."""
        labels, names = task.labels(), task.class_names()
        out = {}
        for m, fs in self._extract(task, train, tokens)[model].items():
            keep = np.isin(fs.video_ids, rows)
            ids = fs.video_ids[keep]
            out[m] = FeatureSet(fs.features[keep], ids, labels[ids], names)
        return out


def _features(cache: FeatureCache, model: str, task: Task, rows: np.ndarray, train: bool) -> FeatureSet:
    sets = cache.get(model, task, rows, train)
    return fuse(sets["video"], sets["audio"]) if task.modality == "av" else sets[task.modality]


def run_fold(protocol: str, model: str, task: Task, fold: Fold, cache: FeatureCache, opts: EvalOptions) -> dict:
    """One protocol on one fold of a task, for one of the cache's models."""
    if protocol == "retrieval":
        sets = cache.get(model, task, fold.test_rows, False)
        return cross_modal_retrieval(sets["audio"], sets["video"])
    if protocol == "attentive":
        if task.multilabel:
            raise ValueError(f"{task.name} is multi-label: use the 'linear' protocol (mAP)")
        train_sets = cache.get(model, task, fold.train_rows, True, tokens=True)
        test_sets = cache.get(model, task, fold.test_rows, False, tokens=True)
        return attentive_probe([train_sets[m] for m in task.modalities()], [test_sets[m] for m in task.modalities()],
                               epochs=opts.attentive_epochs, seed=opts.seed)
    train = _features(cache, model, task, fold.train_rows, True)
    test = _features(cache, model, task, fold.test_rows, False)
    if protocol == "svm":
        if task.multilabel:
            raise ValueError(f"{task.name} is multi-label: use the 'linear' protocol (mAP)")
        if opts.paper_protocol:
            cs = AUDIO_CS if task.modality == "audio" else VIDEO_CS
            return svm_protocol(train, test, Cs=cs, select="test", seed=opts.seed, standardize=False)
        return svm_protocol(train, test, Cs=opts.svm_cs, seed=opts.seed, standardize=opts.standardize)
    if protocol == "ridge":
        if task.multilabel:
            raise ValueError(f"{task.name} is multi-label: use the 'linear' protocol (mAP)")
        return ridge_protocol(train, test, seed=opts.seed, standardize=opts.standardize)
    if protocol == "linear":
        return linear_probe(train, test, epochs=opts.linear_epochs, seed=opts.seed, wd=opts.linear_wds,
                            warmup_epochs=min(10, opts.linear_epochs // 10))
    if protocol == "knn":
        return knn_classify(train, test, k=opts.knn_k)
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def evaluate_many(
    models: Mapping[str, Encoders], tasks: list[Task], protocol: str, opts: EvalOptions
) -> dict[str, dict[str, dict]]:
    """``{model: {task name: run_folds result}}``: a feature-based protocol over every fold of every task, for
    several models that share a data config (each clip is decoded once)."""
    if protocol not in PROTOCOLS or protocol == "finetune":
        raise ValueError(f"protocol must be one of {', '.join(p for p in PROTOCOLS if p != 'finetune')}")
    cache = FeatureCache(models, opts)
    results: dict[str, dict[str, dict]] = {name: {} for name in models}
    for task in tasks:
        needed = ["video", "audio"] if protocol == "retrieval" else task.modalities()
        for name, enc in models.items():
            missing = [m for m in needed if getattr(enc, m) is None]
            if missing:
                log.warning("%s: skipping %s, no %s encoder", name, task.name, " or ".join(missing))
                continue
            log.info("%s: %s on %s over %d fold(s)", name, protocol, task.name, len(task.folds))
            results[name][task.name] = run_folds(lambda f: run_fold(protocol, name, task, f, cache, opts), task.folds)
    if cache.failed:
        log.warning("%d files could not be decoded and were left out", len(cache.failed))
    return results


def evaluate(encoders: Encoders, tasks: list[Task], protocol: str, opts: EvalOptions) -> dict[str, dict]:
    """``{task name: run_folds result}`` for one model (see :func:`evaluate_many`)."""
    return evaluate_many({"model": encoders}, tasks, protocol, opts)["model"]


def save_report(results: dict[str, dict], out_dir: str | Path, name: str) -> dict[str, Any]:
    """JSON + Markdown table + confusion matrices; returns the paths (see :func:`write_results`)."""
    return write_results(results, out_dir, name)


def finetune_tasks(encoders: Encoders, tasks: list[Task], cfg, out_dir: str | Path | None = None,
                   progress: bool = True) -> dict[str, dict]:
    """``{task name: run_folds result}`` of end-to-end fine-tuning (xkd.eval.finetune) on every fold.

    cfg: a :class:`xkd.config.FinetuneConfig`. Audio+video tasks are not fine-tuned (one encoder at a time).
    """
    from xkd.eval.finetune import finetune

    results = {}
    for task in tasks:
        if task.modality == "av":
            log.warning("skipping %s: fine-tuning takes one modality", task.name)
            continue
        encoder = getattr(encoders, task.modality)
        if encoder is None:
            log.warning("skipping %s: the weights hold no %s encoder", task.name, task.modality)
            continue

        def one_fold(fold: Fold, task: Task = task, encoder=encoder) -> dict:
            train = Manifest([task.manifest[i] for i in fold.train_rows], task.manifest.root)
            test = Manifest([task.manifest[i] for i in fold.test_rows], task.manifest.root)
            fold_dir = None if out_dir is None else Path(out_dir) / task.name.replace(" ", "_") / str(fold)
            return finetune(encoder, train, test, task.label_column, task.modality, cfg, encoders.config.data,
                            out_dir=fold_dir, progress=progress)

        log.info("finetune: %s over %d fold(s)", task.name, len(task.folds))
        results[task.name] = run_folds(one_fold, task.folds)
    return results
