"""Sample-level views: pretraining global/local views and downstream feature views."""

from dataclasses import dataclass, replace

import pytest
import torch

from xkd.config import AudioViewConfig, DataConfig, LogMelConfig, VideoViewConfig
from xkd.data.views import EvalViews, PretrainViews


def gen(seed):
    return torch.Generator().manual_seed(seed)


@dataclass
class FakeClip:
    video: torch.Tensor | None  # uint8 [T, H, W, 3]
    audio: torch.Tensor | None  # float [S]


class PowerMel:
    """Stand-in log-mel front end: centred Hann STFT power through a fixed non-negative filterbank. [S] -> [F, T]."""

    def __init__(self, cfg: LogMelConfig):
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        self.bank = torch.rand(cfg.n_mels, cfg.n_fft // 2 + 1, generator=gen(123))

    def __call__(self, wave):
        stft = torch.stft(wave, self.n_fft, self.hop, window=torch.hann_window(self.n_fft), return_complex=True)
        return torch.log(self.bank @ stft.abs() ** 2 + 1e-7)


def identity_frontend(wave):
    return wave.unsqueeze(0)


def random_clip(frames, height, width, samples, seed=0):
    g = gen(seed)
    video = torch.randint(0, 256, (frames, height, width, 3), dtype=torch.uint8, generator=g)
    return FakeClip(video, torch.randn(samples, generator=g))


def tiny_data_config(**overrides):
    """16 frames of 32x42 (short side 32), 2 s of 8 kHz audio, 40 mel bins."""
    cfg = DataConfig(
        clip_duration=2.0,
        resize_short=32,
        video_global=VideoViewConfig(crop_size=32),
        video_local=VideoViewConfig(crop_size=27, crop_scale=(0.08, 0.4), p_gray=0.2, p_blur=0.5),
        logmel=LogMelConfig(sample_rate=8000, n_fft=256, win_length=256, hop_length=125, n_mels=40),
        audio_local=AudioViewConfig(duration=0.5, gain=(0.8, 1.2), random_resize_crop=True),
    )
    return replace(cfg, **overrides)


def all_tensors(out):
    return out["frames"] + out["audio"]


@pytest.mark.parametrize("num_local_views", [1, 3])
def test_paper_shapes(num_local_views):
    data = DataConfig(num_local_views=num_local_views)
    views = PretrainViews(data, PowerMel(data.logmel))
    out = views(random_clip(32, 112, 149, 64000), gen(0))
    assert [f.shape for f in out["frames"]] == [(3, 32, 112, 112)] + [(3, 8, 96, 96)] * num_local_views
    assert [a.shape for a in out["audio"]] == [(1, 80, 448), (1, 80, 112)]


def test_tiny_shapes_and_determinism():
    data = tiny_data_config(num_local_views=2)
    views = PretrainViews(data, PowerMel(data.logmel))
    clip = random_clip(16, 32, 42, 16000)
    a, b, c = views(clip, gen(1)), views(clip, gen(1)), views(clip, gen(2))
    assert [f.shape for f in a["frames"]] == [(3, 16, 32, 32), (3, 4, 27, 27), (3, 4, 27, 27)]
    assert [x.shape for x in a["audio"]] == [(1, 40, 129), (1, 40, 33)]
    assert all(torch.equal(x, y) for x, y in zip(all_tensors(a), all_tensors(b)))
    assert all(not torch.allclose(x, y) for x, y in zip(all_tensors(a), all_tensors(c)))


def test_local_video_view_is_a_contiguous_run_of_source_frames():
    # frame k is filled with the value 8k; with every augmentation off, each output frame gives back its index
    keep_all = VideoViewConfig(
        crop_size=20, crop_scale=(1.0, 1.0), crop_ratio=(42 / 32, 42 / 32),
        p_flip=0.0, color_jitter=(0.0, 0.0, 0.0, 0.0), p_gray=0.0, p_blur=0.0,
    )
    data = tiny_data_config(
        video_local=keep_all, num_local_views=3, video_mean=(0.0, 0.0, 0.0), video_std=(1 / 255, 1 / 255, 1 / 255)
    )
    video = (8 * torch.arange(16, dtype=torch.uint8)).view(16, 1, 1, 1).expand(16, 32, 42, 3).contiguous()
    views = PretrainViews(data, PowerMel(data.logmel))
    starts = set()
    for seed in range(12):
        out = views(FakeClip(video, torch.randn(16000)), gen(seed))
        for local in out["frames"][1:]:
            assert local.shape == (3, 4, 20, 20)
            assert torch.allclose(local, local[:1, :, :1, :1].expand_as(local), atol=1e-3)  # frames stay flat
            index = (local[0, :, 0, 0] / 8).round().long()
            assert torch.allclose(local[0, :, 0, 0], 8.0 * index, atol=1e-3)
            assert torch.equal(index, index[0] + torch.arange(4)) and 0 <= index[0] <= 12
            starts.add(index[0].item())
    assert len(starts) > 3


def test_audio_views_share_the_window_and_the_local_one_is_a_segment():
    data = tiny_data_config(
        audio_global=AudioViewConfig(gain=(1.0, 1.0)),
        audio_local=AudioViewConfig(duration=0.5, start_multiple=100, gain=(1.0, 1.0)),
    )
    wave = torch.arange(16000, dtype=torch.float32)
    out = PretrainViews(data, identity_frontend)(FakeClip(random_clip(16, 32, 42, 0).video, wave), gen(3))
    whole, local = out["audio"]
    assert torch.equal(whole[0, 0], wave)
    start = int(local[0, 0, 0].item())
    assert start % 100 == 0 and torch.equal(local[0, 0], wave[start : start + 4000])


def test_eval_views_are_deterministic_and_skip_missing_modalities():
    mel_cfg = LogMelConfig(sample_rate=8000, n_fft=256, win_length=256, hop_length=125, n_mels=40)
    mel = PowerMel(mel_cfg)
    clip = random_clip(8, 32, 42, 16000)
    views = EvalViews(mel, 8000, crop_size=24)
    out = views(clip)
    assert out["video"].shape == (3, 8, 24, 24) and out["audio"].shape == (1, 40, 129)
    again = views(clip)
    assert torch.equal(out["video"], again["video"]) and torch.equal(out["audio"], again["audio"])
    assert torch.equal(out["audio"][0], mel(clip.audio))
    assert set(views(FakeClip(None, clip.audio))) == {"audio"}
    assert set(views(FakeClip(clip.video, None))) == {"video"}
    three = EvalViews(mel, 8000, crop_size=24, three_crop=True)(clip)
    assert three["video"].shape == (3, 3, 8, 24, 24)


def test_eval_views_with_svm_training_augmentation():
    mel = PowerMel(LogMelConfig(sample_rate=8000, n_fft=256, win_length=256, hop_length=125, n_mels=40))
    clip = random_clip(8, 32, 42, 16000)
    views = EvalViews(mel, 8000, crop_size=24, train_view="strong")
    a, b, c = views(clip, gen(0)), views(clip, gen(0)), views(clip, gen(1))
    assert a["video"].shape == (3, 8, 24, 24) and a["audio"].shape == (1, 40, 129)
    assert torch.equal(a["video"], b["video"]) and not torch.allclose(a["video"], c["video"])
    # volume jitter only: a log-power spectrum moves by one constant 2 log(gain), |gain - 1| <= 0.1
    shift = a["audio"] - mel(clip.audio)
    assert torch.allclose(shift, shift.mean().expand_as(shift), atol=1e-3)
    assert 2 * torch.log(torch.tensor(0.9)) <= shift.mean() <= 2 * torch.log(torch.tensor(1.1))
    with pytest.raises(ValueError):
        views(clip)
    with pytest.raises(ValueError):
        EvalViews(mel, 8000, train_view="mild", three_crop=True)
    with pytest.raises(ValueError, match="train_view"):
        EvalViews(mel, 8000, train_view="heavy")


def test_mild_training_view_is_the_test_view_jittered():
    """The classifier's default training view: no colour change, a small zoom / shift of the test crop, flips only
    when the task allows them."""
    mel = PowerMel(LogMelConfig(sample_rate=8000, n_fft=256, win_length=256, hop_length=125, n_mels=40))
    clip = random_clip(8, 32, 42, 16000)
    test = EvalViews(mel, 8000, crop_size=24, short_side=28)(clip)["video"]
    whole = EvalViews(mel, 8000, crop_size=24, short_side=28, train_view="mild", crop_scale=(1.0, 1.0), flip=False)
    assert torch.allclose(whole(clip, gen(0))["video"], test, atol=1e-5)  # scale 1, no flip: the test view itself
    mild = EvalViews(mel, 8000, crop_size=24, short_side=28, train_view="mild", crop_scale=(0.8, 1.0), flip=False)
    views = [mild(clip, gen(k))["video"] for k in range(8)]
    assert all(v.shape == test.shape for v in views) and not torch.allclose(views[0], views[1])
    # colours stay: every view's per-channel mean is close to the test view's (a strong view's jitter is not)
    for v in views:
        assert torch.allclose(v.mean(dim=(1, 2, 3)), test.mean(dim=(1, 2, 3)), atol=0.25)
    # flips: the mirror image of a zoomed test crop appears only with flip=True
    flipping = EvalViews(mel, 8000, crop_size=24, short_side=28, train_view="mild", crop_scale=(1.0, 1.0), flip=True)
    flipped = [torch.allclose(flipping(clip, gen(k))["video"], test.flip(-1), atol=1e-5) for k in range(16)]
    assert 0 < sum(flipped) < 16


def test_views_deferred_to_the_device_are_finished_there_like_the_loaders():
    from xkd.data.dataset import collate_clips
    from xkd.data.views import training_frames

    loader_side, device_side = tiny_data_config(), tiny_data_config(video_views_on="device")
    clip = random_clip(16, 32, 42, 16000)
    items = {cfg.video_views_on: [PretrainViews(cfg, PowerMel(cfg.logmel))(clip, gen(s)) for s in range(4)]
             for cfg in (loader_side, device_side)}
    assert all(f.dtype == torch.uint8 for f in items["device"][0]["frames"])
    for a, b in zip(items["loader"], items["device"]):  # the same draws: audio views equal
        assert all(torch.equal(x, y) for x, y in zip(a["audio"], b["audio"]))
    expected = training_frames(collate_clips(items["loader"]), loader_side, torch.device("cpu"))
    got = training_frames(collate_clips(items["device"]), device_side, torch.device("cpu"))
    for e, g in zip(expected, got):
        assert e.shape == g.shape and (e - g).abs().max() < 0.05  # uint8 rounding after ImageNet normalisation
