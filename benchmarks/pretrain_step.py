"""Pretraining step speed: ms/step, clips/s, peak memory and MFU of any config, on synthetic batches.

    python benchmarks/pretrain_step.py --config configs/pretrain/xkd_avdigits_cpu.yaml
    python benchmarks/pretrain_step.py --config configs/pretrain/xkd_kinetics400.yaml --set data.batch_size=2
    python benchmarks/pretrain_step.py --config configs/pretrain/xkd_avdigits_cpu.yaml --profile 25

The step is the engine's own (xkd.engine.pretrain.Trainer: forward, backward, clipping, AdamW, EMA) on random
tensors of the config's view shapes, so data loading is excluded (see benchmarks/data_pipeline.py). MFU is the
FLOPs torch counts for one step over the step time, divided by this machine's fp32 matmul peak, measured here; a
step in bf16 or fp16 also gets ``mfu_amp``, against the matmul peak of that precision (the GPU's tensor-core peak).
Prints one JSON line and a short summary; ``--profile N`` first prints torch.profiler's N operators with the most
self time over the timed steps (where the step's time goes) to stderr. ``--losses FILE`` writes every step's loss
terms (warm-up steps included) as JSON, and ``--compare FILE`` checks them against such a file from another
checkout (the numerics of a speed change):

    python benchmarks/pretrain_step.py --config configs/bench/original_tiny.yaml --warmup 0 --steps 50 --losses new.json
    python benchmarks/pretrain_step.py ... --losses new.json --compare old.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time

import torch

from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig, load_config
from xkd.engine.distributed import DistInfo
from xkd.engine.flops import measure_matmul_peak
from xkd.engine.pretrain import Trainer


def synthetic_batch(cfg: PretrainConfig, generator: torch.Generator) -> dict[str, list[torch.Tensor]]:
    """Random tensors with the shapes PretrainViews produces for ``cfg``."""
    d, m, b = cfg.data, cfg.model, cfg.data.batch_size
    local_frames = m.num_frames // d.temporal_ratio
    frames = [torch.randn(b, 3, m.num_frames, m.frame_size, m.frame_size, generator=generator)]
    frames += [torch.randn(b, 3, local_frames, d.video_local.crop_size, d.video_local.crop_size, generator=generator)
               for _ in range(d.num_local_views)]
    local_time = round((d.audio_local.duration or d.clip_duration) * d.logmel.sample_rate) // d.logmel.hop_length + 1
    audio = [torch.randn(b, 1, *m.spec_size, generator=generator),
             torch.randn(b, 1, m.spec_size[0], local_time, generator=generator)]
    return {"frames": frames, "audio": audio}


def values(cfg: PretrainConfig) -> dict[str, float]:
    """The scheduled values of a step (the teachers' temperatures are the config's final ones, held by the losses)."""
    return {"lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay, "momentum": cfg.loss.ema_start}


def max_relative_difference(losses: list[dict[str, float]], path: str) -> float:
    """The largest |a - b| / max(|b|, 1e-12) over the steps and terms present in both ``losses`` and the file."""
    with open(path) as f:
        other = json.load(f)
    if len(other) != len(losses):
        raise ValueError(f"{path} holds {len(other)} steps, this run {len(losses)}")
    worst = 0.0
    for mine, theirs in zip(losses, other):
        for name in mine.keys() & theirs.keys():
            a, b = mine[name], theirs[name]
            worst = max(worst, abs(a - b) / max(abs(b), 1e-12) if math.isfinite(a) and math.isfinite(b) else math.inf)
    return worst


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", required=True, help="pretraining config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="time spent measuring the matmul peak")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N operators with the most self time (torch.profiler; adds overhead)")
    parser.add_argument("--losses", metavar="FILE", help="write each step's loss terms here (JSON)")
    parser.add_argument("--compare", metavar="FILE", help="compare the loss terms with this --losses file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(PretrainConfig, args.config, args.set)
    device = torch.device("cuda" if cfg.run.device != "cpu" and torch.cuda.is_available() else "cpu")
    trainer = Trainer(cfg, DistInfo(0, 1, 0, device, True))
    g = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(cfg, g) for _ in range(cfg.optim.accum_steps)]
    v = values(cfg)
    trainer.model.train()
    losses = []
    for step in range(args.warmup):
        losses.append(trainer.train_step(batches, step, v).terms)
    times = []
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities) if args.profile else None
    if profiler is not None:
        profiler.start()
    for step in range(args.warmup, args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses.append(trainer.train_step(batches, step, v).terms)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if profiler is not None:
        profiler.stop()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(profiler.key_averages().table(sort_by=sort, row_limit=args.profile), file=sys.stderr)
    size = 8192 if device.type == "cuda" else 1024  # a GPU needs large products to reach its peak
    peak = measure_matmul_peak(device, seconds=args.peak_seconds, size=size)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(trainer.amp)
    peak_amp = measure_matmul_peak(device, amp_dtype, size, args.peak_seconds) if amp_dtype else None
    step_s = statistics.median(times)
    clips = cfg.data.batch_size * cfg.optim.accum_steps
    result = {
        "config": args.config,
        "overrides": args.set,
        "method": cfg.method,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": clips,
        "amp": trainer.amp,  # what the step computed in (run.amp, or fp32 where the device is slow in it)
        "amp_requested": cfg.run.amp,
        "profiled": bool(args.profile),
        "ms_per_step": 1000 * step_s,
        "ms_per_step_min": 1000 * min(times),
        "clips_per_s": clips / step_s,
        "gflops_per_step": trainer.step_flops / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "mfu": trainer.step_flops / step_s / peak,
        "matmul_peak_amp_gflops": peak_amp / 1e9 if peak_amp else None,
        "mfu_amp": trainer.step_flops / step_s / peak_amp if peak_amp else None,
        "grad_scale": trainer.scaler.get_scale(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }
    if args.losses:
        with open(args.losses, "w") as f:
            json.dump(losses, f)
    if args.compare:
        result["max_loss_rel_diff"] = max_relative_difference(losses, args.compare)
    print(json.dumps(result))
    print(f"{cfg.method}: {result['ms_per_step']:.0f} ms/step, {result['clips_per_s']:.1f} clips/s, "
          f"{result['gflops_per_step']:.1f} GFLOP/step, MFU {100 * result['mfu']:.1f}% of "
          f"{result['matmul_peak_gflops']:.0f} GFLOP/s, peak RSS {result['peak_rss_mb']:.0f} MB"
          + (f", losses within {result['max_loss_rel_diff']:.1e} of {args.compare}" if args.compare else ""),
          file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
