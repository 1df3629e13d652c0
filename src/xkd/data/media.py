"""Decoding audio-visual clips from media files with PyAV (spec §A2).

:func:`probe` reads a file's header; :func:`decode_clip` decodes one time window of video and audio in a single pass
over the container; :func:`clip_starts` chooses window starts. A file is a path or, for a member of a shard, the bytes
themselves (:class:`MediaBytes`): both go through the same checks and decoding. Every failure is a :class:`MediaError` carrying a short
reason code, so callers can apply a policy (skip, count, report) instead of handling raw FFmpeg errors.

Reason codes (:data:`REASONS`):

``not-found``      the path does not exist
``empty-file``     the file has zero bytes
``unreadable``     FFmpeg cannot open it as media (not a media file, unknown format, damaged header)
``truncated``      the file ends before its own structure says it does (an MP4 box runs past the end of the file,
                   or the streams stop well before the duration the header declares): an incomplete download or copy
``no-video``       a video stream is needed but the file has none
``no-audio``       an audio stream is needed but the file has none
``too-short``      the requested window is not covered by the decoded frames / samples
``decode-failed``  FFmpeg reported an error while demuxing or decoding

Times are in seconds from the start of the file (the container's start time is subtracted).

Tolerances at the end of a window: a video frame is shown until the next one, so the last decoded frame also covers
the window up to one frame period after its timestamp (and a window may begin up to one period before the first
frame). Audio may be zero-padded by at most :data:`~xkd.data.window_samplers.AUDIO_PAD_TOLERANCE` seconds at either end of the window. Anything
shorter raises ``too-short``.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import av
import torch

from xkd.data.window_samplers import AudioWindow, VideoWindow, WindowTooShort

REASONS = (
    "not-found",
    "empty-file",
    "unreadable",
    "truncated",
    "no-video",
    "no-audio",
    "too-short",
    "decode-failed",
)

SEEK_PREROLL = 0.5  # seconds: seek this far before the window so the audio decoder is warm when the window starts


class MediaError(Exception):
    """A media file that cannot give what was asked. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: Source, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown media error reason {reason!r}")
        self.path = str(path)
        self.reason = reason
        self.message = message
        super().__init__(f"{self.path}: {reason}: {message}")

    def __reduce__(self):  # keep path and reason when sent from a DataLoader worker
        return (MediaError, (self.path, self.reason, self.message))


@dataclass
class MediaInfo:
    """What a file's header says. Durations are in seconds; stream fields are None when the stream is absent."""

    duration: float
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    video_duration: float | None = None
    audio_duration: float | None = None

    def common_duration(self, video: bool = True, audio: bool = True) -> float:
        """Duration covered by every needed stream that is present (the shortest of them)."""
        spans = []
        if video and self.has_video:
            spans.append(self.video_duration)
        if audio and self.has_audio:
            spans.append(self.audio_duration)
        spans = [s for s in spans if s is not None]
        return min(spans) if spans else self.duration


@dataclass
class Clip:
    """A decoded window. ``video``: uint8 ``[T, H, W, 3]`` (RGB); ``audio``: float32 ``[S]`` (mono, in [-1, 1])."""

    video: torch.Tensor | None
    audio: torch.Tensor | None
    start: float
    duration: float


@dataclass(frozen=True)
class MediaBytes:
    """A media file held in memory, e.g. a member of a shard: ``name`` (ending in the file's suffix) names it in
    errors, ``data`` holds its bytes. Accepted wherever a path is."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


Source = str | Path | MediaBytes


def _mp4_truncation(fh: BinaryIO, size: int) -> str | None:
    """For ISO-BMFF files (mp4/mov/m4a) of ``size`` bytes: a description of the first top-level box that runs past
    the end, else None."""
    fh.seek(0)
    if fh.read(12)[4:8] != b"ftyp":
        return None
    offset = 0
    while offset + 8 <= size:
        fh.seek(offset)
        header = fh.read(16)
        box_size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
        if box_size == 1:  # 64-bit size follows the type
            if len(header) < 16:
                return f"the MP4 box '{kind}' header is cut off at byte {offset:,}"
            box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # the box extends to the end of the file
            return None
        if box_size < 8:
            return None  # not a box structure we understand; let FFmpeg judge the file
        if offset + box_size > size:
            return (
                f"the MP4 box '{kind}' at byte {offset:,} needs {box_size:,} bytes but the file ends after "
                f"{size - offset:,} (incomplete download or copy?)"
            )
        offset += box_size
    return None


def _checked_file(path: Path) -> str:
    """The path to open, after the checks FFmpeg does not make (missing, folder, empty, truncated MP4)."""
    if not path.exists():
        raise MediaError(path, "not-found", "no such file")
    if path.is_dir():
        raise MediaError(path, "unreadable", "is a directory")
    try:
        size = path.stat().st_size
        if size:
            with path.open("rb") as fh:
                cut = _mp4_truncation(fh, size)
    except OSError as e:
        raise MediaError(path, "unreadable", _describe(e)) from None
    if size == 0:
        raise MediaError(path, "empty-file", "the file is empty (0 bytes)")
    if cut is not None:
        raise MediaError(path, "truncated", cut)
    return str(path)


def open_media(source: Source) -> av.container.InputContainer:
    """Open a media file (a path or :class:`MediaBytes`) for reading, raising :class:`MediaError` (never an FFmpeg
    error) when it cannot be opened.

    Raw G.722 files (``.g722``, as shipped by Asterisk) have no header, so their format is given explicitly.
    """
    if isinstance(source, MediaBytes):
        if not source.data:
            raise MediaError(source, "empty-file", "the file is empty (0 bytes)")
        cut = _mp4_truncation(io.BytesIO(source.data), len(source.data))
        if cut is not None:
            raise MediaError(source, "truncated", cut)
        target, suffix = io.BytesIO(source.data), Path(source.name).suffix
    else:
        target, suffix = _checked_file(Path(source)), Path(source).suffix
    fmt = "g722" if suffix.lower() == ".g722" else None
    try:
        container = av.open(target, format=fmt)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(source, "unreadable", f"FFmpeg cannot open it as media ({_describe(e)})") from None
    if not container.streams.video and not container.streams.audio:
        container.close()
        raise MediaError(source, "unreadable", "the file has no audio or video stream")
    return container


def _describe(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {text}"


def container_origin(container) -> float:
    """Container start time in seconds (0 for most files; MPEG-TS starts later)."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _stream_duration(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        start = stream.start_time or 0
        origin = container_origin(container)
        return float(stream.duration * stream.time_base) + float(start * stream.time_base) - origin
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def media_info(container) -> MediaInfo:
    """The :class:`MediaInfo` of an open container (see :func:`open_media`)."""
    vs = container.streams.video[0] if container.streams.video else None
    aus = container.streams.audio[0] if container.streams.audio else None
    vdur = _stream_duration(vs, container) if vs is not None else None
    adur = _stream_duration(aus, container) if aus is not None else None
    if container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = max((d for d in (vdur, adur) if d is not None), default=0.0)
    rate = None
    if vs is not None:
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    return MediaInfo(
        duration=duration,
        has_video=vs is not None,
        has_audio=aus is not None,
        width=vs.codec_context.width if vs is not None else None,
        height=vs.codec_context.height if vs is not None else None,
        fps=float(rate) if rate else None,
        sample_rate=aus.codec_context.sample_rate if aus is not None else None,
        channels=aus.codec_context.channels if aus is not None else None,
        video_duration=vdur,
        audio_duration=adur,
    )


def probe(path: Source) -> MediaInfo:
    """Read a file's header (no decoding). Raises :class:`MediaError` when the file cannot be opened."""
    with open_media(path) as container:
        return media_info(container)


def decode_clip(
    path: Source,
    start: float,
    duration: float,
    fps: float,
    short_side: int | None = None,
    sample_rate: int = 16000,
    video: bool = True,
    audio: bool = True,
    missing_audio: str = "error",
    threads: int = 1,
) -> Clip:
    """Decode the window [start, start + duration) of a file in one pass (one seek, both streams in one demux loop).

    Video: ``round(duration * fps)`` frames, frame k being the decoded frame nearest to ``start + k / fps``, with the
    short side resized to ``short_side`` (no resize when None) -> uint8 ``[T, H, W, 3]``.
    Audio: ``round(duration * sample_rate)`` samples, channels averaged to mono, resampled to ``sample_rate``, placed
    by timestamp (so AAC priming samples are not counted) -> float32 ``[S]``.
    ``missing_audio``: ``"error"`` raises ``no-audio`` for a file without audio, ``"silence"`` returns zeros.
    ``threads``: FFmpeg video decoder threads (1: one per process, the loader's default; 0: FFmpeg's choice).
    Raises :class:`MediaError` (see the module docstring for the reasons and tolerances).
    """
    spec = Decoding(fps, short_side, sample_rate, video, audio, missing_audio, threads)
    return decode_windows(path, [start], duration, spec)[0]


def decode_windows(path: Source, starts: list[float], duration: float, spec: Decoding) -> list[Clip]:
    """Decode several windows [start_i, start_i + duration) of a file in one pass: one open, one seek to the
    earliest window, and one demux loop whose decoded frames serve every window, stopping once the latest window is
    filled. Each :class:`Clip` is what :func:`decode_clip` gives for its window with the settings of ``spec`` (audio:
    placed by timestamp in the span of all windows, then cut, so a window's samples may sit one sample apart from a
    direct decode's)."""
    fps, short_side, sample_rate, video, audio = spec.fps, spec.short_side, spec.sample_rate, spec.video, spec.audio
    missing_audio, threads = spec.missing_audio, spec.threads
    if missing_audio not in ("error", "silence"):
        raise ValueError(f"missing_audio must be 'error' or 'silence', got {missing_audio!r}")
    if not (video or audio):
        raise ValueError("decode_clip needs video=True, audio=True or both")
    if not starts or min(starts) < 0 or duration <= 0:
        raise ValueError(f"invalid windows starts={starts} duration={duration}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    first = min(starts)
    span = max(starts) - first + duration  # exactly ``duration`` for one window
    with open_media(path) as container:
        vstream = container.streams.video[0] if video and container.streams.video else None
        astream = container.streams.audio[0] if audio and container.streams.audio else None
        if video and vstream is None:
            raise MediaError(path, "no-video", "the file has no video stream")
        if audio and astream is None and missing_audio == "error":
            raise MediaError(path, "no-audio", "the file has no audio stream")
        origin = container_origin(container)
        vsamplers, asampler = [], None
        if vstream is not None:
            vstream.thread_count = threads
            vstream.thread_type = "SLICE" if threads == 1 else "AUTO"
            rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
            period = 1.0 / float(rate) if rate else 1.0 / fps
            vsamplers = [VideoWindow(origin + s, duration, fps, short_side, period) for s in starts]
        if astream is not None:
            asampler = AudioWindow(origin + first, span, sample_rate)
        window = f"{first:.3f}+{duration:.3f} s" if len(starts) == 1 else f"{first:.3f}..{first + span:.3f} s"
        try:
            _demux_windows(container, vstream, astream, vsamplers, asampler, origin + first)
            frames = [v.finish() for v in vsamplers]
            wave = asampler.finish() if asampler is not None else None
        except WindowTooShort as e:
            raise MediaError(path, "too-short", f"window {window}: {e}") from None
        except av.FFmpegError as e:
            raise MediaError(path, "decode-failed", _describe(e)) from None
    samples = round(duration * sample_rate)
    clips = []
    for i, start in enumerate(starts):
        cut = None
        if wave is not None:
            lo = round((start - first) * sample_rate)
            cut = torch.from_numpy(wave[lo : lo + samples])
        elif audio:  # missing_audio == "silence"
            cut = torch.zeros(samples, dtype=torch.float32)
        clips.append(Clip(video=torch.from_numpy(frames[i]) if frames else None, audio=cut, start=start,
                          duration=duration))
    return clips


@dataclass(frozen=True)
class Decoding:
    """How clips are decoded: video at ``fps`` with the short side resized to ``short_side``, audio at
    ``sample_rate``; the streams asked for; ``missing_audio`` as in :func:`decode_clip`."""

    fps: float
    short_side: int | None
    sample_rate: int
    video: bool = True
    audio: bool = True
    missing_audio: str = "error"  # "error" (no-audio is bad media) or "silence"
    threads: int = 1  # video decoder threads (see decode_clip); how, not what, so not in settings()

    def settings(self) -> dict:
        """What the decoded clips depend on (every field but ``threads``)."""
        return {k: v for k, v in asdict(self).items() if k != "threads"}

    def span(self, source: Source, lo: float, end: float | None) -> float:
        """Seconds from ``lo`` to ``end``, or to the end of every needed stream of the file when ``end`` is None."""
        if end is None:
            end = probe(source).common_duration(video=self.video, audio=self.audio)
        return end - lo

    def window(self, source: Source, start: float, duration: float) -> Clip:
        """The :class:`Clip` of [start, start + duration) of the file."""
        return self.windows(source, [start], duration)[0]

    def windows(self, source: Source, starts: list[float], duration: float) -> list[Clip]:
        """The clips of the windows [start_i, start_i + duration) of the file, from one decode."""
        return decode_windows(source, starts, duration, self)


def _demux_windows(container, vstream, astream, vsamplers, asampler, t0: float) -> None:
    """The single demux loop: feed decoded frames to the samplers until every one has filled its window."""
    if t0 - SEEK_PREROLL > 0:
        try:  # lands on a keyframe at or before the target; demuxing then continues from there for every stream
            container.seek(int((t0 - SEEK_PREROLL) * av.time_base), backward=True)
        except av.FFmpegError:
            pass  # unseekable input: decode from the beginning, the timestamps still select the window
    streams = [s for s in (vstream, astream) if s is not None]
    video_open = list(vsamplers)
    prev_time = None
    for packet in container.demux(streams):
        if not video_open and (asampler is None or asampler.done):
            break
        if packet.stream is vstream:
            if not video_open:
                continue
            for frame in packet.decode():
                time = frame.time
                if time is None:  # no timestamp: assume the nominal frame period after the previous frame
                    time = prev_time + video_open[0].period if prev_time is not None else t0
                prev_time = time
                for sampler in video_open:
                    sampler.push(frame, time)
                video_open = [s for s in video_open if not s.done]
        elif not asampler.done:
            for frame in packet.decode():
                asampler.push(frame)


def clip_starts(
    file_duration: float,
    clip_duration: float,
    n: int,
    mode: str = "uniform",
    generator: torch.Generator | None = None,
) -> list[float]:
    """Start times of ``n`` clips of ``clip_duration`` seconds inside a file of ``file_duration`` seconds.

    ``uniform``: evenly spaced from 0 to the last possible start (one clip: the centred one). ``random``: independent
    uniform draws from ``generator``. A file shorter than the clip gives starts of 0; :func:`decode_clip` then decides
    whether the shortfall is within tolerance.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    latest = max(file_duration - clip_duration, 0.0)
    if mode == "uniform":
        if n == 1:
            return [latest / 2]
        return [latest * i / (n - 1) for i in range(n)]
    if mode == "random":
        return [latest * float(u) for u in torch.rand(n, generator=generator, dtype=torch.float64)]
    raise ValueError(f"mode must be 'uniform' or 'random', got {mode!r}")
