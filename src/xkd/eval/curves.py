"""Learning curves: the weights a run kept along its schedule (``run.snapshot_every``) scored with one protocol, and
their plot beside the references a reader needs (random init, the supervised ceiling)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from xkd.api import Encoders, load
from xkd.engine.pretrain import snapshots
from xkd.eval.run import EvalOptions, evaluate_many
from xkd.eval.tasks import Task

Curve = list[tuple[int, float]]  # (step, top-1) by step


def score_curves(runs: Mapping[str, tuple[Path, str]], tasks: list[Task], opts: EvalOptions, protocol: str = "ridge",
                 references: Mapping[str, Encoders] | None = None) -> tuple[dict[str, dict[str, Curve]], dict]:
    """``({label: {task: [(step, top-1), ...]}}, {reference: {task: result}})`` for ``runs`` (``{label: (run folder,
    role)}``, role ``teacher`` or ``student``): every snapshot and the final weights of each run, and the
    ``references`` (e.g. random-init encoders), all scored in one pass over the clips."""
    references = dict(references or {})
    models: dict[str, Encoders] = dict(references)
    where = {}
    for label, (run, role) in runs.items():
        for step, path in snapshots(run):
            name = f"{label} @ {step}"
            models[name] = load(path, role=role)
            where[name] = (label, step)
    results = evaluate_many(models, tasks, protocol, opts)
    curves: dict[str, dict[str, Curve]] = {label: {} for label in runs}
    for name, per_task in results.items():
        if name in references:
            continue
        label, step = where[name]
        for task, result in per_task.items():
            curves[label].setdefault(task, []).append((step, result["summary"]["top1"]["mean"]))
    curves = {label: {task: sorted(points) for task, points in per_task.items()} for label, per_task in curves.items()}
    return curves, {name: results[name] for name in references}


def plot_curves(curves: Mapping[str, Mapping[str, Curve]], references: Mapping[str, Mapping[str, tuple[float, float]]],
                tasks: list[str], path: Path, title: str) -> Path:
    """One panel per task: top-1 (%) against steps, a line per run, and each reference (``{label: {task: (mean,
    std)}}``, e.g. random init over seeds, the supervised ceiling) as a horizontal line with its spread shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(tasks), 3.6))
    styles = ["--", ":", "-."]
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for label, per_task in curves.items():
            if task in per_task:
                steps, top1 = zip(*per_task[task])
                ax.plot(steps, [100 * t for t in top1], marker="o", ms=3, label=label)
        for j, (label, per_task) in enumerate(references.items()):
            if task in per_task:
                mean, std = per_task[task]
                line = ax.axhline(100 * mean, color="0.3", ls=styles[j % len(styles)], lw=1, label=label)
                if std:
                    ax.axhspan(100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.12)
        ax.set_title(task)
        ax.set_xlabel("pretraining step")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
