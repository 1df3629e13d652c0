"""The views of fine-tuning: random erasing, SpecAugment, the video train view's config, and the test crops."""

from dataclasses import replace

import torch

import xkd.data.finetune_views as fv
from xkd.config import FinetuneConfig


def test_train_and_test_views():
    g = torch.Generator().manual_seed(0)
    video = torch.zeros(3, 4, 16, 16)
    erased = fv.random_erasing(video, 1.0, g)
    assert (erased != 0).any() and ((erased != 0) == (erased != 0)[:, :1]).all()  # one box for every frame
    assert fv.random_erasing(video, 0.0, g) is video

    spec = torch.randn(1, 40, 100)
    assert torch.equal(fv.time_warp(spec, 0, g), spec)
    warped = fv.time_warp(spec, 10, g)
    assert warped.shape == spec.shape and not torch.equal(warped, spec)
    masked = fv.mask_bands(spec, -1, count=2, max_width=20, generator=g)
    zero_frames = (masked == 0).all(dim=1).sum().item()
    assert 0 < zero_frames <= 40 and ((masked == 0) | (masked == spec)).all()

    class Clip:
        video = torch.randint(0, 255, (16, 48, 64, 3), dtype=torch.uint8)
        audio = torch.randn(32000)

    view = fv.TestView("video", 3, 32, (0.5,) * 3, (0.2,) * 3, logmel=None)
    crops = view(Clip())["x"]
    assert crops.shape == (3, 3, 16, 32, 32) and not torch.equal(crops[0], crops[2])  # left and right differ
    assert fv.TestView("video", 1, 32, (0.5,) * 3, (0.2,) * 3, None)(Clip())["x"].shape == (1, 3, 16, 32, 32)


def test_video_train_view_follows_its_config():
    clip = type("Clip", (), {"video": torch.randint(0, 255, (4, 40, 60, 3), dtype=torch.uint8)})()
    cfg = FinetuneConfig(random_erase=0.0, video_view=replace(FinetuneConfig().video_view, crop_scale=(1.0, 1.0),
                                                                  crop_ratio=(1.5, 1.5), p_flip=1.0))
    out = fv.VideoTrainView(cfg, 24, (0.0,) * 3, (1.0,) * 3)(clip, torch.Generator().manual_seed(0))["x"]
    assert out.shape == (3, 4, 24, 24)
    unflipped = replace(cfg, video_view=replace(cfg.video_view, p_flip=0.0))
    same = fv.VideoTrainView(unflipped, 24, (0.0,) * 3, (1.0,) * 3)(clip, torch.Generator().manual_seed(0))["x"]
    assert torch.allclose(out, same.flip(-1), atol=1e-6)  # the whole frame, mirrored: p_flip reached the view
