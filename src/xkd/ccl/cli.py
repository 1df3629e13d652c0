"""The CCL subcommands of the ``xkd`` command line: ``train-ccl``, ``eval-ccl`` and ``ccl-grid``.

``xkd.cli.build_parser`` registers them with ``add_ccl_parser(sub)``.
"""

from __future__ import annotations

import json
from pathlib import Path

from xkd.ccl.config import VARIANTS
from xkd.cli_help import HelpFormatter


def _cmd_train(args) -> int:
    from xkd.ccl.config import CCLConfig
    from xkd.ccl.train import train_ccl
    from xkd.config_io import load_config

    cfg = load_config(CCLConfig, args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem / cfg.loss.variant
    results = train_ccl(cfg, out, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress)
    test = results[results["split"]]
    retrieval = results.get("retrieval", {})
    print(f"done in {results['train_seconds'] / 60:.1f} min: best val top1 {results['val']['top1']:.4f} "
          f"(epoch {results['val']['epoch']}); {results['split']} top1 {test['top1']:.4f}"
          + (f", R@1 {retrieval['R@1']:.4f}" if retrieval else "") + f"; results: {out / 'results.json'}")
    return 0


def _cmd_eval(args) -> int:
    from xkd.ccl.train import evaluate_run

    results = evaluate_run(args.run, args.split, retrieval_gallery=not args.no_retrieval)
    print(json.dumps(results, indent=2))
    return 0


def _cmd_grid(args) -> int:
    from xkd.ccl.benchmark import run_grid

    table = run_grid(args.config, args.out, args.labels, args.variants, args.seeds, args.set,
                     progress=not args.no_progress, budgets=args.labels_per_class, readings=args.unlabelled,
                     train=not args.table_only)
    print(table.read_text(), end="")
    print(f"table written: {table}")
    return 0


def add_ccl_parser(sub) -> None:
    """Register ``train-ccl``, ``eval-ccl`` and ``ccl-grid`` on an argparse subparsers object."""
    train = sub.add_parser(
        "train-ccl",
        help="train CCL (baseline, ccl-a, ccl-i, ccl-ai) on a labelled manifest",
        description=(
            "Supervised video classification with frozen audio / image teachers (CCL, CVPR 2021). Trains the R(2+1)D\n"
            "student from a YAML config (see configs/ccl/ and docs/CCL.md), validates every run.eval_every epochs,\n"
            "keeps the weights with the best validation top-1 (best.safetensors), then scores them on the test split\n"
            "(softmax averaged over every window of a video) and by retrieval (results.json). Teacher features are\n"
            "cached on disk (run.cache_dir). One process, CPU or one GPU."
        ),
        formatter_class=HelpFormatter,
    )
    train.add_argument("--config", required=True, help="YAML config file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set loss.variant=ccl-a (repeatable)")
    train.add_argument("--out", default=None, help="run folder; unset = runs/<config name>/<variant>")
    train.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps (smoke runs)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser(
        "eval-ccl",
        help="score the selected checkpoint of a CCL run on a split",
        description="Load <run>/best.safetensors and its config, and print recognition (video top-1 with the\n"
                    "softmax averaged over all non-overlapping windows) and retrieval metrics as JSON.",
        formatter_class=HelpFormatter,
    )
    ev.add_argument("--run", required=True, help="a train-ccl run folder")
    ev.add_argument("--split", default="test", help="manifest split to score")
    ev.add_argument("--no-retrieval", action="store_true", help="skip retrieval (which needs the training videos)")
    ev.set_defaults(func=_cmd_eval)

    grid = sub.add_parser(
        "ccl-grid",
        help="train every label x variant x seed of a config and write the mean ± std table",
        description="Train the CCL variant table: one run per (label column, variant, seed) in\n"
                    "<out>/<label>/<variant>/seed<k>, skipping finished runs and resuming interrupted ones; then\n"
                    "write <out>/table.md (test top-1 and R@1, mean ± sample std over seeds). With\n"
                    "--labels-per-class, one run per budget too (0 = every label), in each reading of the videos\n"
                    "without a label (--unlabelled: drop = unused, distill = in the teacher terms), each as long in\n"
                    "steps as the recipe with every label; then per label and reading a table of top-1 and one of\n"
                    "the teachers' gain over the baseline of the same seed (a row per budget), and\n"
                    "<out>/label_efficiency_<label>.png.",
        formatter_class=HelpFormatter,
    )
    grid.add_argument("--config", required=True, help="YAML config file")
    grid.add_argument("--out", required=True, help="folder of the runs and the table")
    grid.add_argument("--labels", nargs="+", default=["digit", "motion"], help="manifest label columns")
    grid.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="variants")
    grid.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    grid.add_argument("--labels-per-class", nargs="+", type=int, default=[0],
                      help="label budgets: labelled training videos per class (0 = all), e.g. 10 25 50 100 0")
    grid.add_argument("--unlabelled", nargs="+", default=["drop"], choices=["drop", "distill"],
                      help="what a budget run does with the other training videos (data.unlabelled)")
    grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key in every run (repeatable)")
    grid.add_argument("--table-only", action="store_true",
                      help="train nothing: write the tables and plots from the runs finished so far (a cell with "
                           "fewer seeds than asked for says how many)")
    grid.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    grid.set_defaults(func=_cmd_grid)
