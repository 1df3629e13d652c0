"""CCL's student alone: forward + backward ms per batch of a config's training clips (random pixels), with the
clips handed to the convolutions in PyTorch's default layout and channels-last (``R2Plus1D.features`` uses
channels-last on the CPU), alternating.

    python benchmarks/ccl_student.py --config configs/ccl/avdigits_cpu.yaml --threads 1

One JSON object on stdout; a summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from xkd.ccl.config import CCLConfig
from xkd.ccl.train import build_student
from xkd.cli_help import HelpFormatter
from xkd.config_io import load_config

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


def step_ms(student, clips: torch.Tensor, layout: torch.memory_format, steps: int) -> float:
    """Mean ms of forward + backward through the stem, the stages and the head, input in ``layout``."""
    def one() -> None:
        x = ((clips - student.mean) / student.std).contiguous(memory_format=layout)
        logits = student.fc(student.pool(student.stages(student.stem(x))).flatten(1))
        logits.sum().backward()

    one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps * 1e3


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="configs/ccl/avdigits_cpu.yaml", help="CCL config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per layout")
    args = parser.parse_args(argv)
    cfg = load_config(CCLConfig, args.config, args.set)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    student = build_student(cfg, num_classes=10)
    size = cfg.data.train_view.crop_size
    clips = torch.rand(cfg.data.batch_size, 3, cfg.data.num_frames, size, size)
    runs: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for _ in range(args.repeats):
        for name, layout in LAYOUTS.items():
            runs[name].append(step_ms(student, clips, layout, args.steps))
    out = {"config": args.config, "overrides": args.set, "threads": args.threads, "batch": cfg.data.batch_size,
           "clip": [3, cfg.data.num_frames, size, size], "runs_ms": runs,
           "median_ms": {name: statistics.median(v) for name, v in runs.items()}}
    print(" ".join(f"{name} {ms:.0f} ms" for name, ms in out["median_ms"].items()), file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
