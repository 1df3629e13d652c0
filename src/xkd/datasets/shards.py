"""Write a manifest's media as WebDataset tar shards (``xkd data shard``): the read pattern of large corpora, where one
file per sample starves the loader.

Each sample holds the clip's original compressed file, byte for byte, under its suffix (``<key>.mp4``, ``<key>.wav``,
...), or with ``reencode`` the file re-encoded at the training resolution (:mod:`xkd.datasets.reencode`, always
``<key>.mp4``), and its manifest row as ``<key>.json`` (:func:`xkd.data.manifest.row_record`, plus ``source``: the
file it came from). The key is the row's index in the manifest. Rows are shuffled with ``seed`` before they are cut
into shards of ``shard_size`` rows, so every shard mixes the corpus. ``processes`` > 1 reads (and re-encodes) the
files of a shard in that many processes; the shards' bytes do not depend on it.

Layout of the output folder::

    shard-000000.tar ...    the shards (member times fixed at 0, so a shard's bytes depend only on its samples)
    shard-000000.json ...   per shard: samples written, samples per manifest split, the files left out with reasons,
                            and "members": [key, suffix, media offset, media size, row offset, row size] per sample
                            (readers seek to a sample without scanning the tar)
    index.json              {"format", "manifest_sha256", "seed", "shard_size", "rows", ["reencode": settings,]
                            "shards": [{"name", "samples"}], "samples", "splits": {split: samples},
                            "bad": [{"row", "path", "reason"}]}

Training and evaluation read them with :class:`xkd.data.shard_reader.ShardSet`.

A shard is written to a temporary file and renamed when complete, then its ``.json`` is written: a rerun with the
same manifest and settings skips every shard that has both, so an interrupted run resumes. A file that cannot be
read or opened as media (missing, empty, not a media container), or re-encoded, is reported and left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import webdataset
from tqdm import tqdm

from xkd.data.manifest import Manifest, row_record
from xkd.data.media import MediaError, probe
from xkd.data.shard_reader import FORMAT, INDEX_FILE, scan_members, shard_name
from xkd.datasets.reencode import Reencoding
from xkd.datasets.reencode import reencode as reencode_file

def manifest_digest(manifest: Manifest) -> str:
    """sha256 of the manifest's rows, in order (their records as JSON)."""
    digest = hashlib.sha256()
    for row in manifest:
        digest.update(json.dumps(row_record(row), sort_keys=True).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _problem(path: Path) -> str | None:
    """Why the file cannot be a sample, or None."""
    try:
        if path.stat().st_size == 0:
            return "empty: the file has no bytes"
        probe(path)
    except FileNotFoundError:
        return "missing: no such file"
    except OSError as err:
        return f"unreadable: {err}"
    except MediaError as err:
        return f"{err.reason}: {err.message}"
    return None


def _sample(job: tuple[str, Reencoding | None]) -> tuple[str, bytes | None, str | None]:
    """(suffix, media bytes, None) of one file, or (suffix, None, why it cannot be a sample); a pool's worker."""
    path, reencode = Path(job[0]), job[1]
    reason = _problem(path)
    if reason is not None:
        return "", None, reason
    if reencode is None:
        return path.suffix.lower().lstrip(".") or "media", path.read_bytes(), None
    try:
        return "mp4", reencode_file(path, reencode), None
    except MediaError as err:
        return "", None, f"{err.reason}: {err.message}"


def _write_shard(manifest: Manifest, rows: np.ndarray, path: Path, reencode: Reencoding | None, pool,
                 bar: tqdm) -> dict[str, Any]:
    """Write the samples of ``rows`` into the tar ``path`` (atomically); returns the shard's record."""
    bad, splits = [], Counter()
    tmp = path.with_name(f".{path.name}.tmp")
    jobs = [(str(manifest.resolve(manifest[i])), reencode) for i in rows.tolist()]
    samples = pool.imap(_sample, jobs) if pool is not None else map(_sample, jobs)
    with tmp.open("wb") as stream:
        sink = webdataset.TarWriter(stream, encoder=False, mtime=0)
        for i, (source, _), (suffix, data, reason) in zip(rows.tolist(), jobs, samples):
            bar.update()
            row = manifest[i]
            if reason is not None:
                bad.append({"row": i, "path": row.path, "reason": reason})
                continue
            record = {**row_record(row), "source": source}
            sink.write({"__key__": f"{i:09d}", suffix: data,
                        "json": json.dumps(record).encode("utf-8", "surrogateescape")})
            splits[row.split] += 1
        sink.close()
        stream.flush()
        os.fsync(stream.fileno())
    members = [[m.key, m.suffix, *m.media, *m.row] for m in scan_members(tmp)]
    tmp.replace(path)
    record = {"name": path.name, "samples": sum(splits.values()), "splits": dict(splits), "bad": bad,
              "members": members}
    path.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record


def shard_manifest(manifest: Manifest, out: str | Path, shard_size: int = 1000, seed: int = 0,
                   progress: bool = True, reencode: Reencoding | None = None, processes: int = 1) -> dict[str, Any]:
    """Write ``manifest`` as shards into ``out`` (see the module docstring) and return the index it writes."""
    if shard_size < 1 or processes < 1:
        raise ValueError(f"shard_size and processes must be >= 1, got {shard_size} and {processes}")
    if len(manifest) == 0:
        raise ValueError("the manifest has no rows")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"format": FORMAT, "manifest_sha256": manifest_digest(manifest), "seed": seed,
                "shard_size": shard_size, "rows": len(manifest)}
    if reencode is not None:
        settings["reencode"] = reencode.record()
    started = out / ".settings.json"
    if started.is_file() and json.loads(started.read_text()) != settings:
        raise ValueError(f"{out} holds shards of another manifest or other settings ({started}); use another folder")
    started.write_text(json.dumps(settings, indent=1))
    order = np.random.default_rng(seed).permutation(len(manifest))
    count = -(-len(manifest) // shard_size)
    records: list[dict[str, Any] | None] = [None] * count
    for k in range(count):
        path = out / shard_name(k)
        if path.is_file() and path.with_suffix(".json").is_file():
            records[k] = json.loads(path.with_suffix(".json").read_text())
    todo = [k for k in range(count) if records[k] is None]
    pool = get_context("spawn").Pool(processes) if processes > 1 and todo else None
    files = sum(len(order[k * shard_size:(k + 1) * shard_size]) for k in todo)
    with pool or contextlib.nullcontext(), tqdm(total=files, desc="reencode" if reencode else "shard", unit="file",
                                                disable=not progress) as bar:
        for k in todo:
            records[k] = _write_shard(manifest, order[k * shard_size:(k + 1) * shard_size], out / shard_name(k),
                                      reencode, pool, bar)
    index = {**settings, "shards": [{"name": r["name"], "samples": r["samples"]} for r in records],
             "samples": sum(r["samples"] for r in records),
             "splits": dict(sum((Counter(r["splits"]) for r in records), Counter())),
             "bad": [b for r in records for b in r["bad"]]}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return index
