"""The supervised ceiling: what a pretraining recipe's encoders learn about a label in the same number of steps when the
label itself teaches them (docs/REPRODUCTION.md reports every objective's gain as a fraction of this one's).

The video and the audio student of the recipe (same architecture, views, masking, optimiser, schedule, batch and
steps as ``xkd pretrain``) are trained with cross-entropy on a manifest column (default ``digit``) through a linear
head on the mean of the patch tokens, then saved as an xkd weights file (students) that ``xkd eval`` reads. It is the
ceiling of cross-modal distillation: a perfect audio teacher would hand the video student exactly the digit. Only the
training split's labels are read. ``tools/supervised_ceiling.py`` is its command line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from xkd.config import PretrainConfig
from xkd.config_io import from_dict, to_dict
from xkd.data.dataset import collate_clips
from xkd.data.views import pretrain_dataset, training_frames
from xkd.data.workers import init_worker, threads_beside_workers
from xkd.engine.optim import apply_schedules, build_optimizer, param_groups
from xkd.engine.pretrain import config_changes
from xkd.engine.schedules import cosine_schedule
from xkd.engine.weights import PRETRAIN_FORMAT, WEIGHTS_FILE, encoder_part, load_weights, save_weights, weights_metadata
from xkd.models.encoder import audio_encoder, pooled, video_encoder


def train(
    cfg: PretrainConfig, column: str, steps: int, masked: bool, progress: bool = True
) -> tuple[dict[str, nn.Module], dict[str, list[float]]]:
    """The video and audio encoders of ``cfg`` after ``steps`` supervised steps on ``column`` ({modality: encoder}),
    and each modality's cross-entropy per step ({modality: [steps]})."""
    torch.manual_seed(cfg.run.seed)
    dataset = pretrain_dataset(cfg)
    names = dataset.manifest.labels_of(column)
    classes = sorted(set(names))
    labels = torch.tensor([classes.index(n) for n in names])
    encoders = {"video": video_encoder(cfg.model), "audio": audio_encoder(cfg.model)}
    heads = {m: nn.Linear(cfg.model.encoder.dim, len(classes)) for m in encoders}
    ratios = {"video": cfg.loss.video_mask_ratio, "audio": cfg.loss.audio_mask_ratio} if masked else {}
    groups = param_groups({**encoders, **{f"{m}_head": h for m, h in heads.items()}}, cfg.optim.decay_embeddings)
    optimizer = build_optimizer(groups, cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay)
    warmup = round(steps * cfg.optim.warmup_epochs / cfg.optim.epochs)
    lrs = cosine_schedule(cfg.optim.lr, cfg.optim.final_lr, steps, warmup)
    generator = torch.Generator().manual_seed(cfg.run.seed)
    loader_seed = 0
    history: dict[str, list[float]] = {m: [] for m in encoders}
    step, bar = 0, tqdm(total=steps, desc="supervised", unit="step", disable=not progress)
    while step < steps:
        dataset.set_epoch(loader_seed)
        loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.data.num_workers, collate_fn=collate_clips, worker_init_fn=init_worker,
                            generator=torch.Generator().manual_seed(cfg.run.seed + loader_seed))
        loader_seed += 1
        for batch in loader:
            if step == steps:
                break
            apply_schedules(optimizer, float(lrs[step]), cfg.optim.weight_decay)
            target = labels[batch["index"]]
            inputs = {"video": training_frames(batch, cfg.data, torch.device("cpu"))[0], "audio": batch["audio"][0]}
            losses = {}
            for m, enc in encoders.items():
                out = enc(inputs[m], mask_ratio=ratios.get(m, 0.0), generator=generator)
                losses[m] = F.cross_entropy(heads[m](pooled(out)), target)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            for m, v in losses.items():
                history[m].append(v.item())
            step += 1
            bar.update(1)
            bar.set_postfix({m: f"{values[-1]:.3f}" for m, values in history.items()})
    bar.close()
    return encoders, history


def save(encoders: dict[str, nn.Module], cfg: PretrainConfig, out: Path, steps: int, how: str) -> Path:
    """Write the encoders as the students of an xkd weights file, ``out/weights.safetensors``."""
    out.mkdir(parents=True, exist_ok=True)
    parts = {encoder_part(m, "student"): enc.state_dict() for m, enc in encoders.items()}
    meta = weights_metadata(PRETRAIN_FORMAT, to_dict(cfg), step=str(steps), supervised=how)
    return save_weights(out / WEIGHTS_FILE, parts, meta)


def supervised_or_reuse(cfg: PretrainConfig, out: str | Path, steps: int, column: str = "digit", masked: bool = False,
                        progress: bool = True) -> Path:
    """Train the ceiling of ``cfg`` on ``column`` for ``steps`` steps into ``out`` (whole views unless ``masked``)
    unless ``out`` already holds the same one; returns its weights file. One of another config is an error."""
    out = Path(out)
    cfg = replace(cfg, optim=replace(cfg.optim, steps=steps))
    how = f"{column}, {'masked' if masked else 'whole'} views"
    path = out / WEIGHTS_FILE
    if path.is_file():
        _, meta = load_weights(path, parts=())
        changed = config_changes(from_dict(PretrainConfig, json.loads(meta["config"])), cfg)
        if meta.get("supervised") == how and meta.get("step") == str(steps) and not changed:
            return path
        raise FileExistsError(f"{out} holds another supervised run ({meta.get('supervised')}, {meta.get('step')} "
                              f"steps{', ' + ', '.join(changed) + ' differ' if changed else ''}); choose another folder")
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_beside_workers(cfg.data.num_workers))
    try:
        encoders, _ = train(cfg, column, steps, masked, progress)
    finally:
        torch.set_num_threads(threads)
    return save(encoders, cfg, out, steps, how)
