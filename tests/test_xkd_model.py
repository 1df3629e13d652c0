"""The XKD model: every method and ablation trains every trainable parameter; teachers take no gradient."""


import pytest
import torch

from xkd.config import LossConfig, PretrainConfig
from xkd.models.encoder import tiny_model_config
from xkd.models.xkd import XKD


def tiny_cfg(method="xkd", num_local_views=1, **loss):
    cfg = PretrainConfig(method=method, model=tiny_model_config(), loss=LossConfig(**loss))
    cfg.data.num_local_views = num_local_views
    return cfg


def inputs(cfg, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    frames = [torch.randn(batch, 3, m.num_frames, m.frame_size, m.frame_size, generator=g)]
    frames += [torch.randn(batch, 3, 4, 24, 24, generator=g) for _ in range(cfg.data.num_local_views)]
    audio = [torch.randn(batch, 1, *m.spec_size, generator=g), torch.randn(batch, 1, m.spec_size[0], 64, generator=g)]
    return frames, audio


CASES = [
    ("xkd", {}),
    ("xkd-mas", {}),
    ("xkd-mats", {}),
    ("mae", {}),
    ("cav-mae", {}),
    ("cav-mae", {"contrastive_view": "whole", "contrastive_symmetric": False}),
    ("xkd", {"recon_audio": False}),
    ("xkd", {"recon_video": False}),
    ("xkd", {"da": False}),
    ("xkd", {"kd": False}),
    ("xkd", {"refine": False}),
    ("xkd", {"teacher_view": "global"}),
    ("xkd", {"refine_mode": "softmax"}),
    ("xkd", {"teacher_assignment": "sinkhorn"}),
]


@pytest.mark.parametrize("method, loss", CASES)
def test_every_trainable_parameter_gets_a_gradient(method, loss):
    torch.manual_seed(0)
    cfg = tiny_cfg(method, num_local_views=3 if method != "xkd" else 1, **loss)
    model = XKD(cfg)
    frames, audio = inputs(cfg)
    total, terms = model(frames, audio)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())


def test_parts_follow_the_method():
    assert len(XKD(tiny_cfg("mae")).teacher) == 0
    mae = XKD(tiny_cfg("mae"))
    assert mae.student["video"].head is None and not hasattr(mae, "kd_video_to_audio")
    mas = XKD(tiny_cfg("xkd-mas"))
    assert mas.student["video"].encoder.blocks is mas.student["audio"].encoder.blocks
    assert mas.teacher["video"].encoder.blocks is not mas.teacher["audio"].encoder.blocks
    mats = XKD(tiny_cfg("xkd-mats"))
    assert mats.teacher["video"].encoder.blocks is mats.teacher["audio"].encoder.blocks
    assert mats.teacher["video"].encoder.blocks is not mats.student["video"].encoder.blocks
    no_recon_audio = XKD(tiny_cfg(recon_audio=False))
    assert "audio" not in no_recon_audio.decoder and "video" in no_recon_audio.decoder
    with pytest.raises(ValueError, match="every objective"):
        XKD(tiny_cfg("mae", recon_video=False, recon_audio=False))


def test_loss_weighting_is_normalised_by_active_coefficients():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = XKD(cfg)
    total, t = model(*inputs(cfg))
    expected = (1 * t["da"] + 1 * t["kd"] + 5 * t["ae"]) / 7
    torch.testing.assert_close(total.detach(), expected)
    assert torch.allclose(t["ae"], (t["recon_video"] + t["recon_audio"]) / 2)
    assert torch.allclose(t["kd"], (t["kd_video_to_audio"] + t["kd_audio_to_video"]) / 2)
    model_mae = XKD(tiny_cfg("mae"))
    total, t = model_mae(*inputs(cfg))
    torch.testing.assert_close(total.detach(), t["ae"])


def test_teacher_view_switch_changes_what_the_teacher_sees():
    torch.manual_seed(0)
    cfg_local, cfg_global = tiny_cfg(teacher_view="local"), tiny_cfg(teacher_view="global")
    model = XKD(cfg_local)
    frames, audio = inputs(cfg_local)
    seen = []
    hook = model.teacher["video"].encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    model(frames, audio)
    model.cfg = cfg_global
    model(frames, audio)
    hook.remove()
    assert seen == [frames[1].shape, frames[0].shape]


def test_ema_keeps_teachers_identical_at_momentum_one_and_moves_them_otherwise():
    torch.manual_seed(0)
    cfg = tiny_cfg("xkd-mats")
    model = XKD(cfg)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(*inputs(cfg))[0].backward()
    opt.step()
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model.update_teachers(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.teacher.state_dict().items())
    model.update_teachers(0.5)
    changed = [k for k, v in model.teacher.state_dict().items() if not torch.equal(before[k], v)]
    assert changed


@pytest.mark.parametrize("double, expected_weight", [(True, 0.25), (False, 0.5)])
def test_mats_double_or_single_ema_of_shared_teacher_blocks(double, expected_weight):
    torch.manual_seed(0)
    cfg = tiny_cfg("xkd-mats", mats_double_ema=double)
    model = XKD(cfg)
    t = model.teacher["video"].encoder.blocks.blocks[0].attn.qkv.weight
    s = model.student["video"].encoder.blocks.blocks[0].attn.qkv.weight
    with torch.no_grad():
        s.add_(1.0)  # the student moves away by exactly 1
    t0 = t.clone()
    model.update_teachers(0.5)
    # teacher = s + w (t0 - s): once -> w = 0.5; twice (released code) -> w = 0.25
    torch.testing.assert_close(t, s.detach() + expected_weight * (t0 - s.detach()))


def test_given_mask_noise_is_used_and_is_split_safe():
    torch.manual_seed(0)
    cfg = tiny_cfg("mae")
    model = XKD(cfg)
    frames, audio = inputs(cfg, batch=4)
    nv, na = model.mask_token_counts()
    noise = (torch.rand(4, nv), torch.rand(4, na))
    full, terms = model(frames, audio, mask_noise=noise)
    again, _ = model(frames, audio, mask_noise=noise)
    assert torch.equal(full, again)
    other, _ = model(frames, audio, mask_noise=(torch.rand(4, nv), torch.rand(4, na)))
    assert not torch.equal(full, other)


def test_each_teacher_temperature_schedule_reaches_its_loss_in_one_hop():
    from xkd.engine.distributed import DistInfo
    from xkd.engine.pretrain import Trainer
    from xkd.engine.schedules import build_schedules

    cfg = tiny_cfg(video_teacher_temp_warmup=0.04, video_teacher_temp=0.07, audio_teacher_temp_warmup=0.05,
                   audio_teacher_temp=0.09, teacher_temp_warmup_epochs=2)
    cfg.optim.epochs, cfg.optim.warmup_epochs = 4, 1
    schedules = build_schedules(cfg.optim, cfg.loss, iters_per_epoch=3, total_iters=12)
    model = Trainer(cfg, DistInfo(0, 1, 0, torch.device("cpu"), True), schedules).model
    # the video teacher's targets teach the audio student: its temperature sharpens kd_video_to_audio
    assert model.kd_video_to_audio.teacher_temps == schedules.video_teacher_temp.tolist()
    assert model.kd_audio_to_video.teacher_temps == schedules.audio_teacher_temp.tolist()
    assert schedules.video_teacher_temp[0] == 0.04 and schedules.video_teacher_temp[-1] == 0.07
    default = XKD(cfg)  # without a schedule: the final temperatures throughout
    assert default.kd_video_to_audio.teacher_temps == [0.07] and default.kd_audio_to_video.teacher_temps == [0.09]
    frames, audio = inputs(cfg)
    torch.manual_seed(0)
    _, early = model(frames, audio, step=0)
    model.kd_video_to_audio.center.zero_(), model.kd_audio_to_video.center.zero_()
    torch.manual_seed(0)
    _, late = model(frames, audio, step=11)
    assert early["kd_video_to_audio"] != late["kd_video_to_audio"]  # another τ_t, the same inputs and masks
