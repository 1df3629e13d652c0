"""Statistics of a dataset: the log-mel ``norm_mean`` / ``norm_std`` to put in a config, and what a masked student
sees of each clip (tokens with content among the visible ones)."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from xkd.config import LogMelConfig, PretrainConfig
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


def visible_content(num_tokens: int, with_content: int, kept: int, at_most: int = 1) -> tuple[float, float]:
    """Masking keeps ``kept`` of ``num_tokens`` tokens uniformly at random; ``with_content`` of them carry content.
    Returns (expected number of kept tokens with content, probability that at most ``at_most`` of them do): the
    hypergeometric distribution."""
    total = math.comb(num_tokens, kept)
    p = sum(math.comb(with_content, k) * math.comb(num_tokens - with_content, kept - k)
            for k in range(0, min(at_most, kept) + 1)) / total
    return kept * with_content / num_tokens, p


def token_content_stats(
    manifest: Manifest, cfg: PretrainConfig, max_files: int = 300, seed: int = 0, ink: float = 0.25,
    silence_db: float = 6.0, progress: bool = True,
) -> dict[str, float]:
    """What the masked students of ``cfg`` see, over the centre window of up to ``max_files`` rows (seeded subset).

    Video: the clip at ``data.resize_short``, centre-cropped to ``model.frame_size``, cut into ``model.video_patch``
    tubelets; a tubelet has content when its brightest pixel exceeds ``ink`` (of white). With ``loss.video_mask_ratio``
    the student keeps round(N (1 - r)) tokens: reported are the mean fraction of tokens with content, the expected
    number of them among the kept ones and the mean probability that at most one kept token has content.
    Audio: the unnormalised log-mel of the window cut into columns of ``model.audio_patch[1]`` frames; a column is
    near-silent when its power (all bands) lies within ``silence_db`` of the clip's quietest columns (5th percentile),
    i.e. it holds the noise floor and no speech: the fraction of such columns, whose patches per-patch normalisation
    turns into noise targets.
    """
    d, m = cfg.data, cfg.model
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(manifest))[:max_files]
    front = LogMel(d.logmel, normalize=False)
    pt, ph, pw = m.video_patch
    pa = m.audio_patch[1]
    n_video = (m.num_frames // pt) * (m.frame_size // ph) * (m.frame_size // pw)
    kept = round(n_video * (1 - cfg.loss.video_mask_ratio))
    content, expected, at_most_one, silent = [], [], [], []
    skipped = 0
    for i in tqdm(rows, desc="token stats", unit="file", disable=not progress):
        row = manifest[int(i)]
        path = manifest.resolve(row)
        try:
            span = (row.end if row.end is not None else probe(path).common_duration())
            start = (row.start or 0.0) + max(span - (row.start or 0.0) - d.clip_duration, 0.0) / 2
            clip = decode_clip(path, start, d.clip_duration, d.video_fps, short_side=d.resize_short,
                               sample_rate=d.logmel.sample_rate)
        except MediaError:
            skipped += 1
            continue
        video = torch.as_tensor(clip.video[: m.num_frames]).float().mean(-1) / 255.0  # [T, H, W] gray
        top, left = (video.shape[1] - m.frame_size) // 2, (video.shape[2] - m.frame_size) // 2
        video = video[:, top : top + m.frame_size, left : left + m.frame_size]
        tubes = video.reshape(m.num_frames // pt, pt, m.frame_size // ph, ph, m.frame_size // pw, pw)
        inked = int((tubes.amax(dim=(1, 3, 5)) > ink).sum())
        mean_kept, p_one = visible_content(n_video, inked, kept)
        content.append(inked / n_video)
        expected.append(mean_kept)
        at_most_one.append(p_one)
        spec = front(clip.audio)  # [F, T] log(mel + eps)
        t = (spec.shape[1] // pa) * pa
        power = spec[:, :t].exp().sum(dim=0).reshape(t // pa, pa).mean(dim=1)  # [T / pa] column power
        level_db = 10 * torch.log10(power)
        silent.append(float((level_db < torch.quantile(level_db, 0.05) + silence_db).float().mean()))
    if not content:
        raise ValueError(f"none of the {len(rows)} files sampled could be decoded")
    return {
        "files": len(content), "skipped": skipped, "video_tokens": n_video, "video_kept": kept,
        "video_tokens_with_ink": float(np.mean(content)), "kept_tokens_with_ink": float(np.mean(expected)),
        "p_at_most_one_inked_kept": float(np.mean(at_most_one)), "audio_near_silent_patches": float(np.mean(silent)),
    }


__all__ = ["logmel_stats", "token_content_stats", "visible_content"]
