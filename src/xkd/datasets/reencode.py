"""Re-encoding a media file at the training resolution (``xkd data shard --reencode``): decoding cost grows with the
pixels decoded and with the distance from the last key frame, so a corpus stored at 720p with long GOPs costs a
loader many times what the training views need.

:func:`reencode` decodes every frame of a file once and writes an MP4 in memory: H.264 (yuv420p) with the short side
scaled to ``short_side`` (never up; FFmpeg's area filter, both sides even), at the source frame rate or ``fps``
(each output frame the source frame nearest to its time), a key frame every ``round(keyframe_interval * fps)``
frames and no scene-cut key frames; audio mixed to mono, resampled to ``sample_rate`` and coded as AAC. Times are kept: a frame or
sample at time t of the source (from the container's start) is at time t of the output, so a manifest row's
``start`` / ``end`` and a window's frames stay where they were (tested: the same window decoded from both shows the
same frames within codec error).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

from xkd.data.media import MediaError, Source, container_origin, open_media
from xkd.data.window_samplers import resized_shape

VIDEO_TIME_BASE = Fraction(1, 90000)  # output video timestamps keep the source's times to 11 us


@dataclass(frozen=True)
class Reencoding:
    """How :func:`reencode` writes a file (see the module docstring); recorded in the shard index."""

    short_side: int
    fps: float | None = None  # None: the source's frame rate
    keyframe_interval: float = 1.0  # seconds between key frames
    sample_rate: int = 16000
    crf: int = 23  # x264 constant rate factor: lower is closer to the source, and larger
    preset: str = "veryfast"

    def __post_init__(self):
        if self.short_side < 2:
            raise ValueError(f"reencode short side must be >= 2 pixels, got {self.short_side}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"reencode fps must be > 0, got {self.fps}")
        if self.keyframe_interval <= 0 or self.sample_rate < 1000:
            raise ValueError("reencode keyframe_interval must be > 0 s and sample_rate >= 1000 Hz")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"reencode crf must be in [0, 51], got {self.crf}")

    def record(self) -> dict:
        return asdict(self)


def _even(n: int) -> int:
    return max(2, n - n % 2)


def output_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of the re-encoded video: short side scaled to ``short_side`` unless it is smaller, both even."""
    h, w = resized_shape(height, width, min(short_side, min(height, width)))
    return _even(h), _even(w)


class _FramePicker:
    """Output frames at ``n / fps`` (or every source frame when fps is None), each the nearest source frame."""

    def __init__(self, fps: float | None):
        self.fps = fps
        self.next = 0  # next output frame index
        self.prev = None  # (time, frame)

    def push(self, frame, time: float) -> list[tuple[float, object]]:
        if self.fps is None:
            return [(time, frame)]
        out = []
        if self.prev is not None:  # targets nearer the previous frame than this one
            prev_time, prev_frame = self.prev
            while self.next / self.fps <= (prev_time + time) / 2:
                out.append((self.next / self.fps, prev_frame))
                self.next += 1
        elif time > 0:  # targets before the first frame (within half a period) take the first frame
            while self.next / self.fps < time and time - self.next / self.fps <= 0.5 / self.fps:
                out.append((self.next / self.fps, frame))
                self.next += 1
            self.next = max(self.next, int(np.ceil(time * self.fps - 1e-9)))
        self.prev = (time, frame)
        return out

    def finish(self, period: float) -> list[tuple[float, object]]:
        """The last frame for the targets up to half a source period after it."""
        if self.fps is None or self.prev is None:
            return []
        last_time, last_frame = self.prev
        out = []
        while self.next / self.fps <= last_time + period / 2:
            out.append((self.next / self.fps, last_frame))
            self.next += 1
        return out


def reencode(source: Source, settings: Reencoding) -> bytes:
    """The MP4 bytes of ``source`` re-encoded with ``settings``. Raises :class:`MediaError` (``decode-failed`` when
    FFmpeg fails while decoding or encoding)."""
    buffer = io.BytesIO()
    with open_media(source) as container:
        vin = container.streams.video[0] if container.streams.video else None
        ain = container.streams.audio[0] if container.streams.audio else None
        origin = container_origin(container)
        try:
            with av.open(buffer, mode="w", format="mp4") as out:
                video = _VideoOut(out, vin, settings) if vin is not None else None
                audio = _AudioOut(out, settings) if ain is not None else None
                for packet in container.demux([s for s in (vin, ain) if s is not None]):
                    for frame in packet.decode():
                        if frame.time is None:
                            continue
                        if packet.stream is vin:
                            video.push(frame, frame.time - origin)
                        else:
                            audio.push(frame, frame.time - origin)
                if video is not None:
                    video.finish()
                if audio is not None:
                    audio.finish()
        except av.FFmpegError as e:
            raise MediaError(source, "decode-failed", f"re-encoding failed: {type(e).__name__}: {e}") from None
    return buffer.getvalue()


class _VideoOut:
    def __init__(self, out, vin, settings: Reencoding):
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(25)
        self.period = 1.0 / float(rate)
        fps = Fraction(settings.fps).limit_denominator(1001) if settings.fps else Fraction(rate)
        self.height, self.width = output_shape(vin.codec_context.height, vin.codec_context.width, settings.short_side)
        self.stream = out.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = VIDEO_TIME_BASE
        self.stream.codec_context.thread_count = 1  # parallel over files, not inside one
        gop = max(1, round(settings.keyframe_interval * float(fps)))
        self.stream.options = {"crf": str(settings.crf), "preset": settings.preset, "g": str(gop),
                               "keyint_min": str(gop), "sc_threshold": "0"}
        self.out = out
        self.picker = _FramePicker(settings.fps)
        self.last_pts = None

    def push(self, frame, time: float) -> None:
        for t, picked in self.picker.push(frame, time):
            self._encode(picked, t)

    def _encode(self, frame, time: float) -> None:
        pts = round(time / VIDEO_TIME_BASE)
        if time < 0 or (self.last_pts is not None and pts <= self.last_pts):
            return  # before the start, or a repeated timestamp
        scaled = frame.reformat(width=self.width, height=self.height, format="yuv420p", interpolation="AREA")
        scaled.pts, scaled.time_base = pts, VIDEO_TIME_BASE
        scaled.pict_type = PictureType.NONE  # the source's frame types would force its key frames on the encoder
        self.last_pts = pts
        self.out.mux(self.stream.encode(scaled))

    def finish(self) -> None:
        for t, picked in self.picker.finish(self.period):
            self._encode(picked, t)
        self.out.mux(self.stream.encode(None))


class _AudioOut:
    """Mono AAC at ``settings.sample_rate``, samples placed from the first decoded frame's time (earlier ones dropped,
    a late start padded with silence)."""

    def __init__(self, out, settings: Reencoding):
        self.rate = settings.sample_rate
        self.stream = out.add_stream("aac", rate=self.rate, layout="mono")
        self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=self.rate)
        self.out = out
        self.written = None  # samples written so far (None until the first frame)
        self.template = None

    def push(self, frame, time: float) -> None:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self.template:  # the stream changed its format mid-file
            self._drain()
            self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=self.rate)
            self.template = key
        if self.written is None:
            self.written = 0
            self.skip = round(time * self.rate)  # < 0: drop that many; > 0: pad
        for piece in self.resampler.resample(frame):
            self._write(piece.to_ndarray()[0])

    def _write(self, samples: np.ndarray) -> None:
        if self.skip > 0:
            samples, self.skip = np.concatenate([np.zeros(self.skip, np.float32), samples]), 0
        elif self.skip < 0:
            drop = min(-self.skip, len(samples))
            samples, self.skip = samples[drop:], self.skip + drop
        if not len(samples):
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None], dtype=np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.written, Fraction(1, self.rate)
        self.written += len(samples)
        self.out.mux(self.stream.encode(frame))

    def _drain(self) -> None:
        if self.template is not None:
            for piece in self.resampler.resample(None):
                self._write(piece.to_ndarray()[0])

    def finish(self) -> None:
        self._drain()
        self.out.mux(self.stream.encode(None))
