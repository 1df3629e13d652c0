"""Optimiser pieces: AdamW parameter groups, per-step schedules, DINO-style gradient clipping and mixed precision.

The training step reads the same with and without fp16 (as in DINO's ``main_dino.py``)::

    with amp_context(device, mode):
        loss = model(batch)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)                       # gradients are true gradients from here on
    clip_per_parameter(clipped_params, max_norm)
    scaler.step(optimizer)
    scaler.update()

``resolve_amp`` runs before: a precision the device has no fast native support for becomes fp32, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from xkd.engine.flops import measure_matmul_peak

log = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")
EMBEDDING_PARAMS = ("cls_token", "pos_embed", "mask_token")  # matched as the end of a parameter's last name part


def _is_embedding(name: str) -> bool:
    return name.rsplit(".", 1)[-1].endswith(EMBEDDING_PARAMS)


def param_groups(
    modules: Mapping[str, nn.Module] | nn.Module,
    decay_embeddings: bool = True,
    clipped: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into AdamW groups by weight decay and by gradient clipping.

    ``modules``: ``{name: module}`` (e.g. ``{"video_student": ..., "video_decoder": ...}``) or one module (named
    ``"model"``). Biases and 1-D parameters (norms) get no weight decay. ``cls_token`` / ``pos_embed`` /
    ``mask_token`` are decayed when ``decay_embeddings`` (as the released code does, spec §A9), else not.
    ``clipped``: names of the modules whose gradients are clipped (default: all of them).

    Each group has ``params``, ``param_names`` (``"<module>.<param>"``), ``apply_decay`` and ``clip``; empty groups
    are left out. ``weight_decay`` is set by :func:`build_optimizer`.
    """
    if isinstance(modules, nn.Module):
        modules = {"model": modules}
    clipped_names = set(modules) if clipped is None else set(clipped)
    unknown = clipped_names - set(modules)
    if unknown:
        raise ValueError(f"clipped names {sorted(unknown)} are not among the modules {list(modules)}")
    buckets: dict[tuple[bool, bool], dict[str, list]] = {}
    seen: set[int] = set()
    for module_name, module in modules.items():
        clip = module_name in clipped_names
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            no_decay = p.ndim <= 1 or name.endswith(".bias") or (not decay_embeddings and _is_embedding(name))
            bucket = buckets.setdefault((not no_decay, clip), {"params": [], "param_names": []})
            bucket["params"].append(p)
            bucket["param_names"].append(f"{module_name}.{name}")
    order = [(True, True), (True, False), (False, True), (False, False)]  # (apply_decay, clip)
    return [{**buckets[key], "apply_decay": key[0], "clip": key[1]} for key in order if key in buckets]


def layer_decay_groups(
    model: nn.Module, base_lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups of a model built on ``model.encoder`` (a ViT), with BEiT layer-wise learning-rate decay.

    Layer ids: tokenizer, ``cls_token`` and ``pos_embed`` 0; block i -> i + 1; the rest (final norm, head) the top
    layer L + 1, for L blocks. A group's ``lr_scale`` is ``layer_decay ** (L + 1 - layer_id)`` and its ``lr`` is
    ``base_lr * lr_scale``. Biases, 1-D parameters, ``cls_token`` and ``pos_embed`` get no weight decay.
    Each group holds ``params``, ``param_names``, ``layer_id``, ``lr_scale``, ``lr``, ``weight_decay`` and
    ``apply_decay``; groups are ordered by (layer, decay).
    """
    encoder = model.encoder
    depth = len(encoder.blocks.blocks)
    layer_of = {id(p): i + 1 for i, block in enumerate(encoder.blocks.blocks) for p in block.parameters()}
    layer_of.update({id(p): 0 for p in (*encoder.tokenizer.parameters(), encoder.cls_token, encoder.pos_embed)})
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_of.get(id(p), depth + 1)
        decay = not (p.ndim <= 1 or name.endswith(".bias") or name.rsplit(".", 1)[-1] in EMBEDDING_PARAMS)
        if (layer, decay) not in groups:
            scale = layer_decay ** (depth + 1 - layer)
            groups[layer, decay] = {
                "params": [], "param_names": [], "layer_id": layer, "lr_scale": scale, "lr": base_lr * scale,
                "weight_decay": weight_decay if decay else 0.0, "apply_decay": decay,
            }
        groups[layer, decay]["params"].append(p)
        groups[layer, decay]["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(
    groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` groups: ``weight_decay`` on decay groups, 0 on the others.

    Uses the fused kernel when every parameter sits on a device that has one, else the foreach kernel.
    """
    for g in groups:
        g["weight_decay"] = weight_decay if g["apply_decay"] else 0.0
    fused = all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused, foreach=None if fused else True)


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set this step's learning rate on every group and its weight decay on the decay groups only."""
    for g in optimizer.param_groups:
        g["lr"] = lr
        if g["apply_decay"]:
            g["weight_decay"] = weight_decay


@torch.no_grad()
def clip_per_parameter(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """DINO-style clipping: each gradient ``g`` is scaled by ``min(1, max_norm / (||g|| + 1e-6))`` in place.

    Only the given parameters are touched; those without a gradient are skipped. Sharded gradients (DTensors, under
    FSDP) are clipped by the norm of the whole parameter. Returns the pre-clip norms, ``[P]`` for the ``P``
    parameters that had a gradient (an empty tensor if none), without a host sync.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm} (skip the call to disable clipping)")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.empty(0)
    if isinstance(grads[0], DTensor):  # sharded (FSDP): each norm over the shards of every rank, one all-reduce
        group = grads[0].device_mesh.get_group()
        grads = [g.to_local() for g in grads]
        squares = torch.stack([n.square() for n in torch._foreach_norm(grads)])
        dist.all_reduce(squares, group=group)
        norms = squares.sqrt()
    else:
        norms = torch.stack(torch._foreach_norm(grads))
    # the scales of all parameters in three ops, not three per parameter (2-3 ms a step at the original tiny preset)
    scales = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(scales.unbind()))
    return norms


def amp_context(device: torch.device | str, mode: str) -> contextlib.AbstractContextManager:
    """Autocast for ``mode`` ("bf16" / "fp16") on ``device``'s type; a no-op context for "none"."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp mode must be one of {AMP_MODES}, got {mode!r}")
    if mode == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def low_precision_speedup(device: torch.device | str, mode: str, size: int = 256, seconds: float = 0.05) -> float:
    """Matmul rate of ``mode``'s dtype over the fp32 rate on ``device``: a probe of about 0.2 s.

    Above 1 where the hardware computes in that precision natively (AMX or AVX-512 BF16 CPUs, GPUs); far below 1
    where it is emulated (bf16 on a CPU with only AVX-512F ran at 0.23x fp32, fp16 at 0.01x).
    """
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    fp32 = measure_matmul_peak(device, torch.float32, size, seconds)
    return measure_matmul_peak(device, dtype, size, seconds) / fp32


def resolve_amp(mode: str, device: torch.device | str, force: bool = False) -> str:
    """The precision a run should use for the requested ``mode``: ``mode`` itself, or "none" (fp32) with a
    one-line warning where the device has no fast native support for it, unless ``force``.

    CUDA: bf16 needs a GPU that supports it (``torch.cuda.is_bf16_supported``); fp16 is kept. CPU: a short matmul
    probe (:func:`low_precision_speedup`) keeps ``mode`` only if it is at least as fast as fp32.
    """
    if mode not in AMP_MODES:
        raise ValueError(f"amp mode must be one of {AMP_MODES}, got {mode!r}")
    device = torch.device(device)
    if mode == "none" or force:
        return mode
    if device.type == "cuda":
        if mode == "bf16" and not torch.cuda.is_bf16_supported():
            log.warning("amp=bf16: this GPU has no native bf16, so the run uses fp32 (amp=fp16, or force_amp=true keeps bf16)")
            return "none"
        return mode
    speedup = low_precision_speedup(device, mode)
    if speedup < 1.0:
        log.warning("amp=%s: this %s runs %s matmuls at %.2fx the fp32 rate (no fast native %s), so the run uses fp32 "
                    "(force_amp=true keeps %s)", mode, device.type.upper(), mode, speedup, mode, mode)
        return "none"
    return mode


class NoScaler:
    """The GradScaler interface without scaling, for the fp32 and bf16 paths: the step reads the same."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def step(self, optimizer: torch.optim.Optimizer) -> Any:
        return optimizer.step()

    def update(self) -> None:
        pass

    def get_scale(self) -> float:
        return 1.0

    def is_enabled(self) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        pass


def make_grad_scaler(mode: str, device: torch.device | str) -> torch.amp.GradScaler | NoScaler:
    """A real ``torch.amp.GradScaler`` for "fp16" (which needs loss scaling), a :class:`NoScaler` otherwise."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp mode must be one of {AMP_MODES}, got {mode!r}")
    if mode == "fp16":
        return torch.amp.GradScaler(torch.device(device).type)
    return NoScaler()
