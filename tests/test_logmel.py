import numpy as np
import pytest
import torch

from xkd.config import LogMelConfig
from xkd.data.logmel import LogMel, mel_filterbank

librosa = pytest.importorskip("librosa")


def sweep_and_noise(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A log sine sweep across the band plus white noise, so every mel band carries energy."""
    t = np.arange(round(seconds * sr)) / sr
    f0, f1 = 60.0, 0.45 * sr
    k = np.log(f1 / f0) / seconds
    sweep = 0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    return sweep + 0.05 * np.random.default_rng(seed).standard_normal(t.size)


def librosa_logmel(wave: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=wave,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=cfg.n_mels,
        fmin=cfg.f_min,
        fmax=cfg.f_max,
    )
    return np.log(mel + cfg.log_eps)


SMALL = LogMelConfig(sample_rate=22050, n_fft=512, win_length=400, hop_length=160, n_mels=64, f_min=50.0, f_max=9e3)


@pytest.mark.parametrize("cfg, seconds", [(LogMelConfig(), 4.0), (SMALL, 1.5)])
def test_matches_librosa(cfg, seconds):
    wave = sweep_and_noise(seconds, cfg.sample_rate)
    ours = LogMel(cfg, normalize=False)(torch.from_numpy(wave).float()).numpy()
    ref = librosa_logmel(wave, cfg)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4


def test_default_shape_is_80x448_and_normalisation():
    cfg = LogMelConfig()
    wave = torch.from_numpy(sweep_and_noise(4.0, 16000)).float()
    raw = LogMel(cfg, normalize=False)(wave)
    norm = LogMel(cfg)(wave)
    assert raw.shape == (80, 448) and LogMel(cfg).num_frames(64000) == 448
    torch.testing.assert_close(norm, (raw - cfg.norm_mean) / cfg.norm_std)


def test_filterbank_matches_librosa_slaney():
    for sr, n_fft, n_mels, fmin, fmax in [(16000, 1024, 80, 0.0, 8000.0), (22050, 512, 40, 300.0, 6000.0)]:
        ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_batched_leading_dims_and_no_state():
    module = LogMel()
    waves = torch.from_numpy(np.stack([sweep_and_noise(1.0, 16000, seed=s) for s in range(6)])).float()
    out = module(waves.reshape(2, 3, -1))
    assert out.shape == (2, 3, 80, 112)
    torch.testing.assert_close(out[1, 2], module(waves[5]))
    assert module.state_dict() == {}  # filterbank and window are rebuilt from the config
    assert torch.isfinite(module(torch.zeros(16000))).all()  # silence: log(eps), no -inf


def test_dataset_statistics_match_a_direct_computation(tmp_path):
    from media_fixtures import make_av
    from xkd.config import LogMelConfig
    from xkd.data.manifest import Manifest, ManifestRow
    from xkd.datasets.stats import logmel_stats

    for i, freq in enumerate((300.0, 2000.0)):
        make_av(tmp_path / f"{i}.mp4", seconds=2.0, freq=freq)
    manifest = Manifest([ManifestRow("0.mp4"), ManifestRow("1.mp4"), ManifestRow("missing.mp4")], tmp_path)
    cfg = LogMelConfig(n_mels=40)
    stats = logmel_stats(manifest, cfg, clip_duration=1.0, progress=False)
    assert stats["files"] == 2 and stats["skipped"] == 1
    front = LogMel(cfg, normalize=False)
    from xkd.data.media import decode_clip

    values = torch.cat([front(decode_clip(tmp_path / f"{i}.mp4", 0.5, 1.0, None, video=False).audio).flatten()
                        for i in range(2)]).double()
    assert stats["norm_mean"] == pytest.approx(values.mean().item(), rel=1e-6)
    assert stats["norm_std"] == pytest.approx(values.std(unbiased=False).item(), rel=1e-5)


def test_centred_bands_lose_their_mean_over_the_clip_before_normalisation():
    plain = LogMelConfig()
    centred = LogMelConfig(center_bands=True, norm_mean=0.0, norm_std=2.0)
    wave = torch.from_numpy(sweep_and_noise(2.0, 16000)).float()
    raw = LogMel(plain, normalize=False)(wave)
    expected = (raw - raw.mean(dim=-1, keepdim=True)) / 2.0
    torch.testing.assert_close(LogMel(centred)(wave), expected)
    # a gain is a constant in the log domain: centring removes it, as it removes a voice's or channel's average spectrum
    torch.testing.assert_close(LogMel(centred)(3 * wave), expected, atol=1e-4, rtol=0)
