"""Manifests: the one CSV format every dataset in xkd is read through.

Columns (header required; only ``path`` is mandatory):

``path``     media file, absolute or relative to the manifest's root
``label``    one class name, or several separated by ``;`` for multi-label sets (FSD50K, AudioSet)
``split``    e.g. ``train`` / ``val`` / ``test``
``fold``     integer fold for k-fold protocols (ESC-50, leave-one-voice-out); empty when unused
``start``    window start in seconds (optional; empty = whole file)
``end``      window end in seconds (optional)

Any further columns (e.g. ``digit``, ``motion``, ``voice``) are kept in :attr:`ManifestRow.extra`, so one manifest can
carry several label sets; :meth:`Manifest.labels_of` reads any of them.

A folder of shards written by ``xkd data shard`` reads as a manifest too (:func:`read_manifest`): its rows are the
samples' rows, with paths naming the samples inside the shards, which :meth:`Manifest.source` reads in place.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from xkd.data.media import MediaBytes
from xkd.data.shard_reader import INDEX_FILE, ShardSet, is_member_path, read_member

CORE_COLUMNS = ("path", "label", "split", "fold", "start", "end")


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class ManifestRow:
    path: str
    labels: tuple[str, ...] = ()
    split: str = ""
    fold: int | None = None
    start: float | None = None
    end: float | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """The single label of a single-label row ('' when unlabelled)."""
        if len(self.labels) > 1:
            raise ValueError(f"{self.path} has several labels {self.labels}; use .labels")
        return self.labels[0] if self.labels else ""


class Manifest:
    """An ordered list of :class:`ManifestRow` plus the folder relative paths are resolved against."""

    def __init__(self, rows: Iterable[ManifestRow], root: str | Path = "."):
        self.rows = list(rows)
        self.root = Path(root)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> ManifestRow:
        return self.rows[i]

    def resolve(self, row: ManifestRow) -> Path:
        """Absolute path of a row's media file."""
        p = Path(row.path)
        return p if p.is_absolute() else self.root / p

    def source(self, row: ManifestRow) -> Path | MediaBytes:
        """What to decode for a row: its file, or the bytes of its sample when the row lives in a shard."""
        path = self.resolve(row)
        return read_member(path) if is_member_path(path) else path

    def filter(self, split: str | None = None, folds: Iterable[int] | None = None, exclude_folds: Iterable[int] = ()):
        """Rows of one split and/or of some folds (``exclude_folds`` drops folds), as a new manifest."""
        folds = None if folds is None else set(folds)
        exclude = set(exclude_folds)
        rows = [
            r
            for r in self.rows
            if (not split or r.split == split)
            and (folds is None or r.fold in folds)
            and (r.fold is None or r.fold not in exclude)
        ]
        return Manifest(rows, self.root)

    def labels_of(self, column: str = "label") -> list[str]:
        """Per-row label from ``label`` or any extra column (single-label)."""
        if column == "label":
            return [r.label for r in self.rows]
        try:
            return [r.extra[column] for r in self.rows]
        except KeyError:
            raise ManifestError(f"manifest has no column '{column}'") from None

    def classes(self, column: str = "label") -> list[str]:
        """Sorted class names found in a label column (multi-label rows contribute every label)."""
        if column == "label":
            return sorted({lab for r in self.rows for lab in r.labels})
        return sorted(set(self.labels_of(column)))

    def folds(self) -> list[int]:
        return sorted({r.fold for r in self.rows if r.fold is not None})

    def with_root(self, root: str | Path) -> "Manifest":
        return Manifest(self.rows, root)

    def relative_to(self, root: str | Path) -> "Manifest":
        """Rewrite paths relative to ``root`` (for writing a manifest next to its data)."""
        root = Path(root).resolve()
        rows = []
        for r in self.rows:
            p = self.resolve(r).resolve()
            try:
                rows.append(replace(r, path=p.relative_to(root).as_posix()))
            except ValueError:
                rows.append(replace(r, path=str(p)))
        return Manifest(rows, root)


def _float_or_none(text: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ManifestError(f"{where}: expected a number, got {text!r}") from None


def read_manifest(path: str | Path, root: str | Path | None = None) -> Manifest:
    """Read a manifest CSV, or the rows of a shard folder. ``root`` defaults to the CSV's folder."""
    path = Path(path)
    if path.is_dir() and (path / INDEX_FILE).is_file():
        return Manifest([replace(row_from_record(record), path=name) for name, record in ShardSet(path).records()],
                        path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    # surrogateescape: file names that are not UTF-8 (POSIX allows any bytes) survive a round trip
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ManifestError(f"{path}: the header must contain a 'path' column (got {reader.fieldnames})")
        rows = []
        for lineno, rec in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            if not (rec.get("path") or "").strip():
                raise ManifestError(f"{where}: empty path")
            fold_text = (rec.get("fold") or "").strip()
            try:
                fold = int(fold_text) if fold_text else None
            except ValueError:
                raise ManifestError(f"{where}: fold must be an integer, got {fold_text!r}") from None
            label_text = (rec.get("label") or "").strip()
            rows.append(
                ManifestRow(
                    path=rec["path"].strip(),
                    labels=tuple(s for s in (x.strip() for x in label_text.split(";")) if s),
                    split=(rec.get("split") or "").strip(),
                    fold=fold,
                    start=_float_or_none(rec.get("start") or "", where),
                    end=_float_or_none(rec.get("end") or "", where),
                    extra={k: (v or "") for k, v in rec.items() if k not in CORE_COLUMNS and k is not None},
                )
            )
    return Manifest(rows, path.parent if root is None else root)


def row_record(row: ManifestRow) -> dict[str, Any]:
    """A row as a JSON-ready dict (``path``, ``labels``, ``split``, ``fold``, ``start``, ``end``, ``extra``)."""
    return {"path": row.path, "labels": list(row.labels), "split": row.split, "fold": row.fold, "start": row.start,
            "end": row.end, "extra": dict(row.extra)}


def row_from_record(record: dict[str, Any]) -> ManifestRow:
    """The row a :func:`row_record` dict describes."""
    return ManifestRow(record["path"], tuple(record["labels"]), record["split"], record["fold"], record["start"],
                       record["end"], dict(record["extra"]))


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write a manifest CSV (the core columns, then every extra column in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra_cols: list[str] = []
    for r in manifest.rows:
        for k in r.extra:
            if k not in extra_cols:
                extra_cols.append(k)
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        w = csv.writer(fh)
        w.writerow([*CORE_COLUMNS, *extra_cols])
        for r in manifest.rows:
            w.writerow(
                [
                    r.path,
                    ";".join(r.labels),
                    r.split,
                    "" if r.fold is None else r.fold,
                    "" if r.start is None else f"{r.start:g}",
                    "" if r.end is None else f"{r.end:g}",
                    *(r.extra.get(k, "") for k in extra_cols),
                ]
            )
    return path
