"""What every dataset-layout reader shares: media extensions, split names, annotation-file readers, the media index
and the final missing-file report that turns the rows into a manifest.

All layout modules log through the one logger named ``xkd.datasets.layouts``, defined here.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

from xkd.data.manifest import Manifest, ManifestError, ManifestRow

# One logger for all the layout modules, named after the module that exposes them (xkd.datasets.layouts).
log = logging.getLogger("xkd.datasets.layouts")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val",
    "test": "test", "testing": "test", "eval": "test",
}


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


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped cells) for the non-empty rows of a CSV, its header (if any) included."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        for rec in reader:
            if any(cell.strip() for cell in rec):
                yield reader.line_num, [cell.strip() for cell in rec]


def _csv_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, record) for a CSV with a header (its first non-empty row); missing columns raise."""
    rows = _csv_rows(path)
    header = next(rows, (0, []))[1]
    absent = [c for c in required if c not in header]
    if absent:
        raise ManifestError(f"{path}: missing column(s) {absent}; header is {header}")
    for lineno, rec in rows:
        rec += [""] * (len(header) - len(rec))  # short rows: the absent cells are empty
        yield lineno, dict(zip(header, rec))


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
