"""Long-run memory: does a pretraining run's resident memory stay flat over thousands of steps?

    python benchmarks/long_run_memory.py                                # 2000 steps of the AV-Digits CPU recipe
    python benchmarks/long_run_memory.py --steps 30 --every 5 --plot rss.png
    python benchmarks/long_run_memory.py --manifest my.csv --set data.batch_size=8

The run is the public engine, ``xkd.engine.pretrain.pretrain``, on real data (AV-Digits in --data, built with
``xkd data prepare av-digits`` first if missing, or --manifest). The engine has no per-step callback, so a sampling
thread watches ``metrics.csv`` (the run logs every --every steps) and, each time a new step is logged, reads the
resident set size of this process and of every descendant (DataLoader workers) from /proc (Linux only). Prints one
JSON object (steps, rss_mb series, slope in MB per 1000 steps after a warm-up, fitted on the samples taken with
every worker alive: ``trend_steps``) and a short summary; --plot writes a PNG.

A steady slope well above zero over a long run points to a leak. Allocator warm-up shows as an early rise (left out
of the slope by --warmup), and the DataLoader workers, restarted every epoch, make their RSS a saw-tooth, so judge
the slope only over a run that spans many epochs (2000 steps of the default recipe span about 18).

RSS counts pages shared between the main process and its forked workers once per process; PSS (proportional set
size, /proc/<pid>/smaps_rollup) splits them, so ``pss_mb`` is the better total when workers are running.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig, load_config
from xkd.data.views import pretrain_dataset
from xkd.engine.pretrain import pretrain

DEFAULT_CONFIG = "configs/pretrain/xkd_avdigits_cpu.yaml"
DEFAULT_DATA = "data/av-digits"


def _status_kb(pid: int, field: str, source: str = "status") -> int:
    """A ``kB`` field of /proc/<pid>/status (or smaps_rollup); 0 if the process is gone or the field is absent."""
    try:
        text = Path(f"/proc/{pid}/{source}").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, flags=re.MULTILINE)
    return int(m.group(1)) if m else 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc/<pid>/task/<tid>/children (children of any of its threads)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    stack.append(child)
    return found


def memory_sample(pid: int) -> dict[str, float]:
    """RSS of ``pid`` and of its live descendants, and the PSS of them all, in MB; ``processes`` counts them.

    A process that is exiting (a zombie) has no VmRSS and is not counted."""
    children = [(c, kb) for c in descendants(pid) if (kb := _status_kb(c, "VmRSS")) > 0]
    main_kb = _status_kb(pid, "VmRSS")
    children_kb = sum(kb for _, kb in children)
    pss_kb = sum(_status_kb(p, "Pss", "smaps_rollup") for p in (pid, *(c for c, _ in children)))
    return {"main_rss_mb": main_kb / 1024, "children_rss_mb": children_kb / 1024,
            "rss_mb": (main_kb + children_kb) / 1024, "pss_mb": pss_kb / 1024, "processes": 1 + len(children)}


class StepSampler(threading.Thread):
    """Samples :func:`memory_sample` whenever ``metrics.csv`` in ``run_dir`` gains a row (a logged step)."""

    def __init__(self, run_dir: Path, poll: float = 0.05):
        super().__init__(daemon=True)
        self.metrics = run_dir / "metrics.csv"
        self.poll = poll
        self.samples: list[dict[str, float]] = []
        self.t0 = time.perf_counter()
        self._done = threading.Event()

    def _last_step(self) -> int | None:
        try:
            text = self.metrics.read_text()
        except OSError:
            return None
        steps = re.findall(r"^(\d+),.*\n", text, flags=re.MULTILINE)  # complete rows only
        return int(steps[-1]) if steps else None

    def sample(self, step: int) -> None:
        self.samples.append({"step": step, "time_s": time.perf_counter() - self.t0, **memory_sample(os.getpid())})

    def run(self) -> None:
        self.sample(0)
        seen = 0
        while not self._done.is_set():
            step = self._last_step()
            if step is not None and step > seen:
                seen = step
                self.sample(step)
            self._done.wait(self.poll)

    def stop(self) -> None:
        self._done.set()
        self.join()


def slope_per_1000(steps: list[int], values: list[float], warmup: float) -> float | None:
    """Least-squares slope of ``values`` over ``steps`` (MB per 1000 steps), ignoring the first ``warmup`` fraction
    of the steps; None with fewer than two samples left."""
    if not steps:
        return None
    cut = warmup * max(steps)
    kept = [(s, v) for s, v in zip(steps, values) if s >= cut]
    if len(kept) < 2:
        return None
    s, v = np.array(kept, dtype=np.float64).T
    return float(np.polyfit(s, v, 1)[0] * 1000)


def ensure_manifest(data: Path) -> Path:
    """``data/manifest.csv``, building AV-Digits into ``data`` first when it is missing."""
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        from xkd.datasets.avdigits import prepare_avdigits

        print(f"building AV-Digits in {data} (xkd data prepare av-digits)", file=sys.stderr)
        manifest = prepare_avdigits(data)
    return manifest


def plot(result: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    for key, label in (("rss_mb", "RSS, all processes"), ("main_rss_mb", "RSS, main process"),
                       ("pss_mb", "PSS, all processes")):
        ax.plot(result["steps"], result[key], label=label, marker="." if len(result["steps"]) < 60 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("MB")
    slope = result["slope_mb_per_1000_steps"]
    ax.set_title(f"{Path(result['config']).name}: slope {slope:+.1f} MB / 1000 steps" if slope is not None
                 else Path(result["config"]).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    return path


def _slope_text(value: float | None) -> str:
    return "n/a (too few samples)" if value is None else f"{value:+.1f} MB / 1000 steps"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="pretraining config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps to run")
    parser.add_argument("--every", type=int, default=20, help="sample memory every this many steps")
    parser.add_argument("--data", default=DEFAULT_DATA, help="AV-Digits folder (built if missing)")
    parser.add_argument("--manifest", default=None, help="train on this manifest instead of --data")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one, deleted afterwards)")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of steps left out of the slope")
    parser.add_argument("--plot", default=None, help="write a PNG of the series here")
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").is_file():
        parser.error("needs /proc (Linux) to read process memory")

    manifest = Path(args.manifest) if args.manifest else ensure_manifest(Path(args.data))
    overrides = [f"data.manifest={manifest}", *args.set, f"run.log_every={args.every}"]
    cfg = load_config(PretrainConfig, args.config, overrides)
    # Enough epochs for --steps (the schedules stretch accordingly; memory does not depend on them).
    samples_per_step = cfg.data.batch_size * cfg.optim.accum_steps
    steps_per_epoch = (cfg.run.epoch_size or len(pretrain_dataset(cfg))) // samples_per_step
    if steps_per_epoch < 1:
        parser.error(f"{manifest} holds fewer clips than one step of {samples_per_step}")
    cfg.optim.epochs = max(cfg.optim.epochs, math.ceil(args.steps / steps_per_epoch))

    with tempfile.TemporaryDirectory(prefix="xkd-memory-") as tmp:
        run_dir = Path(args.out) if args.out else Path(tmp) / "run"
        sampler = StepSampler(run_dir)
        sampler.start()
        try:
            summary = pretrain(cfg, run_dir, max_steps=args.steps, progress=sys.stderr.isatty())
        finally:
            sampler.stop()
    samples = sampler.samples
    steps = [s["step"] for s in samples]
    # The trend uses the samples taken with every worker alive: the last step's sample races with the workers
    # shutting down at the end, and a sample at an epoch boundary may catch them restarting.
    trend = [s for s in samples if s["step"] < summary["steps"]]
    full = max((s["processes"] for s in trend), default=1)
    trend = [s for s in trend if s["processes"] == full]

    def slope(key: str) -> float | None:
        return slope_per_1000([s["step"] for s in trend], [s[key] for s in trend], args.warmup)

    result = {
        "config": args.config,
        "manifest": str(manifest),
        "overrides": args.set,
        "steps_run": summary["steps"],
        "every": args.every,
        "num_workers": cfg.data.num_workers,
        "batch": samples_per_step,
        "wall_s": samples[-1]["time_s"],
        "steps": steps,
        **{key: [round(s[key], 1) for s in samples] for key in ("rss_mb", "main_rss_mb", "children_rss_mb", "pss_mb")},
        "processes": [s["processes"] for s in samples],
        "trend_steps": [s["step"] for s in trend],
        "slope_mb_per_1000_steps": slope("rss_mb"),
        "main_slope_mb_per_1000_steps": slope("main_rss_mb"),
        "pss_slope_mb_per_1000_steps": slope("pss_mb"),
        "peak_rss_mb": max(s["rss_mb"] for s in samples),
        "warmup_fraction": args.warmup,
    }
    if args.plot:
        result["plot"] = str(plot(result, Path(args.plot)))
    text = json.dumps(result)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(f"{summary['steps']} steps in {result['wall_s']:.0f} s, {len(samples)} samples: RSS (all processes) "
          f"{result['rss_mb'][0]:.0f} -> {result['rss_mb'][-1]:.0f} MB, peak {result['peak_rss_mb']:.0f} MB; "
          f"slope after the first {args.warmup:.0%} of steps: RSS {_slope_text(result['slope_mb_per_1000_steps'])}, "
          f"main process {_slope_text(result['main_slope_mb_per_1000_steps'])}, "
          f"PSS {_slope_text(result['pss_slope_mb_per_1000_steps'])}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
