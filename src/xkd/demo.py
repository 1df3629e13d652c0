"""``xkd demo``: the whole method on a laptop CPU, from raw data to a report.

1. builds AV-Digits (version 2 unless told otherwise) if it is missing;
2. pretrains XKD and the MAE-only baseline with the version's CPU recipes (``configs/pretrain/*_avdigits_v2_cpu.yaml``
   or ``*_avdigits_cpu.yaml``), each with its schedule (learning rate, weight decay, EMA momentum, warm-ups) sized to
   the ``steps`` the demo runs;
3. evaluates XKD's teachers and students, MAE-only and a random-init encoder (its own seed, not the pretraining one)
   with a ridge classifier on standardised features (docs/EVALUATION.md) on four tasks: video digit, video motion, audio digit (leave-one-voice-out) and audio+video
   digit;
4. writes ``report.md`` with the table, the settings the classifier chose, the loss curves and a 2-D projection of the
   video features coloured by digit.

Runs are kept in the output folder: running the demo again reuses finished steps.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xkd.config import PretrainConfig, load_config
from xkd.config_io import recipe_file
from xkd.datasets.avdigits import choose_version, default_dir

log = logging.getLogger(__name__)


@dataclass
class DemoPlan:
    """What one demo run does; ``quick`` shrinks everything for a smoke test."""

    data_dir: Path
    tiny_data: bool
    steps: int
    workers: int
    version: int  # of AV-Digits

    @classmethod
    def make(cls, quick: bool, data_dir: str | None, steps: int | None, workers: int,
             version: int | None = None) -> "DemoPlan":
        version = choose_version(data_dir, version)
        return cls(Path(data_dir or default_dir(version, tiny=quick)), quick, steps or (12 if quick else 400), workers,
                   version)


_DATA_TEXT = {
    1: "real MNIST digits animated with 8 motions, paired by class with real spoken digits in 5 voices",
    2: "real MNIST digits at 55-75% of the frame height animated with 8 motions, paired by class with real spoken "
       "digits repeated through the clip, in 5 real voices and, for training only, 40 synthetic ones; "
       "docs/AVDIGITS.md",
}


def avdigits_recipe(method: str, version: int) -> str:
    """The ``configs/pretrain`` file of the CPU recipe of ``method`` ("xkd", "mae", "xkd_mas", "xkd_mats") for
    AV-Digits ``version``."""
    return f"{method}_avdigits{'_v2' if version == 2 else ''}_cpu.yaml"


def cpu_recipe(name: str, overrides: list[str]) -> PretrainConfig:
    """One of the ``configs/pretrain`` recipes of this checkout, with ``--set``-style overrides."""
    return load_config(PretrainConfig, recipe_file("pretrain", name), overrides)


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


def run_demo(out: str | Path = "runs/demo", quick: bool = False, data_dir: str | None = None,
             steps: int | None = None, workers: int = 2, version: int | None = None) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.md``; ``version`` of AV-Digits: the build's in
    ``data_dir`` when there is one, else 2."""
    from xkd.api import baseline_seed, load, random_encoders
    from xkd.datasets.avdigits import prepare_avdigits
    from xkd.eval.extract import ExtractOptions, extract_features
    from xkd.eval.report import comparison_table
    from xkd.eval.run import EvalOptions, evaluate_many, save_report
    from xkd.engine.pretrain import pretrain_or_reuse
    from xkd.eval.tasks import tasks_for

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.make(quick, data_dir, steps, workers, version)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    manifest = prepare_avdigits(plan.data_dir, tiny=plan.tiny_data, workers=max(plan.workers, 1), version=plan.version)
    timings["data"] = time.perf_counter() - t0

    runs = {}
    recipes = {"XKD": avdigits_recipe("xkd", plan.version), "MAE-only": avdigits_recipe("mae", plan.version)}
    for name, config in recipes.items():
        t = time.perf_counter()
        run_dir = out / ("xkd" if name == "XKD" else "mae")
        pretrain_or_reuse(_config(config, manifest, plan), run_dir, plan.steps)
        runs[name] = run_dir
        timings[f"pretrain {name}"] = time.perf_counter() - t

    t = time.perf_counter()
    xkd_cfg = _config(recipes["XKD"], manifest, plan)
    seed = baseline_seed(xkd_cfg.run.seed)
    models = {
        "XKD teacher": load(runs["XKD"], role="teacher"),
        "XKD student": load(runs["XKD"], role="student"),
        "MAE-only": load(runs["MAE-only"]),
        f"random init (seed {seed})": random_encoders(xkd_cfg, seed),
    }
    tasks = tasks_for(f"av-digits:{plan.data_dir}")
    # An AV-Digits clip is its whole video and the default training view has no spatial jitter (nor flips, which
    # would change motion labels), so every training clip of a video would be the same: one is enough.
    opts = EvalOptions(train_clips=1, test_clips=1, num_workers=plan.workers)
    results = evaluate_many(models, tasks, "ridge", opts)
    for name, res in results.items():
        save_report(res, out / "eval", name.split(" (")[0].lower().replace(" ", "_").replace("-", "_"))
    timings["evaluate"] = time.perf_counter() - t

    test = tasks[0]  # video digit: its only fold is the image-index test split
    test_rows = test.folds[0].test_rows
    from xkd.data.manifest import Manifest

    sub = Manifest([test.manifest[i] for i in test_rows], test.manifest.root)
    pca_models = {name: models[name] for name in ("XKD teacher", "MAE-only", f"random init (seed {seed})")}
    sets, _ = extract_features(pca_models, sub, ["video"], ExtractOptions(num_workers=plan.workers, progress=False),
                               label_column="digit")
    projection = _plot_projection({m: (s["video"].features, s["video"].labels) for m, s in sets.items()},
                                  out / "features_pca.png")
    curves = _plot_curves(runs, out / "losses.png")
    total = time.perf_counter() - t0

    table = comparison_table(results, [t.name for t in tasks], what="ridge top-1 %")
    early = [f"{name}: {enc.describe()}" for name, enc in models.items() if enc.stopped_early]
    early_text = " " + "; ".join(early) + "." if early else ""
    report = out / "report.md"
    report.write_text(
        f"""# xkd demo on AV-Digits{' (quick)' if quick else ''}

Data: AV-Digits version {plan.version}, `{manifest}` ({len(test.manifest)} clips: {_DATA_TEXT[plan.version]}).

Pretraining: `configs/pretrain/{recipes["XKD"]}` and `configs/pretrain/{recipes["MAE-only"]}`, each a complete
{plan.steps}-step schedule (learning rate, weight decay, EMA momentum and warm-ups sized to the run).{early_text}

Evaluation: ridge classifier on frozen, standardised features; alpha chosen on a validation split carved from the
training videos (below); one clean training clip per video (the test view); audio tasks leave one real voice out (5
folds). XKD is reported by its EMA teachers and by its students; the random-init encoder is built from its own seed
({seed}), not from the pretraining seed whose weights every pretrained model started from.

{table}

Chance: 10% for digits, 12.5% for motions.

![loss curves]({curves.name})

![video features]({projection.name})

Time on this machine: {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).
Per-model tables, JSON and confusion matrices: `eval/`.
"""
    )
    (out / "demo.json").write_text(json.dumps({"timings_s": timings, "steps": plan.steps, "quick": quick,
                                               "baseline_seed": seed, "table": table}, indent=2))
    return report
