"""run.strategy=fsdp under torchrun (2 processes, gloo on CPU), reading WebDataset shards: the same steps as DDP,
exact resume from sharded checkpoints, and a clear error when a run is resumed under the other strategy."""

import os
import subprocess
import sys

import pytest
import torch

from test_pretrain import CONFIG, TINY, weights
from xkd.data.manifest import read_manifest
from xkd.datasets.shards import shard_manifest
from xkd.engine.logger import read_metrics


def torchrun(shards, out, *extra, steps=5, resume=False):
    # clip_grad 0.01 clips every gradient, accum_steps 2 accumulates, EMA momentum 0.5 moves the teachers far: each
    # path that differs under sharding changes the weights beyond the tolerance if it goes wrong
    sets = [f"data.shards={shards}", *TINY, "optim.clip_grad=0.01", "optim.accum_steps=2", "data.batch_size=2",
            "loss.ema_start=0.5", "loss.ema_end=0.5", "run.checkpoint_every=2", *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "xkd", "pretrain", "--config", str(CONFIG), *[a for s in sets for a in ("--set", s)],
           "--out", str(out), "--max-steps", str(steps), "--no-progress", *(["--resume"] if resume else [])]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)


def ok(done):
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def shards(avdigits_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    shard_manifest(read_manifest(avdigits_tiny).filter(split="train"), out, shard_size=6, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory):
    """Five steps under ddp and under fsdp, and an fsdp run stopped at step 3 then resumed to step 5."""
    out = tmp_path_factory.mktemp("fsdp")
    ok(torchrun(shards, out / "ddp"))
    ok(torchrun(shards, out / "fsdp", "run.strategy=fsdp"))
    ok(torchrun(shards, out / "split", "run.strategy=fsdp", steps=3))
    ok(torchrun(shards, out / "split", "run.strategy=fsdp", resume=True))
    return out


def test_five_fsdp_steps_equal_five_ddp_steps(runs):
    a, _ = weights(runs / "ddp" / "weights.safetensors")
    b, _ = weights(runs / "fsdp" / "weights.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("video_teacher") for k in a)
    for k in a:  # students, EMA teachers, heads and decoders
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    student, teacher = b["video_student.blocks.blocks.0.attn.qkv.weight"], b["video_teacher.blocks.blocks.0.attn.qkv.weight"]
    # the teachers lag their students by far more than the tolerance, so a wrong EMA under sharding would show
    assert (student - teacher).abs().max() > 10 * 1e-5
    ma, mb = read_metrics(runs / "ddp"), read_metrics(runs / "fsdp")
    assert min(mb["grad_norm_max"]) > 0.1  # clipping acted
    torch.testing.assert_close(torch.tensor(ma["loss"]), torch.tensor(mb["loss"]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(ma["grad_norm_max"]), torch.tensor(mb["grad_norm_max"]), rtol=1e-4,
                               atol=1e-5)  # per-parameter norms over the shards of both ranks


def test_a_resumed_fsdp_run_equals_an_uninterrupted_one(runs):
    a, _ = weights(runs / "fsdp" / "weights.safetensors")
    b, _ = weights(runs / "split" / "weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert read_metrics(runs / "split")["loss"] == read_metrics(runs / "fsdp")["loss"]
    checkpoints = sorted(p.name for p in (runs / "split" / "checkpoints").iterdir())
    assert checkpoints == ["step_000000002.dcp", "step_000000002.pt", "step_000000003.dcp", "step_000000003.pt",
                           "step_000000004.dcp", "step_000000004.pt", "step_000000005.dcp", "step_000000005.pt"][2:]


def test_resuming_under_the_other_strategy_is_refused(runs, shards):
    done = torchrun(shards, runs / "ddp", "run.strategy=fsdp", steps=6, resume=True)
    assert done.returncode != 0 and "written with run.strategy=ddp" in done.stderr


def test_cav_mae_under_fsdp_equals_ddp(shards, tmp_path):
    """The projections are sharded and the InfoNCE gathers its keys across ranks alike under both strategies."""
    cav = ["method=cav-mae", "loss.contrastive_coeff=1", "model.projection_dim=16"]
    ok(torchrun(shards, tmp_path / "ddp", *cav, steps=3))
    ok(torchrun(shards, tmp_path / "fsdp", *cav, "run.strategy=fsdp", steps=3))
    a, _ = weights(tmp_path / "ddp" / "weights.safetensors")
    b, _ = weights(tmp_path / "fsdp" / "weights.safetensors")
    assert a.keys() == b.keys() and "video_projection.weight" in a and not any("teacher" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert min(read_metrics(tmp_path / "fsdp")["contrastive"]) > 0
