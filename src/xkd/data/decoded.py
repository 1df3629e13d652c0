"""Pre-decoded clips: each manifest row decoded once and stored as numpy arrays that training slices (``xkd data
predecode``), so the DataLoader workers spend their time on the views instead of the demuxer and the scaler.

Layout of a cache folder::

    index.json                 {"format": "xkd-decoded-1", "decoding": {fps, short_side, sample_rate, video, audio,
                                missing_audio}}
    rows/<key>.json            {"path", "size", "mtime_ns", "lo", "hi", "frames", "samples"} or {..., "bad", "message"}
    rows/<key>.video.npy       uint8 [T, H, W, 3]: the row's span at ``fps``, short side ``short_side``
    rows/<key>.audio.npy       float32 [S]: the row's span at ``sample_rate``, mono

``key`` is a hash of the media file's absolute path and the row's ``start``/``end``. A row's span ``[lo, hi)`` is
the row's ``start``/``end``, else the whole file (the part covered by every needed stream), as in
:class:`xkd.data.dataset.ClipDataset`. Frame ``j`` of the stored video is the decoded frame nearest to
``lo + j / fps``.

A window read from the cache starts on that frame grid: the requested start is rounded to the nearest ``j / fps``
(at most half a frame period away), and audio is cut from the same instant, so the clip equals direct decoding of
the window at the rounded start. A file that changed (size or modification time) after it was decoded, a row that
is not in the cache, or a cache made with other decoding settings is an error that says to re-run ``xkd data
predecode``; a file that failed to decode is stored with its reason and raises the same :class:`MediaError` on
every read, so the dataset's bad-media policy applies unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xkd.data.manifest import Manifest, ManifestRow
from xkd.data.media import Clip, Decoding, MediaError
from xkd.data.window_samplers import AUDIO_PAD_TOLERANCE
from xkd.data.workers import init_worker
from xkd.host_memory import release_freed_host_memory

FORMAT = "xkd-decoded-1"


def row_bounds(row: ManifestRow) -> tuple[float, float | None]:
    """(lo, hi) of a row: its start / end, hi None when the file's duration must be probed."""
    return (row.start if row.start is not None else 0.0), row.end


def row_key(path: Path, lo: float, hi: float | None) -> str:
    """The file name stem of a row in the cache."""
    text = f"{Path(path).resolve()}|{lo!r}|{hi!r}"
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array)
    tmp.replace(path)


def _decode_row(job: tuple[str, float, float | None, str, dict]) -> str | None:
    """Decode one row into the cache (worker function). Returns the bad-media reason, or None."""
    path_text, lo, end, folder, decoding = job
    path, spec, rows = Path(path_text), Decoding(**decoding), Path(folder) / "rows"
    key = row_key(path, lo, end)
    meta: dict[str, Any] = {"path": str(path.resolve()), "lo": lo, "hi": end}
    try:
        meta["size"], meta["mtime_ns"] = _stat(path)
    except OSError:
        meta["size"] = meta["mtime_ns"] = None
    try:
        hi = lo + spec.span(path, lo, end)
        if hi - lo <= 0:
            raise MediaError(path, "too-short", f"the span {lo:.3f}-{hi:.3f} s is empty")
        clip = spec.window(path, lo, hi - lo)
    except MediaError as e:
        meta.update(bad=e.reason, message=e.message)
    else:
        meta.update(hi=hi, frames=0, samples=0)
        if clip.video is not None:
            _atomic_save(rows / f"{key}.video.npy", clip.video.numpy())
            meta["frames"] = int(clip.video.shape[0])
        if clip.audio is not None:
            _atomic_save(rows / f"{key}.audio.npy", clip.audio.numpy())
            meta["samples"] = int(clip.audio.shape[0])
    tmp = rows / f".{key}.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(rows / f"{key}.json")  # written last: a row is done when its json exists
    return meta.get("bad")


def _decode_row_in_worker(job: tuple[str, float, float | None, str, dict]) -> str | None:
    """:func:`_decode_row` in a pool worker, whose heap then gives the row's freed memory back (xkd.data.workers);
    the calling process, decoding in place, keeps its own allocator policy."""
    reason = _decode_row(job)
    release_freed_host_memory()
    return reason


def predecode(
    manifest: Manifest, folder: str | Path, decoding: Decoding, workers: int = 2, progress: bool = True
) -> dict[str, Any]:
    """Decode every row of ``manifest`` into the cache ``folder`` (rows already there are kept, so an interrupted run
    resumes). Returns ``{"rows", "decoded", "reused", "bad": {reason: count}, "bytes"}``."""
    from tqdm import tqdm

    folder = Path(folder)
    (folder / "rows").mkdir(parents=True, exist_ok=True)
    index = folder / "index.json"
    settings = decoding.settings()
    if index.is_file():
        stored = json.loads(index.read_text()).get("decoding")
        if stored != settings:
            raise ValueError(f"{folder} holds clips decoded with {stored}, not {settings}: use another folder")
    else:
        index.write_text(json.dumps({"format": FORMAT, "decoding": settings}, indent=1))
    jobs, reused, seen = [], 0, set()
    for row in manifest:
        path = manifest.resolve(row)
        lo, hi = row_bounds(row)
        key = row_key(path, lo, hi)
        if key in seen:
            continue
        seen.add(key)
        if (folder / "rows" / f"{key}.json").is_file():
            reused += 1
        else:
            jobs.append((str(path), lo, hi, str(folder), settings))
    bad: dict[str, int] = {}
    parallel = workers > 0 and len(jobs) > 1
    pool_or_none = get_context("spawn").Pool(workers, initializer=init_worker, initargs=(0,)) if parallel else None
    with pool_or_none or contextlib.nullcontext(), tqdm(total=len(jobs), desc="predecode", unit="file",
                                                       disable=not progress) as bar:
        if parallel:
            reasons = pool_or_none.imap_unordered(_decode_row_in_worker, jobs, chunksize=8)
        else:
            reasons = map(_decode_row, jobs)
        for reason in reasons:
            if reason:
                bad[reason] = bad.get(reason, 0) + 1
            bar.update()
    size = sum(p.stat().st_size for p in (folder / "rows").iterdir())
    return {"rows": len(seen), "decoded": len(jobs), "reused": reused, "bad": bad, "bytes": size}


@dataclass(frozen=True)
class DecodedRow:
    """One cached row: its file stem ``key``, media file, stored span ``[lo, hi)`` in seconds, frame and sample counts."""

    key: str
    path: Path
    lo: float
    hi: float
    frames: int
    samples: int

    @property
    def span(self) -> float:
        return self.hi - self.lo


class DecodedClips:
    """Reads windows of rows from a cache folder made by :func:`predecode` with the same :class:`Decoding`."""

    def __init__(self, folder: str | Path, decoding: Decoding):
        self.folder = Path(folder)
        index = self.folder / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{self.folder} is not a decoded-clip cache (no index.json); make one with "
                                    "`xkd data predecode --config CONFIG --out FOLDER`")
        stored = json.loads(index.read_text())
        if stored.get("format") != FORMAT:
            raise ValueError(f"{index}: unknown format {stored.get('format')!r} (expected {FORMAT!r})")
        wanted = decoding.settings()
        if stored["decoding"] != wanted:
            diff = ", ".join(f"{k}: cache {stored['decoding'].get(k)!r} vs config {v!r}"
                             for k, v in wanted.items() if stored["decoding"].get(k) != v)
            raise ValueError(f"{self.folder} was decoded with other settings ({diff}); re-run `xkd data predecode` "
                             "with this config into a new folder")
        self.decoding = decoding
        self._meta: dict[str, dict] = {}  # per process
        self._headers: dict[Path, tuple] = {}  # .npy file -> (data offset, shape, dtype), per process

    def row(self, path: Path, lo: float, hi: float | None) -> DecodedRow:
        """The stored record of the row with span ``[lo, hi)`` of ``path`` (hi None: the whole file), checked against
        the file on disk; raises the row's MediaError if it failed to decode."""
        key = row_key(path, lo, hi)
        meta = self._meta.get(key)
        if meta is None:
            file = self.folder / "rows" / f"{key}.json"
            if not file.is_file():
                raise FileNotFoundError(f"{path} (span from {lo} s) is not in the decoded-clip cache {self.folder}; "
                                        "re-run `xkd data predecode` for this manifest")
            meta = self._meta[key] = json.loads(file.read_text())
        if "bad" in meta:
            raise MediaError(path, meta["bad"], meta["message"])
        try:
            changed = _stat(path) != (meta["size"], meta["mtime_ns"])
        except OSError:
            changed = True
        if changed:
            raise RuntimeError(f"{path} changed (or vanished) after it was decoded into {self.folder}; re-run "
                               "`xkd data predecode`")
        return DecodedRow(key, Path(path), meta["lo"], meta["hi"], meta["frames"], meta["samples"])

    def _read(self, file: Path, first: int, count: int) -> np.ndarray:
        """Rows ``first : first + count`` (along the first axis) of a .npy file, read with one seek: the header is
        parsed once per file and process (``np.load`` parses it, with ``ast``, on every call)."""
        header = self._headers.get(file)
        if header is None:
            with file.open("rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                if fortran:
                    raise ValueError(f"{file}: Fortran-ordered arrays are not written by predecode")
                header = self._headers[file] = (fh.tell(), shape, dtype)
        offset, shape, dtype = header
        row = math.prod(shape[1:]) if len(shape) > 1 else 1
        data = np.fromfile(file, dtype=dtype, count=count * row, offset=offset + first * row * dtype.itemsize)
        return data.reshape(count, *shape[1:])

    def clip(self, row: DecodedRow, offset: float, duration: float) -> Clip:
        """The window starting ``offset`` s into the row's span (rounded to the frame grid), ``duration`` s long."""
        spec = self.decoding
        rows = self.folder / "rows"
        grid = spec.fps if spec.video else spec.sample_rate
        first = round(offset * grid)
        video = audio = None
        if spec.video:
            count = round(duration * spec.fps)
            first = max(0, min(first, row.frames - count))
            if row.frames < count:
                raise MediaError(row.path, "too-short", f"{row.frames} decoded frames, the window needs {count}")
            video = torch.from_numpy(self._read(rows / f"{row.key}.video.npy", first, count))
        start = first / grid
        if spec.audio:
            n = round(duration * spec.sample_rate)
            if row.samples < n - math.floor(AUDIO_PAD_TOLERANCE * spec.sample_rate):
                raise MediaError(row.path, "too-short", f"{row.samples} decoded samples, the window needs {n}")
            s0 = max(0, min(round(start * spec.sample_rate), row.samples - n))
            wave = self._read(rows / f"{row.key}.audio.npy", s0, min(n, row.samples - s0))
            audio = torch.from_numpy(np.pad(wave, (0, n - wave.shape[0])) if wave.shape[0] < n else wave)
        return Clip(video=video, audio=audio, start=row.lo + start, duration=duration)


def cache_size_text(num_bytes: int) -> str:
    """A byte count for people: MiB below 1 GiB, else GiB."""
    return f"{num_bytes / 2**20:,.1f} MiB" if num_bytes < 2**30 else f"{num_bytes / 2**30:,.2f} GiB"

