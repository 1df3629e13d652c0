"""Process-group setup and collective helpers: one code path for one process, ``torchrun`` and multi-node runs.

The training script calls :func:`init_distributed` once and reads ranks and the device from the returned
:class:`DistInfo`; every helper below is a no-op (or the identity) when no process group is running, so the same
loop runs unchanged everywhere (as nanoGPT's ``train.py``).

Launch commands (``xkd pretrain`` is the console script; ``--no-python`` lets ``torchrun`` start it directly)::

    # one process (CPU or one GPU): no environment variables needed
    xkd pretrain --config configs/pretrain/xkd_avdigits_cpu.yaml

    # one node, 4 GPUs
    torchrun --standalone --nproc_per_node 4 --no-python xkd pretrain --config CONFIG.yaml

    # 2 nodes x 4 GPUs (the paper's 8 GPUs): run on node k with --node_rank k; HOST is node 0's address
    torchrun --nnodes 2 --nproc_per_node 4 --node_rank 0 --rdzv_endpoint HOST:29500 \\
        --no-python xkd pretrain --config CONFIG.yaml

SLURM (one ``torchrun`` per node; the c10d rendezvous assigns node ranks, so no per-node variable is needed)::

    #!/bin/bash
    #SBATCH --nodes=2
    #SBATCH --ntasks-per-node=1
    #SBATCH --gpus-per-node=4
    #SBATCH --cpus-per-task=32
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 4 \\
        --rdzv_backend c10d --rdzv_id "$SLURM_JOB_ID" --rdzv_endpoint "$head:29500" \\
        --no-python xkd pretrain --config CONFIG.yaml
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``is_main`` is rank 0: the only rank that writes files."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _pick_device(device_pref: str, local_rank: int) -> torch.device:
    if device_pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device_pref must be 'auto', 'cpu' or 'cuda', got {device_pref!r}")
    if device_pref == "cpu" or (device_pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible: "
            "start at most one process per GPU (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Read the ``torchrun`` environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and set up.

    With WORLD_SIZE > 1 this initialises the default process group (nccl on CUDA, gloo on CPU) and binds the
    process to GPU ``LOCAL_RANK``. Without those variables (or WORLD_SIZE = 1) it starts no process group.
    ``device_pref``: "auto" (CUDA when available), "cpu" or "cuda".
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    device = _pick_device(device_pref, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set: launch with torchrun")
        if device.type == "cuda":
            dist.init_process_group("nccl", init_method="env://", device_id=device)
        else:
            dist.init_process_group("gloo", init_method="env://")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, is_main=rank == 0)


def is_dist() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all ranks, as a new tensor (``t`` itself when there is one process). Same shape as ``t``."""
    if not is_dist():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (any picklable value), in rank order, on every rank. ``[obj]`` for one process."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. the checkpoint path rank 0 chose). ``obj`` for one process."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for all ranks (nothing to wait for in one process)."""
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Tear down the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside any DistributedDataParallel / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
