"""Log-mel statistics of a dataset: the ``data.logmel.norm_mean`` / ``norm_std`` to put in a config."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from xkd.config import LogMelConfig
from xkd.data.logmel import LogMel
from xkd.data.manifest import Manifest
from xkd.data.media import MediaError, decode_clip, probe


def logmel_stats(
    manifest: Manifest, logmel: LogMelConfig, clip_duration: float, max_files: int = 500, seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Mean and std of the unnormalised log-mel values over the centre window of up to ``max_files`` rows (a seeded
    random subset). Files that fail to decode are skipped and counted."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(manifest))[:max_files]
    front = LogMel(logmel, normalize=False)
    total = total_sq = count = 0.0
    skipped = 0
    for i in tqdm(rows, desc="log-mel stats", unit="file", disable=not progress):
        row = manifest[int(i)]
        path = manifest.resolve(row)
        try:
            span = (row.end if row.end is not None else probe(path).common_duration(video=False, audio=True))
            start = (row.start or 0.0) + max(span - (row.start or 0.0) - clip_duration, 0.0) / 2
            clip = decode_clip(path, start, clip_duration, None, sample_rate=logmel.sample_rate, video=False)
        except MediaError:
            skipped += 1
            continue
        x = front(clip.audio).double()
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += x.numel()
    if not count:
        raise ValueError(f"none of the {len(rows)} files sampled could be decoded")
    mean = total / count
    return {"norm_mean": mean, "norm_std": float(np.sqrt(max(total_sq / count - mean * mean, 0.0))),
            "files": len(rows) - skipped, "skipped": skipped}


__all__ = ["logmel_stats"]
