"""Train CCL (or its CE-only baseline) on a labelled manifest, select the checkpoint on validation, score it on test.

    xkd train-ccl --config configs/ccl/avdigits_cpu.yaml --set loss.variant=ccl-a --out runs/ccl/a

One process on the CPU or one GPU. The run folder gets ``config.yaml``, ``metrics.csv`` (+ TensorBoard),
``checkpoints/step_*.pt`` (full state, for ``--resume``), ``best.safetensors`` (the weights with the best validation
top-1) and ``results.json`` (validation and test metrics of that checkpoint, run time).

Fixes over the released code (spec §B6, §B8): the checkpoint is selected on the validation split, never on test; the
composition modules follow the learning-rate schedule too (``optim.schedule_compositions``); the image teacher runs
without autograd.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from xkd.ccl.config import CCLConfig
from xkd.ccl.data import TrainClips, class_names, clip_windows, label_budget, load_split, predecode_windows
from xkd.ccl.evaluate import predict, recognition, retrieval
from xkd.ccl.clip_cache import TeacherBank, default_cache_dir, standardization, teacher_features
from xkd.ccl.method import CCL
from xkd.ccl.r2plus1d import R2Plus1D
from xkd.ccl.teacher_kinds import build_teacher
from xkd.ccl.teachers import Teacher
from xkd.config_io import dump_config, from_dict, to_dict
from xkd.data.dataset import collate_clips
from xkd.data.manifest import Manifest
from xkd.data.sampler import StepBatchSampler
from xkd.data.workers import init_worker
from xkd.engine import checkpoint as ckpt
from xkd.engine.distributed import init_distributed
from xkd.engine.logger import RunLogger
from xkd.engine.loss_terms import NonFiniteLossError, first_nonfinite, terms_to_host
from xkd.engine.schedules import step_decay
from xkd.engine.weights import CCL_FORMAT, CCL_WEIGHTS_FILE, load_weights, save_weights, weights_metadata

log = logging.getLogger(__name__)
RESULTS = "results.json"
STANDARDIZE_CLIPS = 512  # training clips whose clean frames estimate an augmented image teacher's statistics
UNLABELLED_SEED = 1_000_003  # the unlabelled clips' windows and views: seed + this, apart from the labelled ones


def cache_root(cfg: CCLConfig) -> Path:
    """Where teacher features and preloaded frames are cached (``run.cache_dir``, else the user cache)."""
    return Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()


def build_student(cfg: CCLConfig, num_classes: int) -> R2Plus1D:
    s = cfg.student
    return R2Plus1D(num_classes, s.depth, s.one_block_per_stage, s.widths, cfg.data.video_mean, cfg.data.video_std)


def mapped_teachers(cfg: CCLConfig) -> frozenset[str]:
    """The teachers whose pair losses see x_v through a learned linear map even when D_t = D_v (``loss.projection``):
    all with "linear", the standardised ones with "auto", none with "identity"."""
    rule = cfg.loss.projection
    return frozenset(m for m, t in cfg.teachers().items() if rule == "linear" or (rule == "auto" and t.standardize))


def lr_at(cfg: CCLConfig, epoch: int) -> float:
    """The learning rate of ``epoch``: ``optim.lr`` decayed by ``optim.gamma`` at each of ``optim.milestones``."""
    return step_decay(cfg.optim.lr, cfg.optim.gamma, cfg.optim.milestones, epoch)


def _set_lr(optimizer: torch.optim.Optimizer, cfg: CCLConfig, epoch: int) -> float:
    lr = lr_at(cfg, epoch)
    for group in optimizer.param_groups:
        scheduled = group["role"] == "video" or cfg.optim.schedule_compositions
        group["lr"] = lr if scheduled else cfg.optim.lr
    return lr


def weights_parts(model: CCL) -> dict[str, dict[str, torch.Tensor]]:
    """Clean weights: ``student`` (R(2+1)D with its classifier), ``compositions`` and ``projections`` when present."""
    parts = {"student": model.student.state_dict(), "compositions": model.compositions.state_dict(),
             "projections": model.projections.state_dict()}
    return {name: sd for name, sd in parts.items() if sd}


def load_student(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[R2Plus1D, CCLConfig, list[str]]:
    """The selected student of a finished run: (model in eval mode, its config, class names)."""
    run_dir = Path(run_dir)
    parts, meta = load_weights(run_dir / CCL_WEIGHTS_FILE, parts=["student"])
    cfg = from_dict(CCLConfig, json.loads(meta["config"]), source=str(run_dir / CCL_WEIGHTS_FILE))
    names = json.loads(meta["class_names"])
    student = build_student(cfg, len(names))
    student.load_state_dict(parts["student"])
    return student.to(device).eval(), cfg, names


class _TeacherInputs:
    """Per step, each teacher's (x_t [B, D_t], available [B]) for the batch (spec §B2)."""

    def __init__(self, cfg: CCLConfig, teachers: dict[str, Teacher], banks: dict[str, TeacherBank],
                 stats: dict[str, tuple[torch.Tensor, float]], device: torch.device):
        self.cfg = cfg
        self.teachers = teachers
        self.banks = banks
        self.stats = {m: (mean.to(device), scale) for m, (mean, scale) in stats.items()}
        self.device = device

    def __call__(self, video: torch.Tensor, windows: torch.Tensor, generator: torch.Generator):
        out = {}
        frame = int(torch.randint(video.shape[2], (), generator=generator))  # one frame index for the whole batch
        for m, teacher in self.teachers.items():
            if m == "audio":
                x, ok = self.banks[m].select(windows, self.cfg.audio_teacher.steps, generator)
            elif m in self.banks:  # image teacher, cached clean frames
                x, ok = self.banks[m].frame(windows, frame)
            else:  # image teacher on frame `frame` of the student's augmented clip
                x = teacher.features(video[:, :, frame])
                ok = torch.ones(len(windows), dtype=torch.bool)
            x = x.to(self.device)
            if m in self.stats:
                mean, scale = self.stats[m]
                x = (x - mean) / scale
            out[m] = (x, ok.to(self.device))
        return out


class _UnlabelledBatches:
    """The unlabelled clips beside each labelled batch (``data.unlabelled: distill``): global step ``s`` takes batch
    ``s mod R`` of round ``s // R`` (R = the batches in one pass over the unlabelled videos, each round a new
    permutation seeded by (seed, round)), so the stream is a function of the step and a resumed run continues it."""

    def __init__(self, dataset: TrainClips, batch_size: int, seed: int):
        self.dataset = dataset
        self.sampler = StepBatchSampler(len(dataset), batch_size, seed=seed + UNLABELLED_SEED)

    def batches(self, first: int, count: int) -> list[list[int]]:
        """Index lists of the global steps [first, first + count)."""
        out, size, perms = [], self.sampler.batch_size, {}
        for s in range(first, first + count):
            round_, k = divmod(s, self.sampler.steps_per_epoch)
            if round_ not in perms:
                self.sampler.set_epoch(round_)
                perms[round_] = self.sampler.permutation()
            out.append(perms[round_][k * size:(k + 1) * size].tolist())
        return out

    def loader(self, epoch: int, first_step: int, count: int, num_workers: int):
        """An iterator over the unlabelled batches of the labelled epoch ``epoch``, from global step ``first_step``
        (its clips' windows and views drawn from (seed, epoch, item))."""
        self.dataset.set_epoch(epoch)
        return iter(DataLoader(self.dataset, batch_sampler=self.batches(first_step, count), num_workers=num_workers,
                               collate_fn=collate_clips, worker_init_fn=init_worker))


def _teachers_and_banks(cfg: CCLConfig, train_windows, device, progress: bool):
    """The variant's teachers, the cached features of those that do not run on the augmented clip, and the
    standardisation statistics {modality: (mean [D], s)} of those with ``standardize``."""
    teachers, banks, stats = {}, {}, {}
    for m, tcfg in cfg.teachers().items():
        teacher = build_teacher(tcfg, m, cfg.data.clip_duration)
        if m == "audio" or tcfg.input == "cached":
            feats = teacher_features(teacher, train_windows, cfg.data, cache_root(cfg), progress=progress)
            banks[m] = TeacherBank(feats, teacher.dim)
        if tcfg.standardize:
            if m in banks:
                stats[m] = standardization(banks[m].sequences, pool=m == "audio" and tcfg.steps == "mean")
            else:  # estimated on the clean frames of evenly spaced training clips
                picks = np.unique(np.linspace(0, len(train_windows) - 1, STANDARDIZE_CLIPS).round().astype(int))
                feats = teacher_features(teacher, train_windows.subset(picks), cfg.data, cache_root(cfg), progress)
                stats[m] = standardization(feats, pool=False)
        teachers[m] = teacher.to(device)
    return teachers, banks, stats


def train_ccl(cfg: CCLConfig, out_dir: str | Path, resume: bool = False, max_steps: int | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run (or with ``resume`` continue) the training ``cfg`` describes in ``out_dir``; returns the results dict."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    cfg.teachers()  # fail early on a variant without its teacher
    previous = ckpt.latest_checkpoint(out_dir) if out_dir.exists() else None
    if previous is not None and not resume:
        raise FileExistsError(f"{out_dir} already holds a run ({previous.name}); pass --resume or choose another --out")
    dist_info = init_distributed(cfg.run.device)
    if dist_info.world_size > 1:
        raise ValueError("CCL training runs in one process (CPU or one GPU); launch it without torchrun")
    device = dist_info.device
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out_dir / "config.yaml")

    # ---------------------------------------------------------------- data
    data = cfg.data
    names = class_names(data)
    train_rows = load_split(data, data.train_split)
    budget = label_budget(train_rows, data, cfg.run.seed)  # [N] bool: the training videos that keep their label
    distill = data.unlabelled == "distill" and not budget.all() and bool(cfg.teachers())
    if not distill and not budget.all():  # the faithful reading: the unlabelled videos are not used at all
        train_rows = Manifest([row for row, keep in zip(train_rows, budget) if keep], train_rows.root)
    train_w = clip_windows(train_rows, data.clip_duration, data.label_column, names)
    val_w = clip_windows(load_split(data, data.val_split), data.clip_duration, data.label_column, names)
    train_cache = predecode_windows(train_w, data, cache_root(cfg), progress) if data.preload else None
    val_cache = predecode_windows(val_w, data, cache_root(cfg), progress) if data.preload else None
    dataset = TrainClips(train_w, data, cfg.run.seed, train_cache, np.flatnonzero(budget) if distill else None)
    sampler = StepBatchSampler(len(dataset), data.batch_size, seed=cfg.run.seed)
    train_labels = torch.from_numpy(train_w.labels)
    unlabelled = _UnlabelledBatches(TrainClips(train_w, data, cfg.run.seed + UNLABELLED_SEED, train_cache,
                                               np.flatnonzero(~budget)),
                                    data.unlabelled_batch_size or data.batch_size, cfg.run.seed) if distill else None

    # ------------------------------------------------------------ networks
    teachers, banks, stats = _teachers_and_banks(cfg, train_w, device, progress)
    teacher_inputs = _TeacherInputs(cfg, teachers, banks, stats, device)
    torch.manual_seed(cfg.run.seed)  # here: data loading above draws from the global generator on cache misses only
    model = CCL(build_student(cfg, len(names)), len(names), {m: t.dim for m, t in teachers.items()},
                {m: cfg.teachers()[m].temperature for m in teachers}, cfg.loss.two_teacher_weight,
                mapped_teachers(cfg)).to(device)
    groups = [{"params": model.video_parameters(), "role": "video"}]
    if model.composition_parameters():
        groups.append({"params": model.composition_parameters(), "role": "composition"})
    optimizer = torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)

    # -------------------------------------------------------------- resume
    step, start_epoch, best = 0, 0, {"top1": -1.0, "epoch": -1}
    elapsed_before = 0.0
    if resume and previous is not None:
        state = ckpt.load_checkpoint(previous, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ckpt.restore_rng_state(state["rng"])
        step, start_epoch, best = int(state["step"]), int(state["epoch"]) + 1, dict(state["best"])
        elapsed_before = float(state["elapsed"])
        log.info("resumed %s at epoch %d", previous, start_epoch)
    logger = RunLogger(out_dir, is_main=True, start_step=step)
    meta = weights_metadata(CCL_FORMAT, to_dict(cfg), class_names=json.dumps(names))

    # ---------------------------------------------------------------- loop
    steps_per_epoch = sampler.steps_per_epoch
    total = cfg.optim.epochs * steps_per_epoch
    if max_steps:
        total = min(total, max_steps)
    bar = tqdm(total=total, initial=step, desc=f"ccl {cfg.loss.variant}", unit="step", disable=not progress,
               dynamic_ncols=True)
    epoch = start_epoch
    while epoch < cfg.optim.epochs and step < total:
        lr = _set_lr(optimizer, cfg, epoch)
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        model.train()
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=data.num_workers, collate_fn=collate_clips,
                            worker_init_fn=init_worker)
        extra = unlabelled.loader(epoch, step, len(sampler), data.num_workers) if unlabelled else None
        for batch in loader:
            generator = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + step)
            video, windows = batch["video"], batch["index"]
            labelled = torch.ones(len(windows), dtype=torch.bool)
            if extra is not None:  # the unlabelled clips of this step after the labelled ones
                more = next(extra)
                video, windows = torch.cat([video, more["video"]]), torch.cat([windows, more["index"]])
                labelled = torch.cat([labelled, torch.zeros(len(more["index"]), dtype=torch.bool)])
            video = video.to(device, non_blocking=True)
            labels = train_labels[windows].to(device)
            loss_v, loss_comp, terms = model.losses(video, labels, teacher_inputs(video, windows, generator),
                                                    labelled.to(device) if extra is not None else None)
            host_terms = terms_to_host(terms)
            bad = first_nonfinite(host_terms)
            if bad is not None:
                raise NonFiniteLossError(f"step {step}: loss term '{bad}' is not finite; lower optim.lr")
            optimizer.zero_grad(set_to_none=True)
            model.backward(loss_v, loss_comp)
            optimizer.step()
            step += 1
            bar.update(1)
            if step % cfg.run.log_every == 0:
                logger.log(step, {**host_terms, "lr": lr, "epoch": epoch})
                bar.set_postfix(loss=f"{host_terms['loss_v']:.3f}", lr=f"{lr:.1e}")
            if step >= total:
                break
        del loader, extra
        last = epoch == cfg.optim.epochs - 1 or step >= total
        if (epoch + 1) % cfg.run.eval_every == 0 or last:
            feats, probs = predict(model.student, val_w, data, device, val_cache)
            val = recognition(feats, probs)
            logger.log(step, {f"val_{k}": v for k, v in val.items()})
            if val["top1"] > best["top1"]:
                best = {**val, "epoch": epoch}
                save_weights(out_dir / CCL_WEIGHTS_FILE, weights_parts(model),
                             {**meta, "epoch": str(epoch), "val_top1": f"{val['top1']:.6f}"})
            log.info("epoch %d: val top1 %.4f (best %.4f at epoch %d)", epoch, val["top1"], best["top1"],
                     best["epoch"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch,
                 "best": best, "rng": ckpt.capture_rng_state(), "config": to_dict(cfg),
                 "elapsed": elapsed_before + time.perf_counter() - t0}
        ckpt.save_checkpoint(ckpt.checkpoint_path(out_dir, step), state, keep_last=cfg.run.keep_checkpoints)
        epoch += 1
    bar.close()
    train_seconds = elapsed_before + time.perf_counter() - t0

    # ---------------------------------------------------------------- test
    gallery_cache = train_cache if len(train_rows) == len(budget) else None  # the gallery is every training video
    results = evaluate_run(out_dir, cfg.data.test_split, retrieval_gallery=cfg.run.retrieval, progress=progress,
                           train_cache=gallery_cache)
    results.update(val=best, train_seconds=train_seconds, steps=step, variant=cfg.loss.variant,
                   label_column=data.label_column, seed=cfg.run.seed, labelled_videos=int(budget.sum()),
                   unlabelled_videos=int((~budget).sum()) if distill else 0,
                   teachers={m: t.fingerprint for m, t in teachers.items()})
    (out_dir / RESULTS).write_text(json.dumps(results, indent=2))
    logger.close()
    return results


def evaluate_run(run_dir: str | Path, split: str = "test", retrieval_gallery: bool = True, progress: bool = False,
                 train_cache: Path | None = None) -> dict[str, Any]:
    """Score a run's selected checkpoint (``best.safetensors``) on ``split``: recognition, and retrieval of the
    split's videos in the training videos when ``retrieval_gallery``."""
    t0 = time.perf_counter()
    device = init_distributed("auto").device
    student, cfg, names = load_student(run_dir, device)
    data = cfg.data
    windows = clip_windows(load_split(data, split), data.clip_duration, data.label_column, names)
    decoded = predecode_windows(windows, data, cache_root(cfg), progress) if data.preload else None
    feats, probs = predict(student, windows, data, device, decoded)
    results: dict[str, Any] = {"split": split, split: recognition(feats, probs)}
    if retrieval_gallery:
        train_w = clip_windows(load_split(data, data.train_split), data.clip_duration, data.label_column, names)
        if train_cache is None and data.preload:
            train_cache = predecode_windows(train_w, data, cache_root(cfg), progress)
        gallery, _ = predict(student, train_w, data, device, train_cache)
        results["retrieval"] = retrieval(feats, gallery)
    results["eval_seconds"] = time.perf_counter() - t0
    if progress:
        log.info("%s: %s", split, results[split])
    return results
