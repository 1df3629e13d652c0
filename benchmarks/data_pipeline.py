"""Data pipeline speed: decoded + augmented pretraining clips/s per DataLoader worker count, against the step rate.

    python benchmarks/data_pipeline.py                                     # AV-Digits (CPU recipe) and a 720p file
    python benchmarks/data_pipeline.py --workers 0 1 2 --batches 30 --sources config
    python benchmarks/data_pipeline.py --sources config --set data.decoded_cache=data/av-digits-decoded  # predecoded
    python benchmarks/data_pipeline.py --sources config --workers 1 --steps 0 --profile 25  # one item's cost, profiled
    python benchmarks/data_pipeline.py --config configs/pretrain/xkd_kinetics400.yaml --sources hd \\
        --set data.batch_size=8 --steps 0

Sources:
- ``config``: the config's own manifest (AV-Digits with the default config, data/av-digits/manifest.csv);
- ``hd``: a 10 s 1280x720 25 fps H.264 file with 48 kHz stereo AAC, written once with ``write_media`` into
  --media-dir and reused, listed once per item in a manifest, so every item is a new row (probed, then a random
  window decoded, as for a distinct file). libx264's default key-frame interval (250) makes the file one GOP, so a
  window late in the file decodes from its first frame.

With ``--set data.decoded_cache=FOLDER`` (made by ``xkd data predecode``) the config source's items are sliced from
pre-decoded arrays; the hd source always decodes its file.

Items are ``pretrain_dataset(cfg)`` items (decode, resize to data.resize_short, PretrainViews), drawn in random order
and batched with ``collate_clips`` as in pretraining. After --warmup batches per worker (the workers' start),
--batches batches are timed. The files are read from the page cache: disk reads are not measured. With --workers 0
the items are made in this process with its torch threads (--threads).

The step rate is ``Trainer.train_step`` on synthetic batches of the same config (benchmarks/pretrain_step.py);
``loader_to_step`` = loader clips/s / step clips/s: above 1 the loader alone outruns the step. Each is measured
alone; in a real run the workers and the step share the cores. Prints one JSON object and a short table.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from pretrain_step import synthetic_batch, values
from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig, load_config
from xkd.data.dataset import BadMediaReport, ClipDataset, collate_clips
from xkd.data.manifest import Manifest, ManifestRow, write_manifest
from xkd.data.views import pretrain_dataset
from xkd.datasets.media_writer import write_media
from xkd.engine.distributed import DistInfo
from xkd.engine.pretrain import Trainer

HD_SECONDS = 10.0
HD_FPS = 25.0
HD_WIDTH, HD_HEIGHT = 1280, 720
HD_SAMPLE_RATE = 48000


def hd_frames(seconds: float, fps: float, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3]: drifting colour ramps and a square of block noise crossing the frame (detail to encode)."""
    count = round(seconds * fps)
    rng = np.random.default_rng(seed)
    side = height // 3
    texture = rng.integers(0, 256, (side // 4, side // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        frames[t, :, :, 0] = (x + 4 * t) % 256
        frames[t, :, :, 1] = (y + 2 * t) % 256
        frames[t, :, :, 2] = ((x + y) // 8 + 3 * t) % 256
        progress = t / max(count - 1, 1)
        left = round((width - texture.shape[1]) * progress)
        top = round((height - texture.shape[0]) * (0.5 + 0.4 * np.sin(2 * np.pi * progress)))
        frames[t, top : top + texture.shape[0], left : left + texture.shape[1]] = texture
    return frames


def hd_audio(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """float32 [2, S]: a rising chirp on the left, a 440 Hz tone on the right, both with a little noise."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).standard_normal((2, t.size)) * 0.02
    left = 0.3 * np.sin(2 * np.pi * (200 * t + 150 * t**2))
    right = 0.3 * np.sin(2 * np.pi * 440 * t)
    return (np.stack([left, right]) + noise).astype(np.float32)


def hd_file(folder: Path, height: int = HD_HEIGHT) -> Path:
    """The 10 s 16:9 test file of ``height`` lines (720 by default) in ``folder``, written on first use (under a
    temporary name, then renamed); H.264 with x264's defaults, so the 250 frames are one GOP, as in Kinetics clips
    cut by FFmpeg with its default key-frame interval."""
    path = folder / f"hd{height}p_{HD_SECONDS:g}s_{HD_FPS:g}fps_{HD_SAMPLE_RATE // 1000}k_stereo.mp4"
    if not path.is_file():
        print(f"writing {path} (once)", file=sys.stderr)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        width = height * HD_WIDTH // HD_HEIGHT
        write_media(tmp, hd_frames(HD_SECONDS, HD_FPS, width, height), fps=HD_FPS,
                    audio=hd_audio(HD_SECONDS, HD_SAMPLE_RATE), sample_rate=HD_SAMPLE_RATE)
        tmp.replace(path)
    return path


def loader_rate(dataset: ClipDataset, batch_size: int, workers: int, warmup: int, batches: int, seed: int) -> dict:
    """Clips/s of a DataLoader over ``dataset`` in random order, timed over ``batches`` batches after ``warmup``
    batches per worker (so that every worker has started and delivered before the clock starts)."""
    warmup *= max(workers, 1)
    total = batch_size * (warmup + batches)
    sampler = RandomSampler(dataset, num_samples=total, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate_clips, drop_last=True)
    bad = BadMediaReport()
    t_start = time.perf_counter()
    batch_iter = iter(loader)
    for _ in range(warmup):
        bad.update(next(batch_iter))
    t0 = time.perf_counter()
    for _ in range(batches):
        bad.update(next(batch_iter))
    elapsed = time.perf_counter() - t0
    del batch_iter  # stops the workers
    return {
        "workers": workers,
        "clips_per_s": batches * batch_size / elapsed,
        "ms_per_batch": 1000 * elapsed / batches,
        "warmup_s": t0 - t_start,
        "bad_media_files": len(bad),
    }


def item_cost(dataset: ClipDataset, items: int, top: int, seed: int) -> dict:
    """ms per item made in this process with one torch thread (after 5 untimed items), then cProfile's ``top``
    functions by own time over the same items, printed to stderr."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[: items + 5].tolist()
        for i in order[:5]:
            dataset[i]
        t0 = time.perf_counter()
        for i in order[5:]:
            dataset[i]
        ms = 1000 * (time.perf_counter() - t0) / max(len(order) - 5, 1)
        profiler = cProfile.Profile()
        profiler.enable()
        for i in order[5:]:
            dataset[i]
        profiler.disable()
    finally:
        torch.set_num_threads(threads)
    print(f"one item in one process: {ms:.2f} ms; cProfile over {len(order) - 5} items:", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(top)
    return {"items": len(order) - 5, "ms_per_item": ms}


def step_rate(cfg: PretrainConfig, steps: int, warmup: int) -> dict:
    """Clips/s of ``Trainer.train_step`` on synthetic batches of ``cfg`` (median step time over ``steps``)."""
    device = torch.device("cuda" if cfg.run.device != "cpu" and torch.cuda.is_available() else "cpu")
    trainer = Trainer(cfg, DistInfo(0, 1, 0, device, True))
    generator = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(cfg, generator) for _ in range(cfg.optim.accum_steps)]
    scheduled = values(cfg)
    trainer.model.train()
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_step(batches, step, scheduled)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    clips = cfg.data.batch_size * cfg.optim.accum_steps
    return {"device": str(device), "threads": torch.get_num_threads(), "ms_per_step": 1000 * step_s,
            "clips_per_s": clips / step_s}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="configs/pretrain/xkd_avdigits_cpu.yaml", help="pretraining config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--sources", nargs="+", choices=("config", "hd"), default=["config", "hd"],
                        help="config = the config's manifest; hd = the generated 10 s 1280x720 file")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per (source, workers)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per worker first")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (0 = no step rate)")
    parser.add_argument("--step-warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--media-dir", default=str(Path(tempfile.gettempdir()) / "xkd-bench-media"),
                        help="where the hd file is written once and reused")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of this process (the step and --workers 0 loading); 0 = torch's default")
    parser.add_argument("--seed", type=int, default=0, help="order of the items")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also time --items items of each source in this process with one torch thread, and "
                             "print cProfile's N functions with the most own time (where an item's time goes)")
    parser.add_argument("--items", type=int, default=200, help="items timed and profiled with --profile")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(PretrainConfig, args.config, args.set)
    batch = cfg.data.batch_size
    step = step_rate(cfg, args.steps, args.step_warmup) if args.steps > 0 else None

    loader, profiles = [], []
    with tempfile.TemporaryDirectory(prefix="xkd-bench-") as tmp:
        for source in args.sources:
            source_cfg = cfg
            if source == "hd":
                media = str(hd_file(Path(args.media_dir)).resolve())
                items = batch * (args.warmup * max(max(args.workers), 1) + args.batches)
                rows = [ManifestRow(media, split=cfg.data.split)] * items
                manifest = str(write_manifest(Manifest(rows), Path(tmp) / "hd.csv"))
                source_cfg = copy.deepcopy(cfg)
                source_cfg.data.decoded_cache = ""
            else:
                media = manifest = cfg.data.manifest
            dataset = pretrain_dataset(source_cfg, manifest)
            if args.profile:
                profiles.append({"source": source, **item_cost(dataset, args.items, args.profile, args.seed)})
            for workers in args.workers:
                rate = loader_rate(dataset, batch, workers, args.warmup, args.batches, args.seed)
                rate["loader_to_step"] = rate["clips_per_s"] / step["clips_per_s"] if step else None
                loader.append({"source": source, "media": media,
                               "decoded_cache": getattr(source_cfg.data, "decoded_cache", ""),  # older versions: none
                               **rate})

    result = {"config": args.config, "overrides": args.set, "method": cfg.method, "batch": batch,
              "clip_duration": cfg.data.clip_duration, "video_fps": cfg.data.video_fps,
              "resize_short": cfg.data.resize_short, "torch_threads": torch.get_num_threads(),
              "step": step, "loader": loader, "item_profiles": profiles}
    print(json.dumps(result))
    if step:
        print(f"step ({step['device']}, batch {batch * cfg.optim.accum_steps}): {step['ms_per_step']:.0f} ms/step "
              f"= {step['clips_per_s']:.1f} clips/s", file=sys.stderr)
    print(f"{'source':<8} {'decoded':>8} {'workers':>7} {'clips/s':>9} {'ms/batch':>9} {'loader/step':>12}",
          file=sys.stderr)
    for r in loader:
        ratio = f"{r['loader_to_step']:.2f}" if r["loader_to_step"] is not None else "-"
        cached = "cache" if r["decoded_cache"] else "file"
        print(f"{r['source']:<8} {cached:>8} {r['workers']:>7} {r['clips_per_s']:>9.1f} {r['ms_per_batch']:>9.0f} "
              f"{ratio:>12}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
