"""What the pretraining budget allows a recipe's encoders to learn about a label when the label itself teaches them
(:mod:`xkd.engine.supervised`): the recipe's video and audio students trained with cross-entropy on a manifest column
for the same steps, saved as an xkd weights file (students) that ``xkd eval`` reads.

    python tools/supervised_ceiling.py --config configs/pretrain/xkd_avdigits_v3_cpu.yaml --steps 400 --no-mask --out RUN
    xkd eval ridge --weights RUN --dataset av-digits:data/av-digits-v3 --split val --train-clips 1 --test-clips 1

``--no-mask`` trains on whole views instead of the students' masked ones. Only the training split's labels are read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig
from xkd.config_io import load_config
from xkd.data.workers import threads_beside_workers
from xkd.engine.supervised import save, train


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
