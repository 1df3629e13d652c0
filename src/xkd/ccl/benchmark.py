"""The CCL variant table: train every (label column, variant, seed) of one config and tabulate mean ± std.

Runs live in ``<out>/<label>/<variant>/seed<k>``; a finished run (with ``results.json``) is skipped and an
interrupted one resumes, so the command can be restarted. The table goes to ``<out>/table.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xkd.ccl.config import CCLConfig
from xkd.ccl.train import RESULTS, train_ccl
from xkd.config_io import load_config
from xkd.engine.checkpoint import latest_checkpoint
from xkd.eval.metrics import mean_std

VARIANT_NAMES = {"baseline": "Baseline (CE only)", "ccl-a": "CCL-A (audio teacher)", "ccl-i": "CCL-I (image teacher)",
                 "ccl-ai": "CCL-AI (both)"}


def run_dir(out: Path, label: str, variant: str, seed: int) -> Path:
    return out / label / variant / f"seed{seed}"


def run_grid(config: str | Path, out: str | Path, labels: Sequence[str], variants: Sequence[str],
             seeds: Sequence[int], overrides: Sequence[str] = (), progress: bool = True) -> Path:
    """Train the missing runs of the grid, then write and return ``<out>/table.md``."""
    out = Path(out)
    for seed in seeds:  # seed outermost: an interrupted grid has every cell with as many seeds as possible
        for label in labels:
            for variant in variants:
                folder = run_dir(out, label, variant, seed)
                if (folder / RESULTS).is_file():
                    continue
                sets = [*overrides, f"data.label_column={label}", f"loss.variant={variant}", f"run.seed={seed}"]
                cfg = load_config(CCLConfig, config, sets)
                train_ccl(cfg, folder, resume=latest_checkpoint(folder) is not None, progress=progress)
    path = out / "table.md"
    path.write_text(results_table(out, labels, variants, seeds))
    return path


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean, std = mean_std(100.0 * np.asarray(values), ddof=1 if len(values) > 1 else 0)
    return f"{mean:.1f} ± {std:.1f}"


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
            cells.append(_cell([r[r["split"]]["top1"] for r in found]))
            cells.append(_cell([r["retrieval"]["R@1"] for r in found if "retrieval" in r]))
            minutes += [r["train_seconds"] / 60 for r in found]
        cells.append(f"{np.mean(minutes):.1f}" if minutes else "n/a")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
