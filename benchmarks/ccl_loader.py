"""CCL's training loader alone: seconds per epoch of ``TrainClips`` (window draw, decode or cached read, training
view, batching) over a config's training windows, without the network.

    python benchmarks/ccl_loader.py --config configs/ccl/avdigits_cpu.yaml                        # data.preload as set
    python benchmarks/ccl_loader.py --config configs/ccl/avdigits_cpu.yaml --set data.preload=false  # decode each time

With ``data.preload`` the windows are decoded once into ``run.cache_dir`` first (``prepare_s``: the time to build or
open that cache). One JSON object on stdout; a summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.utils.data import DataLoader

import xkd.ccl.train as ccl_train
from xkd.ccl.config import CCLConfig
from xkd.ccl.data import TrainClips, class_names, clip_windows, load_split, predecode_windows
from xkd.cli_help import HelpFormatter
from xkd.config_io import load_config
from xkd.data.dataset import collate_clips
from xkd.data.sampler import StepBatchSampler


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="configs/ccl/avdigits_cpu.yaml", help="CCL config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the views run on them)")
    args = parser.parse_args(argv)
    cfg = load_config(CCLConfig, args.config, args.set)
    data = cfg.data
    windows = clip_windows(load_split(data, data.train_split), data.clip_duration, data.label_column,
                           class_names(data))
    t0 = time.perf_counter()
    cache = predecode_windows(windows, data, ccl_train.cache_root(cfg), progress=True) if data.preload else None
    prepare = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    dataset = TrainClips(windows, data, cfg.run.seed, cache)
    sampler = StepBatchSampler(len(dataset), data.batch_size, seed=cfg.run.seed)
    epochs, clips = [], 0
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        t0, clips = time.perf_counter(), 0
        for batch in DataLoader(dataset, batch_sampler=sampler, num_workers=data.num_workers,
                                collate_fn=collate_clips):
            clips += batch["video"].shape[0]
        epochs.append(time.perf_counter() - t0)
    result = {"config": args.config, "overrides": args.set, "preload": data.preload, "prepare_s": prepare,
              "epoch_s": epochs, "clips_per_epoch": clips, "workers": data.num_workers, "threads": args.threads}
    print(json.dumps(result))
    print(f"{clips} clips per epoch: " + ", ".join(f"{s:.2f} s" for s in epochs) + f" (prepare {prepare:.2f} s)",
          file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
