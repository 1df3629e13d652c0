"""The CCL variant table: train every (label column, label budget, reading, variant, seed) of one config and
tabulate mean ± std.

Runs with every label live in ``<out>/<label>/<variant>/seed<k>``; runs with a budget of n labelled videos per class
in ``<out>/<label>/budget<n>-<reading>/<variant>/seed<k>`` (reading ``drop``: the other training videos unused;
``distill``: they enter the teacher terms, ``data.unlabelled``). The baseline has no teacher term, so its
``distill`` runs are its ``drop`` runs, trained once. A budget's run trains as many steps as the recipe does with
every label, validated as often: its epochs, milestones and validation interval are scaled by (training videos /
labelled videos). A finished run (with
``results.json``) is skipped and an interrupted one resumes, so the command can be restarted. The tables go to
``<out>/table.md``; with budgets, per (label, reading) a table of top-1 and one of the teachers' gain over the
baseline, and a label-efficiency plot per label, ``<out>/label_efficiency_<label>.png``. A cell that holds fewer
seeds than asked for says how many.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xkd.ccl.config import CCLConfig
from xkd.ccl.data import label_budget, load_split
from xkd.ccl.train import RESULTS, train_ccl
from xkd.config_io import load_config
from xkd.engine.checkpoint import latest_checkpoint
from xkd.eval.metrics import mean_std

VARIANT_NAMES = {"baseline": "Baseline (CE only)", "ccl-a": "CCL-A (audio teacher)", "ccl-i": "CCL-I (image teacher)",
                 "ccl-ai": "CCL-AI (both)"}
SHORT_NAMES = {"baseline": "Baseline", "ccl-a": "CCL-A", "ccl-i": "CCL-I", "ccl-ai": "CCL-AI"}  # table headers


READINGS = ("drop", "distill")


def run_dir(out: Path, label: str, variant: str, seed: int, budget: int = 0, reading: str = "drop") -> Path:
    if not budget:
        return out / label / variant / f"seed{seed}"
    if variant == "baseline":
        reading = "drop"  # nothing to distil: one set of baseline runs serves both readings
    return out / label / f"budget{budget}-{reading}" / variant / f"seed{seed}"


def budget_schedule(cfg: CCLConfig) -> list[str]:
    """Overrides that make a label-budget run as long in steps as the recipe with every label, validated as often:
    epochs, milestones and ``run.eval_every`` times (training videos / labelled videos); none without a budget."""
    if not cfg.data.labels_per_class:
        return []
    train = load_split(cfg.data, cfg.data.train_split)
    scale = len(train) / int(label_budget(train, cfg.data, cfg.run.seed).sum())
    milestones = ",".join(str(math.ceil(m * scale)) for m in cfg.optim.milestones)
    return [f"optim.epochs={math.ceil(cfg.optim.epochs * scale)}", f"optim.milestones=[{milestones}]",
            f"run.eval_every={math.ceil(cfg.run.eval_every * scale)}"]


def run_grid(config: str | Path, out: str | Path, labels: Sequence[str], variants: Sequence[str],
             seeds: Sequence[int], overrides: Sequence[str] = (), progress: bool = True,
             budgets: Sequence[int] = (0,), readings: Sequence[str] = ("drop",),
             train: bool = True) -> Path:
    """Train the missing runs of the grid (none with ``train=False``), then write and return ``<out>/table.md``
    (and the plots) from the finished runs."""
    out = Path(out)
    if not train and not out.is_dir():
        raise FileNotFoundError(f"{out}: no such folder (--table-only tabulates the runs of an existing grid)")
    # seed outermost: an interrupted grid has every cell with as many seeds as possible
    for seed in seeds if train else ():
        for label in labels:
            for budget in budgets:
                for reading in readings if budget else ("drop",):
                    for variant in variants:
                        folder = run_dir(out, label, variant, seed, budget, reading)
                        if (folder / RESULTS).is_file():
                            continue
                        sets = [*overrides, f"data.label_column={label}", f"loss.variant={variant}",
                                f"run.seed={seed}", f"data.labels_per_class={budget}",
                                f"data.unlabelled={reading}"]
                        cfg = load_config(CCLConfig, config, [*sets, *budget_schedule(load_config(CCLConfig, config,
                                                                                                   sets))])
                        train_ccl(cfg, folder, resume=latest_checkpoint(folder) is not None, progress=progress)
    path = out / "table.md"
    if list(budgets) == [0]:
        path.write_text(results_table(out, labels, variants, seeds))
        return path
    tables = []
    for label in labels:
        for reading in readings:
            tables.append(f"### {label}, reading `{reading}`\n\n"
                          + budget_table(out, label, variants, seeds, budgets, reading))
            if "baseline" in variants and len(variants) > 1:
                tables.append(f"### {label}, reading `{reading}`: gain over the baseline\n\n"
                              + gain_table(out, label, variants, seeds, budgets, reading))
        plot_label_efficiency(out, label, variants, seeds, budgets, readings,
                              out / f"label_efficiency_{label}.png")
    path.write_text("\n".join(tables))
    return path


def _test_top1(folder: Path) -> float | None:
    if not (folder / RESULTS).is_file():
        return None
    result = json.loads((folder / RESULTS).read_text())
    return result[result["split"]]["top1"]


def _budget_values(out: Path, label: str, variant: str, seeds: Sequence[int], budget: int,
                   reading: str) -> dict[int, float]:
    """{seed: test top-1} of the finished runs of one cell."""
    found = {s: _test_top1(run_dir(out, label, variant, s, budget, reading)) for s in seeds}
    return {s: v for s, v in found.items() if v is not None}


def budget_table(out: str | Path, label: str, variants: Sequence[str], seeds: Sequence[int],
                 budgets: Sequence[int], reading: str) -> str:
    """Markdown: one row per budget (first cell: labelled videos per class, "all" for every label), one column per
    variant: test top-1 (%, mean ± sample std over seeds)."""
    out = Path(out)
    header = ["labelled videos per class"] + [SHORT_NAMES.get(v, v) for v in variants]
    rows = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(variants)]
    for budget in budgets:
        cells = [str(budget) if budget else "all"]
        cells += [_cell(list(_budget_values(out, label, v, seeds, budget, reading).values()), len(seeds))
                  for v in variants]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def gain_table(out: str | Path, label: str, variants: Sequence[str], seeds: Sequence[int],
               budgets: Sequence[int], reading: str) -> str:
    """Markdown: one row per budget, one column per teacher variant: its test top-1 minus the baseline's of the same
    seed (the same labelled videos), in points, mean ± sample std over the seeds both finished; last, twice the
    baseline's sample std (the yardstick a margin must clear)."""
    out = Path(out)
    teachers = [v for v in variants if v != "baseline"]
    header = ["labelled videos per class"] + [SHORT_NAMES.get(v, v) for v in teachers] + ["2 × baseline std"]
    rows = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(teachers) + 1)]
    for budget in budgets:
        base = _budget_values(out, label, "baseline", seeds, budget, reading)
        cells = [str(budget) if budget else "all"]
        for variant in teachers:
            found = _budget_values(out, label, variant, seeds, budget, reading)
            gains = [found[s] - base[s] for s in seeds if s in found and s in base]
            cells.append(_cell(gains, len(seeds), signed=True))
        cells.append(f"{200 * np.std(list(base.values()), ddof=1):.1f}" if len(base) > 1 else "n/a")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot_label_efficiency(out: Path, label: str, variants: Sequence[str], seeds: Sequence[int],
                          budgets: Sequence[int], readings: Sequence[str], path: Path) -> Path:
    """One panel per reading (a shared top-1 axis): test top-1 (%) against labelled videos per class (log axis;
    "all" drawn at twice the largest budget), a line per variant with the seeds' sample std shaded."""
    from matplotlib.figure import Figure

    everything = max(budgets) * 2 if 0 in budgets and max(budgets) else 1
    xs = {b: b if b else everything for b in budgets}
    fig = Figure(figsize=(4.6 * len(readings), 3.6))
    for i, reading in enumerate(readings):
        ax = fig.add_subplot(1, len(readings), i + 1, sharey=fig.axes[0] if fig.axes else None)
        for variant in variants:
            points = [(xs[b], 100 * np.fromiter(_budget_values(out, label, variant, seeds, b, reading).values(), float))
                      for b in sorted(budgets, key=lambda b: xs[b])]
            points = [(x, v) for x, v in points if len(v)]
            if not points:
                continue
            x = [p[0] for p in points]
            mean = np.array([v.mean() for _, v in points])
            std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for _, v in points])
            line, = ax.plot(x, mean, marker="o", ms=3, label=VARIANT_NAMES.get(variant, variant))
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.minorticks_off()  # only the budgets are labelled
        ax.set_xticks([xs[b] for b in budgets], [str(b) if b else "all" for b in budgets])
        ax.set_xlabel("labelled videos per class")
        ax.set_ylabel(f"{label} test top-1 (%)")
        ax.set_title(f"reading: {reading}")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _cell(values: list[float], expected: int = 0, signed: bool = False) -> str:
    """Mean ± sample std in % of fractions (the value alone for one run); "(n=k)" when fewer than ``expected``
    seeds finished."""
    if not values:
        return "n/a"
    mean, std = mean_std(100.0 * np.asarray(values), ddof=1 if len(values) > 1 else 0)
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    text += f" ± {std:.1f}" if len(values) > 1 or expected <= 1 else ""
    return text + (f" (n={len(values)})" if len(values) < expected else "")


def results_table(out: str | Path, labels: Sequence[str], variants: Sequence[str], seeds: Sequence[int]) -> str:
    """Markdown: one row per variant; per label column the test top-1 and R@1 (%, mean ± sample std over seeds),
    and the mean training time per run."""
    out = Path(out)
    header = ["Variant"] + [f"{lab} {metric}" for lab in labels for metric in ("top-1", "R@1")] + ["min / run"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in variants:
        cells, minutes = [VARIANT_NAMES.get(variant, variant)], []
        for label in labels:
            found = [json.loads((run_dir(out, label, variant, s) / RESULTS).read_text()) for s in seeds
                     if (run_dir(out, label, variant, s) / RESULTS).is_file()]
            cells.append(_cell([r[r["split"]]["top1"] for r in found], len(seeds)))
            cells.append(_cell([r["retrieval"]["R@1"] for r in found if "retrieval" in r], len(seeds)))
            minutes += [r["train_seconds"] / 60 for r in found]
        cells.append(f"{np.mean(minutes):.1f}" if minutes else "n/a")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
