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

Training. AdamW with BEiT layer-wise lr decay (:func:`layer_decay_groups`); per-iteration linear warm-up from
``warmup_start_lr`` then cosine to ``min_lr`` (``min_lr == lr`` gives the fixed FSD50K rate); constant weight decay;
soft-target cross-entropy with label smoothing and mixup / cutmix (:mod:`xkd.eval.mixup`), or binary cross-entropy
and mAP with ``multilabel``. Train views: video RRC (area ``crop_scale``, aspect ``crop_ratio``), flip, normalise,
random erasing; audio gain ``1 -+ gain_jitter``, log-mel, BYOL-A random resize crop, time warp, frequency and time
masks. Clips are decoded with the short side at ``max(data_cfg.resize_short, crop_size)`` so crops never upsample.

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
from dataclasses import asdict, dataclass, replace
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

from xkd.config import AudioViewConfig, DataConfig, VideoViewConfig
from xkd.data.audio_views import AudioView, EvalAudioView
from xkd.data.dataset import BadMediaReport, ClipDataset, collate_clips
from xkd.data.logmel import LogMel
from xkd.data.manifest import Manifest
from xkd.data.video_views import EvalVideoView, VideoView
from xkd.data.workers import init_worker
from xkd.engine.weights import FINETUNE_FORMAT, FINETUNED_FILE, save_weights, weights_metadata
from xkd.engine.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    gather_objects,
    init_distributed,
    is_dist,
)
from xkd.engine.optim import EMBEDDING_PARAMS, amp_context, build_optimizer, make_grad_scaler, resolve_amp
from xkd.engine.schedules import cosine_schedule
from xkd.eval.features import FeatureSet, group_mean, split_by_video
from xkd.eval.metrics import evaluate_clip_scores
from xkd.eval.mixup import mixup_cutmix
from xkd.models.encoder import Encoder, pooled

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """One fine-tuning recipe. The defaults are the UCF101 / Kinetics-400 video recipe of spec §A10, except
    ``crop_size`` (None = the encoder's configured frame size; the paper fine-tunes video at 224, see
    :func:`finetune_recipe`)."""

    # optimisation
    epochs: int = 100
    batch_size: int = 24  # per process and micro-step
    accum_steps: int = 1  # micro-batches per optimiser step
    lr: float = 5e-4
    min_lr: float = 1e-6  # the cosine ends here; min_lr == lr keeps the rate fixed after warm-up
    warmup_epochs: int = 5
    warmup_start_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.45  # BEiT layer-wise lr decay (1 = off)
    # targets and head
    label_smoothing: float = 0.1
    mixup: float = 0.6  # Beta alpha; 0 = off
    cutmix: float = 0.5  # Beta alpha; 0 = off
    mixup_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # probability of cutmix rather than mixup when both are on
    dropout: float = 0.5  # before the linear head
    l2_normalize_features: bool = False  # ESC-50: L2-normalise the pooled features, then dropout
    multilabel: bool = False  # FSD50K: binary cross-entropy and mAP
    # video train view
    crop_size: int | None = None
    crop_scale: tuple[float, float] = (0.2, 0.766)  # RRC area fraction
    crop_ratio: tuple[float, float] = (0.75, 1.333)  # RRC aspect ratio w / h
    p_flip: float = 0.5
    random_erase: float = 0.25  # probability of erasing one box (all frames alike)
    # audio train view
    gain_jitter: float = 0.2  # waveform gain ~U(1 - g, 1 + g)
    audio_resize_crop: bool = True  # BYOL-A random resize crop of the log-mel
    time_warp: int = 20  # SpecAugment time-warp window in frames; 0 = off
    freq_masks: int = 2
    freq_mask_width: int = 10  # each mask covers U{0..width} mel bins
    time_masks: int = 2
    time_mask_width: int = 20  # each mask covers U{0..width} frames
    # evaluation
    test_clips: int = 3
    test_crops: int = 3  # video only: 1 (centre) or 3 (left / centre / right)
    val_clips: int = 1
    val_fraction: float = 0.1  # of the training rows; 0 = no val split, the last epoch is tested
    # run
    amp: Literal["none", "bf16", "fp16"] = "none"  # falls back to fp32 where the device is not fast in it
    force_amp: bool = False  # keep amp even where a probe finds it slower than fp32
    seed: int = 0
    num_workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "accum_steps", "test_clips", "val_clips")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be >= 1")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {self.test_crops}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.crop_size is not None and self.crop_size < 1:
            raise ValueError(f"crop_size must be positive or None, got {self.crop_size}")


_VIDEO_RECIPE = FinetuneConfig(crop_size=224)
_ESC50_RECIPE = FinetuneConfig(
    epochs=100, batch_size=64, lr=1e-4, warmup_epochs=10, weight_decay=0.005, layer_decay=0.65, label_smoothing=0.0,
    mixup=0.0, cutmix=0.0, l2_normalize_features=True, test_crops=1,
)
FINETUNE_RECIPES = {
    "ucf101": _VIDEO_RECIPE,
    "k400": _VIDEO_RECIPE,
    "hmdb51": replace(_VIDEO_RECIPE, lr=1e-4, warmup_epochs=20, layer_decay=0.75, mixup=1.0, cutmix=1.0),
    "esc50": _ESC50_RECIPE,
    "fsd50k": replace(
        _ESC50_RECIPE, epochs=30, batch_size=128, min_lr=1e-4, warmup_epochs=5, warmup_start_lr=1e-6,
        weight_decay=1e-5, dropout=0.3, l2_normalize_features=False, multilabel=True, test_clips=8,
    ),
}


def finetune_recipe(name: str, **overrides: Any) -> FinetuneConfig:
    """The spec §A10 recipe ``name`` (``ucf101``, ``hmdb51``, ``k400``, ``esc50``, ``fsd50k``) with ``overrides``."""
    if name not in FINETUNE_RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {name!r}; choose one of {sorted(FINETUNE_RECIPES)}")
    return replace(FINETUNE_RECIPES[name], **overrides)


# ---------------------------------------------------------------------------------------------------------------------
# model, parameter groups, loss


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


def layer_decay_groups(
    classifier: Classifier, base_lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with BEiT layer-wise learning-rate decay.

    Layer ids: tokenizer, ``cls_token`` and ``pos_embed`` 0; block i -> i + 1; the rest (final norm, head) the top
    layer L + 1, for L blocks. A group's ``lr_scale`` is ``layer_decay ** (L + 1 - layer_id)`` and its ``lr`` is
    ``base_lr * lr_scale``. Biases, 1-D parameters, ``cls_token`` and ``pos_embed`` get no weight decay.
    Each group holds ``params``, ``param_names``, ``layer_id``, ``lr_scale``, ``lr``, ``weight_decay`` and
    ``apply_decay``; groups are ordered by (layer, decay).
    """
    encoder = classifier.encoder
    depth = len(encoder.blocks.blocks)
    layer_of = {id(p): i + 1 for i, block in enumerate(encoder.blocks.blocks) for p in block.parameters()}
    layer_of.update({id(p): 0 for p in (*encoder.tokenizer.parameters(), encoder.cls_token, encoder.pos_embed)})
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in classifier.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_of.get(id(p), depth + 1)
        decay = not (p.ndim <= 1 or name.endswith(".bias") or name.rsplit(".", 1)[-1] in EMBEDDING_PARAMS)
        if (layer, decay) not in groups:
            scale = layer_decay ** (depth + 1 - layer)
            groups[layer, decay] = {
                "params": [], "param_names": [], "layer_id": layer, "lr_scale": scale, "lr": base_lr * scale,
                "weight_decay": weight_decay if decay else 0.0, "apply_decay": decay,
            }
        groups[layer, decay]["params"].append(p)
        groups[layer, decay]["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


def soft_target_loss(logits: Tensor, targets: Tensor, multilabel: bool = False) -> Tensor:
    """Mean loss over the batch. logits, targets: [B, C] (soft targets from :func:`~xkd.eval.mixup.mixup_cutmix`).

    Single-label: cross-entropy ``-sum_c t_c log softmax(logits)_c``; multi-label: binary cross-entropy with logits.
    """
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets)
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


# ---------------------------------------------------------------------------------------------------------------------
# views


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_erasing(
    video: Tensor,
    p: float,
    generator: torch.Generator,
    area: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> Tensor:
    """With probability ``p``, fill one box with N(0, 1) noise in every frame (timm's ``RandomErasing``, mode
    "pixel", on normalised clips). video: [C, T, H, W]; the box has area ~U(area) of a frame and log-uniform aspect
    h / w in ``ratio`` (10 tries, else nothing is erased). Returns a new tensor when erasing."""
    if torch.rand((), generator=generator).item() >= p:
        return video
    c, t, height, width = video.shape
    for _ in range(10):
        target = height * width * _uniform(*area, generator)
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
        h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            top, left = _randint(0, height - h, generator), _randint(0, width - w, generator)
            out = video.clone()
            out[..., top : top + h, left : left + w] = torch.randn((c, t, h, w), generator=generator)
            return out
    return video


def time_warp(spec: Tensor, window: int, generator: torch.Generator) -> Tensor:
    """SpecAugment time warp. spec: [C, F, T] -> [C, F, T]: a point ``c ~ U{window..T-1-window}`` moves to
    ``c + U{-window..window}``; the frames on each side are stretched linearly to fill their new span. Unchanged when
    ``window == 0`` or the spectrogram has at most ``2 * window + 1`` frames."""
    n_time = spec.shape[-1]
    if window <= 0 or n_time <= 2 * window + 1:
        return spec
    centre = _randint(window, n_time - 1 - window, generator)
    target = min(max(centre + _randint(-window, window, generator), 1), n_time - 1)
    n_freq = spec.shape[-2]
    left = F.interpolate(spec[None, ..., :centre], size=(n_freq, target), mode="bilinear", align_corners=False)
    right = F.interpolate(spec[None, ..., centre:], size=(n_freq, n_time - target), mode="bilinear",
                          align_corners=False)
    return torch.cat([left, right], dim=-1)[0]


def mask_bands(spec: Tensor, axis: int, count: int, max_width: int, generator: torch.Generator) -> Tensor:
    """SpecAugment masks: ``count`` bands of U{0..max_width} bins along ``axis`` (-2 frequency, -1 time), each at a
    uniform position, set to 0 (the mean of a normalised log-mel). spec: [C, F, T] -> a new [C, F, T]."""
    out = spec.clone()
    size = spec.shape[axis]
    for _ in range(count):
        width = _randint(0, min(max_width, size), generator)
        start = _randint(0, size - width, generator)
        out.narrow(axis, start, width).zero_()
    return out


class VideoTrainView:
    """``view(clip, generator) -> {"x": [3, T, S, S]}``: RRC -> flip -> normalise -> random erasing (no jitter)."""

    def __init__(self, cfg: FinetuneConfig, crop_size: int, mean, std):
        view_cfg = VideoViewConfig(crop_size=crop_size, crop_scale=cfg.crop_scale, crop_ratio=cfg.crop_ratio,
                                   p_flip=cfg.p_flip, p_color=0.0)
        self.view = VideoView(view_cfg, mean, std)
        self.random_erase = cfg.random_erase

    def __call__(self, clip: Any, generator: torch.Generator) -> dict[str, Tensor]:
        return {"x": random_erasing(self.view(clip.video, generator), self.random_erase, generator)}


class AudioTrainView:
    """``view(clip, generator) -> {"x": [1, F, T]}``: gain -> log-mel -> random resize crop -> time warp ->
    frequency masks -> time masks."""

    def __init__(self, cfg: FinetuneConfig, logmel: LogMel, sample_rate: int):
        view_cfg = AudioViewConfig(duration=None, gain=(1.0 - cfg.gain_jitter, 1.0 + cfg.gain_jitter),
                                   random_resize_crop=cfg.audio_resize_crop)
        self.view = AudioView(view_cfg, logmel, sample_rate)
        self.cfg = cfg

    def __call__(self, clip: Any, generator: torch.Generator) -> dict[str, Tensor]:
        cfg = self.cfg
        x = time_warp(self.view(clip.audio, generator), cfg.time_warp, generator)
        x = mask_bands(x, -2, cfg.freq_masks, cfg.freq_mask_width, generator)
        return {"x": mask_bands(x, -1, cfg.time_masks, cfg.time_mask_width, generator)}


class TestView:
    """Deterministic evaluation views of one clip: ``view(clip, generator=None) -> {"x": [V, ...]}``.

    Video: the short side scaled to ``crop_size``, then V = 1 centre crop or V = 3 left / centre / right crops,
    each [3, T, S, S]. Audio: V = 1 log-mel [1, F, T] of the whole window.
    """

    def __init__(self, modality: str, crops: int, crop_size: int | None, mean, std, logmel: LogMel | None):
        self.modality = modality
        self.crops = crops
        if modality == "video":
            self.view = EvalVideoView(crop_size, mean, std, short_side=crop_size, three_crop=crops == 3)
        else:
            self.view = EvalAudioView(logmel)

    def __call__(self, clip: Any, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x = self.view(clip.video if self.modality == "video" else clip.audio)
        return {"x": x if self.crops == 3 else x.unsqueeze(0)}


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
        crop = cfg.crop_size if cfg.crop_size is not None else encoder.tokenizer.grid[1] * patch[1]
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
        meta = weights_metadata(FINETUNE_FORMAT, asdict(cfg), modality=modality, label_column=label_column,
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
