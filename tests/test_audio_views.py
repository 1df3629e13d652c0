"""Audio views: segment position, gain, log-mel shapes, BYOL-A random resize crop."""

import pytest
import torch

from xkd.config import AudioViewConfig
from xkd.data import audio_views as av


def gen(seed):
    return torch.Generator().manual_seed(seed)


class PowerMel:
    """Stand-in front end: centred Hann STFT power through a fixed non-negative filterbank. wave [S] -> [F, T].

    ``log=False`` keeps it linear in power, so a waveform gain g scales it by exactly g**2.
    """

    def __init__(self, n_mels=80, n_fft=1024, hop=143, log=True):
        self.n_fft, self.hop, self.log = n_fft, hop, log
        self.bank = torch.rand(n_mels, n_fft // 2 + 1, generator=gen(123))

    def __call__(self, wave):
        stft = torch.stft(wave, self.n_fft, self.hop, window=torch.hann_window(self.n_fft), return_complex=True)
        mel = self.bank @ stft.abs() ** 2
        return torch.log(mel + 1e-7) if self.log else mel


def identity_frontend(wave):
    """wave [S] -> [1, S]: lets a test read back which samples the view used."""
    return wave.unsqueeze(0)


# ------------------------------------------------------------------------------------------------ segments


def test_segment_start_is_a_multiple_within_range():
    g = gen(0)
    starts = {av.random_segment_start(64000, 16000, 100, g) for _ in range(2000)}
    assert all(s % 100 == 0 and 0 <= s <= 48000 for s in starts)
    assert len(starts) > 440  # 481 possible starts; uniform draws reach about 474 of them
    small = {av.random_segment_start(1000, 700, 100, gen(s)) for s in range(100)}
    assert small == {0, 100, 200, 300}
    with pytest.raises(ValueError):
        av.random_segment_start(100, 200, 10, gen(0))


def test_local_view_reads_a_segment_starting_on_the_multiple():
    wave = torch.arange(20000, dtype=torch.float32)
    cfg = AudioViewConfig(duration=0.25, start_multiple=100, gain=(1.0, 1.0))
    view = av.AudioView(cfg, identity_frontend, sample_rate=16000)
    starts = set()
    for seed in range(20):
        out = view(wave, gen(seed))
        assert out.shape == (1, 1, 4000)
        start = int(out[0, 0, 0].item())
        assert start % 100 == 0
        assert torch.equal(out[0, 0], wave[start : start + 4000])
        starts.add(start)
    assert len(starts) > 1


@pytest.mark.parametrize(
    "frontend, cfg, samples, shape",
    [
        (PowerMel(), AudioViewConfig(), 64000, (1, 80, 448)),  # paper global: 4 s
        (PowerMel(), AudioViewConfig(duration=1.0, gain=(0.8, 1.2), random_resize_crop=True), 64000, (1, 80, 112)),
        (PowerMel(40, 512, 250), AudioViewConfig(), 16000, (1, 40, 65)),  # tiny global: 1 s
        (PowerMel(40, 512, 250), AudioViewConfig(duration=0.25, random_resize_crop=True), 16000, (1, 40, 17)),
    ],
)
def test_audio_view_shape_determinism_and_variation(frontend, cfg, samples, shape):
    wave = torch.randn(samples, generator=gen(0))
    view = av.AudioView(cfg, frontend, sample_rate=16000)
    a, b, c = view(wave, gen(1)), view(wave, gen(1)), view(wave, gen(2))
    assert a.shape == shape and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)


# ------------------------------------------------------------------------------------------------ gain


def test_gain_scales_the_power_spectrum_by_its_square():
    wave = torch.randn(8000, generator=gen(3))
    linear = PowerMel(16, 256, 64, log=False)
    plain = av.AudioView(AudioViewConfig(gain=(1.0, 1.0)), linear, 16000)(wave, gen(0))
    loud = av.AudioView(AudioViewConfig(gain=(1.5, 1.5)), linear, 16000)(wave, gen(0))
    assert torch.allclose(loud, 2.25 * plain, rtol=1e-4)
    ratios = set()
    for seed in range(5):
        ratio = av.AudioView(AudioViewConfig(gain=(0.8, 1.2)), linear, 16000)(wave, gen(seed)) / plain
        assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-3)  # one gain for the whole view
        assert 0.64 - 1e-4 <= ratio.mean() <= 1.44 + 1e-4
        ratios.add(round(ratio.mean().item(), 4))
    assert len(ratios) == 5


def test_svm_train_view_is_volume_jitter_on_the_whole_window():
    wave = torch.randn(4000, generator=gen(4))
    view = av.svm_train_audio_view(identity_frontend, 16000, volume_jitter=0.1)
    gains = []
    for seed in range(20):
        out = view(wave, gen(seed))
        gain = out[0, 0, 0] / wave[0]
        assert torch.allclose(out[0, 0], gain * wave, rtol=1e-5)
        gains.append(gain.item())
    assert 0.9 <= min(gains) < max(gains) <= 1.1


def test_eval_view_is_the_plain_log_mel():
    wave = torch.randn(16000, generator=gen(5))
    mel = PowerMel()
    assert torch.equal(av.EvalAudioView(mel)(wave), mel(wave).unsqueeze(0))


# ------------------------------------------------------------------------------------------------ random resize crop


def test_random_resize_crop_keeps_the_shape():
    spec = torch.randn(1, 80, 112, generator=gen(6))
    for seed in range(10):
        out = av.random_resize_crop(spec, (1.0, 1.5), (0.6, 1.5), (0.6, 1.5), gen(seed))
        assert out.shape == spec.shape and torch.isfinite(out).all()
    a = av.random_resize_crop(spec, (1.0, 1.5), (0.6, 1.5), (0.6, 1.5), gen(1))
    assert torch.equal(a, av.random_resize_crop(spec, (1.0, 1.5), (0.6, 1.5), (0.6, 1.5), gen(1)))
    assert not torch.allclose(a, av.random_resize_crop(spec, (1.0, 1.5), (0.6, 1.5), (0.6, 1.5), gen(2)))


def test_random_resize_crop_with_unit_scales_is_identity():
    spec = torch.randn(1, 40, 30, generator=gen(7))
    out = av.random_resize_crop(spec, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0), gen(0))
    assert torch.allclose(out, spec, atol=1e-5)


def test_random_resize_crop_slides_over_a_centred_zero_canvas():
    # unit crop scales on a 1.5x wider canvas: the output is a window of the canvas, with zeros where it overhangs
    spec = torch.rand(1, 8, 20, generator=gen(8)) + 1.0
    canvas = torch.zeros(1, 8, 30)
    canvas[:, :, 5:25] = spec
    offsets = set()
    for seed in range(30):
        out = av.random_resize_crop(spec, (1.0, 1.5), (1.0, 1.0), (1.0, 1.0), gen(seed))
        matches = [j for j in range(11) if torch.allclose(out, canvas[:, :, j : j + 20], atol=1e-5)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 3


def test_random_resize_crop_zooms_into_a_smaller_box():
    # a half-size box resized back up: a linear ramp along time stays a ramp spanning about half the values
    ramp = torch.linspace(0, 1, 40).expand(1, 16, 40).contiguous()
    out = av.random_resize_crop(ramp, (1.0, 1.0), (0.5, 0.5), (0.5, 0.5), gen(9))
    span = out[0, 0, -1] - out[0, 0, 0]
    assert span.item() == pytest.approx(19 / 39, abs=1e-4)
    assert torch.allclose(out[0], out[0, :1].expand(16, 40), atol=1e-5)  # constant along frequency
