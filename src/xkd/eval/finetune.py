"""End-to-end fine-tuning (spec §A10): the pretrained encoder, dropout and a linear head, trained on labelled clips.

    from xkd.eval.finetune import finetune, finetune_recipe
    result = finetune(encoder, train, test, "label", "video", finetune_recipe("ucf101"), data_cfg)
    result["metrics"]["top1"], result["chosen_epoch"], result["history"]

Under ``torchrun`` every process trains on its share of each epoch (``batch_size`` is per process) and evaluates its
share of the val and test clips; all processes return the same result and only rank 0 writes files.

Protocol. ``val_fraction`` of the training rows (stratified by class; drawn at random for multi-label sets) is held out
as a validation split. After every epoch the model is scored on it (``val_clips`` uniform clips, one centre crop) and
the epoch with the best val top-1 (mAP for multi-label sets; ties go to the lower val loss, then to the earlier epoch)
is kept in memory. The test split is read once, at the end, by that epoch's weights only: ``test_clips`` uniform
clips x ``test_crops`` crops per video (video: the short side is scaled to the crop size, then left/centre/right
crops), class probabilities (softmax, or sigmoid for multi-label) averaged per video. ``val_fraction=0`` tests the
last epoch.

Training. AdamW with BEiT layer-wise lr decay (:func:`xkd.engine.optim.layer_decay_groups`); per-iteration linear
warm-up from ``warmup_start_lr`` then cosine to ``min_lr`` (``min_lr == lr`` gives the fixed FSD50K rate); constant
weight decay; soft-target cross-entropy with label smoothing and mixup / cutmix (:mod:`xkd.eval.mixup`), or binary
cross-entropy and mAP with ``multilabel``. The views are in :mod:`xkd.data.finetune_views`; clips are decoded with the
short side at ``max(data_cfg.resize_short, crop size)`` so crops never upsample. The recipe is a
:class:`xkd.config.FinetuneConfig`, the paper's are ``configs/finetune/*.yaml`` (:func:`finetune_recipe`).

Deviations from the released recipe (spec §A10), on purpose:

- RandAugment (``rand-m7-n4-mstd0.5-inc1``) is **not implemented**: the video train view has no RandAugment ops.
- A random-erasing box is the same in every frame of a clip (the spec does not say how the released code erases).
- Epochs are chosen on a split carved from the training set, never on test (the spec does not say how the paper
  picked its fine-tuning checkpoint).
- Inputs are trimmed at the end of each patched axis to a whole number of patches (e.g. a log-mel of 1 + S / hop
  frames); the paper's 4 s / 448-frame inputs lose nothing.
- The audio recipes use no label smoothing and no mixup (the spec lists them for video only), FSD50K uses the
  ESC-50 augmentations (the spec lists none for it) and ESC-50's cosine ends at 1e-6 (the spec gives no floor).
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
from contextlib import nullcontext
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from xkd.config import DataConfig, FinetuneConfig
from xkd.config_io import load_config, recipe_file, to_dict
from xkd.data.dataset import BadMediaReport, ClipDataset, collate_clips
from xkd.data.finetune_views import AudioTrainView, TestView, VideoTrainView
from xkd.data.logmel import LogMel
from xkd.data.manifest import Manifest
from xkd.data.workers import init_worker
from xkd.engine.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    gather_objects,
    init_distributed,
    is_dist,
)
from xkd.engine.optim import amp_context, build_optimizer, layer_decay_groups, make_grad_scaler, resolve_amp
from xkd.engine.schedules import cosine_schedule
from xkd.engine.weights import FINETUNE_FORMAT, FINETUNED_FILE, save_weights, weights_metadata
from xkd.eval.features import FeatureSet, group_mean, split_by_video
from xkd.eval.metrics import evaluate_clip_scores
from xkd.eval.mixup import mixup_cutmix
from xkd.models.encoder import Encoder, pooled

log = logging.getLogger(__name__)


def finetune_recipe(name: str | Path, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """A fine-tuning recipe: ``configs/finetune/<name>.yaml`` (``ucf101``, ``hmdb51``, ``k400``, ``esc50``,
    ``fsd50k``; spec §A10) or a YAML file, with ``KEY=VALUE`` overrides."""
    return load_config(FinetuneConfig, recipe_file("finetune", name), list(overrides))


# ---------------------------------------------------------------------------------------------------------------------
# model, loss


class Classifier(nn.Module):
    """encoder -> mean of the patch tokens [B, D] -> optional L2 norm -> dropout -> Linear -> logits [B, C].

    ``forward(x)``: x [B, 3, T, H, W] (video) or [B, 1, F, T] (audio). Each patched axis is trimmed at its end to a
    whole number of patches; the encoder resamples its position embedding to the input's token grid.
    """

    def __init__(self, encoder: Encoder, num_classes: int, dropout: float = 0.5, l2_normalize: bool = False):
        super().__init__()
        self.encoder = encoder
        self.l2_normalize = l2_normalize
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)  # MAE: a near-zero head leaves the first updates small
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        patch = self.encoder.tokenizer.patch
        x = x[(..., *(slice(0, size - size % p) for size, p in zip(x.shape[-len(patch):], patch)))]
        features = pooled(self.encoder(x))
        if self.l2_normalize:
            features = F.normalize(features, dim=-1)
        return self.head(self.dropout(features))


def soft_target_loss(logits: Tensor, targets: Tensor, multilabel: bool = False) -> Tensor:
    """Mean loss over the batch. logits, targets: [B, C] (soft targets from :func:`~xkd.eval.mixup.mixup_cutmix`).

    Single-label: cross-entropy ``-sum_c t_c log softmax(logits)_c``; multi-label: binary cross-entropy with logits.
    """
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets)
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


# ---------------------------------------------------------------------------------------------------------------------
# labels, splits, prediction


def _row_labels(manifest: Manifest, column: str, multilabel: bool) -> list[tuple[str, ...]]:
    if column == "label":
        rows = [r.labels for r in manifest]
    else:
        text = manifest.labels_of(column)
        rows = [tuple(s for s in (x.strip() for x in t.split(";")) if s) for t in text]
    if not multilabel and any(len(r) != 1 for r in rows):
        bad = next(m.path for m, r in zip(manifest, rows) if len(r) != 1)
        raise ValueError(f"{bad}: single-label fine-tuning needs exactly one '{column}' per row "
                         "(set multilabel=True for multi-label sets)")
    return rows


def label_targets(manifest: Manifest, column: str, classes: list[str], multilabel: bool) -> np.ndarray:
    """Class indices [N] (single-label) or multi-hot [N, C] (multi-label) of a manifest's rows in ``column``."""
    index = {name: i for i, name in enumerate(classes)}
    rows = _row_labels(manifest, column, multilabel)
    unknown = sorted({lab for r in rows for lab in r} - index.keys())
    if unknown:
        raise ValueError(f"labels {unknown[:5]} in column '{column}' are not among the training classes")
    if not multilabel:
        return np.array([index[r[0]] for r in rows], dtype=np.int64)
    hot = np.zeros((len(rows), len(classes)), dtype=np.uint8)
    for i, r in enumerate(rows):
        hot[i, [index[lab] for lab in r]] = 1
    return hot


def _subset(manifest: Manifest, rows: np.ndarray) -> Manifest:
    return Manifest([manifest[int(i)] for i in rows], manifest.root)


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: ClipDataset,
    batch_size: int,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    amp: str = "none",
    multilabel: bool = False,
    bad: BadMediaReport | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every item of a dataset whose items hold ``x: [V, ...]`` (V views, e.g. crops).

    Returns ``(rows [N], probs [N, C])`` in item order: the manifest row each item decoded and its softmax (sigmoid
    when ``multilabel``) probabilities averaged over its V views. Under ``torchrun`` each process scores every
    world-size-th item and the results are gathered on all processes. Bad media entries go to ``bad``.
    """
    model.eval()
    world, rank = (dist.get_world_size(), dist.get_rank()) if is_dist() else (1, 0)
    device = torch.device(device)
    indices = list(range(rank, len(dataset), world))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_clips, pin_memory=device.type == "cuda", worker_init_fn=init_worker)
    rows, probs = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        if bad is not None:
            bad.update(batch)
        x = batch["x"].to(device, non_blocking=True)  # [B, V, ...]
        with amp_context(device, amp):
            logits = model(x.flatten(0, 1)).float()  # [B * V, C]
        p = torch.sigmoid(logits) if multilabel else logits.softmax(dim=-1)
        probs.append(p.view(x.shape[0], x.shape[1], -1).mean(dim=1).double().cpu())
        rows.append(batch["index"])
    mine = (indices, torch.cat(rows).numpy(), torch.cat(probs).numpy()) if indices else None
    parts = [part for part in gather_objects(mine) if part is not None]  # a process may have had no items
    order = np.argsort(np.concatenate([part[0] for part in parts]), kind="stable")
    return np.concatenate([part[1] for part in parts])[order], np.concatenate([part[2] for part in parts])[order]


def score_predictions(rows: np.ndarray, probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Video-level metrics of clip probabilities [N, C] from the manifest ``rows`` [N] they came from (see
    :func:`~xkd.eval.metrics.evaluate_clip_scores`), plus ``loss``: the video-level negative log-likelihood
    (binary cross-entropy for multi-hot ``labels``) of the averaged probabilities."""
    video_labels = labels[rows]
    # only ids and labels matter here: the feature matrix is empty
    result = evaluate_clip_scores(probs, FeatureSet(np.empty((len(rows), 0)), rows, video_labels, classes))
    ids, video_probs = group_mean(probs, rows)
    p = np.clip(video_probs, 1e-12, 1 - 1e-12)
    if labels.ndim == 2:
        y = labels[ids]
        result["loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    else:
        result["loss"] = float(-np.mean(np.log(p[np.arange(len(ids)), labels[ids]])))
    result["class_names"] = list(classes)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# the protocol


def finetune(
    encoder: Encoder,
    train: Manifest,
    test: Manifest,
    label_column: str,
    modality: Literal["video", "audio"],
    cfg: FinetuneConfig,
    data_cfg: DataConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` on ``train`` and report its test metrics (the protocol in the module docstring).

    ``encoder`` is deep-copied (the caller's is not modified). ``data_cfg`` gives the clip length, fps, decoding short
    side, video normalisation, log-mel and the bad-media policy. With ``out_dir`` (rank 0) the chosen epoch's
    classifier is written to ``out_dir/finetuned.safetensors`` (part ``classifier``).

    Returns ``protocol``, ``metrics`` (top1, top5 with more than 5 classes, clip_top1; or mAP, clip_mAP), ``loss``,
    ``predictions`` and ``confusion`` (single-label), ``class_names``, ``history`` (per epoch: epoch (1-based),
    train_loss, lr and, with a val split, val_top1 / val_mAP and val_loss), ``chosen_epoch``, ``splits`` (rows of
    train / val / test), ``test_views_per_video``, ``bad_media`` and ``weights`` (a path or None).
    """
    if modality not in ("video", "audio"):
        raise ValueError(f"modality must be 'video' or 'audio', got {modality!r}")
    if len(encoder.tokenizer.patch) != (3 if modality == "video" else 2):
        raise ValueError(f"the encoder's tokenizer (patch {encoder.tokenizer.patch}) does not take {modality} input")
    started_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(cfg.device)
    try:
        result = _finetune(encoder, train, test, label_column, modality, cfg, data_cfg, out_dir, progress, info)
        barrier()  # every process is done communicating before any of them tears the group down
        return result
    finally:
        if started_group:
            gc.collect()  # free the DDP wrapper, which holds the process group, before the group is destroyed
            cleanup()


def _finetune(encoder, train, test, label_column, modality, cfg, data_cfg, out_dir, progress, info) -> dict[str, Any]:
    device = info.device
    show = progress and info.is_main

    # ---------------------------------------------------------------- labels and splits
    classes = sorted({lab for r in _row_labels(train, label_column, cfg.multilabel) for lab in r})
    train_labels = label_targets(train, label_column, classes, cfg.multilabel)
    test_labels = label_targets(test, label_column, classes, cfg.multilabel)
    if cfg.val_fraction > 0:
        # a feature-less set with one "video" per row: the split needs only ids and labels
        rows = FeatureSet(np.empty((len(train), 0)), np.arange(len(train)), train_labels, classes)
        fit, val = split_by_video(rows, cfg.val_fraction, cfg.seed)
        fit_rows, val_rows = fit.video_ids, val.video_ids
    else:
        fit_rows, val_rows = np.arange(len(train)), np.empty(0, dtype=np.int64)
    fit_labels = train_labels[fit_rows]

    # ---------------------------------------------------------------- data
    crop = None
    if modality == "video":
        patch = encoder.tokenizer.patch
        crop = cfg.video_view.crop_size or encoder.tokenizer.grid[1] * patch[1]
        if crop % patch[1] or crop % patch[2]:
            raise ValueError(f"crop_size {crop} is not a multiple of the encoder's patch {patch[1:]}")
    logmel = LogMel(data_cfg.logmel)
    sample_rate = data_cfg.logmel.sample_rate

    def dataset(manifest: Manifest, transform, clips: int, sampling: str) -> ClipDataset:
        return ClipDataset(
            manifest, clip_duration=data_cfg.clip_duration, fps=data_cfg.video_fps,
            short_side=max(data_cfg.resize_short, crop) if modality == "video" else None, sample_rate=sample_rate,
            need_video=modality == "video", need_audio=modality == "audio", missing_audio="skip",
            bad_media=data_cfg.bad_media, clips_per_video=clips, clip_sampling=sampling, transform=transform,
            seed=cfg.seed,
        )

    if modality == "video":
        train_view = VideoTrainView(cfg, crop, data_cfg.video_mean, data_cfg.video_std)
    else:
        train_view = AudioTrainView(cfg, logmel, sample_rate)
    train_set = dataset(_subset(train, fit_rows), train_view, 1, "random")
    val_set = None
    if len(val_rows):
        val_view = TestView(modality, 1, crop, data_cfg.video_mean, data_cfg.video_std, logmel)
        val_set = dataset(_subset(train, val_rows), val_view, cfg.val_clips, "uniform")
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=collate_clips, pin_memory=device.type == "cuda", worker_init_fn=init_worker,
                        drop_last=len(sampler) >= cfg.batch_size)
    steps_per_epoch = len(loader) // cfg.accum_steps
    if steps_per_epoch < 1:
        raise ValueError(f"{len(loader)} batches per epoch cannot fill accum_steps={cfg.accum_steps}")
    micro_steps = steps_per_epoch * cfg.accum_steps
    lr_schedule = cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs * steps_per_epoch,
                                  cfg.warmup_epochs * steps_per_epoch, cfg.warmup_start_lr)
    bad = BadMediaReport()
    amp = resolve_amp(cfg.amp, device, cfg.force_amp)
    eval_args = dict(batch_size=cfg.batch_size, device=device, num_workers=cfg.num_workers, amp=amp,
                     multilabel=cfg.multilabel, bad=bad, progress=show)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        # ------------------------------------------------------------ model and optimiser
        classifier = Classifier(copy.deepcopy(encoder), len(classes), cfg.dropout, cfg.l2_normalize_features)
        classifier = classifier.to(device).requires_grad_(True)
        groups = layer_decay_groups(classifier, cfg.lr, cfg.weight_decay, cfg.layer_decay)
        optimizer = build_optimizer(groups, cfg.lr, cfg.betas, cfg.weight_decay)
        scaler = make_grad_scaler(amp, device)
        model: nn.Module = classifier
        if info.world_size > 1:
            model = DistributedDataParallel(classifier, device_ids=[device.index] if device.type == "cuda" else None)
        mix_generator = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, 11, info.rank])
                                                          .generate_state(1)[0]))

        # ------------------------------------------------------------ epochs
        history: list[dict[str, Any]] = []
        best_key, best_state, chosen_epoch = None, None, cfg.epochs
        metric = "mAP" if cfg.multilabel else "top1"
        step = 0
        for epoch in range(cfg.epochs):
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)
            model.train()
            loss_sum, count = 0.0, 0
            bar = tqdm(loader, total=micro_steps, desc=f"fine-tune {epoch + 1}/{cfg.epochs}", disable=not show,
                       leave=False)
            for micro, batch in enumerate(bar):
                if micro == micro_steps:
                    break
                bad.update(batch)
                if micro % cfg.accum_steps == 0:
                    lr = float(lr_schedule[step])
                    for g in optimizer.param_groups:
                        g["lr"] = lr * g["lr_scale"]
                y = torch.as_tensor(fit_labels[batch["index"].numpy()])
                x, targets = mixup_cutmix(batch["x"].to(device, non_blocking=True), y.to(device), len(classes),
                                          cfg.mixup, cfg.cutmix, cfg.label_smoothing, mix_generator, cfg.mixup_prob,
                                          cfg.switch_prob)
                last = (micro + 1) % cfg.accum_steps == 0
                with nullcontext() if last or info.world_size == 1 else model.no_sync():
                    with amp_context(device, amp):
                        logits = model(x)
                    loss = soft_target_loss(logits.float(), targets, cfg.multilabel)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise FloatingPointError(f"fine-tuning loss is {value} at epoch {epoch + 1}, step {step}")
                    scaler.scale(loss / cfg.accum_steps).backward()
                if last:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                loss_sum, count = loss_sum + value, count + 1
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
            train_loss = float(all_reduce_mean(torch.tensor(loss_sum / count, device=device)).item())
            entry = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr}
            if val_set is not None:
                val_rows_seen, val_probs = predict(classifier, val_set, desc="val", **eval_args)
                scores = score_predictions(val_rows_seen, val_probs, train_labels[val_rows], classes)
                entry[f"val_{metric}"], entry["val_loss"] = scores["metrics"][metric], scores["loss"]
                key = (entry[f"val_{metric}"], -entry["val_loss"])
                if best_key is None or key > best_key:
                    best_key, chosen_epoch = key, epoch + 1
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in classifier.state_dict().items()}
            history.append(entry)
            if show:
                tqdm.write("fine-tune " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in entry.items()))

        # ------------------------------------------------------------ test, once, with the chosen epoch
        if best_state is not None:
            classifier.load_state_dict(best_state)
        test_view = TestView(modality, cfg.test_crops if modality == "video" else 1, crop, data_cfg.video_mean,
                             data_cfg.video_std, logmel)
        test_set = dataset(test, test_view, cfg.test_clips, "uniform")
        test_rows_seen, test_probs = predict(classifier, test_set, desc="test", **eval_args)
        result = score_predictions(test_rows_seen, test_probs, test_labels, classes)

    all_bad = BadMediaReport()  # every process's bad files (each saw only its share of the clips)
    for files, replacements in gather_objects((bad.files, bad.replacements)):
        all_bad.files.update(files)
        all_bad.replacements += replacements
    weights = None
    if out_dir is not None and info.is_main:
        meta = weights_metadata(FINETUNE_FORMAT, to_dict(cfg), modality=modality, label_column=label_column,
                                classes=json.dumps(classes), chosen_epoch=str(chosen_epoch))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        weights = save_weights(Path(out_dir) / FINETUNED_FILE, {"classifier": classifier.state_dict()}, meta)
    weights = broadcast_object(weights)
    selection = "epoch chosen on val" if val_set is not None else "last epoch (no val split)"
    result.update(
        protocol=f"fine-tune ({modality}), {selection}",
        history=history,
        chosen_epoch=chosen_epoch,
        splits={"train": len(fit_rows), "val": len(val_rows), "test": len(test)},
        test_views_per_video=cfg.test_clips * (cfg.test_crops if modality == "video" else 1),
        bad_media={"files": all_bad.files, "counts": all_bad.counts(), "summary": all_bad.summary()},
        weights=weights,
    )
    log.info("fine-tune (%s): chosen epoch %d, test %s", modality, chosen_epoch, result["metrics"])
    return result
