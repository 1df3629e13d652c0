"""The ``xkd`` command line. Each subcommand's ``--help`` describes every option.

    xkd data prepare av-digits [--out DIR] [--tiny]     build the embedded AV-Digits benchmark
    xkd data check PATH|MANIFEST                          list every broken media file with its reason
    xkd data tokens MANIFEST --config FILE                what a masked student sees: ink and silence per token
    xkd data manifest LAYOUT ROOT --out CSV               manifest of an official dataset layout
    xkd pretrain --config FILE [--set k=v ...]            XKD / MAS / MATS / MAE pretraining
    xkd extract --weights W --input FILE|DIR|MANIFEST --out FEATURES.npz
    xkd eval PROTOCOL --weights W --dataset D [--fold K]   svm, linear, knn, retrieval, finetune
    xkd demo [--out DIR] [--quick]                         AV-Digits end to end: XKD, CAV-MAE, MAE, a report
    xkd ablations [--out DIR] [--steps N] [--seeds ...]    the paper's ablations on AV-Digits, one table
    xkd clusters --weights W [--dataset D]                what a run's teacher clusters carry (NMI with labels)
    xkd convert-official SRC OUT.safetensors              official XKD release weights -> our weights file
    xkd train-ccl --config FILE                           CCL: distil frozen audio / image teachers into a video net
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from xkd.ccl.cli import add_ccl_parser
from xkd.cli_help import HelpFormatter, add_command
from xkd.datasets.cli import add_data_parser
from xkd.eval.cli import add_clusters_parser, add_eval_parser, add_extract_parser
from xkd.official import add_convert_parser
from xkd.version import __version__

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
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the job, not one per process
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


# ---------------------------------------------------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    from xkd.demo import run_demo

    report = run_demo(args.out, quick=args.quick, data_dir=args.data, steps=args.steps, workers=args.workers,
                      version=args.version, curve_points=args.curve_points)
    print(report.read_text())
    print(f"report: {report}")
    return 0


def _demo_parser(sub) -> None:
    p = add_command(
        sub,
        "demo",
        "the whole method on a CPU: build AV-Digits, pretrain XKD, CAV-MAE and MAE, evaluate, write a report",
        "Build AV-Digits if missing and decode its training split once (into OUT/decoded); pretrain XKD, the\n"
        "contrastive objective (CAV-MAE) and the MAE-only baseline with the CPU recipes, keeping weights along each\n"
        "run, and teach the same encoders the digit (the supervised ceiling); evaluate them and random-init encoders\n"
        "of 3 seeds (ridge classifier: video digit, video motion, audio digit leave-one-voice-out, audio+video digit;\n"
        "test split); score the kept weights on the val split; write report.md (table, learning curves, loss curves,\n"
        "2-D feature projection). Finished steps are reused when the demo runs again with the same --out.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny data and a few steps: a smoke test of the pipeline")
    p.add_argument("--data", default=None,
                   help="AV-Digits folder (None = data/av-digits-v3, or data/av-digits-v2 / data/av-digits for "
                        "--version 2 / 1; -tiny with --quick)")
    p.add_argument("--version", type=int, choices=(1, 2, 3), default=None,
                   help="AV-Digits version and its CPU recipes (None = the build's in --data, else 3)")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps per model (None = 250, 12 with --quick)")
    p.add_argument("--curve-points", type=int, default=5,
                   help="weights scored along each run for the learning curves (the last is the final weights)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes that build, decode and, during evaluation, load the clips (pretraining reads the "
                        "decoded clips in its own process)")
    p.set_defaults(func=_cmd_demo)


# ----------------------------------------------------------------------------------------------------- ablations
def _cmd_ablations(args) -> int:
    from xkd.ablations import run_ablations

    path = run_ablations(args.out, data_dir=args.data, version=args.version, steps=args.steps,
                         seeds=tuple(args.seeds), variants=args.variants, workers=args.workers,
                         train_clips=args.train_clips, overrides=args.set, split=args.split,
                         progress=not args.no_progress, curve_points=args.curve_points)
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
        "mean ± sample std over seeds, and the alpha chosen), results.json and timings.json. Finished runs of\n"
        "the same config and evaluations are reused (a finished run of another config is an error); interrupted\n"
        "runs resume. Learning curves: each run keeps its weights --curve-points times, and the first seed's are\n"
        "scored on the val split beside random init and the supervised ceiling (<out>/learning_curve.png).\n\n"
        "variants:\n"
        + "\n".join(f"  {v.name:<12} {v.label}" for v in VARIANTS),
    )
    p.add_argument("--out", default="runs/ablations", help="output folder")
    p.add_argument("--data", default=None,
                   help="AV-Digits folder, built there if missing (None = data/av-digits-v3, or data/av-digits-v2 / "
                        "data/av-digits for --version 2 / 1)")
    p.add_argument("--version", type=int, choices=(1, 2, 3), default=None,
                   help="AV-Digits version and its CPU recipes (None = the build's in --data, else 3)")
    p.add_argument("--steps", type=int, default=400, help="pretraining steps per run: the length of its schedule")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds")
    p.add_argument("--variants", nargs="+", choices=[v.name for v in VARIANTS], default=None,
                   help="a subset of the variants (default: all)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes that build, decode and, during evaluation, load the clips (pretraining reads the "
                        "decoded clips in its own process)")
    p.add_argument("--train-clips", type=int, default=1,
                   help="classifier training clips per video (AV-Digits clips are whole videos: more clips repeat the view)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run (repeatable)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="the split scored: test, or val (carved from train; for choosing a recipe)")
    p.add_argument("--curve-points", type=int, default=5,
                   help="weights kept along each run and scored for the learning curves (0: no curves)")
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
    add_data_parser(sub)
    _pretrain_parser(sub)
    add_extract_parser(sub)
    add_eval_parser(sub)
    _demo_parser(sub)
    _ablations_parser(sub)
    add_clusters_parser(sub)
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
