"""Pretraining loader clips/s from WebDataset shards against from the media files: same clips, same workers.

    python benchmarks/shard_loader.py                                  # AV-Digits v2 and the 720p file, 0 1 2 workers
    python benchmarks/shard_loader.py --sources hd --rows 32 --workers 1 2 --batches 10
    python benchmarks/shard_loader.py --config configs/pretrain/xkd_kinetics400.yaml --sources hd \\
        --set data.batch_size=8

Sources, as in benchmarks/data_pipeline.py:
- ``config``: the rows of the config's manifest and split (AV-Digits v2 with the default config);
- ``hd``: the 10 s 1280x720 25 fps H.264 / 48 kHz AAC file of benchmarks/data_pipeline.py, listed --rows times (each
  row is a distinct sample in the shards, so its bytes are read as a distinct file's would be).

Each source is sharded once into a temporary folder (``xkd data shard`` with --shard-size rows per shard). Both
loaders are the pretraining loaders (:class:`xkd.data.pretrain_batches.PretrainBatches`): ``files`` with
``data.manifest`` (a permutation of the rows per epoch), ``shards`` with ``data.shards`` (windows of
``data.shard_window`` consecutive samples drawn with resampling). Every item is decoded, resized and turned into the
XKD views. After --warmup batches per worker, --batches batches are timed; the runs alternate files / shards
--repeats times and the median is reported. The files and shards are read from the page cache: what shards save on a
network file system or a disk (one open per window instead of one per clip) is not measured here. Prints one JSON
object and a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from data_pipeline import hd_file
from xkd.cli_help import HelpFormatter
from xkd.config import PretrainConfig, load_config
from xkd.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from xkd.data.pretrain_batches import PretrainBatches
from xkd.datasets.shards import shard_manifest


def loader_rate(cfg: PretrainConfig, workers: int, warmup: int, batches: int) -> float:
    """Clips/s of the pretraining loader of ``cfg`` with ``workers`` workers, timed after the warm-up batches."""
    cfg = copy.deepcopy(cfg)
    warm = warmup * max(workers, 1)
    cfg.data.num_workers = workers
    cfg.run.epoch_size = cfg.data.batch_size * (warm + batches)
    stream = iter(PretrainBatches(cfg).loader(0, 0))
    for _ in range(warm):
        next(stream)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(stream)
    elapsed = time.perf_counter() - t0
    del stream
    return batches * cfg.data.batch_size / elapsed


def source_manifest(cfg: PretrainConfig, source: str, rows: int, media_dir: Path) -> Manifest:
    """The rows both loaders of the source read."""
    if source == "hd":
        media = str(hd_file(media_dir).resolve())
        return Manifest([ManifestRow(media, split=cfg.data.split)] * rows)
    manifest = read_manifest(cfg.data.manifest, root=cfg.data.root or None)
    return manifest.filter(split=cfg.data.split) if cfg.data.split else manifest


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="configs/pretrain/xkd_avdigits_v2_cpu.yaml", help="pretraining config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--sources", nargs="+", choices=("config", "hd"), default=["config", "hd"],
                        help="config = the config's manifest; hd = the generated 10 s 1280x720 file, --rows times")
    parser.add_argument("--rows", type=int, default=64, help="rows of the hd source")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per worker first")
    parser.add_argument("--repeats", type=int, default=3, help="alternating files / shards runs per worker count")
    parser.add_argument("--media-dir", default=str(Path(tempfile.gettempdir()) / "xkd-bench-media"),
                        help="where the hd file is written once and reused")
    args = parser.parse_args(argv)
    cfg = load_config(PretrainConfig, args.config, args.set)

    results = []
    with tempfile.TemporaryDirectory(prefix="xkd-shard-bench-") as tmp:
        for source in args.sources:
            folder = Path(tmp) / source
            manifest = source_manifest(cfg, source, args.rows, Path(args.media_dir))
            t0 = time.perf_counter()
            index = shard_manifest(manifest, folder / "shards", args.shard_size, progress=False)
            shard_s = time.perf_counter() - t0
            files_cfg, shards_cfg = copy.deepcopy(cfg), copy.deepcopy(cfg)
            files_cfg.data.manifest, files_cfg.data.root, files_cfg.data.split = (
                str(write_manifest(manifest.relative_to(folder), folder / "rows.csv")), "", "")
            files_cfg.data.shards = ""
            shards_cfg.data.shards = str(folder / "shards")
            shards_cfg.data.decoded_cache = ""
            for workers in args.workers:
                runs: dict[str, list[float]] = {"files": [], "shards": []}
                for _ in range(args.repeats):
                    for mode, c in (("files", files_cfg), ("shards", shards_cfg)):
                        runs[mode].append(loader_rate(c, workers, args.warmup, args.batches))
                row = {"source": source, "workers": workers, "samples": index["samples"],
                       "shards": len(index["shards"]), "shard_seconds": shard_s,
                       **{f"{m}_clips_per_s": statistics.median(v) for m, v in runs.items()},
                       **{f"{m}_runs": v for m, v in runs.items()}}
                row["shards_over_files"] = row["shards_clips_per_s"] / row["files_clips_per_s"]
                results.append(row)
                print(f"{source:<7} workers {workers}: files {row['files_clips_per_s']:.1f} clips/s, shards "
                      f"{row['shards_clips_per_s']:.1f} clips/s ({row['shards_over_files']:.2f}x)", file=sys.stderr)
    out = {"config": args.config, "overrides": args.set, "batch": cfg.data.batch_size,
           "shard_window": cfg.data.shard_window, "results": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
