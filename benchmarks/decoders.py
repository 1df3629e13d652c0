"""Windows/s of the pretraining decoder (PyAV, ``xkd.data.media.decode_clip``) against torchcodec, for the
Kinetics-400 recipe's windows: 4 s at random starts in [0, 6] s of a 10 s file, 32 frames at 8 fps (each the frame
nearest its time), short side 112, video only, one decoder thread, one torch thread.

    pip install torchcodec==0.13.0   # the last CPU wheel on PyPI; needs FFmpeg's shared libraries (libavcodec-dev ...)
    python benchmarks/decoders.py FILE [FILE ...]

torchcodec decodes in exact seek mode and resizes inside its decoder (``transforms=[Resize]``, bilinear with
antialiasing; PyAV here uses FFmpeg's area filter). Its ``get_frames_played_at`` returns the frame shown at a time,
so each time is moved half a frame period later to pick the nearest frame, as PyAV's path does; the frames picked
are checked to be the same ones (mean absolute difference of the resized frames, which differ by the filter only).
The decoders alternate window by window (the order rotated), --repeats times over --windows windows, each window a
fresh open, as a loader does; the median rate is reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import torch

from xkd.data.media import decode_clip, probe
from xkd.data.window_samplers import resized_shape

DURATION, FPS, SHORT = 4.0, 8.0, 112


def pyav(path: str, start: float) -> torch.Tensor:
    return decode_clip(path, start, DURATION, FPS, short_side=SHORT, audio=False).video


def torchcodec_window(path: str, start: float) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    info = probe(path)
    h, w = resized_shape(info.height, info.width, SHORT)
    decoder = VideoDecoder(path, device="cpu", num_ffmpeg_threads=1, seek_mode="exact", transforms=[Resize((h, w))])
    half = 0.5 / info.fps - 1e-6
    times = [min(start + k / FPS + half, info.video_duration - 1e-3) for k in range(round(DURATION * FPS))]
    return decoder.get_frames_played_at(seconds=times).data.permute(0, 2, 3, 1)  # [T, H, W, 3] uint8


DECODERS = {"pyav": pyav, "torchcodec": torchcodec_window}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="media files (e.g. the 720p file of benchmarks/data_pipeline.py)")
    parser.add_argument("--windows", type=int, default=20, help="windows per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for path in args.files:
        gap = float((pyav(path, 2.0).float() - torchcodec_window(path, 2.0).float()).abs().mean())
        rates: dict[str, list[float]] = {name: [] for name in DECODERS}
        for r in range(args.repeats):
            starts = [random.Random(100 + r).uniform(0, 6) for _ in range(args.windows)]
            spent = dict.fromkeys(DECODERS, 0.0)
            names = list(DECODERS)
            for i, start in enumerate(starts):
                for name in names[i % len(names):] + names[: i % len(names)]:
                    t0 = time.perf_counter()
                    DECODERS[name](path, start)
                    spent[name] += time.perf_counter() - t0
            for name in DECODERS:
                rates[name].append(args.windows / spent[name])
        row = {"file": path, "mean_abs_difference": gap, **{f"{n}_windows_per_s": statistics.median(v)
                                                            for n, v in rates.items()}}
        row["torchcodec_over_pyav"] = row["torchcodec_windows_per_s"] / row["pyav_windows_per_s"]
        results.append(row)
        print(f"{path}: pyav {row['pyav_windows_per_s']:.2f} windows/s, torchcodec "
              f"{row['torchcodec_windows_per_s']:.2f} ({row['torchcodec_over_pyav']:.2f}x); frames differ by "
              f"{gap:.2f} / 255 on average", file=sys.stderr)
    out = {"torch_threads": 1, "results": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
