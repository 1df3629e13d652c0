"""Training-step time and peak memory as frames, resolution and mel length grow (about 100 to 2,000 tokens).

    python benchmarks/scaling.py --plot runs/bench/scaling.png
    python benchmarks/scaling.py --set data.batch_size=8 --grid 16,40,160 32,80,1280 --steps 3

Each grid point NUM_FRAMES,FRAME_SIZE,SPEC_TIME overrides model.num_frames, model.frame_size and model.spec_size
(time axis) of the base config, keeping its patch sizes and mel bins. The local views keep their ratio to the global
view: the video local crop (data.video_local.crop_size) and the audio local segment (data.audio_local.duration) are
scaled with it and rounded to whole patches. The default grid fits the CPU recipe's patches ([4, 8, 8] tubelets,
40 mel bins in [4, 16] patches): 100 to about 2,000 global tokens per modality; another base config needs a grid
divisible by its patches.

Every point runs benchmarks/pretrain_step.py (the engine's Trainer.train_step on synthetic batches) in a fresh
process, so its peak RSS (and CUDA max allocated on a GPU) is its own; a point that fails (e.g. out of memory) is
reported with its error and the next one runs. Prints one JSON line per point (the step benchmark's fields, the
token counts and the overrides), a table at the end, and with --plot a PNG of ms/step and peak memory against the
tokens of each modality.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig, load_config

DEFAULT_GRID = ("16,40,160", "16,56,320", "16,80,640", "32,80,1280", "32,112,2560", "32,128,3200")
STEP_BENCHMARK = Path(__file__).with_name("pretrain_step.py")


def mel_frames(seconds: float, sample_rate: int, hop_length: int) -> int:
    """Frames of a centred STFT over ``seconds`` of audio (the log-mel front end's convention)."""
    return round(seconds * sample_rate) // hop_length + 1


def point_overrides(base: PretrainConfig, frames: int, size: int, spec_time: int) -> list[str]:
    """``--set`` overrides moving ``base`` to one grid point, with local views scaled like the global ones."""
    m, d = base.model, base.data
    pt, ph, pw = m.video_patch
    if frames % pt or size % ph or size % pw or spec_time % m.audio_patch[1]:
        raise ValueError(f"grid point {frames},{size},{spec_time} is not divisible by the patches "
                         f"{list(m.video_patch)} (video) and {list(m.audio_patch)} (audio)")
    if (frames // d.temporal_ratio) % pt:
        raise ValueError(f"grid point {frames},{size},{spec_time}: local views of {frames} // "
                         f"{d.temporal_ratio} frames are not whole tubelets of {pt}")
    step = math.lcm(ph, pw)
    crop = max(step, round(size * d.video_local.crop_size / m.frame_size / step) * step)
    lm = d.logmel
    base_local = mel_frames(d.audio_local.duration or d.clip_duration, lm.sample_rate, lm.hop_length)
    pa = m.audio_patch[1]
    local_frames = max(pa, round(spec_time * base_local / m.spec_size[1] / pa) * pa)
    local_seconds = (local_frames - 1) * lm.hop_length / lm.sample_rate  # exactly local_frames mel frames
    return [
        f"model.num_frames={frames}",
        f"model.frame_size={size}",
        f"model.spec_size=[{m.spec_size[0]},{spec_time}]",
        f"data.video_local.crop_size={crop}",
        f"data.audio_local.duration={local_seconds!r}",
    ]


def token_counts(cfg: PretrainConfig) -> dict[str, int]:
    """Tokens of the global and local views of each modality."""
    m, d = cfg.model, cfg.data
    pt, ph, pw = m.video_patch
    pf, pa = m.audio_patch
    local_time = mel_frames(d.audio_local.duration or d.clip_duration, d.logmel.sample_rate, d.logmel.hop_length)
    return {
        "video_tokens": (m.num_frames // pt) * (m.frame_size // ph) * (m.frame_size // pw),
        "audio_tokens": (m.spec_size[0] // pf) * (m.spec_size[1] // pa),
        "video_local_tokens": (m.num_frames // d.temporal_ratio // pt) * (d.video_local.crop_size // ph)
        * (d.video_local.crop_size // pw),
        "audio_local_tokens": (m.spec_size[0] // pf) * (local_time // pa),
    }


def run_point(config: str, overrides: list[str], args) -> dict:
    """One fresh ``pretrain_step.py`` process; its JSON line, or ``{"error": ...}`` when it fails."""
    cmd = [sys.executable, str(STEP_BENCHMARK), "--config", config, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads), "--peak-seconds", str(args.peak_seconds)]
    for text in overrides:
        cmd += ["--set", text]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def plot(results: list[dict], path: Path, title: str) -> Path:
    """ms/step and peak memory against video and audio tokens (log-log), one column per modality; failed points
    are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col")
    for col, modality in enumerate(("video", "audio")):
        x = [r[f"{modality}_tokens"] for r in ok]
        axes[0, col].plot(x, [r["ms_per_step"] for r in ok], "o-")
        axes[0, col].set_ylabel("ms / step")
        axes[1, col].plot(x, [r["peak_rss_mb"] for r in ok], "o-", label="peak RSS")
        if any(r.get("cuda_peak_mb") is not None for r in ok):
            axes[1, col].plot(x, [r["cuda_peak_mb"] for r in ok], "s--", label="CUDA max allocated")
        axes[1, col].set_ylabel("peak memory (MB)")
        axes[1, col].set_xlabel(f"{modality} tokens (global view)")
        axes[1, col].legend()
        for row in range(2):
            axes[row, col].set_xscale("log")
            axes[row, col].set_yscale("log")
            axes[row, col].grid(True, which="both", alpha=0.3)
        for r, xi in zip(ok, x):
            axes[0, col].annotate(f"{r['num_frames']}f {r['frame_size']}px {r['spec_time']}t", (xi, r["ms_per_step"]),
                                  fontsize=7, textcoords="offset points", xytext=(4, -10))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="configs/pretrain/xkd_avdigits_cpu.yaml", help="base pretraining config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the base config, applied before every grid point")
    parser.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID), metavar="FRAMES,SIZE,SPEC_TIME",
                        help="grid points: model.num_frames, model.frame_size, model.spec_size time frames")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per point")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first counts FLOPs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--peak-seconds", type=float, default=0.5, help="matmul peak measurement, for the MFU")
    parser.add_argument("--plot", default=None, metavar="PATH", help="write a PNG plot here")
    args = parser.parse_args(argv)

    base = load_config(PretrainConfig, args.config, args.set)
    points = []
    for text in args.grid:
        try:
            frames, size, spec_time = (int(v) for v in text.split(","))
        except ValueError:
            parser.error(f"--grid {text!r}: expected FRAMES,SIZE,SPEC_TIME, e.g. 16,40,160")
        try:
            points.append((frames, size, spec_time, point_overrides(base, frames, size, spec_time)))
        except ValueError as err:
            parser.error(str(err))

    results = []
    for frames, size, spec_time, overrides in points:
        cfg = load_config(PretrainConfig, args.config, args.set + overrides)
        print(f"{frames} frames, {size} px, {spec_time} mel frames ...", file=sys.stderr, flush=True)
        row = {"num_frames": frames, "frame_size": size, "spec_time": spec_time, **token_counts(cfg),
               "point_overrides": overrides, **run_point(args.config, args.set + overrides, args)}
        results.append(row)
        print(json.dumps(row), flush=True)

    header = ("frames", "px", "mel", "v tok", "a tok", "ms/step", "peak MB")
    print(" ".join(f"{h:>7}" for h in header), file=sys.stderr)
    for r in results:
        keys = ("num_frames", "frame_size", "spec_time", "video_tokens", "audio_tokens")
        cells = " ".join(f"{r[k]:>7}" for k in keys)
        if "error" in r:
            print(f"{cells}  failed: {r['error']}", file=sys.stderr)
        else:
            peak = r["cuda_peak_mb"] if r.get("cuda_peak_mb") is not None else r["peak_rss_mb"]
            print(f"{cells} {r['ms_per_step']:>7.0f} {peak:>7.0f}", file=sys.stderr)
    if args.plot and all("error" in r for r in results):
        print("no plot: no grid point succeeded", file=sys.stderr)
    elif args.plot:
        title = f"{args.config} {' '.join(args.set)}: batch {base.data.batch_size}, {base.method}"
        print(f"plot: {plot(results, Path(args.plot), title)}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
