"""The allocator settings of a CPU trainer: both mallopt calls, real and faked, and every CPU Trainer applies them.
(The memory they keep or give back is measured in tests/test_workers.py.)"""

import sys
from pathlib import Path

import pytest
import torch

from xkd import host_memory


def test_each_policy_sets_both_thresholds(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "_mallopt", lambda option, value: calls.append((option, value)) or True)
    assert host_memory.keep_freed_host_memory()
    assert host_memory.worker_heap()
    assert calls == [(-3, 32 * 2**20), (-1, 2**31 - 1), (-3, 32 * 2**20), (-1, 128 * 1024)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_real_calls_succeed_and_memory_still_works():
    assert host_memory.keep_freed_host_memory()
    assert host_memory.keep_freed_host_memory()  # idempotent
    assert torch.ones(3000, 3000).sum().item() == 9_000_000  # a 36 MB block, above the raised mmap threshold
    assert host_memory.release_freed_host_memory()
    assert host_memory.worker_heap()  # a worker's settings for the rest of this process


def test_a_cpu_trainer_applies_them(monkeypatch):
    from xkd.config import PretrainConfig, load_config
    from xkd.engine import pretrain
    from xkd.engine.distributed import DistInfo

    called = []
    monkeypatch.setattr(pretrain, "keep_freed_host_memory", lambda: called.append(True) or True)
    config = Path(__file__).parents[1] / "configs" / "pretrain" / "mae_avdigits_cpu.yaml"
    tiny = ["model.encoder.dim=32", "model.encoder.heads=2", "model.encoder.depth=1", "model.decoder_dim=16",
            "model.decoder_heads=2", "model.decoder_depth=1"]
    pretrain.Trainer(load_config(PretrainConfig, config, tiny), DistInfo(0, 1, 0, torch.device("cpu"), True))
    assert called == [True]
