"""The pretraining engine on real AV-Digits clips: run folder contents, exact resume, DDP equals one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xkd.config import PretrainConfig, load_config
from xkd.engine.checkpoint import latest_checkpoint
from xkd.engine.weights import load_weights
from xkd.engine.logger import read_metrics
from xkd.engine.pretrain import NonFiniteLossError, pretrain, pretrain_or_reuse

CONFIG = Path(__file__).parents[1] / "configs" / "pretrain" / "xkd_avdigits_cpu.yaml"
TINY = [
    "model.encoder.dim=32", "model.encoder.heads=2", "model.encoder.depth=1",
    "model.decoder_dim=16", "model.decoder_heads=2", "model.decoder_depth=1",
    "model.head_hidden=32", "model.head_bottleneck=16", "model.head_out=64",
    "data.batch_size=4", "data.num_workers=0", "optim.epochs=2", "optim.warmup_epochs=1",
    "run.log_every=1", "run.peak_tflops=1.0",
]


def tiny_cfg(manifest, *extra):
    return load_config(PretrainConfig, CONFIG, [f"data.manifest={manifest}", *TINY, *extra])


def weights(path):
    parts, meta = load_weights(path)
    return {f"{p}.{k}": v for p, sd in parts.items() for k, v in sd.items()}, meta


def test_run_folder_holds_everything(avdigits_tiny, tmp_path):
    out = tmp_path / "run"
    summary = pretrain(tiny_cfg(avdigits_tiny), out, max_steps=3, progress=False)
    assert summary["steps"] == 3
    for name in ("config.yaml", "metrics.csv", "weights.safetensors", "summary.json"):
        assert (out / name).is_file(), name
    assert latest_checkpoint(out) is not None
    metrics = read_metrics(out)
    assert metrics["step"] == [1, 2, 3]
    for key in ("recon_video", "recon_audio", "kd", "da", "loss", "lr", "momentum", "clips_per_s", "mfu"):
        assert key in metrics and all(torch.isfinite(torch.tensor(metrics[key]))), key
    tensors, meta = weights(out / "weights.safetensors")
    assert meta["method"] == "xkd" and json.loads(meta["config"])["method"] == "xkd"
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == {"video_student", "audio_student", "video_teacher", "audio_teacher", "video_student_head",
                        "audio_student_head", "video_teacher_head", "audio_teacher_head", "video_decoder",
                        "audio_decoder"}
    assert not any(".module." in k or k.split(".")[1] == "module" for k in tensors)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(tiny_cfg(avdigits_tiny), out, max_steps=3, progress=False)


def test_views_finished_on_the_device_train_like_the_loaders(avdigits_tiny, tmp_path):
    """data.video_views_on=device: the loader sends uint8 crops and their draws, the step finishes them; the same
    draws, so the losses differ only by the crops' uint8 rounding."""
    runs = {on: tmp_path / on for on in ("loader", "device")}
    for on, out in runs.items():
        pretrain(tiny_cfg(avdigits_tiny, f"data.video_views_on={on}"), out, max_steps=2, progress=False)
    loader, device = read_metrics(runs["loader"]), read_metrics(runs["device"])
    for key in ("recon_video", "recon_audio", "kd", "da"):
        assert device[key] == pytest.approx(loader[key], rel=2e-2), key
    assert device["recon_video"] != loader["recon_video"]  # the rounding is there: the device path did run


def test_steps_complete_the_schedule_and_max_steps_says_it_stopped_early(avdigits_tiny, tmp_path, capsys):
    """--steps 30: the last metrics row holds the final learning rate and EMA momentum; --max-steps stops early and
    the summary, the metrics and the weights file say so."""
    from xkd.cli import main

    common = ["pretrain", "--config", str(CONFIG), "--no-progress", *(x for k in TINY for x in ("--set", k)),
              "--set", f"data.manifest={avdigits_tiny}", "--set", "optim.final_lr=1e-6"]
    assert main([*common, "--out", str(tmp_path / "full"), "--steps", "30"]) == 0
    metrics = read_metrics(tmp_path / "full")
    assert metrics["step"][-1] == 30 and metrics["schedule_steps"][-1] == 30
    assert metrics["lr"][-1] == pytest.approx(1e-6, rel=1e-9)
    assert metrics["momentum"][-1] == 1.0
    assert "STOPPED EARLY" not in capsys.readouterr().out
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert (summary["steps"], summary["schedule_steps"], summary["stopped_early"]) == (30, 30, False)

    assert main([*common, "--out", str(tmp_path / "early"), "--steps", "30", "--max-steps", "4"]) == 0
    assert "STOPPED EARLY at step 4 of the 30-step schedule" in capsys.readouterr().out
    summary = json.loads((tmp_path / "early" / "summary.json").read_text())
    assert (summary["steps"], summary["schedule_steps"], summary["stopped_early"]) == (4, 30, True)
    assert read_metrics(tmp_path / "early")["schedule_steps"][-1] == 30
    _, meta = weights(tmp_path / "early" / "weights.safetensors")
    assert (meta["step"], meta["schedule_steps"]) == ("4", "30")


def test_snapshots_hold_the_weights_of_their_step(avdigits_tiny, tmp_path):
    from xkd.engine.pretrain import snapshots

    cfg = tiny_cfg(avdigits_tiny, "run.snapshot_every=2", "run.seed=3")
    pretrain(cfg, tmp_path / "run", max_steps=5, progress=False)
    found = snapshots(tmp_path / "run")
    assert [step for step, _ in found] == [2, 4, 5] and found[-1][1].name == "weights.safetensors"
    pretrain(tiny_cfg(avdigits_tiny, "run.seed=3"), tmp_path / "stop4", max_steps=4, progress=False)
    a, meta = weights(found[1][1])
    b, _ = weights(tmp_path / "stop4" / "weights.safetensors")
    assert meta["step"] == "4" and a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_a_finished_run_is_reused_only_for_the_same_config(avdigits_tiny, tmp_path):
    out = tmp_path / "run"
    weights_file = pretrain_or_reuse(tiny_cfg(avdigits_tiny), out, steps=2, progress=False)
    trained = weights_file.stat().st_mtime_ns
    # loader workers, a decoded cache (its clips equal decoding), threads and logging change how a run is carried
    # out, not what it computes: reused
    same = tiny_cfg(avdigits_tiny, "data.num_workers=1", f"data.decoded_cache={tmp_path / 'decoded'}", "run.threads=1",
                    "run.log_every=2", "run.snapshot_every=1")
    assert pretrain_or_reuse(same, out, steps=2, progress=False).stat().st_mtime_ns == trained
    with pytest.raises(FileExistsError, match=r"another config \(loss.kd_coeff, optim.lr differ\)"):
        pretrain_or_reuse(tiny_cfg(avdigits_tiny, "loss.kd_coeff=2", "optim.lr=1e-3"), out, steps=2, progress=False)


def test_resume_continues_bitwise(avdigits_tiny, tmp_path):
    cfg = tiny_cfg(avdigits_tiny, "run.checkpoint_every=2")
    pretrain(cfg, tmp_path / "straight", max_steps=5, progress=False)
    pretrain(cfg, tmp_path / "split", max_steps=3, progress=False)
    pretrain(cfg, tmp_path / "split", max_steps=5, resume=True, progress=False)
    a, _ = weights(tmp_path / "straight" / "weights.safetensors")
    b, _ = weights(tmp_path / "split" / "weights.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    ma, mb = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert mb["step"] == [1, 2, 3, 4, 5]
    assert ma["loss"] == mb["loss"]


def test_nonfinite_loss_stops_with_the_step_and_term(avdigits_tiny, tmp_path):
    cfg = tiny_cfg(avdigits_tiny, "optim.lr=1e30", "optim.clip_grad=0", "optim.warmup_epochs=0")
    with pytest.raises(NonFiniteLossError, match=r"step \d+: loss term '\w+'"):
        pretrain(cfg, tmp_path / "nan", max_steps=7, progress=False)
    cfg = tiny_cfg(avdigits_tiny, "optim.lr=1e30", "optim.clip_grad=0", "optim.warmup_epochs=0",
                   "run.nonfinite=skip")
    summary = pretrain(cfg, tmp_path / "skip", max_steps=7, progress=False)
    assert summary["skipped_steps"] > 0


@pytest.mark.parametrize("objective", [["loss.da=false"], ["method=cav-mae", "loss.contrastive_coeff=1"]],
                         ids=["xkd-kd", "cav-mae"])
def test_two_process_ddp_equals_one_process(avdigits_tiny, tmp_path, objective):
    # cav-mae: the InfoNCE of 2 x 4 clips on two ranks must be the InfoNCE of the 8 clips (keys gathered across ranks)
    common = [f"data.manifest={avdigits_tiny}", *TINY, *objective]
    single = load_config(PretrainConfig, CONFIG, [*common, "data.batch_size=8"])
    pretrain(single, tmp_path / "single", max_steps=2, progress=False)

    sets = [arg for item in [*common, "data.batch_size=4"] for arg in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "xkd", "pretrain", "--config", str(CONFIG), *sets, "--out", str(tmp_path / "ddp"),
           "--max-steps", "2", "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert len(summary["rank_fingerprints"]) == 2
    assert summary["rank_fingerprints"][0] == summary["rank_fingerprints"][1]
    a, _ = weights(tmp_path / "single" / "weights.safetensors")
    b, _ = weights(tmp_path / "ddp" / "weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
