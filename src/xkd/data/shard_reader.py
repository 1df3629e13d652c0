"""Reading the WebDataset shards written by ``xkd data shard`` (:mod:`xkd.datasets.shards`): which shards, how many
samples each holds, and any run of consecutive samples of a shard, read in place.

A shard set is given as the shard folder (its ``index.json`` lists the shards) or as a brace pattern such as
``/data/k400/shard-{000000..000239}.tar`` (each shard's count is then read from the ``.json`` written beside it).
A shard's member table (key, then offset and size of the media and of the row) is read once per process from the
shard's ``.json`` record (the writer lists it there; the tar headers are scanned for a shard without one), so a
window of samples costs one open and a few seeks, with no pass over the samples before it.

Evaluation reads shards as a manifest (:func:`xkd.data.manifest.read_manifest` of a shard folder): each row's path
is then a member path ``<shard>.tar/<key>.<suffix>`` that :func:`read_member` reads in place.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from braceexpand import braceexpand

from xkd.data.media import MediaBytes

FORMAT = "xkd-shards-1"
INDEX_FILE = "index.json"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


@dataclass(frozen=True)
class Member:
    """One sample of a shard: where its media file and its row (JSON) lie in the tar."""

    key: str
    suffix: str  # the media file's suffix, e.g. "mp4"
    media: tuple[int, int]  # (offset, size) in bytes
    row: tuple[int, int]


class ShardSetError(ValueError):
    """A shard folder or pattern that cannot be read (missing files, not written by ``xkd data shard``)."""


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardSetError(f"{path}: no such file ({what}; shards are written by `xkd data shard`)") from None
    except (OSError, ValueError) as err:
        raise ShardSetError(f"{path}: cannot read {what}: {err}") from None


def _check_present(paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ShardSetError(f"{len(missing)} of {len(paths)} shards missing, first: {missing[0]}")


class ShardSet:
    """The shards of a folder or a brace pattern: ``paths``, ``counts`` (samples per shard), ``splits`` (samples
    per manifest split over the whole set, when the index records them) and ``reencode`` (the settings the media
    were re-encoded with, :class:`xkd.datasets.reencode.Reencoding` as a dict; None for the original files)."""

    def __init__(self, spec: str | Path):
        spec = str(spec)
        folder = Path(spec)
        if folder.is_dir():
            index = _read_json(folder / INDEX_FILE, "the shard index")
            if index.get("format") != FORMAT:
                raise ShardSetError(f"{folder / INDEX_FILE}: format {index.get('format')!r}, expected {FORMAT!r}")
            self.paths = [folder / s["name"] for s in index["shards"]]
            _check_present(self.paths)
            self.counts = [int(s["samples"]) for s in index["shards"]]
            self.splits = index.get("splits")
            self.reencode = index.get("reencode")
        elif "{" not in spec and not folder.is_file():
            raise ShardSetError(f"{spec}: no such shard folder or file (a folder of `xkd data shard`, or a brace "
                                "pattern such as DIR/shard-{000000..000009}.tar)")
        else:
            self.paths = [Path(p) for p in braceexpand(spec)]
            if len(self.paths) != len(set(self.paths)) or spec.endswith("/"):
                raise ShardSetError(f"{spec}: not a shard folder, and the pattern names a shard twice")
            _check_present(self.paths)
            self.counts = [int(_read_json(p.with_suffix(".json"), "the shard's record")["samples"]) for p in self.paths]
            index_path = self.paths[0].parent / INDEX_FILE
            index = _read_json(index_path, "the shard index") if index_path.is_file() else {}
            self.splits, self.reencode = index.get("splits"), index.get("reencode")
        if sum(self.counts) == 0:
            raise ShardSetError(f"{spec}: the shards hold no sample")
        self.spec = spec

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def samples(self) -> int:
        return sum(self.counts)

    def check_split(self, split: str) -> None:
        """Raise when the shards may hold rows of another split than ``split`` ('' = any split is fine)."""
        if not split:
            return
        if self.splits is None:
            raise ShardSetError(f"{self.spec}: the shard index does not record the splits of its rows; set "
                                f"data.split='' to train on every sample, or shard the '{split}' rows again")
        others = {name: n for name, n in self.splits.items() if name != split}
        if others:
            raise ShardSetError(f"{self.spec}: the shards hold rows of other splits than '{split}' ({others}); shard "
                                f"one split (`xkd data shard MANIFEST --split {split}`) or set data.split=''")

    def unlike(self, short_side: int | None, fps: float, sample_rate: int) -> list[str]:
        """What a run decoding at ``short_side`` / ``fps`` / ``sample_rate`` asks beyond what re-encoded shards hold
        (empty for shards of the original files)."""
        held = self.reencode
        if not held:
            return []
        problems = []
        if short_side is None or short_side > held["short_side"]:
            problems.append(f"the media were re-encoded at a short side of {held['short_side']} px, and the config "
                            f"decodes at {short_side or 'the full size'} (frames upscaled)")
        if held.get("fps") and fps > held["fps"]:
            problems.append(f"the media were re-encoded at {held['fps']:g} fps, and the config samples {fps:g} fps "
                            "(frames repeated)")
        if sample_rate > held["sample_rate"]:
            problems.append(f"the audio was re-encoded at {held['sample_rate']} Hz, and the config reads it at "
                            f"{sample_rate} Hz (no content above {held['sample_rate'] // 2} Hz)")
        return problems

    def members(self, shard: int) -> list[Member]:
        """The samples of shard ``shard`` in the order they were written."""
        members = list(member_table(self.paths[shard]).values())
        if len(members) != self.counts[shard]:
            raise ShardSetError(f"{self.paths[shard]}: holds {len(members)} samples, its record says "
                                f"{self.counts[shard]}")
        return members

    def read(self, shard: int, positions: list[int]) -> list[tuple[MediaBytes, dict[str, Any]]]:
        """The media (as :class:`MediaBytes` named ``<shard>/<key>.<suffix>``) and the row record of the samples at
        ``positions`` (taken modulo the shard's count) of shard ``shard``, in that order."""
        members = self.members(shard)
        with self.paths[shard].open("rb") as fh:
            return [_read_sample(fh, self.paths[shard], members[p % len(members)]) for p in positions]

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every sample's address (``<shard>/<key>.<suffix>``, relative to the shard folder) and row record."""
        for shard, path in enumerate(self.paths):
            for media, record in self.read(shard, range(self.counts[shard])):
                yield media.name, record


def _read_sample(fh: BinaryIO, path: Path, member: Member) -> tuple[MediaBytes, dict[str, Any]]:
    fh.seek(member.row[0])
    record = json.loads(fh.read(member.row[1]))
    fh.seek(member.media[0])
    return MediaBytes(f"{path.name}/{member.key}.{member.suffix}", fh.read(member.media[1])), record


def scan_members(path: Path) -> list[Member]:
    """The samples of the tar ``path`` in the order written, read from its headers (one seek per member)."""
    parts: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                key, _, suffix = info.name.partition(".")
                parts.setdefault(key, {})[suffix] = (info.offset_data, info.size)
    except (OSError, tarfile.TarError) as err:
        raise ShardSetError(f"{path}: cannot read the tar: {err}") from None
    members = []
    for key, files in parts.items():
        media = [s for s in files if s != "json"]
        if "json" not in files or len(media) != 1:
            raise ShardSetError(f"{path}: sample {key} holds {sorted(files)}, expected one media file and json")
        members.append(Member(key, media[0], files[media[0]], files["json"]))
    return members


@lru_cache(maxsize=256)
def member_table(path: Path) -> dict[str, Member]:
    """Key -> :class:`Member` of the tar ``path``, in the order written: from the member list its ``.json`` record
    holds (one small read), else from the tar headers; cached per process."""
    record = path.with_suffix(".json")
    listed = json.loads(record.read_text()).get("members") if record.is_file() else None
    if listed is None:
        members = scan_members(path)
    else:
        members = [Member(key, suffix, (media, media_size), (row, row_size))
                   for key, suffix, media, media_size, row, row_size in listed]
    return {m.key: m for m in members}


def is_member_path(path: Path) -> bool:
    """Whether ``path`` names a sample inside a shard: ``<shard folder>/<shard>.tar/<key>.<suffix>``."""
    return path.parent.suffix == ".tar" and path.parent.is_file()


def read_member(path: Path) -> MediaBytes:
    """The media of the sample a member path names (see :func:`is_member_path`)."""
    tar, key = path.parent, path.name.partition(".")[0]
    member = member_table(tar).get(key)
    if member is None:
        raise ShardSetError(f"{tar}: no sample {key}")
    with tar.open("rb") as fh:
        return _read_sample(fh, tar, member)[0]
