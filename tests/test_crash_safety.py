"""A pretraining run killed with SIGKILL (no cleanup, no exception handler) resumes to the bitwise-same weights.

Every run is a real `xkd pretrain` process on the tiny AV-Digits build: 6 steps of 4 clips, 3 steps per epoch (so
resuming crosses an epoch boundary), a checkpoint every 2 steps. The uninterrupted reference run starts when the
module does and runs alongside the first test.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from xkd.engine.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint
from xkd.engine.weights import load_weights
from xkd.engine.logger import read_metrics

CONFIG = Path(__file__).parents[1] / "configs" / "pretrain" / "xkd_avdigits_cpu.yaml"
STEPS = 6
TINY = [
    "model.encoder.dim=32", "model.encoder.heads=2", "model.encoder.depth=1",
    "model.decoder_dim=16", "model.decoder_heads=2", "model.decoder_depth=1",
    "model.head_hidden=32", "model.head_bottleneck=16", "model.head_out=64",
    "data.batch_size=4", "data.num_workers=0", "run.epoch_size=12", "optim.epochs=4", "optim.warmup_epochs=1",
    "run.log_every=1", "run.peak_tflops=1.0", "run.checkpoint_every=2",
]
TIMEOUT = 300  # seconds for one process on a busy machine

# Runs `xkd pretrain` with torch.save (the checkpoint writer's serialiser) replaced: the argv[1]-th call writes the
# first half of its payload into the checkpoint's temporary file, syncs it to disk, and SIGKILLs its own process.
KILL_DURING_SAVE = """
import io, itertools, os, signal, sys
import torch
from xkd.cli import main

kill_at, calls, real_save = int(sys.argv[1]), itertools.count(1), torch.save

def dying_save(obj, f, *args, **kwargs):
    if next(calls) < kill_at:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    payload = buffer.getvalue()
    f.write(payload[: len(payload) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dying_save
sys.exit(main(sys.argv[2:]))
"""


def pretrain_args(manifest, out, *extra: str) -> list[str]:
    sets = [arg for item in [f"data.manifest={manifest}", *TINY] for arg in ("--set", item)]
    return ["pretrain", "--config", str(CONFIG), *sets, "--out", str(out), "--max-steps", str(STEPS),
            "--no-progress", *extra]


def start(args: list[str], log: Path, driver: str | None = None) -> subprocess.Popen:
    """`xkd <args>` (or the ``python -c`` ``driver`` given the args) as a child process writing its output to ``log``
    (a file, so a chatty child never blocks on a full pipe)."""
    cmd = [sys.executable, "-m", "xkd", *args] if driver is None else [sys.executable, "-c", driver, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as sink:
        return subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    """Wait for ``proc``; its return code and the end of its output."""
    return proc.wait(timeout=TIMEOUT), log.read_text()[-3000:]


def logged_steps(run_dir: Path) -> list[int]:
    """Steps of the complete rows of metrics.csv, read while the run may be appending to it."""
    path = run_dir / "metrics.csv"
    text = path.read_text() if path.is_file() else ""
    return [int(m.group(1)) for m in re.finditer(r"^(\d+),.*\n", text, flags=re.MULTILINE)]


def weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    parts, meta = load_weights(run_dir / "weights.safetensors")
    return {f"{p}.{k}": v for p, sd in parts.items() for k, v in sd.items()}, meta


def assert_same_weights(a: Path, b: Path) -> None:
    wa, _ = weights(a)
    wb, meta = weights(b)
    assert meta["step"] == str(STEPS) and wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def reference(avdigits_tiny, tmp_path_factory):
    """An uninterrupted run, started at once; the fixture value waits for it and returns its folder."""
    out = tmp_path_factory.mktemp("crash") / "straight"
    log = out.with_suffix(".log")
    proc = start(pretrain_args(avdigits_tiny, out), log)

    def finished() -> Path:
        code, text = finish(proc, log)
        assert code == 0, text
        return out

    yield finished
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigkill_mid_step_then_resume_matches_an_uninterrupted_run(avdigits_tiny, reference, tmp_path):
    out, log = tmp_path / "killed", tmp_path / "run.log"
    proc = start(pretrain_args(avdigits_tiny, out), log)
    deadline = time.monotonic() + TIMEOUT
    # Step 3 logged and no checkpoint at 3: the process is inside step 4, past the checkpoint of step 2.
    while not (3 in logged_steps(out) and checkpoint_path(out, 2).is_file()):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the run did not reach step 3 in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    killed_at = latest_checkpoint(out)
    assert killed_at is not None and int(load_checkpoint(killed_at)["step"]) in (2, 4)

    code, text = finish(start(pretrain_args(avdigits_tiny, out, "--resume"), log), log)
    assert code == 0, text
    straight = reference()
    assert_same_weights(straight, out)
    assert logged_steps(out) == list(range(1, STEPS + 1))
    assert read_metrics(out)["loss"] == read_metrics(straight)["loss"]


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one(avdigits_tiny, reference, tmp_path):
    out, log = tmp_path / "killed", tmp_path / "run.log"
    code, text = finish(start(["2", *pretrain_args(avdigits_tiny, out)], log, driver=KILL_DURING_SAVE), log)
    assert code == -signal.SIGKILL, text
    folder = checkpoint_path(out, 4).parent
    partial = [p for p in folder.iterdir() if p.name.startswith(f".{checkpoint_path(out, 4).name}.")]
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the half-written payload is on disk
    assert sorted(p.name for p in folder.glob("step_*.pt")) == [checkpoint_path(out, 2).name]
    assert latest_checkpoint(out) == checkpoint_path(out, 2)
    assert weights(out)[1]["step"] == "2"  # the clean weights file is the one of the last complete checkpoint

    # Even under a checkpoint's own name (a copy interrupted by the kill), a partial file is not taken.
    shutil.copyfile(partial[0], checkpoint_path(out, 4))
    with pytest.warns(UserWarning, match="skipping invalid checkpoint"):
        assert latest_checkpoint(out) == checkpoint_path(out, 2)

    code, text = finish(start(pretrain_args(avdigits_tiny, out, "--resume"), log), log)
    assert code == 0, text
    assert int(load_checkpoint(checkpoint_path(out, 4))["step"]) == 4  # rewritten whole by the resumed run
    assert_same_weights(reference(), out)
    assert logged_steps(out) == list(range(1, STEPS + 1))
