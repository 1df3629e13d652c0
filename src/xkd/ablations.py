"""``xkd ablations``: the XKD paper's ablations on AV-Digits over several seeds, as one table (docs/REPRODUCTION.md).

Each variant is a CPU recipe of the AV-Digits version run (``configs/pretrain/*_avdigits_v3_cpu.yaml`` for version 3,
``*_v2_cpu.yaml`` for version 2, ``*_avdigits_cpu.yaml`` for version 1) plus overrides. Every (variant, seed) pretrains
a complete schedule of ``steps`` steps into ``<out>/<variant>/seed<k>`` (finished runs are reused, interrupted ones
resumed), its clips sliced from one decoded copy of the training split (``<out>/decoded``, as in ``xkd demo``); then
all models of a seed (teachers and students of the variants that have teachers) and a random-init encoder built from
its own seed (:func:`xkd.api.baseline_seed`) are evaluated together with the ridge classifier on standardised features
(docs/EVALUATION.md) on the four AV-Digits tasks (each clip decoded once) into ``<out>/eval_seed<k>.json``.
``<out>/table.md`` and ``<out>/results.json`` hold the top-1 per task as mean ± sample std over seeds and the penalty
the classifier chose; ``<out>/timings.json`` the wall time of every piece of work. With ``curve_points`` N > 1 every
run keeps its weights N times along its schedule, and those of the first seed's runs are scored on the val split
(the demo's curve tasks and classifiers) into ``<out>/learning_curve.png`` and ``<out>/curves.json``, beside the
random-init encoders and the supervised ceiling of every seed.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xkd.api import BASELINE_SEED_OFFSET, load_roles
from xkd.eval.metrics import mean_std

log = logging.getLogger(__name__)

RANDOM = "random-init"
PROTOCOL = "ridge-standardised-2"  # the evaluation recorded per seed; a change re-evaluates finished runs


@dataclass(frozen=True)
class Variant:
    """One row of the table: a CPU recipe and the ``--set`` overrides that make the ablation."""

    name: str  # folder name and command-line choice
    label: str  # table row
    method: str  # its CPU recipe, per AV-Digits version (:func:`xkd.demo.avdigits_recipe`)
    overrides: tuple[str, ...] = ()
    supervised: bool = False  # the recipe's encoders taught the digit instead (xkd.engine.supervised)


VARIANTS = (
    Variant("recon-video", "L_recon^v only (video MAE; audio encoder untrained)", "mae",
            ("loss.recon_audio=false",)),
    Variant("ae", "L_ae (MAE on both modalities)", "mae"),
    Variant("ae-kd", "L_ae + L_kd (no domain alignment)", "xkd", ("loss.da=false",)),
    Variant("ae-da", "L_ae + L_da (no distillation)", "xkd", ("loss.kd=false",)),
    Variant("xkd", "XKD: L_ae + L_kd + L_da", "xkd"),
    Variant("no-refine", "XKD, refinement off", "xkd", ("loss.refine=false",)),
    Variant("global-view", "XKD, teacher on the global view (default: local)", "xkd",
            ("loss.teacher_view=global",)),
    Variant("mas", "XKD-MAS (shared student)", "xkd_mas"),
    Variant("mats", "XKD-MATS (shared student and teacher)", "xkd_mats"),
    Variant("xkd-small", "small-data XKD: Sinkhorn targets, 64 prototypes", "xkd_small"),
    Variant("small-ae-kd", "small-data XKD: L_ae + L_kd (no domain alignment)", "xkd_small", ("loss.da=false",)),
    Variant("small-no-refine", "small-data XKD, refinement off", "xkd_small", ("loss.refine=false",)),
    Variant("cav-mae", "contrastive: cross-modal InfoNCE (method cav-mae, CPU recipe)", "cav_mae"),
    Variant("supervised", "supervised ceiling (the digit taught on whole views, same steps)", "xkd", supervised=True),
)
CEILING = "supervised/student"
CEILING_TASKS = ("video digit", "audio digit", "audio+video digit")  # the tasks whose label the ceiling is taught
BY_NAME = {v.name: v for v in VARIANTS}


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std over seeds (0 for one seed)."""
    return mean_std(values, ddof=1 if len(values) > 1 else 0)


@contextmanager
def _timed(timings: dict[str, float], key: str, path: Path):
    """Add the wall time of the block to ``timings[key]`` and save ``timings`` to ``path``."""
    t0 = time.perf_counter()
    yield
    timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - t0, 1)
    path.write_text(json.dumps(timings, indent=2))


def rows(per_seed: dict[int, dict[str, dict]], variants: list[Variant]) -> list[tuple[str, str]]:
    """(model key, row label) of the table: each variant's teachers, then its students (when it has teachers), then
    the random-init floor."""
    keys = {k for results in per_seed.values() for k in results}
    out = []
    for v in variants:
        if f"{v.name}/teacher" in keys:
            out += [(f"{v.name}/teacher", f"{v.label}: teacher"), (f"{v.name}/student", f"{v.label}: student")]
        else:
            out.append((f"{v.name}/student", v.label))
    return out + [(RANDOM, "random init (no pretraining; its own seed)")]


def table(per_seed: dict[int, dict[str, dict]], variants: list[Variant], tasks: list[str]) -> str:
    """Markdown table: one row per model (:func:`rows`), one column per task, top-1 % mean ± sample std over seeds;
    then the penalty the classifier chose over seeds and folds ('(edge!)' when a choice was the end of the grid).

    per_seed: seed -> model key -> task -> {"top1": float, "hparams": {name: [...]}, "at_edge": [...]}.
    """
    from xkd.eval.report import chosen_settings

    seeds = sorted(per_seed)
    lines = [f"| variant ({len(seeds)} seed(s), top-1 %) | " + " | ".join(tasks) + " |",
             "|---|" + "---:|" * len(tasks)]
    chosen = ["| chosen (over seeds and folds) | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for key, label in rows(per_seed, variants):
        cells, settings = [], []
        for task in tasks:
            found = [per_seed[s][key][task] for s in seeds if task in per_seed[s].get(key, {})]
            if found:
                mean, std = _mean_std([r["top1"] for r in found])
                cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
                names = found[0]["hparams"]
                merged = {"hparams": {n: [v for r in found for v in r["hparams"][n]] for n in names},
                          "at_edge": sorted({e for r in found for e in r["at_edge"]})}
                settings.append(chosen_settings(merged))
            else:
                cells.append("–")
                settings.append("–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        chosen.append(f"| {label} | " + " | ".join(settings) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(chosen)


def ceiling_fractions(per_seed: dict[int, dict[str, dict]], variants: list[Variant],
                      tasks: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{model key: {task: (mean, sample std)}}`` over seeds of (model - random init) / (ceiling - random init), the
    gain over random init as a fraction of the supervised ceiling's, for the tasks the ceiling is taught; empty when
    the grid has no ceiling."""
    seeds = sorted(per_seed)
    if not all(CEILING in per_seed[s] for s in seeds):
        return {}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for key, _ in rows(per_seed, variants):
        if key in (CEILING, RANDOM):
            continue
        for task in (t for t in tasks if t in CEILING_TASKS):
            if all(task in per_seed[s].get(key, {}) for s in seeds):
                values = []
                for s in seeds:
                    floor, top = per_seed[s][RANDOM][task]["top1"], per_seed[s][CEILING][task]["top1"]
                    gain = per_seed[s][key][task]["top1"] - floor
                    values.append(gain / (top - floor) if top != floor else float("nan"))
                out.setdefault(key, {})[task] = _mean_std(values)
    return out


def fraction_table(fractions: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Markdown table of :func:`ceiling_fractions`: a row per model, mean ± std over seeds."""
    tasks = list(dict.fromkeys(t for per_task in fractions.values() for t in per_task))
    lines = ["| ceiling fraction: (model - random init) / (supervised - random init) | " + " | ".join(tasks) + " |",
             "|---|" + "---:|" * len(tasks)]
    for key, per_task in fractions.items():
        cells = [f"{per_task[t][0]:.2f} ± {per_task[t][1]:.2f}" if t in per_task else "–" for t in tasks]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def learning_curves(out: Path, chosen: list[Variant], per_seed: dict[int, dict[str, dict]], seeds: tuple[int, ...],
                    steps: int, curve_points: int, data_dir: Path, base, opts) -> tuple[Path, bool]:
    """Score the weights the first seed's runs kept (teachers where a variant has them) on the val split and plot
    them beside the random-init encoders and the supervised ceilings of every seed (mean ± std); the scores are kept
    in ``<out>/curves.json`` and reused while the grid is the same. Returns the PNG's path and whether it scored."""
    from xkd.api import baseline_seed, load, random_encoders
    from xkd.demo import CURVE_TASKS, CURVE_TRAIN_PER_DIGIT
    from xkd.eval.curves import plot_curves, score_curves
    from xkd.eval.tasks import tasks_for, with_fewer_training_videos

    seed = seeds[0]
    key = {"steps": steps, "curve_points": curve_points, "seed": seed, "seeds": list(seeds),
           "variants": [v.name for v in chosen], "protocol": PROTOCOL}
    saved_path = out / "curves.json"
    saved = json.loads(saved_path.read_text()) if saved_path.is_file() else {}
    scored = saved.get("key") != key
    if scored:
        tasks = with_fewer_training_videos(
            [t for t in tasks_for(f"av-digits:{data_dir}", split="val") if t.name in CURVE_TASKS], CURVE_TRAIN_PER_DIGIT)
        runs = {v.name: (out / v.name / f"seed{seed}", "teacher" if f"{v.name}/teacher" in per_seed[seed] else "student")
                for v in chosen if not v.supervised}
        randoms = {f"random init (seed {baseline_seed(s)})": random_encoders(base, baseline_seed(s)) for s in seeds}
        ceilings = {f"supervised (seed {s})": load(out / v.name / f"seed{s}") for v in chosen if v.supervised
                    for s in seeds}
        curves, results = score_curves(runs, tasks, opts, references={**randoms, **ceilings})
        references = {}
        for label, names in ((f"random init ({len(seeds)} seeds)", randoms), (f"supervised ceiling ({len(seeds)} "
                                                                              "seeds)", ceilings)):
            if names:
                references[label] = {t.name: _mean_std([results[n][t.name]["summary"]["top1"]["mean"] for n in names])
                                     for t in tasks}
        saved = {"key": key, "tasks": [t.name for t in tasks], "curves": curves, "references": references}
        saved_path.write_text(json.dumps(saved, indent=2))
    png = plot_curves(saved["curves"], saved["references"], saved["tasks"], out / "learning_curve.png",
                      f"AV-Digits val split: ridge top-1 of the weights kept along each {steps}-step run (seed {seed})")
    return png, scored


def run_ablations(
    out: str | Path = "runs/ablations",
    data_dir: str | Path | None = None,
    version: int | None = None,
    steps: int = 400,
    seeds: tuple[int, ...] = (0, 1, 2),
    variants: list[str] | None = None,
    workers: int = 2,
    train_clips: int = 1,
    overrides: list[str] | None = None,
    split: str = "test",
    progress: bool = True,
    curve_points: int = 5,
) -> Path:
    """Run the grid into ``out`` and return the path of ``table.md``; ``overrides`` (``key=value``) apply to every
    run, before each variant's own; ``split`` is the split scored ("test", or "val" to choose a recipe). AV-Digits
    ``version``: the build's in ``data_dir`` when there is one, else 3; ``data_dir`` defaults to its folder.
    ``curve_points``: weights kept along each run for the learning curves (0 or 1: no curves)."""
    from xkd.api import baseline_seed, random_encoders
    from xkd.datasets.avdigits import choose_version, default_dir, prepare_avdigits
    from xkd.demo import avdigits_recipe, cpu_recipe, decode_training_split
    from xkd.engine.pretrain import pretrain_or_reuse
    from xkd.engine.supervised import supervised_or_reuse
    from xkd.eval.run import EvalOptions, evaluate_many
    from xkd.eval.tasks import tasks_for

    chosen = [BY_NAME[n] for n in (variants or [v.name for v in VARIANTS])]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    version = choose_version(data_dir, version)
    data_dir = Path(data_dir or default_dir(version))
    manifest = data_dir / "manifest.csv"
    if not manifest.is_file():
        manifest = prepare_avdigits(data_dir, workers=max(workers, 1), progress=progress, version=version)
    tasks = tasks_for(f"av-digits:{data_dir}", split=split)
    task_names = [t.name for t in tasks]

    # every run slices its clips from one decoded copy of the training split, in its own process (as xkd demo)
    decoded = decode_training_split(avdigits_recipe("xkd", version), [f"data.manifest={manifest}", *(overrides or [])],
                                    out / "decoded", workers, progress)
    per_seed: dict[int, dict[str, dict]] = {}
    snapshot_every = steps // curve_points if curve_points > 1 else 0
    for seed in seeds:
        common = [f"data.manifest={manifest}", "data.num_workers=0", f"data.decoded_cache={decoded}",
                  f"run.seed={seed}", f"run.log_every={max(1, min(10, steps // 10))}",
                  f"run.snapshot_every={snapshot_every}", *(overrides or [])]
        seed_file = out / f"eval_seed{seed}.json"
        done = json.loads(seed_file.read_text()) if seed_file.is_file() else {}
        key = (steps, train_clips, PROTOCOL, split)
        if (done.get("steps"), done.get("train_clips"), done.get("protocol"), done.get("split", "test")) == key and all(
                f"{v.name}/student" in done["results"] for v in chosen):
            per_seed[seed] = done["results"]
            continue
        models = {}
        for v in chosen:
            run_dir = out / v.name / f"seed{seed}"
            cfg = cpu_recipe(avdigits_recipe(v.method, version), common + list(v.overrides))
            with _timed(timings, f"pretrain {v.name} seed{seed}", timings_path):
                if v.supervised:
                    supervised_or_reuse(cfg, run_dir, steps, progress=progress)
                else:
                    pretrain_or_reuse(cfg, run_dir, steps, progress=progress)
            for role, encoders in load_roles(run_dir).items():
                models[f"{v.name}/{role}"] = encoders
        base = cpu_recipe(avdigits_recipe("xkd", version), common)
        models[RANDOM] = random_encoders(base, baseline_seed(seed))
        opts = EvalOptions(train_clips=train_clips, test_clips=1, num_workers=workers, seed=seed, progress=progress)
        with _timed(timings, f"evaluate seed{seed}", timings_path):
            results = evaluate_many(models, tasks, "ridge", opts)
        compact = {m: {t: {"top1": r["summary"]["top1"]["mean"], "hparams": r["hparams"], "at_edge": r["at_edge"]}
                       for t, r in res.items()} for m, res in results.items()}
        seed_file.write_text(json.dumps({"steps": steps, "train_clips": train_clips, "protocol": PROTOCOL,
                                         "split": split, "baseline_seed": baseline_seed(seed), "results": compact},
                                        indent=2))
        per_seed[seed] = compact

    text = table(per_seed, chosen, task_names)
    fractions = ceiling_fractions(per_seed, chosen, task_names)
    if fractions:
        text += "\n\n" + fraction_table(fractions)
    if curve_points > 1:
        t0 = time.perf_counter()
        base = cpu_recipe(avdigits_recipe("xkd", version), [f"data.manifest={manifest}", *(overrides or [])])
        opts = EvalOptions(train_clips=1, test_clips=1, num_workers=workers, seed=seeds[0], progress=progress)
        png, scored = learning_curves(out, chosen, per_seed, tuple(seeds), steps, curve_points, data_dir, base, opts)
        if scored:
            timings["learning curves"] = round(time.perf_counter() - t0, 1)
            timings_path.write_text(json.dumps(timings, indent=2))
        text += f"\n\n![learning curves]({png.name})"
    summary = {
        "steps": steps,
        "split": split,
        "avdigits_version": version,
        "seeds": list(seeds),
        "baseline_seeds": [baseline_seed(s) for s in seeds],
        "overrides": list(overrides or []),
        "variants": {v.name: {"label": v.label, "config": avdigits_recipe(v.method, version),
                              "overrides": list(v.overrides)} for v in chosen},
        "top1": {key: {t: _mean_std([per_seed[s][key][t]["top1"] for s in seeds]) for t in task_names
                       if all(t in per_seed[s].get(key, {}) for s in seeds)}
                 for key, _ in rows(per_seed, chosen)},
        "ceiling_fraction": fractions,
        "timings_s": timings,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    path = out / "table.md"
    every_run = f" (every run with {', '.join(overrides)})" if overrides else ""
    path.write_text(
        f"{text}\n\nAV-Digits version {version} ({data_dir}), {split} split, a complete {steps}-step schedule of the "
        f"CPU recipes per run{every_run}; ridge classifier on frozen, standardised features (alpha chosen on a "
        f"validation split carved from train, {train_clips} clean training clip(s) per video); audio tasks leave one "
        "real voice out (mean over the held-out voices per seed). The random-init encoder of seed k is built from "
        f"seed k + {BASELINE_SEED_OFFSET}. Chance: 10% digit, 12.5% motion.\n"
    )
    return path
