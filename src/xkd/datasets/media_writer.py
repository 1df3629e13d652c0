"""Write real media files (H.264 video + AAC audio in MP4, or audio-only files) with PyAV.

Used by the AV-Digits builder and by the tests, which need genuine containers rather than mocks.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_media(
    path: str | Path,
    video: np.ndarray | None = None,
    fps: float = 8.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    crf: int = 18,
) -> Path:
    """Write ``video`` (uint8 ``[T, H, W, 3]``) and/or ``audio`` (float ``[S]`` mono or ``[C, S]``, in [-1, 1]).

    H and W must be even for H.264 (yuv420p). Either stream may be omitted, which gives a video without audio or an
    audio-only file. The container follows the file extension (``.mp4``, ``.mkv``, ``.wav``, ...).
    """
    path = Path(path)
    if video is None and audio is None:
        raise ValueError("write_media needs video, audio or both")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        vstream = astream = None
        if video is not None:
            video = np.ascontiguousarray(video, dtype=np.uint8)
            if video.ndim != 4 or video.shape[-1] != 3:
                raise ValueError(f"video must be uint8 [T, H, W, 3], got shape {video.shape}")
            rate = Fraction(fps).limit_denominator(1000)
            vstream = container.add_stream(video_codec, rate=rate)
            vstream.width, vstream.height = video.shape[2], video.shape[1]
            vstream.pix_fmt = "yuv420p"
            if video_codec == "libx264":
                vstream.options = {"crf": str(crf), "preset": "veryfast"}
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim == 1:
                audio = audio[None]
            channels = audio.shape[0]
            layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(channels)
            if layout is None:
                raise ValueError(f"audio must have 1, 2 or 6 channels, got {channels}")
            astream = container.add_stream(audio_codec, rate=sample_rate, layout=layout)
        if vstream is not None:
            for frame in video:
                for packet in vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in vstream.encode():
                container.mux(packet)
        if astream is not None:
            fmt = "s16" if audio_codec.startswith("pcm_s16") else "fltp"
            data = np.clip(audio, -1.0, 1.0)
            if fmt == "s16":
                data = (data.T * 32767).astype(np.int16).reshape(1, -1)  # packed, interleaved
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = 0
            for packet in astream.encode(frame):
                container.mux(packet)
            for packet in astream.encode(None):
                container.mux(packet)
    return path
