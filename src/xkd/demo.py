"""``xkd demo``: the whole method on a laptop CPU, from raw data to a report.

1. builds AV-Digits if it is missing;
2. pretrains XKD and the MAE-only baseline with the CPU recipes (``configs/pretrain/*_avdigits_cpu.yaml``);
3. evaluates XKD, MAE-only and a random-init encoder with the linear SVM on four tasks: video digit, video motion,
   audio digit (leave-one-voice-out) and audio+video digit;
4. writes ``report.md`` with the table, the loss curves and a 2-D projection of the video features coloured by digit.

Runs are kept in the output folder: running the demo again reuses finished steps.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from xkd.config import PretrainConfig, load_config

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "pretrain"
TRAIN_CLIPS = 1  # augmented SVM training clips per video: 2 took the default demo past 15 min on 2 cores


@dataclass
class DemoPlan:
    """What one demo run does; ``quick`` shrinks everything for a smoke test."""

    data_dir: Path
    tiny_data: bool
    steps: int
    workers: int

    @classmethod
    def make(cls, quick: bool, data_dir: str | None, steps: int | None, workers: int) -> "DemoPlan":
        default = "data/av-digits-tiny" if quick else "data/av-digits"
        return cls(Path(data_dir or default), quick, steps or (12 if quick else 400), workers)


def cpu_recipe(name: str, overrides: list[str]) -> PretrainConfig:
    """One of the ``configs/pretrain`` recipes of this checkout, with ``--set``-style overrides."""
    path = CONFIG_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run this from a checkout of xkd (pip install -e .)")
    return load_config(PretrainConfig, path, overrides)


def _config(name: str, manifest: Path, plan: DemoPlan) -> PretrainConfig:
    return cpu_recipe(name, [f"data.manifest={manifest}", f"data.num_workers={plan.workers}",
                             f"run.log_every={max(1, min(10, plan.steps // 10))}"])


def _plot_curves(runs: dict[str, Path], path: Path) -> Path:
    from matplotlib.figure import Figure

    from xkd.engine.logger import read_metrics

    fig = Figure(figsize=(10, 3.2))
    keys = [("recon_video", "video reconstruction"), ("recon_audio", "audio reconstruction"), ("kd", "KD (XKD)")]
    for i, (key, title) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for name, run in runs.items():
            m = read_metrics(run)
            if key in m:
                ax.plot(m["step"], m[key], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _plot_projection(features: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    fig = Figure(figsize=(4 * len(features), 4))
    for i, (name, (x, digits)) in enumerate(features.items()):
        ax = fig.add_subplot(1, len(features), i + 1)
        xy = PCA(n_components=2, random_state=0).fit_transform(x - x.mean(0))
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=digits, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("test-set video features, first two principal components, coloured by digit")
    fig.colorbar(scatter, ax=fig.axes, ticks=range(10), label="digit")
    fig.savefig(path, dpi=110)
    return path


def _table(results: dict[str, dict[str, dict]], tasks: list[str]) -> str:
    lines = ["| task (SVM top-1 %, mean ± std over folds) | " + " | ".join(results) + " |",
             "|---|" + "---:|" * len(results)]
    for task in tasks:
        cells = []
        for model in results:
            s = results[model].get(task, {}).get("summary", {}).get("top1")
            cells.append("–" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", quick: bool = False, data_dir: str | None = None,
             steps: int | None = None, workers: int = 2) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.md``."""
    import xkd
    from xkd.api import random_encoders
    from xkd.data.avdigits import prepare_avdigits
    from xkd.eval.extract import ExtractOptions, extract_features
    from xkd.eval.run import EvalOptions, evaluate_many, save_report
    from xkd.engine.pretrain import pretrain_or_reuse
    from xkd.eval.tasks import tasks_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.make(quick, data_dir, steps, workers)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    manifest = prepare_avdigits(plan.data_dir, tiny=plan.tiny_data, workers=max(plan.workers, 1))
    timings["data"] = time.perf_counter() - t0

    runs = {}
    for name, config in (("XKD", "xkd_avdigits_cpu.yaml"), ("MAE-only", "mae_avdigits_cpu.yaml")):
        t = time.perf_counter()
        run_dir = out / ("xkd" if name == "XKD" else "mae")
        pretrain_or_reuse(_config(config, manifest, plan), run_dir, plan.steps)
        runs[name] = run_dir
        timings[f"pretrain {name}"] = time.perf_counter() - t

    t = time.perf_counter()
    xkd_cfg = _config("xkd_avdigits_cpu.yaml", manifest, plan)
    models = {
        "XKD": xkd.load(runs["XKD"]),
        "MAE-only": xkd.load(runs["MAE-only"]),
        "random init": random_encoders(xkd_cfg, seed=0),
    }
    tasks = tasks_for(f"av-digits:{plan.data_dir}")
    opts = EvalOptions(train_clips=TRAIN_CLIPS, test_clips=1, num_workers=plan.workers)
    with warnings.catch_warnings():  # liblinear's max_iter notes at large C: not the demo reader's concern
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = evaluate_many(models, tasks, "svm", opts)
    for name, res in results.items():
        save_report(res, out / "eval", name.lower().replace(" ", "_").replace("-", "_"))
    timings["evaluate"] = time.perf_counter() - t

    test = tasks[0]  # video digit: its only fold is the image-index test split
    test_rows = test.folds[0].test_rows
    from xkd.data.manifest import Manifest

    sub = Manifest([test.manifest[i] for i in test_rows], test.manifest.root)
    sets, _ = extract_features(models, sub, ["video"], ExtractOptions(num_workers=plan.workers, progress=False),
                               label_column="digit")
    projection = _plot_projection({m: (s["video"].features, s["video"].labels) for m, s in sets.items()},
                                  out / "features_pca.png")
    curves = _plot_curves(runs, out / "losses.png")
    total = time.perf_counter() - t0

    table = _table(results, [t.name for t in tasks])
    report = out / "report.md"
    report.write_text(
        f"""# xkd demo on AV-Digits{' (quick)' if quick else ''}

Data: `{manifest}` ({len(test.manifest)} clips: real MNIST digits animated with 8 motions, paired by class with real
spoken digits in 5 voices). Pretraining: {plan.steps} steps of `configs/pretrain/xkd_avdigits_cpu.yaml` and
`configs/pretrain/mae_avdigits_cpu.yaml`. Evaluation: linear SVM on frozen features (XKD: EMA teachers; MAE-only:
students), C chosen on a validation split carved from train, one augmented clip per training video;
audio tasks are leave-one-voice-out (5 folds).

{table}

Chance: 10% for digits, 12.5% for motions.

![loss curves]({curves.name})

![video features]({projection.name})

Time on this machine: {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).
Per-model tables, JSON and confusion matrices: `eval/`.
"""
    )
    (out / "demo.json").write_text(json.dumps({"timings_s": timings, "steps": plan.steps, "quick": quick,
                                               "table": table}, indent=2))
    return report
