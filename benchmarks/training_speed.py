"""End-to-end pretraining speed: a real ``xkd pretrain`` run (data loading, workers and step sharing the machine).

    python benchmarks/training_speed.py                                     # the AV-Digits CPU recipe, 100 steps
    python benchmarks/training_speed.py --set run.amp=bf16 --set data.decoded_cache=data/av-digits-decoded
    python benchmarks/training_speed.py --set run.threads=2                 # torch's default threads beside 2 workers

Runs ``python -m xkd pretrain --config CONFIG --max-steps STEPS`` in a fresh process into a temporary folder and reads
its metrics.csv: the step time the trainer logs every ``run.log_every`` steps (wall time between log points, so it
includes waiting for the DataLoader). The first --skip steps (worker start-up, first-step FLOP count) are left out.
Prints one JSON object (mean and median ms/step after --skip, clips/s, wall seconds of the whole command) and a
one-line summary. Compare with benchmarks/pretrain_step.py (the step alone) and data_pipeline.py (the loader alone).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xkd.cli_help import HelpFormatter


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="configs/pretrain/xkd_avdigits_cpu.yaml", help="pretraining config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps of the run")
    parser.add_argument("--skip", type=int, default=20, help="first steps left out of the mean")
    args = parser.parse_args(argv)
    if args.skip >= args.steps:
        parser.error("--skip must be smaller than --steps")

    with tempfile.TemporaryDirectory(prefix="xkd-speed-") as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "xkd", "pretrain", "--config", args.config, "--out", str(out),
                   "--max-steps", str(args.steps), "--no-progress"]
        for item in args.set:
            command += ["--set", item]
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"xkd pretrain failed ({done.returncode}):\n{done.stderr[-3000:]}")
        with (out / "metrics.csv").open() as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) > args.skip]
    if not rows:
        sys.exit(f"no log point after step {args.skip}: lower --skip or run.log_every")
    step_ms = [1000 * float(r["step_time"]) for r in rows]
    clips = [float(r["clips_per_s"]) for r in rows]
    result = {"config": args.config, "overrides": args.set, "steps": args.steps, "skip": args.skip,
              "ms_per_step_mean": statistics.fmean(step_ms), "ms_per_step_median": statistics.median(step_ms),
              "clips_per_s_mean": statistics.fmean(clips), "wall_s": wall, "log_points": len(rows)}
    print(json.dumps(result))
    print(f"{args.steps} steps in {wall:.0f} s; after step {args.skip}: {result['ms_per_step_mean']:.0f} ms/step "
          f"(median {result['ms_per_step_median']:.0f}), {result['clips_per_s_mean']:.1f} clips/s", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
