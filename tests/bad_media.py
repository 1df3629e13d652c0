"""Awkward and broken media files, written for real with PyAV, and a corpus that mixes them with good clips.

Each ``write_*`` function writes one file and returns its path. :func:`build_corpus` writes every kind into one
folder and returns :class:`Case` records saying what ``decode_clip`` must do with each file for a
:data:`WINDOW`-second audio-visual clip at :data:`FPS` frames per second (the AV-Digits CPU recipe used by the tiny
test configs): decode it, or raise ``MediaError`` with a given reason. ``xkd data check`` (minimum duration 1.1 s)
gives the same reasons.

Video frames are flat colours that encode the frame index (``media_fixtures.index_colour``), audio channel ``c`` is
a tone at ``440 * (c + 1)`` Hz, so a test can check what was decoded, not only its shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from media_fixtures import index_colour, index_frames, make_av, make_empty, tone, truncate
from xkd.data.manifest import Manifest, ManifestRow, write_manifest
from xkd.datasets.media_writer import write_media

WINDOW = 2.0  # seconds per clip in the tiny configs (data.clip_duration)
FPS = 8.0  # frames per second of a clip (data.video_fps)
SAMPLE_RATE = 16000  # the log-mel front end's rate (data.logmel.sample_rate)
VFR_TIMES = (0.0, 0.04, 0.1, 0.45, 0.5, 0.9, 1.3, 1.32, 1.7, 2.0, 2.4)  # seconds; no clip target is a tie
HUGE_SIZE = (2160, 4096)  # (height, width): a 4K DCI frame


def tones(seconds: float, sample_rate: int, channels: int) -> np.ndarray:
    """Channel ``c`` is a 0.5-amplitude sine at ``440 * (c + 1)`` Hz -> float ``[channels, S]``."""
    return np.stack([tone(seconds, sample_rate, 440.0 * (c + 1)) for c in range(channels)])


def write_av(path: str | Path, seconds: float = WINDOW, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    """H.264 + AAC MP4: index-coded 48x64 frames at :data:`FPS` and :func:`tones` audio of ``channels`` channels."""
    return write_media(path, index_frames(round(seconds * FPS)), FPS, tones(seconds, sample_rate, channels),
                       sample_rate)


def write_header_only(path: str | Path, nbytes: int = 300) -> Path:
    """The first ``nbytes`` of a good MP4: its 'ftyp' box and the start of the next box, nothing playable."""
    path = write_av(path)
    path.write_bytes(path.read_bytes()[:nbytes])
    return path


def write_renamed_wav(path: str | Path, seconds: float = WINDOW) -> Path:
    """A 16-bit PCM WAV of a 440 Hz tone saved under ``path`` whatever its extension says (e.g. ``.mp4``)."""
    path = Path(path)
    wav = write_media(path.with_name(path.name + ".wav"), audio=tone(seconds, SAMPLE_RATE), sample_rate=SAMPLE_RATE,
                      audio_codec="pcm_s16le")
    return wav.replace(path)


def write_random_bytes(path: str | Path, nbytes: int = 8192, seed: int = 0) -> Path:
    """``nbytes`` of seeded noise: no container FFmpeg knows."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return path


def write_made_up_format(path: str | Path, chunks: int = 64) -> Path:
    """A plausible but invented container: a magic tag, a version, then length-prefixed 'FRAM' chunks of pixels."""
    body = b"".join(b"FRAM" + (1024).to_bytes(4, "little") + bytes([k]) * 1024 for k in range(chunks))
    path = Path(path)
    path.write_bytes(b"XKDVID\x00\x01" + len(body).to_bytes(8, "little") + body)
    return path


def write_vfr(path: str | Path, times: tuple[float, ...] = VFR_TIMES, audio_seconds: float = 2.5) -> Path:
    """Variable frame rate MP4: frame ``k`` (colour ``index_colour(k)``) is shown at ``times[k]`` seconds (ms
    timestamps, no B-frames), with a mono 440 Hz track of ``audio_seconds``."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream("libx264", rate=25, options={"bf": "0"})
        vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        vstream.codec_context.time_base = Fraction(1, 1000)
        astream = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for k, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index_colour(k), np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode())
        samples = tone(audio_seconds, SAMPLE_RATE).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    return path


def write_flat(path: str | Path, height: int, width: int, frames: int, fps: float, codec: str = "libx264") -> Path:
    """``frames`` flat index-coded frames of ``height`` x ``width`` at ``fps`` with a mono tone as long as the video.

    H.264 needs even sizes; ``codec="mpeg4"`` accepts odd ones (e.g. 1 x 2000).
    """
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for k in range(frames):
        video[k] = index_colour(k)
    return write_media(path, video, fps, tone(frames / fps, SAMPLE_RATE), SAMPLE_RATE, video_codec=codec)


def non_utf8_name(stem: bytes, suffix: str = ".mp4") -> str:
    """A file name holding bytes that are not UTF-8 (``stem`` e.g. ``b"caf\\xe9"``), as Python spells it
    (surrogate escapes)."""
    return os.fsdecode(stem + suffix.encode())


@dataclass(frozen=True)
class Case:
    """One corpus file. ``reason``: the ``MediaError`` reason of a :data:`WINDOW`-s audio-visual clip, None if it
    decodes. ``in_manifest``: False for a name a UTF-8 CSV manifest cannot hold. ``on_disk``: False for a manifest
    row whose file was deleted."""

    path: Path
    reason: str | None
    in_manifest: bool = True
    on_disk: bool = True

    @property
    def name(self) -> str:
        return self.path.name


def build_corpus(root: str | Path) -> list[Case]:
    """Write every kind of file into ``root`` (good ones included) and say what decoding each must give."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Bad and good files alternate: a training set replaces a bad item by the next row, so each bad row costs one
    # extra decode of a good file rather than a chain of failures.
    cases = [
        Case(write_av(root / "good_a.mp4"), None),
        Case(truncate(write_av(root / "truncated.mp4", seconds=3.0), 0.5), "truncated"),
        Case(write_av(root / "good_b.mp4"), None),
        Case(make_empty(root / "empty.mp4"), "empty-file"),
        Case(write_av(root / "good c with spaces.mp4"), None),
        Case(write_header_only(root / "header_only.mp4"), "truncated"),
        Case(write_av(root / "audio_8k.mp4", sample_rate=8000), None),
        Case(make_av(root / "video_only.mp4", seconds=WINDOW, audio=False), "no-audio"),
        Case(write_av(root / "audio_48k.mp4", sample_rate=48000), None),
        Case(make_av(root / "audio_only.mp4", seconds=WINDOW, video=False), "no-video"),
        Case(write_av(root / "audio_stereo.mp4", channels=2), None),
        Case(write_renamed_wav(root / "wav_named.mp4"), "no-video"),
        Case(write_av(root / "audio_5.1.mp4", sample_rate=44100, channels=6), None),
        Case(write_random_bytes(root / "random_bytes.mp4"), "unreadable"),
        Case(write_vfr(root / "vfr.mp4"), None),
        Case(write_made_up_format(root / "made_up.mkv"), "unreadable"),
        Case(write_flat(root / "huge_4k.mp4", *HUGE_SIZE, frames=2, fps=1.0), None),
        Case(write_flat(root / "one_frame.mp4", 48, 64, frames=1, fps=FPS), "too-short"),
        Case(write_flat(root / "tall_1x2000.mp4", 2000, 1, frames=16, fps=FPS, codec="mpeg4"), None),
        Case(write_av(root / "shorter_than_window.mp4", seconds=1.0), "too-short"),
        Case(write_flat(root / "wide_2000x2.mp4", 2, 2000, frames=16, fps=FPS), None),
        Case(root / "deleted.mp4", "not-found", on_disk=False),
    ]
    odd = root / non_utf8_name(b"caf\xe9 \xff")
    try:
        cases.append(Case(write_av(odd), None, in_manifest=False))
    except OSError:  # a file system that only takes UTF-8 names (macOS APFS) refuses it; nothing to test there
        pass
    return cases


def write_corpus_manifest(root: Path, cases: list[Case], name: str = "manifest.csv") -> Path:
    """A manifest of every case a UTF-8 CSV can hold: labels alternate 'a' / 'b', every third row is 'test'."""
    rows = [
        ManifestRow(path=c.name, labels=("ab"[i % 2],), split="test" if i % 3 == 2 else "train")
        for i, c in enumerate(c for c in cases if c.in_manifest)
    ]
    return write_manifest(Manifest(rows, root), root / name)
