"""Readers for the official layouts of the audio datasets: ESC-50, FSD50K and AudioSet."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Sequence

from xkd.data.manifest import Manifest, ManifestError, ManifestRow
from xkd.datasets.layout_files import (
    AUDIO_EXTENSIONS,
    SPLITS,
    VIDEO_EXTENSIONS,
    _csv_records,
    _finish,
    _index_by_stem,
    _int_field,
    _require,
    log,
    normalise_split,
)

# Segment-file name stems tried when the AudioSet template is not given, most common first. Fields: ytid, start, end
# (float seconds), start_int, end_int (rounded seconds), start_ms, end_ms (milliseconds).
AUDIOSET_TEMPLATES = (
    "{ytid}_{start:.1f}",
    "{ytid}_{start_int}",
    "{ytid}_{start_int}_{end_int}",
    "{ytid}_{start:.3f}_{end:.3f}",
    "{ytid}_{start_int:06d}_{end_int:06d}",
    "{ytid}_{start_ms}_{end_ms}",
    "Y{ytid}",
    "{ytid}",
)
AUDIOSET_SUBSETS = {"balanced_train": "train", "unbalanced_train": "train", "eval": "test"}

_ESC50_LAYOUT = """\
  <root>/meta/esc50.csv     columns filename,fold,target,category,esc10,src_file,take
  <root>/audio/<filename>"""
_FSD50K_LAYOUT = """\
  <root>/FSD50K.ground_truth/dev.csv          columns fname,labels,mids,split   (split train/val)
  <root>/FSD50K.ground_truth/eval.csv         columns fname,labels,mids
  <root>/FSD50K.ground_truth/vocabulary.csv   lines index,label,mid (no header)
  <root>/FSD50K.dev_audio/<fname>.wav, <root>/FSD50K.eval_audio/<fname>.wav"""
_AUDIOSET_LAYOUT = """\
  <root>/balanced_train_segments.csv, unbalanced_train_segments.csv, eval_segments.csv
      '#' comment lines, then: YTID, start_seconds, end_seconds, "positive_labels,comma,separated"
  <root>/<media_dir>/**/<name>.<ext>   name from a template such as {ytid}_{start:.1f} (see AUDIOSET_TEMPLATES)"""


# ------------------------------------------------------------------------------------------------------------ ESC-50


def read_esc50(root: str | Path, strict: bool = False, esc10: bool = False) -> Manifest:
    """ESC-50 clips labelled with their ``category``, ``fold`` 1..5 from ``meta/esc50.csv`` (no split column:
    the protocol is 5-fold cross-validation). ``esc10=True`` keeps the ESC-10 subset."""
    root = Path(root)
    meta = _require(root / "meta" / "esc50.csv", "ESC-50 metadata", _ESC50_LAYOUT)
    audio = _require(root / "audio", "ESC-50 audio folder", _ESC50_LAYOUT)
    required = ("filename", "fold", "category") + (("esc10",) if esc10 else ())
    rows: list[ManifestRow] = []
    missing: list[str] = []
    listed = 0
    for lineno, rec in _csv_records(meta, required):
        if esc10 and rec["esc10"].lower() != "true":
            continue
        fold = _int_field(rec["fold"], f"{meta}:{lineno}", "fold")
        if not 1 <= fold <= 5:
            raise ManifestError(f"{meta}:{lineno}: ESC-50 folds are 1..5, got {fold}")
        listed += 1
        path = audio / rec["filename"]
        if path.is_file():
            rows.append(ManifestRow(path=path.relative_to(root).as_posix(), labels=(rec["category"],), fold=fold))
        else:
            missing.append(rec["filename"])
    return _finish("esc50", root, rows, missing, listed, _ESC50_LAYOUT, strict)


# ------------------------------------------------------------------------------------------------------------ FSD50K


def fsd50k_vocabulary(root: str | Path) -> list[str]:
    """The FSD50K class names (200 in the official release) in the order of their index in ``vocabulary.csv``."""
    path = _require(Path(root) / "FSD50K.ground_truth" / "vocabulary.csv", "FSD50K vocabulary", _FSD50K_LAYOUT)
    entries = []
    with path.open(newline="", encoding="utf-8") as fh:
        for rec in csv.reader(fh):
            if not any(cell.strip() for cell in rec):
                continue
            if len(rec) < 2 or not rec[0].strip().isdigit():
                raise ManifestError(f"{path}: expected lines 'index,label,mid', got {','.join(rec)!r}")
            entries.append((int(rec[0]), rec[1].strip()))
    return [label for _, label in sorted(entries)]


def _dev_split(text: str, where: str) -> str:
    if text not in ("train", "val"):
        raise ManifestError(f"{where}: the split of a dev.csv row must be 'train' or 'val', got {text!r}")
    return text


def read_fsd50k(root: str | Path, splits: Sequence[str] = SPLITS, strict: bool = False) -> Manifest:
    """FSD50K clips with all their labels (multi-label; checked against the vocabulary): ``dev.csv`` rows keep their
    train/val split, ``eval.csv`` rows are 'test'. ``splits`` selects which of the three to read."""
    root = Path(root)
    wanted = {normalise_split(s) for s in splits}
    vocabulary = set(fsd50k_vocabulary(root))
    truth = root / "FSD50K.ground_truth"
    rows: list[ManifestRow] = []
    missing: list[str] = []
    listed = 0
    sources = (("dev.csv", "FSD50K.dev_audio", {"train", "val"}), ("eval.csv", "FSD50K.eval_audio", {"test"}))
    for csv_name, audio_name, csv_splits in sources:
        if not wanted & csv_splits:
            continue
        csv_path = _require(truth / csv_name, "FSD50K ground truth", _FSD50K_LAYOUT)
        audio = _require(root / audio_name, "FSD50K audio folder", _FSD50K_LAYOUT)
        required = ("fname", "labels", "split") if csv_name == "dev.csv" else ("fname", "labels")
        for lineno, rec in _csv_records(csv_path, required):
            split = _dev_split(rec["split"], f"{csv_path}:{lineno}") if csv_name == "dev.csv" else "test"
            if split not in wanted:
                continue
            labels = tuple(lab.strip() for lab in rec["labels"].split(",") if lab.strip())
            unknown = [lab for lab in labels if lab not in vocabulary]
            if unknown:
                raise ManifestError(f"{csv_path}:{lineno}: labels {unknown} are not in vocabulary.csv")
            listed += 1
            path = audio / f"{rec['fname']}.wav"
            if path.is_file():
                rows.append(ManifestRow(path=path.relative_to(root).as_posix(), labels=labels, split=split))
            else:
                missing.append(f"{audio_name}/{rec['fname']}.wav")
    return _finish("fsd50k", root, rows, missing, listed, _FSD50K_LAYOUT, strict)


# ---------------------------------------------------------------------------------------------------------- AudioSet


def _template_fields(ytid: str, start: float, end: float) -> dict:
    return dict(
        ytid=ytid,
        start=start,
        end=end,
        start_int=round(start),
        end_int=round(end),
        start_ms=round(start * 1000),
        end_ms=round(end * 1000),
    )


def _audioset_segments(path: Path) -> Iterator[tuple[int, str, float, float, tuple[str, ...]]]:
    """(line, ytid, start, end, label MIDs) for each segment of an AudioSet segments CSV."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        for rec in reader:
            if not rec or rec[0].lstrip().startswith("#") or not any(cell.strip() for cell in rec):
                continue
            where = f"{path}:{reader.line_num}"
            if len(rec) < 4:
                raise ManifestError(f"{where}: expected 'YTID, start_seconds, end_seconds, \"labels\"', got {rec}")
            try:
                start, end = float(rec[1]), float(rec[2])
            except ValueError:
                raise ManifestError(f"{where}: start/end seconds must be numbers, got {rec[1:3]}") from None
            labels = tuple(lab.strip() for lab in rec[3].split(",") if lab.strip())
            yield reader.line_num, rec[0].strip(), start, end, labels


def _pick_template(segments: list, media: dict[str, Path], sample: int = 1000) -> str:
    """The template of :data:`AUDIOSET_TEMPLATES` that names the most files among the first ``sample`` segments."""
    head = [_template_fields(ytid, start, end) for _, _, ytid, start, end, _ in segments[:sample]]
    scores = [sum(t.format(**f) in media for f in head) for t in AUDIOSET_TEMPLATES]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    if scores[best] == 0:
        example = ", ".join(t.format(**head[0]) for t in AUDIOSET_TEMPLATES)
        raise FileNotFoundError(
            f"AudioSet: no media file matches any known name template for the first {len(head)} segments "
            f"(for the first segment tried: {example}); pass template=...\nexpected layout:\n{_AUDIOSET_LAYOUT}"
        )
    found, template = scores[best], AUDIOSET_TEMPLATES[best]
    log.info("audioset: file names follow %r (%d of %d sampled segments found)", template, found, len(head))
    return template


def read_audioset(
    root: str | Path,
    subsets: Sequence[str] | None = None,
    template: str | None = None,
    media_dir: str = ".",
    extensions: Sequence[str] = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS,
    trimmed: bool = True,
    strict: bool = False,
) -> Manifest:
    """AudioSet-style segment CSVs: multi-label rows (label MIDs), 'balanced_train'/'unbalanced_train' -> 'train',
    'eval' -> 'test'.

    ``subsets`` defaults to every ``<subset>_segments.csv`` present. Media files are searched recursively under
    ``media_dir`` by name without extension; ``template`` formats that name (fields: ytid, start, end, start_int,
    end_int, start_ms, end_ms); by default the best-matching of :data:`AUDIOSET_TEMPLATES` is used. With
    ``trimmed=True`` the files hold only the segment, so start/end are 0 and its duration; with ``trimmed=False``
    they are whole videos and start/end are the segment times from the CSV.
    """
    root = Path(root)
    if subsets is None:
        subsets = [s for s in AUDIOSET_SUBSETS if (root / f"{s}_segments.csv").is_file()]
        if not subsets:
            raise FileNotFoundError(f"no AudioSet segments CSV in {root}/\nexpected layout:\n{_AUDIOSET_LAYOUT}")
    segments = []
    for subset in subsets:
        if subset not in AUDIOSET_SUBSETS:
            raise ValueError(f"unknown AudioSet subset {subset!r}; known: {', '.join(AUDIOSET_SUBSETS)}")
        csv_path = _require(root / f"{subset}_segments.csv", "AudioSet segments CSV", _AUDIOSET_LAYOUT)
        segments += [(subset, *segment) for segment in _audioset_segments(csv_path)]
    if not segments:
        raise ManifestError(f"audioset: the segment CSVs {list(subsets)} under {root} list no segments")
    media = _index_by_stem(_require(root / media_dir, "AudioSet media folder", _AUDIOSET_LAYOUT), extensions)
    if template is None:
        template = _pick_template(segments, media)
    else:
        try:
            template.format(**_template_fields("ytid", 0.0, 10.0))
        except (KeyError, IndexError, ValueError) as err:
            fields = ", ".join(_template_fields("ytid", 0.0, 10.0))
            raise ValueError(f"bad AudioSet name template {template!r} ({err!r}); fields: {fields}") from None
    rows: list[ManifestRow] = []
    missing: list[str] = []
    for subset, _, ytid, start, end, labels in segments:
        stem = template.format(**_template_fields(ytid, start, end))
        if stem in media:
            window = (0.0, end - start) if trimmed else (start, end)
            path = media[stem].relative_to(root).as_posix()
            rows.append(ManifestRow(path, labels, split=AUDIOSET_SUBSETS[subset], start=window[0], end=window[1]))
        else:
            missing.append(f"{subset}/{stem}")
    return _finish("audioset", root, rows, missing, len(segments), _AUDIOSET_LAYOUT, strict)
