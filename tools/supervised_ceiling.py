"""What the pretraining budget allows a recipe's encoders to learn about a label when the label itself teaches them.

Trains the video and the audio student of a pretraining recipe (same architecture, views, masking, optimiser,
schedule, batch and steps as ``xkd pretrain``) with cross-entropy on a manifest column (default ``digit``) through a
linear head on the mean of the patch tokens, then saves them as an xkd weights file (students) that ``xkd eval`` reads.
It is the ceiling of cross-modal distillation: a perfect audio teacher would hand the video student exactly the digit.

    python tools/supervised_ceiling.py --config configs/pretrain/xkd_avdigits_v2_cpu.yaml --steps 400 --out RUN
    xkd eval ridge --weights RUN --dataset av-digits:data/av-digits-v2 --split val --train-clips 1 --test-clips 1

``--no-mask`` trains on whole views instead of the students' masked ones. Only the training split's labels are read.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig
from xkd.config_io import load_config
from xkd.data.dataset import collate_clips
from xkd.data.views import pretrain_dataset
from xkd.data.workers import init_worker, threads_beside_workers
from xkd.engine.optim import apply_schedules, build_optimizer, param_groups
from xkd.engine.schedules import cosine_schedule
from xkd.engine.weights import PRETRAIN_FORMAT, WEIGHTS_FILE, encoder_part, save_weights, weights_metadata
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
            inputs = {"video": batch["frames"][0], "audio": batch["audio"][0]}
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
    meta = weights_metadata(PRETRAIN_FORMAT, dataclasses.asdict(cfg), step=str(steps), supervised=how)
    return save_weights(out / WEIGHTS_FILE, parts, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", required=True, help="a pretraining recipe (YAML)")
    parser.add_argument("--steps", type=int, required=True, help="optimiser steps (the schedule spans them)")
    parser.add_argument("--column", default="digit", help="the manifest column that teaches")
    parser.add_argument("--no-mask", action="store_true", help="whole views instead of the students' masked ones")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--out", required=True, help="run folder: weights.safetensors is written there")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")

    cfg = load_config(PretrainConfig, args.config, args.set)
    torch.set_num_threads(threads_beside_workers(cfg.data.num_workers))
    start = time.perf_counter()
    encoders, history = train(cfg, args.column, args.steps, masked=not args.no_mask, progress=not args.no_progress)
    path = save(encoders, cfg, Path(args.out), args.steps, f"{args.column}, {'whole' if args.no_mask else 'masked'} views")
    last = ", ".join(f"{m} {sum(v[-20:]) / len(v[-20:]):.3f}" for m, v in history.items())
    print(f"{args.steps} supervised steps in {time.perf_counter() - start:.0f} s (cross-entropy over the last 20: {last})"
          f" -> {path}")


if __name__ == "__main__":
    main()
