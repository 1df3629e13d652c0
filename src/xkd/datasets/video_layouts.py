"""Readers for the official layouts of the video datasets: Kinetics-400, Kinetics-Sound, UCF101, HMDB51 and
VGGSound."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from xkd.data.manifest import Manifest, ManifestError, ManifestRow
from xkd.datasets.layout_files import (
    AUDIO_EXTENSIONS,
    SPLITS,
    VIDEO_EXTENSIONS,
    _check_fold,
    _class_key,
    _csv_records,
    _csv_rows,
    _finish,
    _index_by_stem,
    _int_field,
    _require,
    _text_lines,
    normalise_split,
)

# Spec §A10b: the Kinetics-400 classes of Kinetics-Sound, as named in the XKD file lists.
KINETICS_SOUND_CLASSES = (
    "blowing_nose", "blowing_out_candles", "bowling", "chopping_wood", "dribbling_basketball", "laughing",
    "mowing_lawn", "playing_accordion", "playing_bagpipes", "playing_bass_guitar", "playing_clarinet",
    "playing_drums", "playing_guitar", "playing_harmonica", "playing_keyboard", "playing_organ", "playing_piano",
    "playing_saxophone", "playing_trombone", "playing_trumpet", "playing_violin", "playing_xylophone",
    "ripping_paper", "shoveling_snow", "shuffling_cards", "singing", "stomping_grapes", "strumming_guitar",
    "tap_dancing", "tapping_guitar", "tapping_pen", "tickling",
)

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
_VGGSOUND_LAYOUT = """\
  <root>/vggsound.csv   (the official file, no header)   lines: ---g-f_I2yQ,1,people marching,test
  <root>/<any folders>/<youtube_id>_<start:06d>.mp4      (10 s clips; or .wav, .flac, ... for audio only)
      or <youtube_id>_<start:06d>_<end:06d>.<ext>, or the whole video <youtube_id>.<ext> (the 10 s are cut at read)"""
VGGSOUND_CLIP_SECONDS = 10


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


# ---------------------------------------------------------------------------------------------------------- VGGSound


def read_vggsound(
    root: str | Path,
    splits: Sequence[str] | None = None,
    strict: bool = False,
    csv_name: str = "vggsound.csv",
) -> Manifest:
    """VGGSound clips with the official CSV's label and split (train/test).

    Each line ``youtube_id,start_seconds,label,split`` names the 10 s clip starting at ``start_seconds``; it is found
    anywhere under ``root`` as ``<youtube_id>_<start:06d>.<ext>`` or ``<youtube_id>_<start:06d>_<end:06d>.<ext>``
    (a cut clip; video files win over audio-only ones), or as the whole video ``<youtube_id>.<ext>``, whose row then
    carries start and end so that only the clip's 10 s are read. ``splits`` keeps some splits ('train', 'test').
    """
    root = Path(root)
    csv_path = _require(root / csv_name, "VGGSound annotations", _VGGSOUND_LAYOUT)
    wanted = {normalise_split(s) for s in splits} if splits else None
    media = _index_by_stem(root, VIDEO_EXTENSIONS + AUDIO_EXTENSIONS)
    rows: list[ManifestRow] = []
    missing: list[str] = []
    listed = 0
    for lineno, cells in _csv_rows(csv_path):
        where = f"{csv_path}:{lineno}"
        if len(cells) != 4:
            raise ManifestError(f"{where}: expected 'youtube_id,start_seconds,label,split', got {','.join(cells)!r}")
        youtube_id, start_text, label, split_name = cells
        start = _int_field(start_text, where, "start_seconds")
        try:
            split = normalise_split(split_name)
        except ValueError as err:
            raise ManifestError(f"{where}: {err}") from None
        if wanted is not None and split not in wanted:
            continue
        listed += 1
        end = start + VGGSOUND_CLIP_SECONDS
        clip = f"{youtube_id}_{start:06d}"
        for stem, bounds in ((clip, (None, None)), (f"{clip}_{end:06d}", (None, None)), (youtube_id, (start, end))):
            if stem in media:
                path = media[stem].relative_to(root).as_posix()
                rows.append(ManifestRow(path=path, labels=(label,), split=split, start=bounds[0], end=bounds[1]))
                break
        else:
            missing.append(clip)
    return _finish("vggsound", root, rows, missing, listed, _VGGSOUND_LAYOUT, strict)
