"""AdamW groups, schedules, DINO per-parameter clipping, and the fp32 / bf16 / fp16 step paths."""

import copy
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from xkd.engine import optim
from xkd.engine.optim import (
    NoScaler,
    amp_context,
    apply_schedules,
    build_optimizer,
    clip_per_parameter,
    make_grad_scaler,
    param_groups,
    resolve_amp,
)


class _Encoder(nn.Module):
    def __init__(self, dim=8, tokens=4):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim))
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)


class _Decoder(nn.Module):
    def __init__(self, dim=8, tokens=4):
        super().__init__()
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, tokens, dim), requires_grad=False)  # fixed sin-cos
        self.pred = nn.Linear(dim, 3)
        self.frozen = nn.Linear(dim, dim)
        self.frozen.requires_grad_(False)


def _names(groups, decay, clip):
    return {n for g in groups if g["apply_decay"] == decay and g["clip"] == clip for n in g["param_names"]}


def test_param_groups_split():
    enc, dec = _Encoder(), _Decoder()
    dec.shared = enc.proj  # a module reached twice is counted once
    modules = {"video_student": enc, "video_decoder": dec}

    groups = param_groups(modules, decay_embeddings=True, clipped=["video_student"])
    emb = {"video_student.cls_token", "video_student.pos_embed", "video_student.mask_token"}
    assert _names(groups, True, True) == emb | {"video_student.proj.weight"}
    no_decay = {"video_student.proj.bias", "video_student.norm.weight", "video_student.norm.bias"}
    assert _names(groups, False, True) == no_decay
    assert _names(groups, True, False) == {"video_decoder.pred.weight"}
    assert _names(groups, False, False) == {"video_decoder.pred.bias"}
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])
    assert sum(len(g["params"]) for g in groups) == 9  # frozen and fixed parameters are left out

    groups = param_groups(modules, decay_embeddings=False, clipped=["video_student"])
    assert _names(groups, True, True) == {"video_student.proj.weight"}
    assert emb <= _names(groups, False, True)

    one = param_groups(enc)
    assert all(g["clip"] for g in one) and {n.split(".")[0] for g in one for n in g["param_names"]} == {"model"}
    with pytest.raises(ValueError, match="audio_student"):
        param_groups(modules, clipped=["audio_student"])


def test_build_optimizer_and_schedules():
    groups = param_groups({"s": _Encoder(), "d": _Decoder()}, clipped=["s"])
    opt = build_optimizer(groups, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.3)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3 if g["apply_decay"] else 0.0 for g in opt.param_groups]
    assert all(g["betas"] == (0.9, 0.95) and g["lr"] == 1e-4 for g in opt.param_groups)

    apply_schedules(opt, lr=5e-5, weight_decay=0.1)
    assert all(g["lr"] == 5e-5 for g in opt.param_groups)
    assert {g["apply_decay"]: g["weight_decay"] for g in opt.param_groups} == {True: 0.1, False: 0.0}

    # group flags survive an optimizer state-dict round trip (resume)
    again = build_optimizer(param_groups({"s": _Encoder(), "d": _Decoder()}, clipped=["s"]), 1.0, (0.9, 0.999), 0.0)
    again.load_state_dict(opt.state_dict())
    assert [(g["apply_decay"], g["clip"], g["weight_decay"]) for g in again.param_groups] == [
        (g["apply_decay"], g["clip"], g["weight_decay"]) for g in opt.param_groups
    ]


def test_clip_per_parameter_matches_reference():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.zeros(s)) for s in [(4, 3), (5,), (2, 2, 2), (3,)]]
    for p, scale in zip(params, [10.0, 0.01, 1.0, 0.05]):
        p.grad = torch.randn_like(p) * scale
    untouched = nn.Parameter(torch.zeros(3))
    untouched.grad = torch.full((3,), 100.0)
    no_grad = nn.Parameter(torch.zeros(2))
    before = [p.grad.clone() for p in params]
    max_norm = 0.3

    norms = clip_per_parameter(params + [no_grad], max_norm)

    assert norms.shape == (4,)
    for p, g, n in zip(params, before, norms):
        ref_norm = g.norm(2)
        assert n.item() == pytest.approx(ref_norm.item(), rel=1e-6)
        coef = max_norm / (ref_norm + 1e-6)
        expected = g * coef if coef < 1 else g
        torch.testing.assert_close(p.grad, expected)
    assert params[1].grad.equal(before[1])  # under the limit: not changed
    assert params[0].grad.norm() == pytest.approx(max_norm, rel=1e-4)
    assert torch.equal(untouched.grad, torch.full((3,), 100.0)) and no_grad.grad is None
    with pytest.raises(ValueError):
        clip_per_parameter(params, 0.0)


def _step(model, opt, scaler, x, mode, clip=0.3):
    with amp_context("cpu", mode):
        loss = model(x).float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    clip_per_parameter(model.parameters(), clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def test_no_scaler_path_equals_plain_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 2))
    twin = copy.deepcopy(model)
    opt = build_optimizer(param_groups(model), 1e-2, (0.9, 0.95), 0.3)
    opt_twin = build_optimizer(param_groups(twin), 1e-2, (0.9, 0.95), 0.3)
    scaler = make_grad_scaler("none", "cpu")
    assert isinstance(scaler, NoScaler) and isinstance(make_grad_scaler("bf16", "cpu"), NoScaler)
    for _ in range(3):
        x = torch.randn(5, 6)
        _step(model, opt, scaler, x, "none")
        twin(x).pow(2).mean().backward()
        clip_per_parameter(twin.parameters(), 0.3)
        opt_twin.step()
        opt_twin.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    scaler.load_state_dict(scaler.state_dict())
    assert scaler.get_scale() == 1.0 and not scaler.is_enabled()


def test_amp_context_dtypes():
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with amp_context("cpu", "none"):
        assert lin(x).dtype == torch.float32
    with amp_context(torch.device("cpu"), "bf16"):
        assert lin(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp mode"):
        amp_context("cpu", "fp8")
    with pytest.raises(ValueError, match="amp mode"):
        make_grad_scaler("half", "cpu")


def _cpu_fp16_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = nn.Linear(2, 2)(torch.randn(1, 2))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, ValueError):
        return False
    return out.dtype == torch.float16


@pytest.mark.skipif(not _cpu_fp16_supported(), reason="this torch build has no fp16 autocast / GradScaler on CPU")
def test_fp16_grad_scaler_path_on_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 2))
    twin = copy.deepcopy(model)
    opt = build_optimizer(param_groups(model), 1e-2, (0.9, 0.95), 0.0)
    opt_twin = build_optimizer(param_groups(twin), 1e-2, (0.9, 0.95), 0.0)
    scaler = make_grad_scaler("fp16", "cpu")
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    x = torch.randn(5, 6)

    # after unscale_, gradients equal the unscaled fp16-autocast gradients
    with amp_context("cpu", "fp16"):
        loss = model(x).float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    with amp_context("cpu", "fp16"):
        twin(x).float().pow(2).mean().backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5)
    scaler.step(opt)
    scaler.update()
    opt_twin.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    # an overflowing step is skipped and the scale is lowered
    opt.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    with amp_context("cpu", "fp16"):
        loss = model(x).float().pow(2).mean()
    scaler.scale(loss).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert scaler.get_scale() < scale
    restored = make_grad_scaler("fp16", "cpu")
    restored.load_state_dict(scaler.state_dict())
    assert restored.get_scale() == scaler.get_scale()


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_slow_low_precision_falls_back_to_fp32_with_a_warning(monkeypatch, caplog, mode):
    monkeypatch.setattr(optim, "low_precision_speedup", lambda device, m: 0.23)
    with caplog.at_level(logging.WARNING, logger="xkd.engine.optim"):
        assert resolve_amp(mode, "cpu") == "none"
    (record,) = caplog.records
    assert f"amp={mode}" in record.getMessage() and "0.23x" in record.getMessage() and "fp32" in record.getMessage()
    assert resolve_amp(mode, "cpu", force=True) == mode  # forced: kept, and no probe needed


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_fast_low_precision_is_kept(monkeypatch, caplog, mode):
    monkeypatch.setattr(optim, "low_precision_speedup", lambda device, m: 3.5)
    with caplog.at_level(logging.WARNING):
        assert resolve_amp(mode, torch.device("cpu")) == mode
    assert not caplog.records


def test_fp32_needs_no_probe_and_bad_modes_fail(monkeypatch):
    def probe(device, mode):
        raise AssertionError("fp32 must not probe")

    monkeypatch.setattr(optim, "low_precision_speedup", probe)
    assert resolve_amp("none", "cpu") == "none"
    with pytest.raises(ValueError, match="amp mode"):
        resolve_amp("fp8", "cpu")


def test_the_probe_measures_this_cpu():
    assert optim.low_precision_speedup("cpu", "bf16", size=64, seconds=0.01) > 0


def test_trainer_computes_in_the_resolved_precision(monkeypatch):
    from xkd.config import PretrainConfig, load_config
    from xkd.engine.distributed import DistInfo
    from xkd.engine.pretrain import Trainer

    tiny = ["model.encoder.dim=32", "model.encoder.heads=2", "model.encoder.depth=1", "model.decoder_dim=16",
            "model.decoder_heads=2", "model.decoder_depth=1", "model.head_hidden=32", "model.head_bottleneck=16",
            "model.head_out=64", "run.amp=fp16"]
    config = Path(__file__).parents[1] / "configs" / "pretrain" / "xkd_avdigits_cpu.yaml"
    info = DistInfo(0, 1, 0, torch.device("cpu"), True)
    monkeypatch.setattr(optim, "low_precision_speedup", lambda device, m: 0.01)
    slow = Trainer(load_config(PretrainConfig, config, tiny), info)
    assert slow.amp == "none" and isinstance(slow.scaler, NoScaler)
    forced = Trainer(load_config(PretrainConfig, config, [*tiny, "run.force_amp=true"]), info)
    assert forced.amp == "fp16" and isinstance(forced.scaler, torch.amp.GradScaler)
