"""``xkd demo``: the whole method on a laptop CPU, from raw data to a report.

1. builds AV-Digits (version 3 unless told otherwise) if it is missing, and decodes its training split once into
   ``<out>/decoded`` (``xkd data predecode``), from which every pretraining run slices its clips;
2. pretrains XKD, the contrastive objective (CAV-MAE) and the MAE-only baseline with the version's CPU recipes
   (``configs/pretrain/*_avdigits_v3_cpu.yaml``), each with its schedule sized to the ``steps`` the demo runs and
   keeping its weights at a few points along the way, and teaches the same encoders the digit for the same steps
   (the supervised ceiling, :mod:`xkd.engine.supervised`);
3. evaluates XKD's teachers and students, the contrastive and MAE-only encoders, the ceiling and random-init encoders
   of three seeds (never a pretraining seed) with a ridge classifier on standardised features (docs/EVALUATION.md)
   on four test tasks: video digit, video motion, audio digit (leave-one-voice-out) and audio+video digit;
4. scores the kept weights on the val split (video digit, audio digit; classifiers trained on 50 videos per digit)
   for the learning curves;
5. writes ``report.md`` with the table, the learning curves, the loss curves and a 2-D projection of the video
   features coloured by digit.

Runs are kept in the output folder: running the demo again reuses finished steps.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xkd.config import PretrainConfig, load_config
from xkd.config_io import recipe_file
from xkd.datasets.avdigits import choose_version, default_dir

log = logging.getLogger(__name__)

RANDOM_SEEDS = (0, 1, 2)  # random-init encoders of baseline_seed(k): the table's spread of an untrained encoder
CURVE_TASKS = ("video digit", "audio digit")
CURVE_TRAIN_PER_DIGIT = 50  # training videos per digit of the curves' classifiers (the table's use all 4,000)
STEPS = 250  # per model: what fits the 15-minute budget on a 2-core CPU (docs/REPRODUCTION.md "The v3 demo")


@dataclass
class DemoPlan:
    """What one demo run does; ``quick`` shrinks everything for a smoke test."""

    data_dir: Path
    tiny_data: bool
    steps: int
    workers: int
    version: int  # of AV-Digits
    curve_points: int  # weights kept along each run (the last is the final weights)

    @classmethod
    def make(cls, quick: bool, data_dir: str | None, steps: int | None, workers: int,
             version: int | None = None, curve_points: int = 5) -> "DemoPlan":
        version = choose_version(data_dir, version)
        steps = steps or (12 if quick else STEPS)
        return cls(Path(data_dir or default_dir(version, tiny=quick)), quick, steps, workers, version,
                   max(1, min(curve_points, steps)))

    @property
    def snapshot_every(self) -> int:
        return self.steps // self.curve_points if self.curve_points > 1 else 0


_DATA_TEXT = {
    1: "real MNIST digits animated with 8 motions, paired by class with real spoken digits in 5 voices",
    2: "real MNIST digits at 55-75% of the frame height animated with 8 motions, paired by class with real spoken "
       "digits repeated through the clip, in 5 real voices and, for training only, 40 synthetic ones; "
       "docs/AVDIGITS.md",
    3: "version 2's clips (real MNIST digits at 55-75% of the frame height, 8 motions, real spoken digits repeated "
       "through the clip in 5 real voices and, for training only, 40 synthetic ones) with motion, voice and digit "
       "independent in every split; docs/AVDIGITS.md",
}
OBJECTIVES = {"XKD": "xkd", "contrastive": "cav_mae", "MAE-only": "mae"}  # table name -> recipe method


def avdigits_recipe(method: str, version: int) -> str:
    """The ``configs/pretrain`` file of the CPU recipe of ``method`` ("xkd", "mae", "cav_mae", "xkd_mas", "xkd_mats")
    for AV-Digits ``version``."""
    return f"{method}_avdigits{f'_v{version}' if version > 1 else ''}_cpu.yaml"


def cpu_recipe(name: str, overrides: list[str]) -> PretrainConfig:
    """One of the ``configs/pretrain`` recipes of this checkout, with ``--set``-style overrides."""
    return load_config(PretrainConfig, recipe_file("pretrain", name), overrides)


def _config(name: str, manifest: Path, plan: DemoPlan, decoded: Path, snapshots: bool = True) -> PretrainConfig:
    """The recipe ``name`` on ``manifest``, its clips sliced from the ``decoded`` cache in the training process (no
    loader workers: a window costs ~3 ms there against ~12 ms decoded from its file, and every core goes to the model;
    1.1-1.4x faster per step on 2 cores, docs/REPRODUCTION.md)."""
    return cpu_recipe(name, [f"data.manifest={manifest}", "data.num_workers=0", f"data.decoded_cache={decoded}",
                             f"run.log_every={max(1, min(10, plan.steps // 10))}",
                             f"run.snapshot_every={plan.snapshot_every if snapshots else 0}"])


def decode_training_split(recipe: str, overrides: list[str], folder: Path, workers: int, progress: bool) -> Path:
    """Decode the pretraining split of the CPU recipe ``recipe`` (with ``overrides``) once into ``folder``, at its
    decoding settings, which every AV-Digits recipe shares (a cache of other settings is refused when read); rows
    already there are kept. Returns ``folder``, for ``data.decoded_cache``."""
    from xkd.data.decoded import predecode
    from xkd.data.views import pretrain_dataset

    dataset = pretrain_dataset(cpu_recipe(recipe, [*overrides, "data.decoded_cache="]))
    predecode(dataset.manifest, folder, dataset.decoding, workers=max(workers, 1), progress=progress)
    return folder


def _plot_losses(runs: dict[str, Path], path: Path) -> Path:
    from matplotlib.figure import Figure

    from xkd.engine.logger import read_metrics

    fig = Figure(figsize=(13, 3.2))
    keys = [("recon_video", "video reconstruction"), ("recon_audio", "audio reconstruction"), ("kd", "KD (XKD)"),
            ("contrastive", "InfoNCE (contrastive; ln B at chance)")]
    for i, (key, title) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for name, run in runs.items():
            m = read_metrics(run)
            if key in m:
                ax.plot(m["step"], m[key], label=name)
        ax.set_title(title, fontsize=9)
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


def _seed_spread(results: dict[str, dict], names: list[str], task: str) -> tuple[float, float]:
    """Mean and sample std over the models ``names`` of their top-1 on ``task`` (mean over its folds)."""
    from xkd.eval.metrics import mean_std

    return mean_std([results[n][task]["summary"]["top1"]["mean"] for n in names], ddof=1 if len(names) > 1 else 0)


def demo_table(results: dict[str, dict], columns: dict[str, list[str]], tasks: list[str]) -> str:
    """Markdown: one row per task, one column per entry of ``columns`` (header -> the models it averages), top-1 %:
    one model's mean over the task's folds, or mean ± sample std over several models (the random-init seeds)."""
    lines = ["| task (ridge top-1 %) | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for task in tasks:
        cells = []
        for names in columns.values():
            mean, std = _seed_spread(results, names, task)
            cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}" if len(names) > 1 else f"{100 * mean:.1f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", quick: bool = False, data_dir: str | None = None,
             steps: int | None = None, workers: int = 2, version: int | None = None, curve_points: int = 5) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.md``; ``version`` of AV-Digits: the build's in
    ``data_dir`` when there is one, else 3; ``curve_points``: weights scored along each run."""
    from xkd.api import baseline_seed, load, random_encoders
    from xkd.data.manifest import Manifest
    from xkd.datasets.avdigits import prepare_avdigits
    from xkd.engine.pretrain import pretrain_or_reuse
    from xkd.engine.supervised import supervised_or_reuse
    from xkd.eval.curves import plot_curves, score_curves
    from xkd.eval.extract import ExtractOptions, extract_features
    from xkd.eval.run import EvalOptions, evaluate_many, save_report
    from xkd.eval.tasks import tasks_for, with_fewer_training_videos

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.make(quick, data_dir, steps, workers, version, curve_points)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(key: str, since: float) -> None:
        timings[key] = round(time.perf_counter() - since, 1)

    manifest = prepare_avdigits(plan.data_dir, tiny=plan.tiny_data, workers=max(plan.workers, 1), version=plan.version)
    timed("data", t0)

    t = time.perf_counter()
    recipes = {name: avdigits_recipe(method, plan.version) for name, method in OBJECTIVES.items()}
    decoded = decode_training_split(recipes["XKD"], [f"data.manifest={manifest}"], out / "decoded", plan.workers,
                                    progress=not quick)
    timed("decode", t)

    runs = {}
    for name, method in OBJECTIVES.items():
        t = time.perf_counter()
        runs[name] = out / method.replace("_", "-")
        pretrain_or_reuse(_config(recipes[name], manifest, plan, decoded), runs[name], plan.steps)
        timed(f"pretrain {name}", t)
    t = time.perf_counter()
    ceiling_run = out / "supervised"
    supervised_or_reuse(_config(recipes["XKD"], manifest, plan, decoded, snapshots=False), ceiling_run, plan.steps,
                        progress=not quick)
    timed("pretrain supervised", t)

    # ---------------------------------------------------------------- the test table
    t = time.perf_counter()
    base = _config(recipes["XKD"], manifest, plan, decoded)
    randoms = [f"random init (seed {baseline_seed(k)})" for k in RANDOM_SEEDS]
    models = {
        "XKD teacher": load(runs["XKD"], role="teacher"),
        "XKD student": load(runs["XKD"], role="student"),
        "contrastive": load(runs["contrastive"]),
        "MAE-only": load(runs["MAE-only"]),
        **{name: random_encoders(base, baseline_seed(k)) for name, k in zip(randoms, RANDOM_SEEDS)},
        "supervised": load(ceiling_run),
    }
    tasks = tasks_for(f"av-digits:{plan.data_dir}")
    # An AV-Digits clip is its whole video and the default training view has no spatial jitter (nor flips, which
    # would change motion labels), so every training clip of a video would be the same: one is enough.
    opts = EvalOptions(train_clips=1, test_clips=1, num_workers=plan.workers, progress=not quick)
    results = evaluate_many(models, tasks, "ridge", opts)
    for name, res in results.items():
        save_report(res, out / "eval", re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))
    timed("evaluate (test)", t)

    # ---------------------------------------------------------------- learning curves (val)
    t = time.perf_counter()
    val_tasks = with_fewer_training_videos(
        [task for task in tasks_for(f"av-digits:{plan.data_dir}", split="val") if task.name in CURVE_TASKS],
        CURVE_TRAIN_PER_DIGIT)
    curve_runs = {"XKD teacher": (runs["XKD"], "teacher"), "contrastive": (runs["contrastive"], "student"),
                  "MAE-only": (runs["MAE-only"], "student")}
    references = {"random init": models[randoms[0]], "supervised": models["supervised"]}
    references.update({name: models[name] for name in randoms[1:]})
    curves, ref_results = score_curves(curve_runs, val_tasks, opts, references=references)
    spreads = {
        f"random init ({len(randoms)} seeds)": {
            task.name: _seed_spread({"random init": ref_results["random init"],
                                     **{n: ref_results[n] for n in randoms[1:]}}, ["random init", *randoms[1:]],
                                    task.name) for task in val_tasks},
        "supervised ceiling": {task.name: (ref_results["supervised"][task.name]["summary"]["top1"]["mean"], 0.0)
                               for task in val_tasks},
    }
    curve_png = plot_curves(curves, spreads, [task.name for task in val_tasks], out / "learning_curve.png",
                            f"AV-Digits v{plan.version} val split: ridge top-1 of the weights kept along each "
                            f"{plan.steps}-step run")
    timed("learning curves (val)", t)

    test = tasks[0]  # video digit: its only fold is the image-index test split
    sub = Manifest([test.manifest[i] for i in test.folds[0].test_rows], test.manifest.root)
    pca_models = {name: models[name] for name in ("XKD teacher", "contrastive", "MAE-only", randoms[0])}
    sets, _ = extract_features(pca_models, sub, ["video"], ExtractOptions(num_workers=plan.workers, progress=False),
                               label_column="digit")
    projection = _plot_projection({m: (s["video"].features, s["video"].labels) for m, s in sets.items()},
                                  out / "features_pca.png")
    losses = _plot_losses(runs, out / "losses.png")
    total = time.perf_counter() - t0

    columns = {"XKD teacher": ["XKD teacher"], "XKD student": ["XKD student"], "contrastive": ["contrastive"],
               "MAE-only": ["MAE-only"], f"random init ({len(randoms)} seeds)": randoms,
               "supervised": ["supervised"]}
    table = demo_table(results, columns, [task.name for task in tasks])
    early = [f"{name}: {enc.describe()}" for name, enc in models.items() if enc.stopped_early]
    early_text = " " + "; ".join(early) + "." if early else ""
    seeds = ", ".join(str(baseline_seed(k)) for k in RANDOM_SEEDS)
    recipe_list = ", ".join(f"`configs/pretrain/{r}`" for r in recipes.values())
    report = out / "report.md"
    report.write_text(
        f"""# xkd demo on AV-Digits{' (quick)' if quick else ''}

Data: AV-Digits version {plan.version}, `{manifest}` ({len(test.manifest)} clips: {_DATA_TEXT[plan.version]}).

Pretraining: XKD, the contrastive objective (method `cav-mae`; its CPU recipe trains the cross-modal InfoNCE
between the pooled video and audio embeddings alone, on whole views) and MAE-only with {recipe_list}, each a
complete {plan.steps}-step schedule (learning rate, weight decay, EMA momentum and warm-ups sized to the
run).{early_text} Supervised: the same encoders taught the digit with cross-entropy on whole
views for the same {plan.steps} steps, the most these encoders learn about the digit in that budget.

Evaluation: ridge classifier on frozen, standardised features; alpha chosen on a validation split carved from the
training videos; one clean training clip per video (the test view); audio tasks leave one real voice out (5 folds,
their mean shown). XKD is reported by its EMA teachers and by its students; the random-init encoders are built from
their own seeds ({seeds}), not from the pretraining seed every pretrained model started from: their column is the
mean ± sample std over the three.

{table}

Chance: 10% for digits, 12.5% for motions. Per-model tables with the spread over folds, the chosen alphas and
confusion matrices: `eval/`.

![learning curves]({curve_png.name})

Learning curves: the weights each run kept along its schedule, scored on the val split (video digit, audio digit)
by the same ridge classifier trained on {CURVE_TRAIN_PER_DIGIT} training videos per digit (the table's use all of
them, so the curves sit lower), beside the random-init encoders (mean ± std, shaded) and the supervised ceiling scored
the same way.

![loss curves]({losses.name})

![video features]({projection.name})

Time on this machine: {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).
"""
    )
    (out / "demo.json").write_text(json.dumps({"timings_s": timings, "steps": plan.steps, "quick": quick,
                                               "baseline_seeds": [baseline_seed(k) for k in RANDOM_SEEDS],
                                               "table": table,
                                               "curves": curves}, indent=2))
    return report
