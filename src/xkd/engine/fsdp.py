"""FSDP2 beside DDP (``run.strategy: fsdp``): parameters, gradients and optimiser state sharded over the ranks.

:func:`shard_model` applies ``fully_shard`` to every transformer block, then to every encoder, projection head,
decoder and cav-mae projection, then to the whole model, students and EMA teachers alike: a teacher's parameter and
its student's have the same shape, so their local shards hold the same elements and the EMA update
(:mod:`xkd.models.ema`) runs on the local shards with no communication. Per-parameter gradient clipping takes each parameter's norm over all ranks
(:func:`xkd.engine.optim.clip_per_parameter`). Run checkpoints hold the model and optimiser as a
``torch.distributed.checkpoint`` folder (every rank writes its shards; :func:`save_sharded`, :func:`load_sharded`)
beside the usual ``step_*.pt`` that holds the rest of the run state; the weights file is written from the full
parameters (:func:`full_state_dict`).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from xkd.models.vit import Block
from xkd.models.xkd import XKD

# The decoders return a slice of their tokens; nothing modifies it in place, which is what FSDP2 warns about.
_VIEW_WARNING = r"FSDP2-wrapped module \(\w+\) returned a view tensor"


def shard_model(model: XKD, device: torch.device) -> None:
    """Shard ``model`` in place over every rank of the default process group (see the module docstring)."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in [m for m in model.modules() if isinstance(m, Block)]:
        fully_shard(block, mesh=mesh)
    for net in [*model.student.values(), *model.teacher.values()]:
        fully_shard(net.encoder, mesh=mesh)
        if net.head is not None:
            fully_shard(net.head, mesh=mesh)
    for part in [*model.decoder.values(), *model.projection.values()]:
        fully_shard(part, mesh=mesh)
    fully_shard(model, mesh=mesh)
    warnings.filterwarnings("ignore", message=_VIEW_WARNING)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of a sharded model as a full tensor, on every rank (a collective call)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write the model's and the optimiser's shards of every rank into ``folder`` (a collective call). The folder
    appears complete or not at all: it is written under a temporary name and renamed by rank 0."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    model_state, optim_state = get_state_dict(model, optimizer)
    if dist.get_rank() == 0 and tmp.exists():
        shutil.rmtree(tmp)
    dist.barrier()
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp)
    dist.barrier()
    if dist.get_rank() == 0:
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    dist.barrier()


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load what :func:`save_sharded` wrote into the sharded ``model`` and its ``optimizer`` (a collective call)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
