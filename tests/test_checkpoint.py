"""Run checkpoints: atomic, verified, loaded with weights_only."""

import hashlib
import os
import random
import shlex
import struct

import numpy as np
import pytest
import torch
from torch import nn

from xkd.engine import checkpoint as ckpt
from xkd.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)


def _draws() -> tuple:
    """The next values of every generator a training run uses."""
    return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(4).tolist()


def _run_state(step: int) -> dict:
    torch.manual_seed(step)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": {},
        "step": step,
        "epoch": step // 10,
        "config": {"optim": {"lr": 1e-3, "betas": (0.9, 0.95)}, "method": "xkd"},
        "sampler": {"epoch": 2, "seed": 99999},
    }


def test_round_trip_with_rng_states(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()  # and one in numpy's
    state = _run_state(7)
    state["rng"] = capture_rng_state()
    path = save_checkpoint(checkpoint_path(tmp_path, 7), state)
    expected = _draws()
    _draws()  # move every generator on

    loaded = load_checkpoint(path)
    restore_rng_state(loaded["rng"])
    assert _draws() == expected
    assert loaded["step"] == 7 and loaded["epoch"] == 0
    assert loaded["config"] == state["config"] and loaded["sampler"] == state["sampler"]
    for name, value in state["model"].items():
        assert torch.equal(loaded["model"][name], value)
    opt = torch.optim.AdamW(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)).parameters())
    opt.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_unloadable_values_refused_before_writing(tmp_path):
    path = checkpoint_path(tmp_path, 1)
    with pytest.raises(CheckpointError, match=r"state\['rng'\]\['keys'\] is a numpy.ndarray"):
        save_checkpoint(path, {"rng": {"keys": np.zeros(3)}})
    with pytest.raises(CheckpointError, match="numpy.float64"):
        save_checkpoint(path, {"loss": np.float64(1.0)})
    assert not path.parent.exists() or not any(path.parent.iterdir())


def test_crash_during_write_keeps_previous(tmp_path, monkeypatch):
    first = save_checkpoint(checkpoint_path(tmp_path, 10), _run_state(10))

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(checkpoint_path(tmp_path, 20), _run_state(20))
    monkeypatch.undo()
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no partial file, no temp file left
    assert latest_checkpoint(tmp_path) == first
    assert load_checkpoint(first)["step"] == 10


def test_truncated_checkpoint_skipped(tmp_path):
    first = save_checkpoint(checkpoint_path(tmp_path, 10), _run_state(10))
    second = save_checkpoint(checkpoint_path(tmp_path, 20), _run_state(20))
    assert latest_checkpoint(tmp_path) == second
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])  # what a crash of a non-atomic writer would leave
    with pytest.raises(CheckpointError, match="no integrity trailer"):
        load_checkpoint(second)
    with pytest.warns(UserWarning, match="skipping invalid checkpoint"):
        assert latest_checkpoint(tmp_path) == first


def test_corrupted_byte_refused(tmp_path):
    path = save_checkpoint(checkpoint_path(tmp_path, 5), _run_state(5))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(path)
    with pytest.warns(UserWarning):
        assert latest_checkpoint(tmp_path) is None


def test_missing_and_foreign_files_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    plain = tmp_path / "plain.pt"
    torch.save({"step": 1}, plain)  # a torch file without the integrity trailer
    with pytest.raises(CheckpointError, match="no integrity trailer"):
        verify_checkpoint(plain)
    assert latest_checkpoint(tmp_path) is None


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_malicious_pickle_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": _Exploit(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="no integrity trailer"):
        load_checkpoint(path)
    # An attacker can add a valid trailer (the digest detects damage, not forgery): the safe loader must refuse.
    payload = path.read_bytes()
    path.write_bytes(payload + struct.pack("<8s32sQ", b"XKDCKPT1", hashlib.sha256(payload).digest(), len(payload)))
    verify_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(path)
    assert not marker.exists()


def test_keep_last(tmp_path):
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [checkpoint_path(tmp_path, s).name for s in (4, 5)]
    # Resuming from step 4 and saving step 3 of a new attempt never deletes the file just written.
    save_checkpoint(checkpoint_path(tmp_path, 3), {"step": 3}, keep_last=1)
    assert checkpoint_path(tmp_path, 3).is_file() and checkpoint_path(tmp_path, 5).is_file()
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 5)
