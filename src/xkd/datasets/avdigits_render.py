"""Turning one AV-Digits clip's plan into media: its random choices (:class:`ClipRecipe`, drawn by
:func:`make_recipe`), the motion of the digit across the frames (:func:`render_frames`) and its audio track
(:func:`synthesize_audio`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AVDIGITS_MOTIONS = (
    "translate_left",
    "translate_right",
    "translate_up",
    "translate_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
)

NUM_FRAMES = 16
FPS = 8.0
CANVAS_SIZE = 64
SAMPLE_RATE = 16000

_INK_RADIUS = 12.0  # MNIST ink lies in a 20x20 box centred by mass: a safe half-extent in source pixels
_ROTATION_RADIUS = 14.0  # half-diagonal of that box, the reach of the ink under any rotation


@dataclass(frozen=True, eq=False)
class ClipRecipe:
    """Every random choice of one clip, drawn by :func:`make_recipe`.

    ``centers: [T, 2]`` canvas position (x, y) in pixels of the digit's centre; ``angles: [T]`` radians, positive is
    clockwise on screen; ``scales: [T]`` canvas pixels per MNIST pixel. Audio: ``speed`` playback rate (>1 is faster and
    higher), ``speech_samples`` (length of the resampled speech), one ``offsets`` entry (first sample in the window) and
    one ``gains_db`` entry per copy of the utterance (version 1: one copy), ``snr_db`` of the white noise,
    ``noise_seed``.
    """

    centers: np.ndarray
    angles: np.ndarray
    scales: np.ndarray
    speed: float
    speech_samples: int
    gains_db: tuple[float, ...]
    offsets: tuple[int, ...]
    snr_db: float
    noise_seed: int

    @property
    def speech_span(self) -> tuple[int, int]:
        """(first, one past the last) sample of speech in the window, before clipping to its length."""
        return self.offsets[0], self.offsets[-1] + self.speech_samples


# Version 2 sizes, as the height of MNIST's 20-pixel ink box over the frame height (version 1: about 0.25-0.35 at rest)
_V2_HEIGHT = {"translate": (0.6, 0.75), "rotate": (0.55, 0.65), "zoom_small": (0.4, 0.5), "zoom_factor": (1.5, 1.9)}
_INK_BOX = 20.0  # MNIST digits are drawn in a 20x20 box, centred by mass in the 28x28 image


def _motion_geometry(motion: str, rng: np.random.Generator, num_frames: int, fps: float, size: int, version: int = 1):
    """Random start position, angle, scale and speed of a motion: ``centers [T, 2]``, ``angles [T]``, ``scales [T]``.

    Version 1 draws scales around one canvas pixel per MNIST pixel on a 64-pixel canvas; version 2 draws the digit's
    height as a fraction of the frame (:data:`_V2_HEIGHT`), with the same motions, so the digit fills most of it.
    """
    u = np.arange(num_frames) / max(num_frames - 1, 1)  # clip progress in [0, 1]
    seconds = np.arange(num_frames) / fps
    base = size / 64.0  # the version-1 ranges below are tuned on a 64-pixel canvas and scale with it
    per_height = size / _INK_BOX  # version 2: canvas pixels per MNIST pixel for a digit as tall as the frame
    angle0 = np.deg2rad(rng.uniform(-15.0, 15.0))
    angles = np.full(num_frames, angle0)
    if motion.startswith("translate"):
        scale = rng.uniform(0.8, 1.1) * base if version == 1 else rng.uniform(*_V2_HEIGHT["translate"]) * per_height
        scales = np.full(num_frames, scale)
        # version 2 lets the corners of the ink box, which rarely hold ink, touch the frame's edge
        half = (_INK_RADIUS if version == 1 else _INK_BOX / 2) * scales[0]
        room = size - 2 * half  # the centre may move in [half, size - half]
        travel = rng.uniform(0.5, 0.9) * room
        along = half + rng.uniform(0.0, room - travel) + travel * u
        across = np.full(num_frames, size / 2 + rng.uniform(-0.25, 0.25) * room)
        if motion in ("translate_left", "translate_up"):
            along = size - along
        xy = (along, across) if motion in ("translate_left", "translate_right") else (across, along)
        centers = np.stack(xy, axis=1)
    elif motion.startswith("rotate"):
        scale = rng.uniform(0.8, 1.1) * base if version == 1 else rng.uniform(*_V2_HEIGHT["rotate"]) * per_height
        scales = np.full(num_frames, scale)
        room = max(size - 2 * _ROTATION_RADIUS * scales[0], 0.0)
        centers = np.tile(size / 2 + rng.uniform(-0.5, 0.5, size=2) * room, (num_frames, 1))
        sign = 1.0 if motion == "rotate_cw" else -1.0
        angles = angle0 + sign * np.deg2rad(rng.uniform(45.0, 90.0)) * seconds
    elif motion.startswith("zoom"):
        if version == 1:
            small = rng.uniform(0.5, 0.7) * base
            large = small * rng.uniform(1.8, 2.5)
        else:
            small = rng.uniform(*_V2_HEIGHT["zoom_small"]) * per_height
            large = small * rng.uniform(*_V2_HEIGHT["zoom_factor"])
        room = max(size - 2 * _INK_RADIUS * large, 0.0)
        centers = np.tile(size / 2 + rng.uniform(-0.25, 0.25, size=2) * room, (num_frames, 1))
        start, end = (small, large) if motion == "zoom_in" else (large, small)
        scales = start * (end / start) ** u
    else:
        raise ValueError(f"unknown motion {motion!r}; expected one of {AVDIGITS_MOTIONS}")
    return centers, angles, scales


def make_recipe(
    seed: int,
    image_index: int,
    motion: str,
    recording_length: int,
    num_frames: int = NUM_FRAMES,
    fps: float = FPS,
    size: int = CANVAS_SIZE,
    sample_rate: int = SAMPLE_RATE,
    version: int = 1,
) -> ClipRecipe:
    """The random choices of clip ``image_index``, from an RNG seeded by ``(seed, image_index)`` alone.

    Audio, version 1: one copy of the utterance at a random offset clear of the window's edges, gain -6..+3 dB, white
    noise at 20-40 dB SNR. Version 2: copies from a start within the first 0.15 s, separated by gaps of 0.05-0.25 s,
    until the window is full (the last may be cut by its end); each copy's gain is the clip's (-6..+3 dB) plus
    -2..+2 dB; noise at 30-45 dB SNR.
    """
    video_seq, audio_seq = np.random.SeedSequence([seed, image_index]).spawn(2)
    centers, angles, scales = _motion_geometry(motion, np.random.default_rng(video_seq), num_frames, fps, size,
                                               version)
    rng = np.random.default_rng(audio_seq)
    speed = rng.uniform(0.9, 1.1)
    speech_samples = int(np.ceil(recording_length / speed))
    window = int(round(num_frames / fps * sample_rate))
    gain = float(rng.uniform(-6.0, 3.0))
    if version == 1:
        margin = int(0.05 * sample_rate)  # keep the speech clear of the window edges
        latest = max(margin, window - speech_samples - margin)
        gains, offsets = (gain,), (int(rng.integers(margin, latest + 1)),)
        snr = float(rng.uniform(20.0, 40.0))
    else:
        offsets = [int(rng.integers(0, int(0.15 * sample_rate) + 1))]
        while True:
            following = offsets[-1] + speech_samples + int(rng.uniform(0.05, 0.25) * sample_rate)
            if following >= window:
                break
            offsets.append(following)
        gains, offsets = tuple(gain + float(rng.uniform(-2.0, 2.0)) for _ in offsets), tuple(offsets)
        snr = float(rng.uniform(30.0, 45.0))
    return ClipRecipe(
        centers=centers,
        angles=angles,
        scales=scales,
        speed=float(speed),
        speech_samples=speech_samples,
        gains_db=gains,
        offsets=offsets,
        snr_db=snr,
        noise_seed=int(rng.integers(2**31)),
    )


# ------------------------------------------------------------------------------------------------------- synthesis


def render_frames(
    image: np.ndarray, centers: np.ndarray, angles: np.ndarray, scales: np.ndarray, size: int
) -> np.ndarray:
    """Warp ``image: uint8 [h, w]`` onto a black ``size``-pixel canvas, one affine map per frame (bilinear).

    Source pixel ``q`` (pixel centres at integer + 0.5, image centre at ``(w/2, h/2)``) lands at canvas point
    ``centers[t] + scales[t] * R(angles[t]) (q - centre)``. Returns ``uint8 [T, size, size]``.
    """
    h, w = image.shape
    src = image.astype(np.float32)
    grid = np.arange(size, dtype=np.float64) + 0.5
    px, py = np.meshgrid(grid, grid)  # [size, size] canvas pixel centres (x right, y down)
    dx = px[None] - centers[:, 0, None, None]
    dy = py[None] - centers[:, 1, None, None]
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    inv = 1.0 / scales[:, None, None]
    sx = (cos * dx + sin * dy) * inv + w / 2 - 0.5  # inverse rotation, then array index coordinates
    sy = (-sin * dx + cos * dy) * inv + h / 2 - 0.5
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)

    def tap(yy, xx):
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        return np.where(inside, src[yy.clip(0, h - 1), xx.clip(0, w - 1)], 0.0)

    out = (
        tap(y0, x0) * (1 - fx) * (1 - fy)
        + tap(y0, x0 + 1) * fx * (1 - fy)
        + tap(y0 + 1, x0) * (1 - fx) * fy
        + tap(y0 + 1, x0 + 1) * fx * fy
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def synthesize_audio(recording: np.ndarray, recipe: ClipRecipe, num_samples: int) -> np.ndarray:
    """Augment ``recording: [S]`` (speed by linear resampling, one gain per copy, noise) into a window with its copies
    at ``recipe.offsets``: ``float32 [num_samples]``. The noise level is set against the first copy's loudness."""
    length = recipe.speech_samples
    speech = np.interp(np.arange(length) * recipe.speed, np.arange(len(recording)), recording)
    out = np.zeros(num_samples)
    for offset, gain_db in zip(recipe.offsets, recipe.gains_db):
        end = min(offset + length, num_samples)
        out[offset:end] = speech[: end - offset] * 10.0 ** (gain_db / 20.0)
    loudness = np.sqrt(np.mean(speech**2)) * 10.0 ** (recipe.gains_db[0] / 20.0)
    noise_std = loudness * 10.0 ** (-recipe.snr_db / 20.0)
    out += np.random.default_rng(recipe.noise_seed).standard_normal(num_samples) * noise_std
    return np.clip(out, -1.0, 1.0).astype(np.float32)
