"""Scalar metrics of a run: ``<run_dir>/metrics.csv`` (always) and TensorBoard (``<run_dir>/tensorboard``).

The CSV has a ``step`` column then one column per metric, in order of first appearance; a row leaves a metric it
did not log empty. When a new metric appears the file is rewritten with the wider header, so it stays one valid
CSV. Only the main rank writes.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a metrics CSV (empty if the file does not exist)."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Replace the CSV at ``path`` with ``columns`` and ``rows`` (via a temporary file and a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class RunLogger:
    """Append scalar metrics per step to ``metrics.csv`` and TensorBoard; a no-op on ranks other than the main one.

    ``start_step``: the step this run starts from (the resumed checkpoint's step, 0 for a new run). Rows of an
    earlier attempt with ``step >= start_step`` are dropped, so a resumed run leaves no duplicate steps.
    ``use_tensorboard``: also write TensorBoard scalars (falls back to CSV only, with a warning, if unavailable).
    """

    def __init__(
        self, run_dir: str | os.PathLike, is_main: bool, use_tensorboard: bool = True, start_step: int = 0
    ) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / METRICS_FILE
        self.is_main = is_main
        self._columns = ["step"]
        self._tb = None
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        columns, rows = _read_rows(self.csv_path)
        self._columns += [c for c in columns if c != "step"]
        kept = [r for r in rows if int(float(r["step"])) < start_step]
        _write_rows(self.csv_path, self._columns, kept)
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                warnings.warn(f"TensorBoard unavailable ({e}); logging metrics to {self.csv_path} only", stacklevel=2)
            else:
                self._tb = SummaryWriter(
                    log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=start_step if start_step > 0 else None
                )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` (name -> number or 0-d tensor) at ``step``."""
        if not self.is_main:
            return
        if "step" in metrics:
            raise ValueError("'step' is the step column, not a metric name")
        values = {name: float(value) for name, value in metrics.items()}
        new = [name for name in values if name not in self._columns]
        if new:
            _, rows = _read_rows(self.csv_path)
            self._columns += new
            _write_rows(self.csv_path, self._columns, rows)
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns, restval="").writerow({"step": step, **values})
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard (the CSV is closed after every row)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """Every column of ``metrics.csv`` (``step`` included) as floats, NaN where a row did not log that metric."""
    columns, rows = _read_rows(Path(run_dir) / METRICS_FILE)
    return {c: [float(r[c]) if r.get(c) else math.nan for r in rows] for c in columns}


def plot_metrics(run_dir: str | os.PathLike, keys: Sequence[str], out_png: str | os.PathLike) -> Path:
    """Plot each metric in ``keys`` against step, one panel per metric, into the PNG ``out_png``."""
    metrics = read_metrics(run_dir)
    missing = [k for k in keys if k not in metrics]
    if missing or not keys:
        where = Path(run_dir) / METRICS_FILE
        raise KeyError(f"metrics {missing or '(none given)'} not in {where}; it has {list(metrics)}")
    fig = Figure(figsize=(7, 2.2 * len(keys)), layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        points = [(s, v) for s, v in zip(metrics["step"], metrics[key]) if not math.isnan(v)]
        marker = "." if len(points) < 30 else None  # sparse metrics (evaluations) stay visible
        ax.plot([s for s, _ in points], [v for _, v in points], linewidth=1.2, marker=marker)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
