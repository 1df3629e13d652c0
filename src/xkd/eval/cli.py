"""``xkd extract``, ``xkd eval`` and ``xkd clusters``: features, evaluation protocols and teacher clusters of a
weights file. Registered on the ``xkd`` parser by :func:`add_extract_parser`, :func:`add_eval_parser` and
:func:`add_clusters_parser`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xkd.cli_help import add_command
from xkd.datasets.avdigits import AVDIGITS_DIR


def _weights_args(p: argparse.ArgumentParser, both: bool = False) -> None:
    p.add_argument("--weights", required=True,
                   help="weights.safetensors, a run folder, or official XKD *.pth.tar files (file or folder)")
    roles = ("both", "auto", "teacher", "student") if both else ("auto", "teacher", "student")
    p.add_argument("--role", choices=roles, default=roles[0],
                   help="which encoders: the EMA teachers, the students, auto (teachers when present)"
                        + (", or both (teachers and students, side by side)" if both else ""))
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--batch-size", type=int, default=32, help="clips per forward pass")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the input pipeline of the weights' config, e.g. --set data.video_fps=16 "
                        "--set data.clip_duration=2.0 (repeatable)")


def _with_overrides(encoders, args):
    from xkd.config_io import apply_overrides

    bad = [s for s in args.set if not s.startswith("data.")]
    if bad:
        raise ValueError(f"--set here changes only data.* keys (the input pipeline), got {bad}")
    encoders.config = apply_overrides(encoders.config, args.set, source=f"{args.weights} config")
    return encoders


def _load_encoders(args):
    from xkd.api import load

    return _with_overrides(load(args.weights, role=args.role, device=args.device), args)


def _load_models(args) -> dict:
    """name -> Encoders: the roles asked for (teacher and student side by side with --role both), and with
    --baseline a random-init encoder of the same architecture from its own seed."""
    from xkd.api import baseline_seed, load_roles, random_encoders

    models = {role: _with_overrides(enc, args) for role, enc in load_roles(args.weights, args.role, args.device).items()}
    first = next(iter(models.values()))
    for enc in models.values():
        if enc.stopped_early:
            print(f"warning: {enc.describe()}", file=sys.stderr)
    if args.baseline:
        seed = baseline_seed(first.config.run.seed)
        models[f"random init (seed {seed})"] = random_encoders(first.config, seed, device=args.device)
    return models


def _cmd_extract(args) -> int:
    from xkd.eval.extract import ExtractOptions, extract_to_file, manifest_from_target

    encoders = _load_encoders(args)
    modalities = [m for m in ("video", "audio") if args.modality in (m, "both") and getattr(encoders, m) is not None]
    if not modalities:
        raise ValueError(f"{args.weights} has no {args.modality} encoder")
    opts = ExtractOptions(clips_per_video=args.clips, three_crop=args.three_crop, batch_size=args.batch_size,
                          num_workers=args.workers, missing_audio=args.missing_audio, progress=not args.no_progress)
    out, videos, failed = extract_to_file(encoders, manifest_from_target(args.input), args.out, modalities, opts)
    from xkd.datasets.check import shown

    for path, reason in failed:
        print(f"skipped {shown(path)}: {reason}")
    print(f"{videos} videos ({', '.join(modalities)}) -> {out}; {len(failed)} files skipped")
    return 0


def add_extract_parser(sub) -> None:
    p = add_command(
        sub,
        "extract",
        "extract per-clip and per-video features to an .npz file",
        "Extract features (mean of patch tokens, spec §A10) of several uniformly spaced clips per video, streaming\n"
        "to an .npz readable with plain numpy: {video,audio}_clip [clips, D], {video,audio}_video [videos, D],\n"
        "clip_row, clip_index, video_row, paths, labels. Files that fail to decode are reported and skipped.",
    )
    _weights_args(p)
    p.add_argument("--input", required=True, help="a media file, a folder of media files, or a manifest CSV")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--modality", choices=("video", "audio", "both"), default="both", help="which encoders to run")
    p.add_argument("--clips", type=int, default=3, help="uniformly spaced clips per video")
    p.add_argument("--three-crop", action="store_true", help="also left/centre/right crops of each clip")
    p.add_argument("--missing-audio", choices=("skip", "silence"), default="skip",
                   help="files without an audio track: skip them, or use silence")
    p.set_defaults(func=_cmd_extract)


def _cmd_eval(args) -> int:
    from xkd.eval.report import comparison_table
    from xkd.eval.run import EvalOptions, evaluate_many, save_report
    from xkd.eval.tasks import tasks_for

    models = _load_models(args)
    tasks = tasks_for(args.dataset, fold=args.fold, label_column=args.label_column, modality=args.modality,
                      task=args.task, split=args.split)
    if args.protocol == "finetune":
        from xkd.config_io import apply_overrides
        from xkd.eval.finetune import finetune_recipe
        from xkd.eval.run import finetune_tasks

        recipe = finetune_recipe(args.recipe)
        device = "cuda" if str(args.device).startswith("cuda") else "cpu"
        base = [f"epochs={args.epochs}", f"warmup_epochs={min(recipe.warmup_epochs, args.epochs)}",
                f"seed={args.seed}", f"num_workers={args.workers}", f"device={device}"]
        ft = apply_overrides(recipe, base + args.ft_set, source=f"fine-tuning recipe {args.recipe}")
        results = {name: finetune_tasks(enc, tasks, ft, out_dir=Path(args.out) / name, progress=not args.no_progress)
                   for name, enc in models.items()}
    else:
        opts = EvalOptions(train_clips=args.train_clips, test_clips=args.test_clips, train_view=args.train_view,
                           crop_scale=tuple(args.crop_scale), standardize=not args.no_standardize,
                           paper_protocol=args.paper_protocol, seed=args.seed, batch_size=args.batch_size,
                           num_workers=args.workers, progress=not args.no_progress, linear_epochs=args.epochs)
        if args.cs:
            opts.svm_cs = tuple(args.cs)
        results = evaluate_many(models, tasks, args.protocol, opts)
    for name, res in results.items():
        stem = args.protocol if len(results) == 1 else f"{args.protocol}_{name.split(' (')[0].replace(' ', '_')}"
        paths = save_report(res, args.out, stem)
        print(f"{name}: {paths['json']}")
    print(f"\n{args.protocol} on the {args.split} split of {args.dataset}\n")
    print(comparison_table(results, [t.name for t in tasks]))
    return 0


def add_eval_parser(sub) -> None:
    from xkd.eval.run import PROTOCOLS, EvalOptions

    defaults = EvalOptions()
    p = add_command(
        sub,
        "eval",
        "evaluate frozen or fine-tuned encoders on a dataset",
        "Protocols: svm (LinearSVC on standardised features; C chosen on a val split carved from train;\n"
        "--paper-protocol reproduces the original reporting: strongly augmented training clips, raw features, C\n"
        "picked on test, and says so), ridge (least-squares linear classifier on standardised features, alpha chosen\n"
        "on val: exact and fast), linear (linear probe; mAP for multi-label sets), attentive (a cross-attention\n"
        "pooling probe over the frozen patch tokens), knn, retrieval (audio <-> video R@1/5/10), finetune\n"
        "(end-to-end). Datasets: a manifest CSV, LAYOUT:ROOT (ucf101 and hmdb51: 3 official splits; esc50: 5 folds;\n"
        "fsd50k; kinetics400; kinetics_sound; vggsound), or av-digits[:DIR] (video digit, video motion, audio digit\n"
        "leave-one-voice-out, audio+video digit). Teachers and students are evaluated side by side (--role both);\n"
        "--baseline adds a random-init encoder from its own seed. Writes PROTOCOL[_MODEL].json, .md (mean ± std over\n"
        "folds, chosen settings) and confusion-matrix PNGs into --out. Choose settings with --split val; report\n"
        "--split test once.",
    )
    p.add_argument("protocol", choices=PROTOCOLS, help="evaluation protocol")
    _weights_args(p, both=True)
    p.add_argument("--baseline", action="store_true",
                   help="also evaluate a random-init encoder of the same architecture (seed: the pretraining seed "
                        "+ 100003, never the pretraining seed)")
    p.add_argument("--dataset", required=True, help="manifest CSV, LAYOUT:ROOT, or av-digits[:DIR]")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="the split scored: test, or val (train rows against val rows, for choosing settings)")
    p.add_argument("--fold", type=int, default=None, help="run one fold only (default: every fold)")
    p.add_argument("--task", default=None, help="run one task only, e.g. 'video motion' for av-digits")
    p.add_argument("--modality", choices=("video", "audio", "av"), default=None,
                   help="video, audio, or av (fusion); default video (av-digits: all its tasks)")
    p.add_argument("--label-column", default="label", help="manifest column holding the labels")
    p.add_argument("--train-clips", type=int, default=defaults.train_clips,
                   help="random training clips per training video (paper: 25)")
    p.add_argument("--test-clips", type=int, default=defaults.test_clips,
                   help="uniform clips per test video, scores averaged")
    p.add_argument("--train-view", choices=("mild", "strong"), default=defaults.train_view,
                   help="training clips: mild = the test view with a small random zoom / shift (and flips where "
                        "the labels allow), strong = the original SVM augmentation (crop 8-100%%, colour jitter, gray)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=list(defaults.crop_scale), metavar=("LO", "HI"),
                   help="the mild view's random zoom, as an area fraction of the test crop")
    p.add_argument("--no-standardize", action="store_true", help="SVM: do not standardise the features")
    p.add_argument("--cs", type=float, nargs="+", default=None,
                   help=f"SVM: the C grid searched on the val split (default {' '.join(f'{c:g}' for c in defaults.svm_cs)})")
    p.add_argument("--paper-protocol", action="store_true",
                   help="SVM: the original reporting (strong training views, raw features, C selected on test; "
                        "labelled)")
    p.add_argument("--epochs", type=int, default=100, help="linear-probe / fine-tuning epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--recipe", default="ucf101",
                   help="finetune: the recipe to start from, a name of configs/finetune (ucf101, hmdb51, k400, esc50, "
                        "fsd50k: the paper's, spec §A10) or a YAML file")
    p.add_argument("--ft-set", action="append", default=[], metavar="KEY=VALUE",
                   help="finetune: override a recipe key, e.g. --ft-set batch_size=8 --ft-set video_view.crop_size=112")
    p.add_argument("--out", default="eval", help="output folder")
    p.set_defaults(func=_cmd_eval)


def _cmd_clusters(args) -> int:
    import json

    from xkd.api import load
    from xkd.data.manifest import read_manifest
    from xkd.eval.clusters import assignments, cluster_report, load_head
    from xkd.eval.extract import ExtractOptions

    name, _, rest = args.dataset.partition(":")
    path = Path(rest or AVDIGITS_DIR) / "manifest.csv" if name.lower() in ("av-digits", "avdigits") else Path(
        args.dataset)
    manifest = read_manifest(path).filter(split=args.split)
    encoders = _with_overrides(load(args.weights, role=args.role), args)
    modalities = [m for m in ("video", "audio") if getattr(encoders, m) is not None]
    heads = {m: load_head(args.weights, m, args.role) for m in modalities}
    opts = ExtractOptions(batch_size=args.batch_size, num_workers=args.workers, progress=not args.no_progress)
    report = cluster_report(assignments(encoders, heads, manifest, opts), manifest, args.columns)
    lines = [f"| {args.role} clusters ({args.split} split, {len(manifest)} clips) | clusters used | "
             + " | ".join(f"NMI / AMI {c}" for c in args.columns) + " |", "|---|---:|" + "---:|" * len(args.columns)]
    for modality, r in report.items():
        lines.append(f"| {modality} | {r['clusters_used']} | "
                     + " | ".join(f"{r['nmi'][c]:.3f} / {r['ami'][c]:.3f}" for c in args.columns) + " |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def add_clusters_parser(sub) -> None:
    p = add_command(
        sub,
        "clusters",
        "what a run's teacher clusters carry: NMI and AMI between cluster assignments and label columns",
        "Assign every clip of a split to its teacher's most likely prototype, argmax(head(mean of patch tokens) -\n"
        "mean over clips), per modality, and print the normalised mutual information with each --columns label\n"
        "(NMI: 0 = independent, 1 = the same partition) and the same adjusted for chance (AMI: 0 = what independent\n"
        "labels score). Compare columns by AMI: NMI rises with the number of values of a column. XKD runs only.",
    )
    p.add_argument("--weights", required=True, help="weights.safetensors or a run folder of an XKD run")
    p.add_argument("--role", choices=("teacher", "student"), default="teacher", help="whose heads")
    p.add_argument("--dataset", default="av-digits", help="a manifest CSV or av-digits[:DIR]")
    p.add_argument("--split", default="val", help="rows of this split")
    p.add_argument("--columns", nargs="+", default=["digit", "voice", "motion"], help="label columns")
    p.add_argument("--batch-size", type=int, default=32, help="clips per forward pass")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the input pipeline of the weights' config (data.* keys)")
    p.add_argument("--out", default=None, help="also write the report as JSON here")
    p.set_defaults(func=_cmd_clusters)
