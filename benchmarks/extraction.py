"""Feature extraction speed and memory: ``xkd extract`` over N generated small files, RSS sampled over time.

    python benchmarks/extraction.py                          # 1000 files, random encoders of the CPU recipe
    python benchmarks/extraction.py --files 200              # the issue's check: peak memory stays flat
    python benchmarks/extraction.py --weights runs/xkd/weights.safetensors --workers 2 --clips 3

The run is ``extract_to_file`` (the code behind ``xkd extract``) with the encoders of --weights, or random encoders
of --config, over the first --files files of --media-dir: small H.264 + AAC clips (64x64, 8 fps, 16 kHz mono, 4 s,
each with its own content) written with ``write_media`` on first use and reused afterwards.

Memory: a thread reads VmRSS of this process and of its children (the DataLoader workers) from /proc every
--interval s, for the peaks; the encoder also reads it after every batch, with the number of videos encoded so far,
for the RSS at 10%, 50% and 100% of the files, and for the slope of RSS against files and its growth after the
first 10% (once the workers and the model have warmed up) while every worker is alive (they exit once the last
batches are made, before the main process has encoded them). RSS counts pages a worker shares with its parent in
both, so the totals are upper bounds; flatness is read from their growth. The run is "flat" when the total grows by
at most --tolerance-mb. Prints one JSON object and a short summary.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import xkd
from xkd.api import Encoders, baseline_seed, random_encoders
from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig, load_config
from xkd.config_io import apply_overrides
from xkd.data.manifest import Manifest, ManifestRow
from xkd.datasets.media_writer import write_media
from xkd.eval.extract import ExtractOptions, extract_to_file

MARKS = (0.1, 0.5, 1.0)


# ------------------------------------------------------------------------------------------------------------ media


def small_clip(index: int, seconds: float, fps: float, size: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``index``: a bright square moving over a tinted noise background, and a tone in noise.

    Returns ``video: uint8 [T, size, size, 3]`` and ``audio: float32 [S]``; the content depends on ``index`` alone.
    """
    rng = np.random.default_rng(index)
    count = round(seconds * fps)
    background = rng.integers(0, 96, (size, size, 3), dtype=np.uint8) + rng.integers(0, 96, 3, dtype=np.uint8)
    video = np.repeat(background[None], count, axis=0)
    side = size // 4
    start, end = rng.uniform(0, size - side, 2), rng.uniform(0, size - side, 2)
    for t in range(count):
        x, y = (start + (end - start) * t / max(count - 1, 1)).astype(int)
        video[t, y : y + side, x : x + side] = 255
    s = np.arange(round(seconds * sample_rate)) / sample_rate
    audio = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * s) + 0.02 * rng.standard_normal(s.size)
    return video, audio.astype(np.float32)


def small_files(folder: Path, count: int, seconds: float, fps: float, size: int, sample_rate: int) -> list[Path]:
    """``clip_00000.mp4`` ... in ``folder``: the missing ones are written (a temporary name, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{i:05d}.mp4" for i in range(count)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        print(f"writing {len(missing)} files into {folder} (once)", file=sys.stderr, flush=True)
    for i in missing:
        video, audio = small_clip(i, seconds, fps, size, sample_rate)
        tmp = paths[i].with_name(f".{paths[i].stem}.tmp{paths[i].suffix}")
        write_media(tmp, video, fps=fps, audio=audio, sample_rate=sample_rate)
        tmp.replace(paths[i])
    return paths


# ----------------------------------------------------------------------------------------------------------- memory


def vm_rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process from /proc/PID/status (0 when it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def child_pids() -> list[int]:
    """Direct children of this process, from /proc/self/task/*/children."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended
            continue
    return pids


def rss_now() -> tuple[float, float, int]:
    """Resident memory in MB of this process and the sum over its children, and the number of children."""
    pids = child_pids()
    return vm_rss_mb(), sum(vm_rss_mb(pid) for pid in pids), len(pids)


class RssSampler(threading.Thread):
    """Samples ``rss_now()`` every ``interval`` s into ``samples`` ``[(main_mb, children_mb, children)]``."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(rss_now())
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class ProgressEncoders(Encoders):
    """Encoders that record ``(videos encoded so far, *rss_now())`` after each batch.

    Progress is counted on ``counted`` ("audio" or "video"), which has one input per clip.
    """

    counted: str = "audio"
    clips_per_video: int = 1
    records: list[tuple[float, float, float, int]] = field(default_factory=list)

    def _record(self, modality: str, clips: int) -> None:
        if modality == self.counted:
            done = (self.records[-1][0] if self.records else 0.0) + clips / self.clips_per_video
            self.records.append((done, *rss_now()))

    def encode_video(self, clips: torch.Tensor, batch_size: int = 32, **kwargs) -> torch.Tensor:
        out = super().encode_video(clips, batch_size, **kwargs)
        self._record("video", len(clips))
        return out

    def encode_audio(self, audio: torch.Tensor, batch_size: int = 32, **kwargs) -> torch.Tensor:
        out = super().encode_audio(audio, batch_size, **kwargs)
        self._record("audio", len(audio))
        return out


def memory_report(records: list[tuple[float, float, float, int]], files: int, workers: int,
                  tolerance_mb: float) -> dict:
    """RSS at the 10/50/100% marks; slope (MB per 1000 files) and growth of the total after the 10% mark.

    The slope and the growth (highest total minus the total at the first record) use the records after 10% of the
    files taken while all ``workers`` were alive: the workers exit once the last batches are made, before the main
    process has encoded them.
    """
    done = np.array([r[0] for r in records])
    total = np.array([r[1] + r[2] for r in records])
    marks = {}
    for frac in MARKS:
        reached = np.flatnonzero(done >= frac * files - 1e-6)  # the end falls short when files failed
        i = int(reached[0]) if reached.size else len(done) - 1
        marks[f"{round(100 * frac)}%"] = {"videos": float(done[i]), "main_mb": records[i][1],
                                          "children_mb": records[i][2], "workers_alive": records[i][3],
                                          "total_mb": float(total[i])}
    steady = (done >= 0.1 * files - 1e-6) & (np.array([r[3] for r in records]) == workers)
    slope = float(np.polyfit(done[steady], total[steady], 1)[0] * 1000) if steady.sum() >= 3 else None
    growth = float(total[steady].max() - total[steady][0]) if steady.any() else None
    return {"marks": marks, "steady_records": int(steady.sum()), "slope_mb_per_1000_files": slope,
            "growth_after_10pct_mb": growth, "flat": None if growth is None else growth <= tolerance_mb}


# ------------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--files", type=int, default=1000, help="number of files to extract")
    parser.add_argument("--weights", default=None, help="weights to load with xkd.load (default: random encoders)")
    parser.add_argument("--config", default="configs/pretrain/xkd_avdigits_cpu.yaml",
                        help="config of the random encoders (without --weights)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (with --weights: data.* keys only, as xkd extract)")
    parser.add_argument("--clips", type=int, default=3, help="uniformly spaced clips per video (xkd extract's default)")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per batch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--media-dir", default=str(Path(tempfile.gettempdir()) / "xkd-bench-extract-64px-8fps-4s"),
                        help="where the small files are written once and reused")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    parser.add_argument("--tolerance-mb", type=float, default=50.0, help="largest RSS growth still called flat")
    args = parser.parse_args(argv)

    files = small_files(Path(args.media_dir), args.files, seconds=4.0, fps=8.0, size=64, sample_rate=16000)
    if args.weights:
        if any(not s.startswith("data.") for s in args.set):
            parser.error("with --weights, --set changes only data.* keys (the input pipeline)")
        loaded = xkd.load(args.weights, device=args.device)
        loaded.config = apply_overrides(loaded.config, args.set, source=f"{args.weights} config")
    else:
        cfg = load_config(PretrainConfig, args.config, args.set)
        loaded = random_encoders(cfg, seed=baseline_seed(0), device=args.device)
    modalities = [m for m in ("video", "audio") if getattr(loaded, m) is not None]
    encoders = ProgressEncoders(loaded.video, loaded.audio, loaded.config, loaded.role, loaded.source,
                                counted="audio" if loaded.audio is not None else "video", clips_per_video=args.clips)
    manifest = Manifest([ManifestRow(p.name) for p in files], Path(args.media_dir))
    opts = ExtractOptions(clips_per_video=args.clips, batch_size=args.batch_size, num_workers=args.workers,
                          progress=False)

    rss_before = rss_now()[0]
    sampler = RssSampler(args.interval)
    with tempfile.TemporaryDirectory(prefix="xkd-bench-extract-") as tmp:
        sampler.start()
        t0 = time.perf_counter()
        out, videos, failed = extract_to_file(encoders, manifest, Path(tmp) / "features.npz", modalities, opts)
        elapsed = time.perf_counter() - t0
        sampler.stop()
        with np.load(out) as npz:
            shapes = {name: list(npz[name].shape) for name in npz.files if name.endswith(("_clip", "_video"))}

    samples = np.array(sampler.samples)
    result = {
        "files": args.files,
        "encoders": args.weights or f"random init of {args.config}",
        "modalities": modalities,
        "clips_per_video": args.clips,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "videos_written": videos,
        "failed_files": len(failed),
        "feature_shapes": shapes,
        "seconds": elapsed,
        "videos_per_s": args.files / elapsed,
        "clips_per_s": args.files * args.clips / elapsed,
        "rss_before_mb": rss_before,
        "peak_main_mb": float(samples[:, 0].max()),
        "peak_children_mb": float(samples[:, 1].max()),
        "peak_total_mb": float((samples[:, 0] + samples[:, 1]).max()),
        "rss_samples": len(samples),
        "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ru_maxrss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None,
        **memory_report(encoders.records, args.files, args.workers, args.tolerance_mb),
    }
    print(json.dumps(result))
    marks = ", ".join(f"{k} {v['total_mb']:.0f} MB" for k, v in result["marks"].items())
    slope, growth = result["slope_mb_per_1000_files"], result["growth_after_10pct_mb"]
    verdict = "too few batches to judge" if growth is None else (
        f"{'flat' if result['flat'] else 'GROWING'} (growth {growth:+.0f} MB, tolerance {args.tolerance_mb:g} MB)")
    print(f"{args.files} files ({args.clips} clips each, {args.workers} workers) in {elapsed:.1f} s: "
          f"{result['videos_per_s']:.1f} videos/s; RSS main + workers at {marks}; "
          f"slope {'n/a' if slope is None else f'{slope:+.1f} MB per 1000 files'}; "
          f"peak {result['peak_total_mb']:.0f} MB (main {result['peak_main_mb']:.0f} MB); {verdict}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
