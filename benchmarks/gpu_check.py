"""The CUDA paths no CPU test reaches, in a few minutes on one GPU, with one summary at the end.

    bash benchmarks/gpu_check.sh            # from the repository root (sets PYTHONPATH=src, installs carried wheels)
    python benchmarks/gpu_check.py --out gpu_check.json

Checks, each independent of the others (one failing is reported and the rest still run):

1. ``step-cpu-recipe-bf16``: the AV-Digits CPU recipe's training step in bf16 (ms/step, MFU against the GPU's bf16
   matmul peak measured in the same run);
2. ``step-vitb-bf16``: the paper's ViT-B recipe (``xkd_kinetics400.yaml``) in bf16, batch ``--vitb-batch``;
3. ``step-fp16-scaler``: the CPU recipe in fp16 with the GradScaler for ``--fp16-steps`` steps: losses finite and the
   loss scale after them;
4. ``host-syncs``: device-to-host synchronisations in one training step (``torch.cuda.set_sync_debug_mode``);
   the step reads its loss terms in one copy, so one per micro-batch is expected;
5. ``extract-cuda``: features of the same clips through the evaluation extractor on cuda and on the CPU (real media
   written with PyAV when it is installed; the API's tensor path otherwise), and their largest difference;
6. ``views-on-device``: the ViT-B recipe's video views of ``--views-batch`` clips left to the device
   (``data.video_views_on: device``): ms to finish them there (colour jitter, grayscale, blur, normalisation), against
   ``step-vitb-bf16``'s ms/step, and their largest difference from the same finish on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_step import main as step_benchmark  # noqa: E402
from pretrain_step import synthetic_batch, values  # noqa: E402

from xkd.api import random_encoders  # noqa: E402
from xkd.cli_help import HelpFormatter  # noqa: E402
from xkd.config import PretrainConfig, load_config  # noqa: E402
from xkd.engine.distributed import DistInfo  # noqa: E402
from xkd.engine.pretrain import Trainer  # noqa: E402

ROOT = Path(__file__).parents[1]
CPU_RECIPE = str(ROOT / "configs" / "pretrain" / "xkd_avdigits_cpu.yaml")
VITB_RECIPE = str(ROOT / "configs" / "pretrain" / "xkd_kinetics400.yaml")
DEVICE = "cuda"  # --device cpu runs every check on the CPU: a test of this script, not of the GPU paths


def step(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    args = ["--config", config, "--steps", str(steps), "--warmup", str(warmup), "--peak-seconds", "1"]
    for item in [f"run.device={DEVICE}", "data.num_workers=0", *overrides]:
        args += ["--set", item]
    r = step_benchmark(args)
    return {k: r[k] for k in ("amp", "batch", "ms_per_step", "clips_per_s", "gflops_per_step", "mfu_amp",
                              "matmul_peak_amp_gflops", "cuda_peak_mb", "grad_scale")}


def fp16_scaler(steps: int) -> dict:
    cfg = load_config(PretrainConfig, CPU_RECIPE, [f"run.device={DEVICE}", "run.amp=fp16", "run.force_amp=true"])
    trainer = Trainer(cfg, DistInfo(0, 1, 0, torch.device(DEVICE), True))
    batch = synthetic_batch(cfg, torch.Generator().manual_seed(0))
    trainer.model.train()
    results = [trainer.train_step([batch], i, values(cfg)) for i in range(steps)]
    finite = all(math.isfinite(v) for r in results for v in r.terms.values())
    skipped = sum(r.nonfinite is not None for r in results)
    return {"steps": steps, "losses_finite": finite, "nonfinite_steps": skipped,
            "first_loss": results[0].terms["loss"], "last_loss": results[-1].terms["loss"],
            "grad_scale": trainer.scaler.get_scale(), "ok": finite and trainer.scaler.is_enabled()}


def host_syncs() -> dict:
    if DEVICE != "cuda":
        return {"skipped": "sync debug mode needs CUDA"}
    cfg = load_config(PretrainConfig, CPU_RECIPE, ["run.device=cuda", "run.amp=bf16"])
    trainer = Trainer(cfg, DistInfo(0, 1, 0, torch.device("cuda"), True))
    batch = synthetic_batch(cfg, torch.Generator().manual_seed(0))
    trainer.model.train()
    for i in range(2):  # the first step also counts FLOPs
        trainer.train_step([batch], i, values(cfg))
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step([batch], 2, values(cfg))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"syncs_per_step": len(syncs), "accum_steps": cfg.optim.accum_steps, "first": syncs[:3],
            "ok": len(syncs) <= cfg.optim.accum_steps}


def _write_clips(folder: Path, n: int = 4) -> bool:
    try:
        from xkd.datasets.media_writer import write_media
    except ImportError:  # PyAV is not installed
        return False
    rng = np.random.default_rng(0)
    for i in range(n):
        video = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
        audio = 0.1 * rng.standard_normal(32000).astype(np.float32)
        write_media(folder / f"clip{i}.mp4", video, fps=8.0, audio=audio)
    return True


def extraction() -> dict:
    cfg = load_config(PretrainConfig, CPU_RECIPE, [])
    cuda, cpu = random_encoders(cfg, seed=1, device=DEVICE), random_encoders(cfg, seed=1, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if _write_clips(Path(tmp)):
            from xkd.eval.extract import ExtractOptions, extract_features, manifest_from_target

            manifest = manifest_from_target(tmp)
            opts = ExtractOptions(num_workers=0, progress=False)
            feats = {name: extract_features(model, manifest, ["video", "audio"], opts, label_column=None)[0]["model"]
                     for name, model in (("cuda", cuda), ("cpu", cpu))}
            diff = max(float(np.abs(feats["cuda"][m].features - feats["cpu"][m].features).max())
                       for m in ("video", "audio"))
            path, shape = "media files -> xkd.eval.extract", list(feats["cuda"]["video"].features.shape)
        else:
            clips = torch.rand(4, 3, cfg.model.num_frames, 32, 32)
            diff = float((cuda.encode_video(clips.to(DEVICE)).cpu() - cpu.encode_video(clips)).abs().max())
            path, shape = "tensors -> Encoders.encode_video (PyAV not installed)", [4, cuda.dim]
    return {"path": path, "features": shape, "max_abs_diff_cuda_vs_cpu": diff, "ok": diff < 1e-3}


def views_on_device(batch: int, repeats: int = 5) -> dict:
    from xkd.data.video_views import VideoView, finish_views, to_float

    data = load_config(PretrainConfig, VITB_RECIPE, []).data
    generator = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (32, 112, 149, 3), dtype=torch.uint8, generator=generator)  # one 4 s window
    views = []
    for cfg, frames in ((data.video_global, video), (data.video_local, video[:8])):
        view = VideoView(cfg, data.video_mean, data.video_std, deferred=True)
        crops, params = zip(*(view(frames, generator) for _ in range(batch)))
        views.append((torch.stack(crops), torch.stack(params), cfg.blur_kernel))

    def finish(device: str) -> list[torch.Tensor]:
        out = [finish_views(to_float(c.to(device)), p, k, data.video_mean, data.video_std) for c, p, k in views]
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    on_cpu, on_device = finish("cpu"), finish(DEVICE)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        finish(DEVICE)
        times.append((time.perf_counter() - t0) * 1e3)
    diff = max(float((d.cpu() - c).abs().max()) for d, c in zip(on_device, on_cpu))
    return {"batch": batch, "ms_per_batch": round(float(np.median(times)), 2), "max_abs_diff_vs_cpu": diff,
            "ok": diff < 1e-3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", help="also write the summary here (JSON)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per step benchmark")
    parser.add_argument("--vitb-batch", type=int, default=32, help="clips per step of the ViT-B recipe")
    parser.add_argument("--fp16-steps", type=int, default=30, help="steps of the fp16 + GradScaler check")
    parser.add_argument("--views-batch", type=int, default=32, help="clips whose video views are finished on the device")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: run the checks on the CPU (to test this script where no GPU is at hand)")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run only these checks (names as in the summary)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (a test of the script)"
    summary: dict = {"device": name, "torch": torch.__version__}
    checks = {
        "step-cpu-recipe-bf16": lambda: step(CPU_RECIPE, ["run.amp=bf16"], args.steps, 3),
        "step-vitb-bf16": lambda: step(VITB_RECIPE, ["run.amp=bf16", f"data.batch_size={args.vitb_batch}"],
                                       args.steps, 2),
        "step-fp16-scaler": lambda: fp16_scaler(args.fp16_steps),
        "host-syncs": host_syncs,
        "extract-cuda": extraction,
        "views-on-device": lambda: views_on_device(args.views_batch),
    }
    unknown = set(args.only or []) - checks.keys()
    if unknown:
        parser.error(f"unknown checks {sorted(unknown)}; choose from {list(checks)}")
    failed = 0
    for name, check in checks.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            result = check()
        except Exception as error:  # report and go on: one broken path must not hide the others
            result = {"ok": False, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc(-3)}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        failed += result.get("ok") is False
        summary[name] = result
        print(f"[{name}] {json.dumps(result)}", flush=True)
    print("\n== gpu_check summary ==")
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
