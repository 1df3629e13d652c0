import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from media_fixtures import (
    chirp,
    make_av,
    make_empty,
    make_text,
    read_index,
    remux_faststart,
    tone,
    truncate,
)

from xkd.data.media import MediaError, clip_starts, decode_clip, probe
from xkd.data.window_samplers import resized_shape

ASSETS = Path(__file__).resolve().parents[1] / "src" / "xkd" / "assets" / "spoken_digits"


@pytest.fixture(scope="module")
def av25(tmp_path_factory):
    """4 s, 25 fps, 48x64 index-coded video with a 440 Hz mono tone at 16 kHz."""
    return make_av(tmp_path_factory.mktemp("media") / "av25.mp4", seconds=4.0, fps=25, size=(48, 64))


def nearest_frames(start: float, n: int, fps: int, src_fps: int) -> list[set[int]]:
    """Acceptable source frame indices for target k: the nearest one, or both at an exact tie."""
    out = []
    for k in range(n):
        pos = (Fraction(start).limit_denominator(10**6) + Fraction(k, fps)) * src_fps
        lo = int(pos)
        out.append({lo, lo + 1} if pos - lo == Fraction(1, 2) else {round(pos)})
    return out


@pytest.mark.parametrize("start, duration", [(1.0025, 2.0), (0.0, 4.0), (0.3, 1.0)])
def test_video_frames_are_nearest_by_timestamp(av25, start, duration):
    clip = decode_clip(av25, start, duration, fps=8)
    assert clip.video.dtype == torch.uint8 and clip.video.shape == (round(duration * 8), 48, 64, 3)
    got = [read_index(f) for f in clip.video]
    for k, (idx, ok) in enumerate(zip(got, nearest_frames(start, len(got), 8, 25))):
        assert idx in ok, f"frame {k}: got source frame {idx}, expected {ok}"
    assert clip.start == start and clip.duration == duration


def test_short_side_resize(tmp_path, av25):
    assert decode_clip(av25, 0.5, 1.0, fps=8, short_side=32).video.shape == (8, 32, 43, 3)
    portrait = make_av(tmp_path / "portrait.mp4", seconds=1.0, fps=8, size=(64, 48))
    clip = decode_clip(portrait, 0.0, 1.0, fps=8, short_side=24, audio=False)
    assert clip.video.shape == (8, 32, 24, 3)
    assert [read_index(f) for f in clip.video] == list(range(8))  # resizing keeps the content
    assert clip.audio is None
    assert resized_shape(1080, 1920, 112) == (112, 199) and resized_shape(50, 40, None) == (50, 40)


def test_audio_samples_are_aligned_by_timestamp(tmp_path):
    """A chirp decoded from inside the file (after a seek) matches the source sample for sample."""
    sr = 16000
    path = make_av(tmp_path / "chirp.mp4", seconds=3.0, fps=8, sample_rate=sr, audio=chirp(3.0, sr))
    clip = decode_clip(path, 1.3, 1.0, fps=8, sample_rate=sr)
    ref = chirp(3.0, sr)[round(1.3 * sr) : round(2.3 * sr)]
    assert clip.audio.dtype == torch.float32 and clip.audio.shape == (sr,)
    assert np.abs(clip.audio.numpy() - ref).max() < 0.01


def best_lag(y: np.ndarray, ref: np.ndarray, span: int = 64) -> int:
    return max(range(-span, span + 1), key=lambda lag: float(np.dot(np.roll(y, lag), ref)))


def test_stereo_48k_is_averaged_and_resampled_to_16k_mono(tmp_path):
    sr = 48000
    stereo = np.stack([tone(2.0, sr, 440.0), tone(2.0, sr, 1000.0)])  # 0.5 amplitude in each channel
    path = make_av(tmp_path / "stereo.mp4", seconds=2.0, sample_rate=sr, audio=stereo)
    wave = decode_clip(path, 0.5, 1.0, fps=8, sample_rate=16000, video=False).audio.numpy()
    assert wave.shape == (16000,)
    amp = np.abs(np.fft.rfft(wave)) / len(wave) * 2  # 1 Hz bins
    assert amp[440] == pytest.approx(0.25, abs=0.02) and amp[1000] == pytest.approx(0.25, abs=0.02)
    assert np.delete(amp, [440, 1000]).max() < 0.02
    mono = make_av(tmp_path / "chirp48.mp4", seconds=3.0, sample_rate=sr, audio=chirp(3.0, sr))
    wave = decode_clip(mono, 1.3, 1.0, fps=8, sample_rate=16000).audio.numpy()
    ref = chirp(3.0, 16000)[round(1.3 * 16000) : round(2.3 * 16000)]
    assert best_lag(wave, ref) == 0 and np.corrcoef(wave, ref)[0, 1] > 0.98


def test_tone_frequency_survives(av25):
    wave = decode_clip(av25, 1.0, 2.0, fps=8, audio=True).audio.numpy()
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) * 16000 / len(wave) == pytest.approx(440.0, abs=0.5)


def test_missing_audio_policies(tmp_path):
    path = make_av(tmp_path / "mute.mp4", seconds=2.0, fps=8, audio=False)
    with pytest.raises(MediaError) as err:
        decode_clip(path, 0.0, 1.0, fps=8)
    assert err.value.reason == "no-audio" and err.value.path == str(path)
    clip = decode_clip(path, 0.5, 1.0, fps=8, missing_audio="silence")
    assert clip.audio.shape == (16000,) and not clip.audio.any()
    assert [read_index(f) for f in clip.video] == list(range(4, 12))
    with pytest.raises(MediaError, match="no-video"):
        decode_clip(make_av(tmp_path / "a.m4a", seconds=1.0, video=False), 0.0, 0.5, fps=8)


def test_too_short(tmp_path):
    path = make_av(tmp_path / "two.mp4", seconds=2.0, fps=8)
    whole = decode_clip(path, 0.0, 2.0, fps=8)  # an exact fit is not too short
    assert whole.video.shape[0] == 16 and whole.audio.shape == (32000,)
    for start, duration, video, audio in [(1.5, 1.0, True, True), (1.5, 1.0, False, True), (1.5, 1.0, True, False)]:
        with pytest.raises(MediaError) as err:
            decode_clip(path, start, duration, fps=8, video=video, audio=audio)
        assert err.value.reason == "too-short"


def test_broken_files_raise_media_errors(tmp_path, av25):
    moov_last = truncate(make_av(tmp_path / "cut.mp4", seconds=2.0), 0.5)
    faststart = truncate(remux_faststart(av25, tmp_path / "web.mp4"), 0.5)
    cases = {
        make_empty(tmp_path / "empty.mp4"): "empty-file",
        make_text(tmp_path / "renamed.mp4"): "unreadable",
        moov_last: "truncated",
        faststart: "truncated",
        tmp_path / "missing.mp4": "not-found",
    }
    for path, reason in cases.items():
        for call in (lambda: probe(path), lambda: decode_clip(path, 0.0, 0.5, fps=8)):
            with pytest.raises(MediaError) as err:
                call()
            assert err.value.reason == reason and str(path) in str(err.value)
    copy = pickle.loads(pickle.dumps(err.value))  # crosses DataLoader worker boundaries intact
    assert (copy.path, copy.reason) == (err.value.path, err.value.reason)


def test_probe(tmp_path, av25):
    info = probe(av25)
    assert (info.has_video, info.has_audio, info.width, info.height) == (True, True, 64, 48)
    assert info.fps == 25 and info.sample_rate == 16000 and info.channels == 1
    assert info.duration == pytest.approx(4.0, abs=0.01) and info.video_duration == pytest.approx(4.0, abs=0.01)
    stereo = make_av(tmp_path / "s.mp4", seconds=1.0, video=False, sample_rate=48000, audio=np.zeros((2, 48000)))
    info = probe(stereo)
    assert (info.has_video, info.sample_rate, info.channels, info.width) == (False, 48000, 2, None)
    assert info.common_duration() == pytest.approx(1.0, abs=0.03)


def test_raw_g722_audio_only():
    path = ASSETS / "en_US_f_Allison" / "3.g722"
    info = probe(path)
    assert not info.has_video and info.sample_rate == 16000
    assert info.duration == pytest.approx(path.stat().st_size * 2 / 16000, abs=0.01)  # 4 bits per sample
    clip = decode_clip(path, 0.2, 0.5, fps=8, video=False)
    assert clip.video is None and clip.audio.shape == (8000,) and clip.audio.abs().max() > 0.05
    assert decode_clip(path, 0.0, 0.8, fps=8, video=False, sample_rate=8000).audio.shape == (6400,)


def test_clip_starts():
    assert clip_starts(10.0, 4.0, 3, "uniform") == [0.0, 3.0, 6.0]
    assert clip_starts(10.0, 4.0, 1, "uniform") == [3.0]
    assert clip_starts(3.0, 4.0, 2, "uniform") == [0.0, 0.0]
    a = clip_starts(10.0, 4.0, 5, "random", torch.Generator().manual_seed(1))
    b = clip_starts(10.0, 4.0, 5, "random", torch.Generator().manual_seed(1))
    assert a == b and all(0.0 <= s <= 6.0 for s in a) and len(set(a)) == 5
    with pytest.raises(ValueError):
        clip_starts(10.0, 4.0, 1, "middle")
