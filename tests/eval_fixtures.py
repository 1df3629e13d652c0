"""A tiny real-media dataset whose two classes are trivially separable in both modalities, and tiny encoders."""

from pathlib import Path

import numpy as np

from xkd.config import PretrainConfig, load_config
from xkd.data.manifest import Manifest, ManifestRow, write_manifest
from xkd.datasets.media_writer import write_media

CONFIG = Path(__file__).parents[1] / "configs" / "pretrain" / "xkd_avdigits_cpu.yaml"
TINY_MODEL = [
    "model.encoder.dim=32", "model.encoder.heads=2", "model.encoder.depth=1",
    "model.decoder_dim=16", "model.decoder_heads=2", "model.decoder_depth=1",
    "model.head_hidden=32", "model.head_bottleneck=16", "model.head_out=64",
]


def tiny_config(*extra: str) -> PretrainConfig:
    """The AV-Digits CPU recipe (2 s clips, 16 frames at 32x32, 40 mel bands) with a tiny ViT."""
    return load_config(PretrainConfig, CONFIG, [*TINY_MODEL, *extra])


def write_separable(root: Path, per_class_train: int = 8, per_class_test: int = 4, seed: int = 0) -> Path:
    """'dark' clips with a 200 Hz hum and 'bright' clips with a 3 kHz tone, plus noise; returns the manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    t = np.arange(32000) / 16000
    for label, level, freq in (("dark", 40, 200.0), ("bright", 210, 3000.0)):
        for i in range(per_class_train + per_class_test):
            split = "train" if i < per_class_train else "test"
            frames = np.clip(level + rng.normal(0, 15, size=(16, 64, 64, 3)), 0, 255).astype(np.uint8)
            audio = (0.4 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + rng.normal(0, 0.02, t.size)).astype(
                np.float32
            )
            path = root / split / f"{label}_{i}.mp4"
            write_media(path, frames, 8.0, audio, 16000)
            rows.append(ManifestRow(path=path.relative_to(root).as_posix(), labels=(label,), split=split,
                                    fold=i % 2, extra={"shade": label}))
    return write_manifest(Manifest(rows, root), root / "manifest.csv")
