"""Assigning decoded frames and samples to a time window: the two halves of :func:`xkd.data.media.decode_clip`.

:class:`VideoWindow` picks, for each target time of the window, the decoded frame nearest to it; :class:`AudioWindow`
places resampled mono samples by timestamp. Both raise :class:`WindowTooShort` when the decoded streams do not cover
the window (within the tolerances of :mod:`xkd.data.media`).
"""

from __future__ import annotations

import math

import av
import numpy as np
from av.video.reformatter import VideoReformatter

AUDIO_PAD_TOLERANCE = 0.02  # seconds of zero padding allowed at each end of an audio window


class WindowTooShort(Exception):
    """The decoded streams do not cover the window (becomes MediaError reason ``too-short``)."""


def resized_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) after scaling the shorter side to ``short_side`` (unchanged when None), keeping aspect."""
    if short_side is None:
        return height, width
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


class VideoWindow:
    """Picks, for each target time t_k = start + k / fps, the decoded frame whose timestamp is nearest.

    Frames arrive in presentation order. A frame is converted (resized + RGB) only if it is picked, straight from the
    decoder's YUV frame, so no full-size RGB copy is ever made; at most two full-size frames (previous and current)
    are held at once. One reformatter serves every frame of the window, so FFmpeg's scaler is set up once, not per
    frame.
    """

    def __init__(self, start: float, duration: float, fps: float, short_side: int | None, period: float):
        self.targets = [start + k / fps for k in range(round(duration * fps))]
        self.short_side = short_side
        self.period = period  # nominal source frame period, the end-of-stream tolerance
        self.frames: list[np.ndarray] = []
        self.prev = None  # (time, frame)
        self.reformatter = VideoReformatter()

    @property
    def done(self) -> bool:
        return len(self.frames) == len(self.targets)

    def _take(self, frame, count: int) -> None:
        h, w = resized_shape(frame.height, frame.width, self.short_side)
        rgb = self.reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        self.frames.extend([rgb] * count)

    def _pending_up_to(self, limit: float) -> int:
        """How many of the still unassigned targets are at or before ``limit``."""
        count = len(self.frames)
        while count < len(self.targets) and self.targets[count] <= limit:
            count += 1
        return count - len(self.frames)

    def push(self, frame, time: float) -> None:
        """Add the next decoded frame (presentation ``time`` in seconds); settles the targets it decides."""
        if self.prev is None:  # targets before the first frame take the first frame
            count, picked = self._pending_up_to(time), frame
            if count and time - self.targets[0] > self.period + 1e-6:
                raise WindowTooShort(f"video starts at {time:.3f} s, after the window start {self.targets[0]:.3f} s")
        else:  # targets up to the midpoint between the previous frame and this one are nearest to the previous
            prev_time, prev_frame = self.prev
            count, picked = self._pending_up_to((prev_time + time) / 2), prev_frame
        if count:
            self._take(picked, count)
        self.prev = (time, frame)

    def finish(self) -> np.ndarray:
        """Assign the remaining targets to the last frame (within one frame period) and stack ``[T, H, W, 3]``."""
        if not self.done:
            if self.prev is None:
                raise WindowTooShort("no video frame was decoded in the window")
            last_time, last_frame = self.prev
            missing = self.targets[len(self.frames) :]
            if missing[-1] >= last_time + self.period + 1e-6:
                raise WindowTooShort(f"video ends at {last_time + self.period:.3f} s, before {missing[-1]:.3f} s")
            self._take(last_frame, len(missing))
        self.prev = None
        return np.stack(self.frames)


class AudioWindow:
    """Collects decoded audio into the window [start, start + n / rate) by timestamp, resampled and mixed to mono."""

    def __init__(self, start: float, duration: float, sample_rate: int):
        self.start = start
        self.rate = sample_rate
        self.n = round(duration * sample_rate)
        self.buffer = np.zeros(self.n, dtype=np.float32)
        self.first = None  # first and last window index that received samples
        self.end = None
        self.resampler = None
        self.template = None  # (format, layout, rate) the resampler was built for
        self.next_pts = None  # fallback position when a frame has no timestamp

    @property
    def done(self) -> bool:
        return self.end is not None and self.end >= self.n

    def push(self, frame) -> None:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self.template:  # first frame, or the stream changed its format mid-file
            self._flush()
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=self.rate)
            self.template = key
        for out in self.resampler.resample(frame):
            self._place(out)

    def _flush(self) -> None:
        if self.resampler is not None:
            for out in self.resampler.resample(None):
                self._place(out)

    def _place(self, frame) -> None:
        samples = frame.to_ndarray().mean(axis=0)  # [C, S] planar -> mono by averaging channels
        if frame.pts is not None and frame.time_base is not None:
            pos = round((float(frame.pts * frame.time_base) - self.start) * self.rate)
        else:
            pos = self.next_pts if self.next_pts is not None else 0
        self.next_pts = pos + len(samples)
        lo, hi = max(pos, 0), min(pos + len(samples), self.n)
        if lo >= hi:
            return
        self.buffer[lo:hi] = samples[lo - pos : hi - pos]
        self.first = lo if self.first is None else min(self.first, lo)
        self.end = hi if self.end is None else max(self.end, hi)

    def finish(self) -> np.ndarray:
        self._flush()
        tol = math.floor(AUDIO_PAD_TOLERANCE * self.rate)
        if self.end is None:
            raise WindowTooShort("no audio sample was decoded in the window")
        if self.first > tol:
            raise WindowTooShort(f"audio starts {self.first / self.rate:.3f} s after the window start")
        if self.end < self.n - tol:
            raise WindowTooShort(f"audio ends {(self.n - self.end) / self.rate:.3f} s before the window end")
        return self.buffer
