"""Pretraining loader clips/s per source and read path: the media files, shards of their original bytes, shards
re-encoded at the training resolution, and re-encoded shards with several clips per decode; same recipe, same
workers, runs alternating.

    python benchmarks/shard_loader.py --sources config --workers 0 1 2          # AV-Digits v2: files against shards
    python benchmarks/shard_loader.py --config configs/pretrain/xkd_kinetics400.yaml --sources hd fullhd \\
        --paths files reencoded reencoded-x4 --rows 16 --workers 1 --set data.batch_size=8 --batches 4

Sources, as in benchmarks/data_pipeline.py:
- ``config``: the rows of the config's manifest and split (AV-Digits v2 with the default config);
- ``hd`` / ``fullhd``: the 10 s 1280x720 / 1920x1080 25 fps H.264 (one GOP) / 48 kHz AAC file of
  benchmarks/data_pipeline.py, listed --rows times (each row a distinct sample in the shards, read as a distinct
  file's bytes would be).

Read paths (--paths), each the pretraining loader (:class:`xkd.data.pretrain_batches.PretrainBatches`):
- ``files``: ``data.manifest`` (a permutation of the rows per epoch);
- ``shards``: ``data.shards`` of the original bytes (``xkd data shard``);
- ``reencoded``: ``data.shards`` re-encoded (``xkd data shard --reencode --reencode-side``, a key frame every
  second, 16 kHz mono audio), at the source frame rate, or ``reencoded@Ffps`` at F frames per second;
- ``reencoded-xN`` (or ``reencoded@Ffps-xN``): the same with ``data.clips_per_decode=N``.
Every clip is decoded, resized and turned into the recipe's views. After --warmup batches per worker, --batches
batches are timed; the paths alternate --repeats times and the median is reported. Files and shards are read from
the page cache, so the numbers are decoding and views, not storage. ``--decode-threads 1 0`` measures each path with
one FFmpeg decoder thread and with FFmpeg's choice; ``--views-on loader device`` with the video views finished in the
loader and left to the training step (``data.video_views_on``). Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
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
from xkd.datasets.reencode import Reencoding
from xkd.datasets.shards import shard_manifest

HEIGHTS = {"hd": 720, "fullhd": 1080}
PATH = re.compile(r"files|shards|reencoded(@(\d+)fps)?(-x(\d+))?")  # see the module docstring


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
    """The rows every read path of the source reads."""
    if source in HEIGHTS:
        media = str(hd_file(media_dir, HEIGHTS[source]).resolve())
        return Manifest([ManifestRow(media, split=cfg.data.split)] * rows)
    manifest = read_manifest(cfg.data.manifest, root=cfg.data.root or None)
    return manifest.filter(split=cfg.data.split) if cfg.data.split else manifest


def path_configs(cfg: PretrainConfig, paths: list[str], manifest: Manifest, folder: Path, args) -> tuple[dict, dict]:
    """{path: config} reading the source each way, and {what was built: seconds}."""
    configs, seconds = {}, {}
    for path in paths:
        c = copy.deepcopy(cfg)
        c.data.decoded_cache, c.data.manifest, c.data.shards = "", "", ""
        if path == "files":
            c.data.manifest, c.data.root, c.data.split = (
                str(write_manifest(manifest.relative_to(folder), folder / "rows.csv")), "", "")
        else:
            parts = PATH.fullmatch(path)
            fps = float(parts.group(2)) if parts.group(2) else None
            reencode = None if path == "shards" else Reencoding(args.reencode_side, fps, keyframe_interval=1.0)
            out = folder / ("shards" if reencode is None else f"reencoded-{fps or 'source'}fps")
            if not (out / "index.json").is_file():
                t0 = time.perf_counter()
                shard_manifest(manifest, out, args.shard_size, progress=False, reencode=reencode,
                               processes=args.processes)
                seconds[out.name] = time.perf_counter() - t0
            c.data.shards = str(out)
            c.data.clips_per_decode = int(parts.group(4)) if parts.group(4) else 1
        configs[path] = c
    return configs, seconds


def replace_data(cfg: PretrainConfig, **values) -> PretrainConfig:
    cfg = copy.deepcopy(cfg)
    for key, value in values.items():
        setattr(cfg.data, key, value)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="configs/pretrain/xkd_avdigits_v2_cpu.yaml", help="pretraining config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--sources", nargs="+", choices=("config", *HEIGHTS), default=["config", "hd"],
                        help="config = the config's manifest; hd / fullhd = the generated 10 s 720p / 1080p file, "
                             "--rows times")
    parser.add_argument("--paths", nargs="+", default=["files", "shards"],
                        help="read paths: files, shards, reencoded, reencoded@Ffps (F fps), and those with -xN (N "
                             "clips per decode)")
    parser.add_argument("--rows", type=int, default=64, help="rows of the hd and fullhd sources")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--reencode-side", type=int, default=128, help="short side of the re-encoded shards")
    parser.add_argument("--processes", type=int, default=2, help="processes that write the re-encoded shards")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--decode-threads", nargs="+", type=int, default=[1],
                        help="data.decode_threads values; more than one measures each path with each (path/tN)")
    parser.add_argument("--views-on", nargs="+", choices=("loader", "device"), default=["loader"],
                        help="data.video_views_on values; more than one measures each path with each (path/loader, "
                             "path/device). With device the loader leaves the video views' colour jitter, grayscale, "
                             "blur and normalisation to the training step, which is not timed here")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per worker first")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of the paths per worker count")
    parser.add_argument("--media-dir", default=str(Path(tempfile.gettempdir()) / "xkd-bench-media"),
                        help="where the hd and fullhd files are written once and reused")
    args = parser.parse_args(argv)
    bad = [p for p in args.paths if not PATH.fullmatch(p)]
    if bad:
        parser.error(f"unknown read paths {bad}: choose from files, shards, reencoded, reencoded@Ffps, and those "
                     "with -xN")
    cfg = load_config(PretrainConfig, args.config, args.set)

    results = []
    with tempfile.TemporaryDirectory(prefix="xkd-shard-bench-") as tmp:
        for source in args.sources:
            folder = Path(tmp) / source
            folder.mkdir()
            manifest = source_manifest(cfg, source, args.rows, Path(args.media_dir))
            configs, built = path_configs(cfg, args.paths, manifest, folder, args)
            if len(args.decode_threads) > 1:  # each path once per thread count, named path/tN
                configs = {f"{p}/t{n}": replace_data(c, decode_threads=n) for p, c in configs.items()
                           for n in args.decode_threads}
            if len(args.views_on) > 1:  # each path once per place of the views' finish, named path/loader, path/device
                configs = {f"{p}/{on}": replace_data(c, video_views_on=on) for p, c in configs.items()
                           for on in args.views_on}
            names = list(configs)
            for workers in args.workers:
                runs: dict[str, list[float]] = {p: [] for p in names}
                for _ in range(args.repeats):
                    for path in names:
                        runs[path].append(loader_rate(configs[path], workers, args.warmup, args.batches))
                base = statistics.median(runs[names[0]])
                row = {"source": source, "workers": workers, "samples": len(manifest), "build_seconds": built,
                       **{f"{p}_clips_per_s": statistics.median(v) for p, v in runs.items()},
                       **{f"{p}_runs": v for p, v in runs.items()},
                       **{f"{p}_over_{names[0]}": statistics.median(v) / base for p, v in runs.items()}}
                results.append(row)
                cells = ", ".join(f"{p} {statistics.median(v):.1f} ({statistics.median(v) / base:.2f}x)"
                                  for p, v in runs.items())
                print(f"{source:<7} workers {workers}: clips/s {cells}", file=sys.stderr)
    out = {"config": args.config, "overrides": args.set, "batch": cfg.data.batch_size,
           "shard_window": cfg.data.shard_window, "reencode_side": args.reencode_side, "paths": args.paths,
           "results": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
