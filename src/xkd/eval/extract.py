"""Feature extraction: decode clips of every row of a manifest, encode them, and keep or stream the features.

Each row gives ``clips_per_video`` clips (uniformly spaced test windows, or random windows seen through a classifier
training view, spec §A10). Features are pooled clip vectors, or the patch tokens for the attentive probe. A file that
cannot be decoded is reported with its reason and left out; it never stops the run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from xkd.api import Encoders
from xkd.data.dataset import ClipDataset, collate_clips
from xkd.data.logmel import LogMel
from xkd.data.manifest import Manifest, ManifestRow
from xkd.data.media import MediaError
from xkd.data.views import EvalViews
from xkd.data.workers import init_worker
from xkd.eval.features import FeatureSet

log = logging.getLogger(__name__)

MEDIA_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".wav", ".flac", ".mp3", ".ogg", ".m4a", ".g722"}


@dataclass
class ExtractOptions:
    """How clips are drawn and batched."""

    clips_per_video: int = 1
    train_view: str | None = None  # None = test clips (uniform windows); "mild" / "strong": random windows seen
    # through a classifier training view (xkd.data.views.EvalViews)
    flip: bool = True  # training views may flip horizontally (off where labels depend on left / right)
    crop_scale: tuple[float, float] = (1.0, 1.0)  # the mild view's random zoom (area fraction of the test crop)
    three_crop: bool = False  # left / centre / right crops of each test clip, kept as extra clips
    tokens: bool = False  # patch tokens [N, D] per clip (float16) instead of their mean [D]
    seed: int = 0
    batch_size: int = 16
    num_workers: int = 2
    missing_audio: str = "skip"
    progress: bool = True


class _SafeClips(Dataset):
    """A :class:`ClipDataset` whose failing items come back as ``{"bad": (path, reason)}`` instead of raising."""

    def __init__(self, dataset: ClipDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except MediaError as err:
            return {"bad": (err.path, err.reason), "index": index // self.dataset.clips_per_video}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [i for i in items if "bad" not in i or isinstance(i["bad"], list)]
    bad = [i["bad"] for i in items if isinstance(i.get("bad"), tuple)]
    batch = collate_clips(good) if good else {}
    batch["failed"] = bad
    return batch


def manifest_from_target(target: str | Path) -> Manifest:
    """A manifest from a manifest CSV, a shard folder (``xkd data shard``), a media file, or a folder of media files
    (recursive)."""
    from xkd.data.manifest import read_manifest
    from xkd.data.shard_reader import INDEX_FILE

    target = Path(target)
    if (target / INDEX_FILE).is_file():
        return read_manifest(target)
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS and p.is_file())
        if not files:
            raise FileNotFoundError(f"{target} holds no media files ({', '.join(sorted(MEDIA_EXTENSIONS))})")
        return Manifest([ManifestRow(path=p.relative_to(target).as_posix()) for p in files], target)
    if target.suffix.lower() == ".csv":
        return read_manifest(target)
    if not target.is_file():
        raise FileNotFoundError(f"input not found: {target}")
    return Manifest([ManifestRow(path=target.name)], target.parent)


def _eval_inputs(cfg) -> tuple:
    """What evaluation reads from a config: decoding, log-mel, normalisation and input sizes (not the training
    views, batch size or manifest)."""
    d = cfg.data
    return (d.clip_duration, d.video_fps, d.resize_short, d.video_mean, d.video_std, d.logmel,
            cfg.model.frame_size, cfg.model.spec_size)


def _shared_config(models: Mapping[str, Encoders]):
    """The config whose evaluation inputs every model shares (clips are decoded once for all of them)."""
    configs = list(models.values())
    first = configs[0].config
    for enc in configs[1:]:
        if _eval_inputs(enc.config) != _eval_inputs(first):
            raise ValueError("models evaluated together must share their decoding, log-mel, normalisation and "
                             "input sizes (data.clip_duration, video_fps, resize_short, video_mean/std, logmel; "
                             "model.frame_size, spec_size)")
    return first


def iterate_features(
    models: Mapping[str, Encoders] | Encoders, manifest: Manifest, modalities: Sequence[str], opts: ExtractOptions
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, dict[str, np.ndarray]], list[tuple[str, str]]]]:
    """Yield ``(rows [n], clips [n], {model: {modality: features [n, D] or tokens [n, N, D]}}, failed files)`` batch
    by batch.

    Each clip is decoded once and encoded by every model (``models``: name -> encoders, or one :class:`Encoders`,
    named "model"); a model without an encoder for a modality is skipped for it.
    """
    if isinstance(models, Encoders):
        models = {"model": models}
    cfg = _shared_config(models)
    if not set(modalities) <= {"video", "audio"} or not modalities:
        raise ValueError(f"modalities must be among 'video', 'audio', got {list(modalities)}")
    views = EvalViews(
        LogMel(cfg.data.logmel),
        cfg.data.logmel.sample_rate,
        crop_size=cfg.model.frame_size,
        mean=cfg.data.video_mean,
        std=cfg.data.video_std,
        short_side=cfg.data.resize_short if not opts.three_crop else None,
        three_crop=opts.three_crop,
        train_view=opts.train_view,
        flip=opts.flip,
        crop_scale=opts.crop_scale,
    )
    dataset = ClipDataset(
        manifest,
        clip_duration=cfg.data.clip_duration,
        fps=cfg.data.video_fps,
        short_side=cfg.data.resize_short,
        sample_rate=cfg.data.logmel.sample_rate,
        need_video="video" in modalities,
        need_audio="audio" in modalities,
        missing_audio=opts.missing_audio,
        bad_media="error",
        clips_per_video=opts.clips_per_video,
        clip_sampling="random" if opts.train_view else "uniform",
        transform=views,
        seed=opts.seed,
    )
    loader = DataLoader(_SafeClips(dataset), batch_size=opts.batch_size, num_workers=opts.num_workers,
                        collate_fn=_collate, worker_init_fn=init_worker)
    for batch in tqdm(loader, desc="extract", unit="batch", disable=not opts.progress, dynamic_ncols=True):
        if "index" not in batch:
            yield np.zeros(0, np.int64), np.zeros(0, np.int64), {}, batch["failed"]
            continue
        rows, clips = batch["index"].numpy(), batch["clip"].numpy()
        crops = batch["video"].shape[1] if "video" in batch and batch["video"].ndim == 6 else 1
        out = {}
        for name, enc in models.items():
            feats = {}
            for modality in modalities:
                if getattr(enc, modality) is None:
                    continue
                x = batch[modality]
                if modality == "video":  # [B, crops, 3, T, S, S] with three_crop: crops of a clip are consecutive
                    f = enc.encode_video(x.flatten(0, 1) if crops > 1 else x, tokens=opts.tokens)
                else:  # one audio view per clip, repeated for each video crop
                    f = enc.encode_audio(x, tokens=opts.tokens).repeat_interleave(crops, dim=0)
                feats[modality] = f.cpu().numpy().astype(np.float16 if opts.tokens else np.float32)
            out[name] = feats
        clip_ids = np.repeat(clips * crops, crops) + np.tile(np.arange(crops), len(rows))
        yield np.repeat(rows, crops), clip_ids, out, batch["failed"]


def extract_features(
    models: Mapping[str, Encoders] | Encoders,
    manifest: Manifest,
    modalities: Sequence[str],
    opts: ExtractOptions,
    label_column: str | None = "label",
    class_names: list[str] | None = None,
) -> tuple[dict[str, dict[str, FeatureSet]], list[tuple[str, str]]]:
    """In-memory features of every clip: ``{model: {modality: FeatureSet}}`` (video ids = manifest rows; one
    :class:`Encoders` is named "model"), and the files that failed. ``class_names`` fixes the label indices
    (default: the manifest's classes)."""
    if isinstance(models, Encoders):
        models = {"model": models}
    names = class_names if class_names is not None else (manifest.classes(label_column) if label_column else [])
    index = {name: i for i, name in enumerate(names)}
    labels_of_row = (
        np.array([index[v] for v in manifest.labels_of(label_column)], dtype=np.int64)
        if label_column
        else np.zeros(len(manifest), dtype=np.int64)
    )
    rows_all: list[np.ndarray] = []
    feats_all: dict[str, dict[str, list]] = {m: {} for m in models}
    failed: list[tuple[str, str]] = []
    for rows, _, feats, bad in iterate_features(models, manifest, modalities, opts):
        failed.extend(bad)
        if len(rows):
            rows_all.append(rows)
            for model, per_modality in feats.items():
                for modality, f in per_modality.items():
                    feats_all[model].setdefault(modality, []).append(f)
    failed = list(dict.fromkeys(failed))  # one entry per file, not per clip
    for path, reason in failed:
        log.warning("skipped %s (%s)", path, reason)
    if not rows_all:
        raise RuntimeError(f"no clip of the {len(manifest)} rows could be decoded ({len(failed)} failures)")
    rows = np.concatenate(rows_all)
    classes = list(names) or ["unlabelled"]
    sets = {
        model: {m: FeatureSet(np.concatenate(chunks), rows, labels_of_row[rows], classes) for m, chunks in per.items()}
        for model, per in feats_all.items()
    }
    return sets, failed


class _NpyStream:
    """Rows of a float32 matrix appended to a raw temp file; ``finish()`` turns it into a ``.npy`` member of a zip."""

    def __init__(self, folder: Path, name: str):
        self.name = name
        self.path = folder / f"{name}.raw"
        self.file = open(self.path, "wb")
        self.rows = 0
        self.dim: int | None = None

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self.dim is None:
            self.dim = block.shape[1]
        self.file.write(block.tobytes())
        self.rows += len(block)

    def write_to(self, archive: zipfile.ZipFile) -> None:
        self.file.close()
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim or 0)}
        with archive.open(f"{self.name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, header)
            with open(self.path, "rb") as raw:
                shutil.copyfileobj(raw, member, 1 << 20)


def extract_to_file(
    encoders: Encoders, manifest: Manifest, out_path: str | Path, modalities: Sequence[str], opts: ExtractOptions
) -> tuple[Path, int, list[tuple[str, str]]]:
    """Stream features to ``out_path`` (.npz, readable with plain ``numpy.load``); memory stays flat.

    Arrays: ``{modality}_clip`` [n_clips, D], ``{modality}_video`` [n_videos, D] (clip mean), ``clip_row`` /
    ``clip_index`` [n_clips] (manifest row and clip number), ``video_row`` [n_videos], ``paths`` [n_rows] (str),
    ``labels`` [n_rows] (str, '' when unlabelled). Returns the path, the number of videos written, and the failures.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        out_path = out_path.with_suffix(".npz")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".extract-") as tmp:
        tmp = Path(tmp)
        clip_streams = {m: _NpyStream(tmp, f"{m}_clip") for m in modalities}
        video_streams = {m: _NpyStream(tmp, f"{m}_video") for m in modalities}
        clip_row, clip_index, video_row = [], [], []
        pending_row, pending = None, {m: [] for m in modalities}

        def flush() -> None:
            if pending_row is None:
                return
            video_row.append(pending_row)
            for m in modalities:
                video_streams[m].append(np.mean(pending[m], axis=0, keepdims=True))
                pending[m].clear()

        for rows, clips, per_model, bad in iterate_features(encoders, manifest, modalities, opts):
            failed.extend(bad)
            feats = per_model.get("model", {})
            for m in modalities:
                if len(rows):
                    clip_streams[m].append(feats[m])
            for i, row in enumerate(rows):
                if row != pending_row:
                    flush()
                    pending_row = int(row)
                for m in modalities:
                    pending[m].append(feats[m][i])
            clip_row.extend(rows.tolist())
            clip_index.extend(clips.tolist())
        flush()
        partial = out_path.with_name(out_path.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for stream in [*clip_streams.values(), *video_streams.values()]:
                stream.write_to(archive)
            small = {
                "clip_row": np.asarray(clip_row, dtype=np.int64),
                "clip_index": np.asarray(clip_index, dtype=np.int64),
                "video_row": np.asarray(video_row, dtype=np.int64),
                "paths": np.asarray([r.path for r in manifest.rows], dtype=str),
                "labels": np.asarray([";".join(r.labels) for r in manifest.rows], dtype=str),
            }
            for name, array in small.items():
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        partial.replace(out_path)
    failed = list(dict.fromkeys(failed))  # one entry per file, not per clip
    for path, reason in failed:
        log.warning("skipped %s (%s)", path, reason)
    return out_path, len(video_row), failed

