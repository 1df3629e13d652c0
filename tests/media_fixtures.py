"""Small real media files for tests (H.264 + AAC via :func:`xkd.datasets.media_writer.write_media`) and broken ones.

Video frames are flat colours that encode the frame index (:func:`index_colour` / :func:`read_index`), so a test can
tell which source frame a decoded frame came from even after lossy compression. Audio is a sine tone or a chirp.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from xkd.datasets.media_writer import write_media

_STEP = 14  # colour levels between neighbouring codes; H.264 at crf 18 moves flat colours by at most ~3 levels
_BASE = 16


def index_colour(k: int) -> tuple[int, int, int]:
    """RGB colour encoding frame index ``k`` (0 <= k < 256) as two base-16 digits in R and G; B is fixed at 128."""
    if not 0 <= k < 256:
        raise ValueError(f"frame index {k} out of range [0, 256)")
    return _BASE + _STEP * (k % 16), _BASE + _STEP * (k // 16), 128


def read_index(frame) -> int:
    """Frame index encoded by :func:`index_colour` in a decoded frame ``[H, W, 3]`` (numpy or torch)."""
    rgb = np.asarray(frame, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    low, high = (int(round((c - _BASE) / _STEP)) for c in rgb[:2])
    return low + 16 * high


def index_frames(n: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """``n`` flat frames whose colour encodes their index -> uint8 ``[n, H, W, 3]``; ``size`` is (height, width)."""
    frames = np.empty((n, *size, 3), dtype=np.uint8)
    for k in range(n):
        frames[k] = index_colour(k)
    return frames


def tone(seconds: float, sample_rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A sine ``amplitude * sin(2 pi freq t)`` -> float ``[S]``."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def chirp(seconds: float, sample_rate: int, f0: float = 200.0, f1: float = 3000.0, amplitude: float = 0.5):
    """A linear sweep from ``f0`` to ``f1`` Hz (its autocorrelation has one sharp peak) -> float ``[S]``."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))


def make_av(
    path: str | Path,
    seconds: float = 2.0,
    fps: float = 8.0,
    size: tuple[int, int] = (48, 64),
    sample_rate: int = 16000,
    audio: bool | np.ndarray = True,
    video: bool = True,
    freq: float = 440.0,
) -> Path:
    """Write an MP4 (or any container the extension names) of ``seconds`` seconds.

    Video: index-coded frames (:func:`index_frames`) at ``fps``, ``size`` = (height, width), both even.
    Audio: ``True`` for a mono tone at ``freq``; an array ``[S]`` or ``[C, S]`` to write given samples; ``False`` for
    none. ``video=False`` writes an audio-only file (16-bit PCM for ``.wav``, else AAC).
    """
    frames = index_frames(round(seconds * fps), size) if video else None
    if audio is True:
        audio = tone(seconds, sample_rate, freq)
    elif audio is False:
        audio = None
    codec = "pcm_s16le" if Path(path).suffix.lower() == ".wav" else "aac"
    return write_media(path, frames, fps, audio, sample_rate, audio_codec=codec)


def truncate(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut a file to ``fraction`` of its bytes in place (an interrupted download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def remux_faststart(src: str | Path, dst: str | Path) -> Path:
    """Copy an MP4's packets into a new MP4 whose header ('moov') comes first, as web videos are stored."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux(list(inp.streams)):
            if packet.dts is None or packet.stream.index not in streams:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return Path(dst)


def make_empty(path: str | Path) -> Path:
    """A zero-byte file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_text(path: str | Path) -> Path:
    """A plain text file (give it a media extension to fake a renamed file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a video\n" * 50)
    return path
