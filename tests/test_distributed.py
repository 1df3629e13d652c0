"""Process-group setup: one process needs no environment; two gloo processes reduce, gather and broadcast."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from xkd.engine.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    gather_objects,
    init_distributed,
    is_dist,
    unwrap,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_single_process_without_env(no_torchrun_env):
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert info.device == torch.device("cpu")
    assert not is_dist() and not torch.distributed.is_initialized()
    t = torch.tensor([1.0, 3.0])
    assert all_reduce_mean(t) is t
    assert gather_objects({"a": 1}) == [{"a": 1}]
    assert broadcast_object("x") == "x"
    barrier()
    cleanup()


def test_single_process_under_torchrun_starts_no_group(no_torchrun_env, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    info = init_distributed("auto")
    assert info.world_size == 1 and info.is_main and not torch.distributed.is_initialized()


def test_bad_environment_is_reported(no_torchrun_env, monkeypatch):
    with pytest.raises(ValueError, match="device_pref"):
        init_distributed("tpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match="MASTER_ADDR, MASTER_PORT is not set"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="outside"):
        init_distributed("cpu")
    assert not torch.distributed.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU is present")
def test_cuda_request_without_gpu(no_torchrun_env):
    with pytest.raises(RuntimeError, match="is_available"):
        init_distributed("cuda")


def test_unwrap_strips_wrappers():
    model = nn.Linear(2, 2)
    assert unwrap(model) is model
    assert unwrap(torch.compile(model)) is model
    assert unwrap(nn.DataParallel(torch.compile(model))) is model
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        assert unwrap(nn.parallel.DistributedDataParallel(torch.compile(model))) is model
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        t = torch.tensor([float(rank), 10.0 * rank + 1.0])
        mean = all_reduce_mean(t)
        result = {
            "info": [info.rank, info.world_size, info.local_rank, info.is_main, str(info.device)],
            "is_dist": is_dist(),
            "mean": mean.tolist(),
            "input_untouched": t.tolist(),
            "gathered": gather_objects({"rank": rank}),
            "broadcast": broadcast_object(f"chosen-by-{rank}"),
        }
        barrier()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        cleanup()


def test_two_process_gloo(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["info"] == [rank, 2, rank, rank == 0, "cpu"]
        assert r["is_dist"]
        assert r["mean"] == pytest.approx([0.5, 6.0])
        assert r["input_untouched"] == pytest.approx([float(rank), 10.0 * rank + 1.0])
        assert r["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert r["broadcast"] == "chosen-by-0"
