"""``xkd data check``: find every media file that training would have to skip, before training.

Each file is opened once and every packet of its first video and first audio stream is decoded, so damage anywhere in
the file is found (a truncated download often opens fine and breaks half-way). A file gets at most one
:class:`Problem`, the first found, in this order: it cannot be opened (``not-found``, ``empty-file``, ``unreadable``,
``truncated``); a needed stream is missing (``no-video``, ``no-audio``); the header says it is shorter than
``min_duration`` (``too-short``); decoding fails (``decode-failed``); decoding stops more than
:data:`TRUNCATION_TOLERANCE` seconds before the duration the header declares (``truncated``); the decoded streams
are shorter than ``min_duration`` (``too-short``). The reasons are those of :mod:`xkd.data.media`, plus
``unexpected-error`` for any other exception (reported, never raised).
"""

from __future__ import annotations

import os

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import av
from tqdm import tqdm

from xkd.data.manifest import read_manifest
from xkd.data.media import MediaError, media_info, open_media

MEDIA_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .flv .mpg .mpeg .ts .3gp .wav .flac .mp3 .m4a .aac .ogg .opus .g722".split()
)
TRUNCATION_TOLERANCE = 0.5  # seconds a stream may stop short of its declared duration


@dataclass
class Problem:
    """One bad file: ``reason`` is a short code (see the module docstring), ``detail`` a human explanation."""

    path: Path
    reason: str
    detail: str


def _decoded_ends(container, streams) -> dict[str, float]:
    """Decode every packet of ``streams``; the end time (s, from the file start) of each stream's last frame."""
    origin = container.start_time / av.time_base if container.start_time is not None else 0.0
    ends: dict[str, float] = {}
    for packet in container.demux(streams):
        for frame in packet.decode():
            if frame.time is None:
                continue
            if isinstance(frame, av.AudioFrame):
                end = frame.time + frame.samples / frame.sample_rate
            else:
                rate = packet.stream.average_rate or packet.stream.guessed_rate
                end = frame.time + (1 / float(rate) if rate else 0.0)
            kind = packet.stream.type
            ends[kind] = max(ends.get(kind, 0.0), end - origin)
    return ends


def shown(path: str | Path) -> str:
    """A path printable on any terminal: bytes that are not UTF-8 (kept by Python as surrogates) become escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_file(path: Path, min_duration: float, need_audio: bool, need_video: bool) -> Problem | None:
    """The first problem of one file (decoding all of it), or None when it is fit for training."""
    path = Path(path)
    try:
        with open_media(path) as container:
            info = media_info(container)
            if need_video and not info.has_video:
                return Problem(path, "no-video", "the file has no video stream")
            if need_audio and not info.has_audio:
                return Problem(path, "no-audio", "the file has no audio stream")
            declared = info.common_duration(video=need_video, audio=need_audio)
            if declared < min_duration:
                return Problem(path, "too-short", f"{declared:.2f} s, the minimum is {min_duration:g} s")
            streams = [s[0] for s in (container.streams.video, container.streams.audio) if s]
            for s in streams:
                s.thread_type = "AUTO"
            try:
                ends = _decoded_ends(container, streams)
            except av.FFmpegError as e:
                return Problem(path, "decode-failed", f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}")
    except MediaError as e:
        return Problem(path, e.reason, e.message)
    except Exception as e:  # noqa: BLE001 - a checker reports, it never crashes on one file
        return Problem(path, "unexpected-error", f"{type(e).__name__}: {e}")
    for kind, declared_end in (("video", info.video_duration), ("audio", info.audio_duration)):
        if not getattr(info, f"has_{kind}"):
            continue
        if kind not in ends:
            return Problem(path, "decode-failed", f"no {kind} frame could be decoded")
        if declared_end is not None and ends[kind] < declared_end - TRUNCATION_TOLERANCE:
            return Problem(
                path, "truncated", f"{kind} stops at {ends[kind]:.2f} s but the header declares {declared_end:.2f} s"
            )
    needed = [end for kind, end in ends.items() if (need_video, need_audio)[kind == "audio"]]
    usable = min(needed or ends.values())
    if usable < min_duration:
        return Problem(path, "too-short", f"{usable:.2f} s decoded, the minimum is {min_duration:g} s")
    return None


def check_files(
    paths: list[Path], min_duration: float, need_audio: bool, need_video: bool, progress: bool = True
) -> list[Problem]:
    """Check every file (see :func:`check_file`) with a progress bar; the problems, in the order of ``paths``."""
    problems = []
    for path in tqdm(paths, desc="checking media", unit="file", disable=not progress):
        problem = check_file(path, min_duration, need_audio, need_video)
        if problem is not None:
            problems.append(problem)
    return problems


def collect_targets(target: str | Path) -> list[Path]:
    """Files to check: every media file under a folder (recursive, by extension), one file, or a manifest's rows."""
    target = Path(target)
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
    if not target.exists():
        raise FileNotFoundError(f"no such file or folder: {target}")
    if target.suffix.lower() == ".csv":
        manifest = read_manifest(target)
        return [manifest.resolve(row) for row in manifest]
    return [target]


def run_check(
    target: str | Path,
    min_duration: float = 1.1,
    need_audio: bool = True,
    need_video: bool = True,
    out: TextIO = sys.stdout,
) -> int:
    """Check a folder, file or manifest and print each problem file and a count by reason.

    Returns 0 when every file is fine, 1 when some are not, 2 when there is nothing to check (the target does not
    exist, a manifest cannot be read, or a folder holds no media files).
    """
    try:
        paths = collect_targets(target)
    except (OSError, ValueError) as e:
        print(f"xkd data check: {e}", file=out)
        return 2
    if not paths:
        print(f"xkd data check: no media files found in {shown(target)}", file=out)
        return 2
    problems = check_files(paths, min_duration, need_audio, need_video)
    for p in problems:
        print(f"{shown(p.path)}: {p.reason}: {p.detail}", file=out)
    if not problems:
        print(f"checked {len(paths)} files: all fine", file=out)
        return 0
    counts = Counter(p.reason for p in problems)
    by_reason = ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
    print(f"checked {len(paths)} files: {len(problems)} with problems ({by_reason})", file=out)
    return 1
