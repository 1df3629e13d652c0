"""Readers for the official on-disk layouts of the datasets XKD trains and evaluates on, producing manifests.

Each ``read_<name>(root, ...)`` reads the official annotation files under ``root`` and returns a
:class:`~xkd.data.manifest.Manifest` whose paths are relative to ``root`` (spec §A10, §A10b). Layouts, their
annotation files and the manifest columns they fill:

- ``kinetics400``: ``train.csv``, ``validate.csv`` / ``val.csv``, ``test.csv``; label, split (train/val/test).
- ``kinetics_sound``: the same, kept to the 32 classes of §A10b; label, split.
- ``ucf101``: ``ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt``; label, split (train/test) of split N.
- ``hmdb51``: ``testTrainMulti_7030_splits/<class>_test_splitN.txt``; label, split (train/test) of split N.
- ``esc50``: ``meta/esc50.csv``; label (the category), fold (1..5).
- ``fsd50k``: ``FSD50K.ground_truth/{dev,eval,vocabulary}.csv``; labels (multi-label), split (train/val/test).
- ``audioset``: ``{balanced_train,unbalanced_train,eval}_segments.csv``; labels (multi-label MIDs), split
  (train/test), start/end.

For UCF101 and HMDB51 only one official split is read at a time; its rows carry ``split`` train/test and leave
``fold`` empty, because ``fold`` in a manifest means a k-fold protocol (ESC-50), which the three UCF/HMDB splits
are not. A missing annotation file or media folder raises :class:`FileNotFoundError` describing the expected layout.
Media files listed in the annotations but absent on disk are logged with their count and left out, or raise
:class:`FileNotFoundError` with ``strict=True``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from xkd.data.manifest import Manifest, ManifestError, ManifestRow

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")

# Spec §A10b: the Kinetics-400 classes of Kinetics-Sound, as named in the XKD file lists.
KINETICS_SOUND_CLASSES = (
    "blowing_nose", "blowing_out_candles", "bowling", "chopping_wood", "dribbling_basketball", "laughing",
    "mowing_lawn", "playing_accordion", "playing_bagpipes", "playing_bass_guitar", "playing_clarinet",
    "playing_drums", "playing_guitar", "playing_harmonica", "playing_keyboard", "playing_organ", "playing_piano",
    "playing_saxophone", "playing_trombone", "playing_trumpet", "playing_violin", "playing_xylophone",
    "ripping_paper", "shoveling_snow", "shuffling_cards", "singing", "stomping_grapes", "strumming_guitar",
    "tap_dancing", "tapping_guitar", "tapping_pen", "tickling",
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

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val",
    "test": "test", "testing": "test", "eval": "test",
}

_KINETICS_CSVS = {"train": ("train.csv",), "val": ("validate.csv", "val.csv"), "test": ("test.csv",)}
_KINETICS_DIRS = {"train": ("train",), "val": ("val", "validate", "valid", "validation"), "test": ("test",)}

_KINETICS_LAYOUT = """\
  <root>/train.csv, validate.csv (or val.csv), test.csv   (or in <root>/annotations/)
      columns label,youtube_id,time_start,time_end,split[,is_cc]
  <root>/train/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4   (or train/<youtube_id>_...mp4)
  <root>/val/... (or validate/), <root>/test/...
  (label folders may spell spaces as underscores; pass splits=... to read only the splits you have)"""
_UCF101_LAYOUT = """\
  <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
  <root>/ucfTrainTestlist/classInd.txt             lines: 1 ApplyEyeMakeup
  <root>/ucfTrainTestlist/trainlist0{1,2,3}.txt    lines: ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1
  <root>/ucfTrainTestlist/testlist0{1,2,3}.txt     lines: ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"""
_HMDB51_LAYOUT = """\
  <root>/<class>/<video>.avi
  <root>/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
      lines "<video>.avi <id>" with id 1 = train, 2 = test, 0 = unused"""
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


# ---------------------------------------------------------------------------------------------------- shared helpers


def _require(path: Path, what: str, layout: str) -> Path:
    """``path`` if it exists, else a FileNotFoundError naming it and showing the official layout."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}\nexpected layout:\n{layout}")
    return path


def normalise_split(name: str) -> str:
    """'validate' / 'validation' / 'valid' -> 'val', 'eval' -> 'test', ...; unknown names raise ValueError."""
    try:
        return _SPLIT_ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}") from None


def _class_key(name: str) -> str:
    """Class name compared up to case and space/underscore spelling ('playing bagpipes' == 'playing_bagpipes')."""
    return name.strip().lower().replace(" ", "_")


def _check_fold(fold: int, n: int, dataset: str) -> None:
    if fold not in range(1, n + 1):
        raise ValueError(f"{dataset} has official splits 1..{n}, got fold={fold!r}")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) for the non-empty lines of a text file (any line ending)."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if line:
                yield lineno, line


def _csv_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, record) for a CSV with a header; header names are stripped; missing columns raise."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        header = [h.strip() for h in next(reader, [])]
        absent = [c for c in required if c not in header]
        if absent:
            raise ManifestError(f"{path}: missing column(s) {absent}; header is {header}")
        for rec in reader:
            if any(cell.strip() for cell in rec):
                rec += [""] * (len(header) - len(rec))  # short rows: the absent cells are empty
                yield reader.line_num, {k: v.strip() for k, v in zip(header, rec)}


def _int_field(text: str, where: str, what: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        raise ManifestError(f"{where}: {what} must be a number, got {text!r}") from None


def _index_by_stem(folder: Path, extensions: Sequence[str], max_depth: int | None = None) -> dict[str, Path]:
    """Media files under ``folder`` keyed by name without extension (``max_depth`` 1 = the folder itself only).

    Symbolic links are followed. When one name exists with several extensions, the earliest in ``extensions`` wins.
    """
    rank = {ext.lower(): i for i, ext in enumerate(extensions)}
    best: dict[str, tuple[int, Path]] = {}
    base_depth = len(folder.parts)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        dirnames.sort()
        if max_depth is not None and len(here.parts) - base_depth + 1 >= max_depth:
            dirnames.clear()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            r = rank.get(ext.lower())
            if r is not None and (stem not in best or r < best[stem][0]):
                best[stem] = (r, here / name)
    return {stem: path for stem, (_, path) in best.items()}


def _finish(
    dataset: str, root: Path, rows: list[ManifestRow], missing: list[str], listed: int, layout: str, strict: bool
) -> Manifest:
    """Report media listed in the annotations but absent on disk, then wrap the rows in a manifest."""
    if listed == 0:
        raise ManifestError(f"{dataset}: the annotations under {root} list no files")
    if not rows:
        raise FileNotFoundError(
            f"{dataset}: none of the {listed} files listed in the annotations exist under {root} "
            f"(first: {missing[0]})\nexpected layout:\n{layout}"
        )
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        message = f"{dataset}: {len(missing)} of {listed} files listed in the annotations are missing under {root}"
        if strict:
            raise FileNotFoundError(f"{message}: {shown}")
        log.warning("%s and were left out (strict=True makes this an error): %s", message, shown)
    return Manifest(rows, root)


# ------------------------------------------------------------------------------------- Kinetics-400, Kinetics-Sound


def _kinetics_csv(root: Path, split: str) -> Path | None:
    for folder in (root, root / "annotations"):
        for name in _KINETICS_CSVS[split]:
            if (folder / name).is_file():
                return folder / name
    return None


def _kinetics_split_dir(root: Path, split: str, split_dirs: Mapping[str, str] | None) -> Path:
    if split_dirs and split in split_dirs:
        return _require(root / split_dirs[split], f"Kinetics {split} folder", _KINETICS_LAYOUT)
    for name in _KINETICS_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    tried = ", ".join(f"{root / n}/" for n in _KINETICS_DIRS[split])
    raise FileNotFoundError(
        f"Kinetics {split} folder not found (tried {tried}); pass split_dirs={{'{split}': ...}} for another name"
        f"\nexpected layout:\n{_KINETICS_LAYOUT}"
    )


def _read_kinetics(
    root: str | Path,
    splits: Sequence[str] | None,
    strict: bool,
    split_dirs: Mapping[str, str] | None,
    classes: Sequence[str] | None,
    dataset: str,
) -> Manifest:
    """Kinetics CSVs + clip folders, optionally kept to ``classes`` (renamed to their spelling in ``classes``)."""
    root = Path(root)
    wanted = [normalise_split(s) for s in splits] if splits else None
    csvs: dict[str, Path] = {}
    for split in wanted or SPLITS:
        found = _kinetics_csv(root, split)
        if found is not None:
            csvs[split] = found
        elif wanted:
            names = " or ".join(_KINETICS_CSVS[split])
            raise FileNotFoundError(
                f"Kinetics {split} annotations ({names}) not found in {root}/ or {root}/annotations/"
                f"\nexpected layout:\n{_KINETICS_LAYOUT}"
            )
    if not csvs:
        raise FileNotFoundError(f"no Kinetics annotation CSV in {root}/\nexpected layout:\n{_KINETICS_LAYOUT}")
    keep = None if classes is None else {_class_key(c): c for c in classes}
    rows: list[ManifestRow] = []
    missing: list[str] = []
    listed = 0
    for split, csv_path in csvs.items():
        clips = _index_by_stem(_kinetics_split_dir(root, split, split_dirs), VIDEO_EXTENSIONS, max_depth=2)
        for lineno, rec in _csv_records(csv_path, ("youtube_id", "time_start", "time_end")):
            where = f"{csv_path}:{lineno}"
            label = rec.get("label", "")
            if keep is not None:
                label = keep.get(_class_key(label), "")
                if not label:
                    continue
            start = _int_field(rec["time_start"], where, "time_start")
            end = _int_field(rec["time_end"], where, "time_end")
            stem = f"{rec['youtube_id']}_{start:06d}_{end:06d}"
            listed += 1
            if stem in clips:
                path = clips[stem].relative_to(root).as_posix()
                rows.append(ManifestRow(path=path, labels=(label,) if label else (), split=split))
            else:
                missing.append(f"{split}/{stem}")
    return _finish(dataset, root, rows, missing, listed, _KINETICS_LAYOUT, strict)


def read_kinetics400(
    root: str | Path,
    splits: Sequence[str] | None = None,
    strict: bool = False,
    split_dirs: Mapping[str, str] | None = None,
) -> Manifest:
    """Kinetics-400 clips with the official CSV labels (kept as spelled there) and split train/val/test.

    ``splits`` (default: every split whose CSV exists) may use 'validate' for 'val'. Clips are found as
    ``<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.<ext>`` or ``<split>/<youtube_id>_...`` whatever the label
    folder is called; ``split_dirs`` maps a split to another folder name (e.g. ``{"train": "train_256"}``).
    """
    return _read_kinetics(root, splits, strict, split_dirs, None, "kinetics400")


def read_kinetics_sound(
    root: str | Path,
    splits: Sequence[str] | None = None,
    strict: bool = False,
    split_dirs: Mapping[str, str] | None = None,
) -> Manifest:
    """Kinetics-Sound: the Kinetics-400 rows of the 32 classes in :data:`KINETICS_SOUND_CLASSES`, read from a
    Kinetics-400 tree (only those classes' clips need to be on disk); labels are spelled as in that constant."""
    return _read_kinetics(root, splits, strict, split_dirs, KINETICS_SOUND_CLASSES, "kinetics_sound")


# ------------------------------------------------------------------------------------------------------------ UCF101


def _ucf_classes(path: Path) -> dict[int, str]:
    classes = {}
    for lineno, line in _text_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ManifestError(f"{path}:{lineno}: expected '<index> <Class>', got {line!r}")
        classes[int(parts[0])] = parts[1]
    return classes


def read_ucf101(
    root: str | Path,
    fold: int = 1,
    strict: bool = False,
    video_dir: str = "UCF-101",
    list_dir: str = "ucfTrainTestlist",
) -> Manifest:
    """UCF101 official split ``fold`` (1..3): rows of ``trainlist0<fold>.txt`` (split 'train') then of
    ``testlist0<fold>.txt`` (split 'test'), labelled with the class folder name checked against ``classInd.txt``."""
    _check_fold(fold, 3, "UCF101")
    root = Path(root)
    videos = _require(root / video_dir, "UCF101 video folder", _UCF101_LAYOUT)
    lists = _require(root / list_dir, "UCF101 split-list folder", _UCF101_LAYOUT)
    classes = _ucf_classes(_require(lists / "classInd.txt", "UCF101 class index", _UCF101_LAYOUT))
    known = set(classes.values())
    rows: list[ManifestRow] = []
    missing: list[str] = []
    listed = 0
    for split, name in (("train", f"trainlist{fold:02d}.txt"), ("test", f"testlist{fold:02d}.txt")):
        list_path = _require(lists / name, f"UCF101 {split} list of split {fold}", _UCF101_LAYOUT)
        for lineno, line in _text_lines(list_path):
            parts = line.split()
            rel = parts[0]
            label = rel.split("/")[0]
            if label not in known:
                raise ManifestError(f"{list_path}:{lineno}: class {label!r} is not in classInd.txt")
            if len(parts) > 1 and classes.get(_int_field(parts[1], f"{list_path}:{lineno}", "class index")) != label:
                raise ManifestError(f"{list_path}:{lineno}: class index {parts[1]} does not match folder {label!r}")
            listed += 1
            if (videos / rel).is_file():
                rows.append(ManifestRow(path=(videos / rel).relative_to(root).as_posix(), labels=(label,), split=split))
            else:
                missing.append(rel)
    return _finish("ucf101", root, rows, missing, listed, _UCF101_LAYOUT, strict)


# ------------------------------------------------------------------------------------------------------------ HMDB51


def read_hmdb51(
    root: str | Path,
    fold: int = 1,
    strict: bool = False,
    video_dir: str = ".",
    splits_dir: str = "testTrainMulti_7030_splits",
) -> Manifest:
    """HMDB51 official split ``fold`` (1..3) from ``<class>_test_split<fold>.txt``: id 1 -> 'train', 2 -> 'test',
    0 (unused in this split) dropped. Classes are the ones named by the split files; labels are those names."""
    _check_fold(fold, 3, "HMDB51")
    root = Path(root)
    splits_path = _require(root / splits_dir, "HMDB51 split folder", _HMDB51_LAYOUT)
    videos = _require(root / video_dir, "HMDB51 video folder", _HMDB51_LAYOUT)
    suffix = "_test_split1.txt"
    classes = sorted({p.name[: -len(suffix)] for p in splits_path.glob("*_test_split[123].txt")})
    if not classes:
        raise FileNotFoundError(
            f"no <class>_test_split<N>.txt files in {splits_path}\nexpected layout:\n{_HMDB51_LAYOUT}"
        )
    rows: list[ManifestRow] = []
    missing: list[str] = []
    listed = 0
    for label in classes:
        what = f"HMDB51 split {fold} of class '{label}'"
        split_file = _require(splits_path / f"{label}_test_split{fold}.txt", what, _HMDB51_LAYOUT)
        for lineno, line in _text_lines(split_file):
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ManifestError(f"{split_file}:{lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
            name, code = parts
            if code == "0":
                continue
            listed += 1
            path = videos / label / name
            if path.is_file():
                split = "train" if code == "1" else "test"
                rows.append(ManifestRow(path=path.relative_to(root).as_posix(), labels=(label,), split=split))
            else:
                missing.append(f"{label}/{name}")
    return _finish("hmdb51", root, rows, missing, listed, _HMDB51_LAYOUT, strict)


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


# ---------------------------------------------------------------------------------------------- registry, summary

LAYOUTS: dict[str, Callable[..., Manifest]] = {
    "kinetics400": read_kinetics400,
    "kinetics_sound": read_kinetics_sound,
    "ucf101": read_ucf101,
    "hmdb51": read_hmdb51,
    "esc50": read_esc50,
    "fsd50k": read_fsd50k,
    "audioset": read_audioset,
}


def _layout_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def read_layout(name: str, root: str | Path, **kwargs) -> Manifest:
    """Read dataset ``name`` (a key of :data:`LAYOUTS`; case, '-' and '_' ignored, so 'UCF-101' works) at ``root``."""
    for known, reader in LAYOUTS.items():
        if _layout_key(known) == _layout_key(name):
            return reader(root, **kwargs)
    raise ValueError(f"unknown dataset layout {name!r}; known layouts: {', '.join(LAYOUTS)}")


def manifest_summary(manifest: Manifest) -> str:
    """A few lines for printing: row and class counts, rows per split and per fold."""
    rows = manifest.rows
    multi = sum(len(r.labels) > 1 for r in rows)
    unlabelled = sum(not r.labels for r in rows)
    head = f"{len(rows)} rows, {len(manifest.classes())} classes"
    if multi:
        head += f", {multi} multi-label rows"
    if unlabelled:
        head += f", {unlabelled} unlabelled rows"
    lines = [head]
    splits = Counter(r.split for r in rows if r.split)
    if splits:
        order = sorted(splits, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))
        lines.append("splits: " + ", ".join(f"{s} {splits[s]}" for s in order))
    folds = Counter(r.fold for r in rows if r.fold is not None)
    if folds:
        lines.append("folds: " + ", ".join(f"{f}: {folds[f]}" for f in sorted(folds)))
    return "\n".join(lines)
