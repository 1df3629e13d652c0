"""Pretraining: one process on a CPU, one GPU, or many processes under ``torchrun`` with no code change.

    xkd pretrain --config configs/pretrain/xkd_avdigits_cpu.yaml --out runs/xkd
    torchrun --nproc_per_node 2 -m xkd pretrain --config configs/pretrain/xkd_avdigits_cpu.yaml --out runs/xkd2

The run reads top-down: data, model, optimiser, schedules, resume, loop. Everything that decides a step (the batch
rows, the augmentations, the masks) is a pure function of (seed, step), so a resumed run continues exactly and a
run on N processes sees the batches a single process with N times the batch would see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from xkd.config import PretrainConfig, dump_config, load_config, to_dict
from xkd.data.dataset import BadMediaReport
from xkd.data.pretrain_batches import PretrainBatches
from xkd.data.views import training_frames
from xkd.data.workers import threads_beside_workers
from xkd.engine import checkpoint as ckpt
from xkd.engine.cluster_probe import ClusterProbe
from xkd.engine.distributed import DistInfo, barrier, cleanup, gather_objects, init_distributed
from xkd.engine.flops import count_flops, measure_matmul_peak
from xkd.engine.fsdp import full_state_dict, load_sharded, save_sharded, shard_model
from xkd.engine.logger import RunLogger, plot_metrics
from xkd.engine.loss_terms import NonFiniteLossError, first_nonfinite, terms_to_host
from xkd.engine.optim import (amp_context, apply_schedules, build_optimizer, clip_per_parameter, make_grad_scaler,
                              param_groups, resolve_amp)
from xkd.engine.schedules import Schedules, build_schedules, schedule_length
from xkd.engine.weights import (PRETRAIN_FORMAT, SNAPSHOT_DIR, WEIGHTS_FILE, decoder_part, encoder_part, head_part,
                                load_weights, projection_part, save_weights, weights_metadata)
from xkd.host_memory import keep_freed_host_memory
from xkd.models.xkd import XKD
from xkd.version import __version__

log = logging.getLogger(__name__)

def mask_noise(cfg: PretrainConfig, model: XKD, micro_step: int, batch: int, dist_info: DistInfo) -> tuple:
    """Uniform masking noise of this rank's rows, cut from the global batch's noise for ``micro_step``:
    ([B, N_v], [B, N_a])."""
    nv, na = model.mask_token_counts()
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.run.seed, 7, micro_step]).generate_state(1)[0]))
    total = batch * dist_info.world_size
    lo = dist_info.rank * batch
    noise_v = torch.rand(total, nv, generator=g)[lo : lo + batch]
    noise_a = torch.rand(total, na, generator=g)[lo : lo + batch]
    return noise_v.to(dist_info.device), noise_a.to(dist_info.device)


def weights_parts(model: XKD, state: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The clean weights of a model as named parts: ``{video,audio}_{student,teacher}`` (encoders),
    ``..._head`` (projection heads), ``{video,audio}_decoder`` and ``{video,audio}_projection``; cut from ``state`` (the model's full state dict,
    default ``model.state_dict()``)."""
    state = model.state_dict() if state is None else state
    prefixes = {}
    for role, nets in (("student", model.student), ("teacher", model.teacher)):
        for name, net in nets.items():
            prefixes[encoder_part(name, role)] = f"{role}.{name}.encoder."
            if net.head is not None:
                prefixes[head_part(name, role)] = f"{role}.{name}.head."
    for name in model.decoder:
        prefixes[decoder_part(name)] = f"decoder.{name}."
    for name in model.projection:
        prefixes[projection_part(name)] = f"projection.{name}."
    return {part: {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)} for part, pre in prefixes.items()}


def snapshot_path(run_dir: Path, step: int) -> Path:
    """Where ``run.snapshot_every`` writes the weights of ``step``: ``<run>/snapshots/step_<step>.safetensors``."""
    return run_dir / SNAPSHOT_DIR / f"step_{step:09d}.safetensors"


def snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, weights file) of a run's snapshots and of its final weights, by step."""
    found = {int(p.stem.split("_")[1]): p for p in sorted((Path(run_dir) / SNAPSHOT_DIR).glob("step_*.safetensors"))}
    final = Path(run_dir) / WEIGHTS_FILE
    if final.is_file():
        found[int(load_weights(final, parts=())[1]["step"])] = final
    return sorted(found.items())


def save_weights_file(model: XKD, cfg: PretrainConfig, path: Path, step: int, schedule_steps: int | None = None,
                      state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the clean weights (from ``state``, the full state dict, default the model's) with their metadata;
    ``schedule_steps`` (default ``step``) is the schedule's length, so a reader can tell a run stopped early from a
    complete one."""
    meta = weights_metadata(PRETRAIN_FORMAT, to_dict(cfg), method=cfg.method, step=str(step),
                            schedule_steps=str(step if schedule_steps is None else schedule_steps))
    return save_weights(path, weights_parts(model, state), meta)


def parameter_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a full state dict (every parameter and buffer), to check that ranks (or runs) ended
    identical."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class StepResult:
    """What one optimiser step reports: mean loss terms over its micro-batches, the first non-finite term (the
    step was then not applied), and the pre-clip gradient norms of the clipped parameters."""

    terms: dict[str, float]
    nonfinite: str | None
    grad_norms: torch.Tensor | None


class Trainer:
    """The model, its optimiser and grad scaler, and one training step (forward, backward, clip, step, EMA).

    Shared by :func:`pretrain` and the benchmarks. ``train_step`` takes the step's micro-batches (dicts with
    ``frames`` and ``audio`` lists) and the scheduled values of the step; the teacher temperatures of ``schedules``
    go to the distillation losses once, here (without schedules: the config's final temperatures).
    """

    def __init__(self, cfg: PretrainConfig, dist_info: DistInfo, schedules: Schedules | None = None):
        self.cfg = cfg
        self.dist = dist_info
        device = dist_info.device
        torch.manual_seed(cfg.run.seed)
        if device.type == "cpu":
            keep_freed_host_memory()  # the step's large buffers stay in the heap between steps (5-7% faster)
        temps = None if schedules is None else {"video": schedules.video_teacher_temp,
                                                 "audio": schedules.audio_teacher_temp}
        self.model = XKD(cfg, temps).to(device)
        self.sharded = cfg.run.strategy == "fsdp" and dist_info.world_size > 1
        if self.sharded:
            shard_model(self.model, device)  # before the optimiser is built: it holds the sharded parameters
        groups = param_groups(
            self.model.trainable_modules(),
            decay_embeddings=cfg.optim.decay_embeddings,
            clipped=["student", "projection"] + (["decoder"] if cfg.optim.clip_decoders else []),
        )
        self.clipped = [p for g in groups if g["clip"] for p in g["params"]]
        self.optimizer = build_optimizer(groups, cfg.optim.lr, cfg.optim.betas, cfg.optim.weight_decay)
        self.amp = resolve_amp(cfg.run.amp, device, cfg.run.force_amp)  # the precision this run computes in
        self.scaler = make_grad_scaler(self.amp, device)
        self.train_model: torch.nn.Module = self.model
        if dist_info.world_size > 1 and not self.sharded:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
        self.step_flops: int | None = None  # FLOPs of one optimiser step, counted on the first step

    def state_dict(self, sharded_folder: Path | None = None) -> dict[str, Any]:
        """The training state for a run checkpoint. Sharded (FSDP): the model and the optimiser are written to
        ``sharded_folder`` by every rank (a collective call), and the dict names that folder instead."""
        if self.sharded:
            save_sharded(sharded_folder, self.model, self.optimizer)
            return {"sharded": sharded_folder.name, "scaler": self.scaler.state_dict()}
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any], folder: Path | None = None) -> None:
        """Restore a :meth:`state_dict` (``folder``: where the checkpoint lies, for its sharded part)."""
        if self.sharded != ("sharded" in state):
            written, now = ("fsdp", "ddp") if "sharded" in state else ("ddp", "fsdp")
            raise ValueError(f"the checkpoint was written with run.strategy={written}; this run uses {now} "
                             f"(resume with run.strategy={written})")
        if self.sharded:
            load_sharded(folder / state["sharded"], self.model, self.optimizer)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when saved by a run without fp16 loss scaling
            self.scaler.load_state_dict(state["scaler"])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's whole state dict, full tensors (a collective call when sharded)."""
        return full_state_dict(self.model) if self.sharded else self.model.state_dict()

    def _forward_backward(self, batch: dict, step: int, micro: int) -> dict:
        cfg, device = self.cfg, self.dist.device
        accum = cfg.optim.accum_steps
        frames = training_frames(batch, cfg.data, device)
        audio = [a.to(device, non_blocking=True) for a in batch["audio"]]
        noise = mask_noise(cfg, self.model, step * accum + micro, frames[0].shape[0], self.dist)
        last = micro == accum - 1
        if self.sharded:  # gradients are reduce-scattered on the last micro-batch only
            self.model.set_requires_gradient_sync(last)
        sync = nullcontext() if last or self.dist.world_size == 1 or self.sharded else self.train_model.no_sync()
        with sync:
            with amp_context(device, self.amp):
                loss, terms = self.train_model(frames, audio, step, noise)
            self.scaler.scale(loss / accum).backward()
        return terms

    def train_step(self, micro_batches: Iterable[dict], step: int, values: dict[str, float]) -> StepResult:
        """One optimiser step at global step ``step`` with the scheduled ``values`` (lr, weight_decay, momentum).
        A non-finite loss term leaves the parameters untouched."""
        cfg = self.cfg
        apply_schedules(self.optimizer, values["lr"], values["weight_decay"])
        sums: dict[str, float] = {}
        nonfinite = None
        for micro, batch in enumerate(micro_batches):
            if self.step_flops is None and self.dist.is_main and micro == 0:
                captured: dict = {}
                flops = count_flops(lambda: captured.update(self._forward_backward(batch, step, micro)))
                self.step_flops = flops * cfg.optim.accum_steps
                terms = captured
            else:
                terms = self._forward_backward(batch, step, micro)
            host = terms_to_host(terms)
            nonfinite = nonfinite or first_nonfinite(host)
            for k, v in host.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.optim.accum_steps
        grad_norms = None
        if nonfinite is None:
            self.scaler.unscale_(self.optimizer)
            if cfg.optim.clip_grad > 0:
                grad_norms = clip_per_parameter(self.clipped, cfg.optim.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.model.update_teachers(values["momentum"])
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(sums, nonfinite, grad_norms)


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue, with ``resume``) the pretraining described by ``cfg`` in the run folder ``out_dir``.

    Returns a summary dict (steps, final losses, paths). Writes ``config.yaml``, ``metrics.csv``, TensorBoard
    events, ``checkpoints/step_*.pt`` (full run state) and ``weights.safetensors`` (clean weights) into ``out_dir``.
    """
    out_dir = Path(out_dir)
    dist_info = init_distributed(cfg.run.device)
    threads = torch.get_num_threads()
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    elif dist_info.device.type == "cpu" and cfg.data.num_workers > 0:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(threads_beside_workers(cfg.data.num_workers, local_processes))
    try:
        summary = _pretrain(cfg, out_dir, resume, max_steps, progress, dist_info)
        # every process is done communicating before any of them tears the group down and exits: a rank that left
        # right after the last all-gather could reach interpreter shutdown while a gloo worker thread still released
        # that collective's tensors, which needs the GIL, and abort (6 of about 230 two-rank test runs)
        barrier()
        return summary
    finally:
        torch.set_num_threads(threads)  # the caller's setting (the demo evaluates in this process next)
        cleanup()


# keys a reused run may differ in
_HOW_NOT_WHAT = ("data.num_workers", "data.decoded_cache", "run.threads", "run.log_every", "run.checkpoint_every",
                 "run.snapshot_every", "run.probe_every", "run.probe_clips")


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def config_changes(saved: PretrainConfig, wanted: PretrainConfig) -> list[str]:
    """The keys (``section.key``) whose values differ between two configs, but those that change how a run is
    carried out and not what it computes (loader workers, logging, checkpoint and diagnostic intervals)."""
    a, b = _flat(to_dict(saved)), _flat(to_dict(wanted))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in _HOW_NOT_WHAT)


def pretrain_or_reuse(cfg: PretrainConfig, out_dir: str | Path, steps: int, progress: bool = True) -> Path:
    """Pretrain a complete schedule of ``steps`` steps (``optim.steps``) into ``out_dir`` unless a finished run of that
    schedule and config is there (resuming an interrupted one); returns the weights file. A finished run of another
    config is an error that names the keys that differ."""
    from dataclasses import replace

    out_dir = Path(out_dir)
    cfg = replace(cfg, optim=replace(cfg.optim, steps=steps))
    summary = out_dir / "summary.json"
    if summary.is_file():
        done = json.loads(summary.read_text())
        if done.get("steps") == done.get("schedule_steps") == steps:
            changed = config_changes(load_config(PretrainConfig, out_dir / "config.yaml"), cfg)
            if changed:
                raise FileExistsError(f"{out_dir} holds a finished run of another config ({', '.join(changed)} "
                                      "differ); choose another output folder or delete that run")
            log.info("reusing the finished run in %s", out_dir)
            return out_dir / WEIGHTS_FILE
    resume = out_dir.exists() and ckpt.latest_checkpoint(out_dir) is not None
    pretrain(cfg, out_dir, resume=resume, progress=progress)
    return out_dir / WEIGHTS_FILE


def _pretrain(cfg, out_dir: Path, resume: bool, max_steps, progress: bool, dist_info: DistInfo) -> dict[str, Any]:
    run = cfg.run
    device = dist_info.device
    previous = ckpt.latest_checkpoint(out_dir) if out_dir.exists() else None
    if previous is not None and not resume:
        raise FileExistsError(f"{out_dir} already holds a run ({previous.name}); pass --resume to continue it "
                              "or choose another --out")
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out_dir / "config.yaml")
        # temporary files of writes a crash interrupted (never read: a checkpoint only exists once renamed)
        for stale in [*out_dir.glob(f".{WEIGHTS_FILE}.*.tmp"), *(out_dir / ckpt.CHECKPOINT_DIR).glob(".step_*.tmp")]:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)

    # ---------------------------------------------------------------- data
    batches_of = PretrainBatches(cfg, dist_info.world_size, dist_info.rank)
    iters_per_epoch = batches_of.steps_per_epoch
    full_steps = schedule_length(cfg.optim, iters_per_epoch)
    limit = max_steps if max_steps else run.max_steps
    total_steps = min(full_steps, limit) if limit else full_steps

    # ------------------------------------------------------ schedules, model
    sched = build_schedules(cfg.optim, cfg.loss, iters_per_epoch, total_steps)
    trainer = Trainer(cfg, dist_info, sched)
    model = trainer.model

    # ------------------------------------------------------------- resume
    step = 0
    bad = BadMediaReport()
    skipped = 0
    if resume and previous is not None:
        state = ckpt.load_checkpoint(previous, map_location=device)
        trainer.load_state_dict(state, previous.parent)
        ckpt.restore_rng_state(state["rng"])
        step = int(state["step"])
        skipped = int(state.get("skipped_steps", 0))
        bad.update([tuple(e) for e in state.get("bad_media", [])])
        if dist_info.is_main:
            log.info("resumed %s at step %d", previous, step)
    # Rows are logged under the number of steps done (1-based): keep the rows of the steps the checkpoint holds.
    logger = RunLogger(out_dir, dist_info.is_main, start_step=step + 1 if step else 0)

    def save(at_step: int) -> dict[str, torch.Tensor]:
        """Write the run checkpoint and the weights file of ``at_step``; returns the full state dict written."""
        path = ckpt.checkpoint_path(out_dir, at_step)
        training = trainer.state_dict(path.with_suffix(".dcp"))  # every rank writes its shards under fsdp
        weights = trainer.full_state_dict()
        if dist_info.is_main:
            state = {
                **training,
                "step": at_step,
                "config": to_dict(cfg),
                "rng": ckpt.capture_rng_state(),
                "skipped_steps": skipped,
                "bad_media": [list(e) for e in bad.files.items()],
                "xkd_version": __version__,
            }
            ckpt.save_checkpoint(path, state, keep_last=run.keep_checkpoints)
            save_weights_file(model, cfg, out_dir / WEIGHTS_FILE, at_step, full_steps, weights)
        barrier()
        return weights

    def snapshot(at_step: int) -> None:
        """Write the clean weights of ``at_step`` to ``snapshots/`` (kept, for learning curves)."""
        weights = trainer.full_state_dict()
        if dist_info.is_main:
            path = snapshot_path(out_dir, at_step)
            path.parent.mkdir(exist_ok=True)
            save_weights_file(model, cfg, path, at_step, full_steps, weights)
        barrier()

    probe = ClusterProbe(cfg, model, device) if run.probe_every else None

    # --------------------------------------------------------------- loop
    peak = run.peak_tflops * 1e12 if run.peak_tflops > 0 else None
    bar = tqdm(total=total_steps, initial=step, desc=f"pretrain {cfg.method}", unit="step",
               disable=not (progress and dist_info.is_main), dynamic_ncols=True)
    last_terms: dict[str, float] = {}
    window_t0, window_steps = time.perf_counter(), 0
    model.train()
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, iters_per_epoch)
        loader = batches_of.loader(epoch, step_in_epoch, pin_memory=device.type == "cuda")
        batches = iter(loader)
        while step < total_steps and step // iters_per_epoch == epoch:
            values = sched.at(step)
            micro_batches = []
            for _ in range(cfg.optim.accum_steps):
                batch = next(batches)
                for path, reason in bad.update(batch):
                    log.warning("bad media skipped: %s (%s)", path, reason)
                micro_batches.append(batch)
            result = trainer.train_step(micro_batches, step, values)
            terms_sum = result.terms
            if result.nonfinite is not None:
                if run.nonfinite == "stop":
                    bar.close()
                    raise NonFiniteLossError(
                        f"step {step}: loss term '{result.nonfinite}' is not finite "
                        f"({terms_sum.get(result.nonfinite)}); lower optim.lr, try run.amp=none, or set "
                        "run.nonfinite=skip to skip such steps"
                    )
                skipped += 1
                log.warning("step %d: non-finite loss term '%s'; step skipped (%d so far)", step,
                            result.nonfinite, skipped)
            step += 1
            window_steps += 1
            bar.update(1)
            last_terms = terms_sum

            if step % run.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_t0
                step_time = elapsed / max(window_steps, 1)
                clips = batches_of.samples_per_step / step_time
                metrics = {**terms_sum, **values, "epoch": epoch, "schedule_steps": full_steps,
                           "step_time": step_time, "clips_per_s": clips, "bad_media_files": len(bad),
                           "skipped_steps": skipped}
                if result.grad_norms is not None and result.grad_norms.numel():
                    metrics["grad_norm_max"] = float(result.grad_norms.max())
                if trainer.step_flops and dist_info.is_main:
                    if peak is None:
                        peak = measure_matmul_peak(device)
                    metrics["mfu"] = trainer.step_flops / step_time / peak
                    metrics["tflops_per_step"] = trainer.step_flops / 1e12
                logger.log(step, metrics)
                bar.set_postfix(loss=f"{terms_sum['loss']:.4f}", lr=f"{values['lr']:.2e}")
                window_t0, window_steps = time.perf_counter(), 0
            if step % run.checkpoint_every == 0 and step < total_steps:
                save(step)
            if run.snapshot_every and step % run.snapshot_every == 0 and step < total_steps:
                snapshot(step)
            if probe is not None and (step % run.probe_every == 0 or step == total_steps):
                logger.log(step, probe())
        del batches, loader
    bar.close()
    final_state = save(step)
    logger.close()
    fingerprints = gather_objects(parameter_fingerprint(final_state))
    if len(set(fingerprints)) > 1:
        log.warning("ranks ended with different parameters: %s", fingerprints)

    summary = {
        "steps": step,
        "schedule_steps": full_steps,
        "stopped_early": step < full_steps,
        "iters_per_epoch": iters_per_epoch,
        "final": last_terms,
        "bad_media": bad.counts(),
        "skipped_steps": skipped,
        "rank_fingerprints": fingerprints,
        "run_dir": str(out_dir),
        "weights": str(out_dir / WEIGHTS_FILE),
    }
    if dist_info.is_main:
        keys = [k for k in ("loss", "ae", "kd", "da", "contrastive") if k in last_terms]
        if keys and step:
            try:
                plot_metrics(out_dir, keys, out_dir / "losses.png")
            except ValueError as err:  # a run too short to plot
                log.info("no loss plot: %s", err)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if step < full_steps:
            log.warning("stopped early: %d of the schedule's %d steps (the learning rate, EMA momentum and "
                        "temperatures did not reach their final values)", step, full_steps)
        print(bad.summary())
    return summary


