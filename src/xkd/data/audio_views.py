"""Audio augmentation: waveform segment, volume jitter, log-mel, BYOL-A random resize crop (spec §A2, §A10).

All randomness comes from a ``torch.Generator`` argument, so a view is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from xkd.config import AudioViewConfig

LogMel = Callable[[Tensor], Tensor]  # wave [S] -> log-mel [F, T]


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def random_segment_start(num_samples: int, length: int, multiple: int, generator: torch.Generator) -> int:
    """A uniform start in [0, num_samples - length] on a multiple of ``multiple`` samples."""
    if length > num_samples:
        raise ValueError(f"segment of {length} samples does not fit a waveform of {num_samples}")
    return multiple * _randint(0, (num_samples - length) // multiple, generator)


def random_resize_crop(
    spec: Tensor,
    virtual_crop_scale: Sequence[float],
    freq_scale: Sequence[float],
    time_scale: Sequence[float],
    generator: torch.Generator,
) -> Tensor:
    """BYOL-A RandomResizeCrop. spec: [C, F, T] -> [C, F, T].

    The spectrogram is centred on a zero canvas of size ``(int(F * vf), int(T * vt))`` with
    ``virtual_crop_scale = (vf, vt)``; a box of ``int(U(freq_scale) * F) x int(U(time_scale) * T)`` (clipped to the
    canvas) is taken at a uniform position on the canvas and resized back to ``[F, T]`` (bicubic, align_corners).
    """
    c, n_freq, n_time = spec.shape
    canvas_f, canvas_t = int(n_freq * virtual_crop_scale[0]), int(n_time * virtual_crop_scale[1])
    canvas = spec.new_zeros(c, canvas_f, canvas_t)
    top, left = (canvas_f - n_freq) // 2, (canvas_t - n_time) // 2
    canvas[:, top : top + n_freq, left : left + n_time] = spec
    h = min(max(int(_uniform(*freq_scale, generator) * n_freq), 1), canvas_f)
    w = min(max(int(_uniform(*time_scale, generator) * n_time), 1), canvas_t)
    i = _randint(0, canvas_f - h, generator)
    j = _randint(0, canvas_t - w, generator)
    box = canvas[:, i : i + h, j : j + w].unsqueeze(0)
    return F.interpolate(box, size=(n_freq, n_time), mode="bicubic", align_corners=True).squeeze(0)


class AudioView:
    """One random audio view: segment -> gain -> log-mel -> optional random resize crop.

    ``view(wave, generator)``: wave float [S] -> [1, F, T]. With ``cfg.duration`` set, a segment of
    ``round(duration * sample_rate)`` samples starting on a multiple of ``cfg.start_multiple`` is taken first;
    with None the whole window is used (the global view). The gain ~U(cfg.gain) multiplies the waveform.
    """

    def __init__(self, cfg: AudioViewConfig, logmel: LogMel, sample_rate: int):
        self.cfg = cfg
        self.logmel = logmel
        self.segment = None if cfg.duration is None else round(cfg.duration * sample_rate)

    def __call__(self, wave: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.cfg
        if self.segment is not None:
            start = random_segment_start(wave.shape[-1], self.segment, cfg.start_multiple, generator)
            wave = wave[start : start + self.segment]
        spec = self.logmel(wave * _uniform(*cfg.gain, generator)).unsqueeze(0)
        if cfg.random_resize_crop:
            spec = random_resize_crop(spec, cfg.virtual_crop_scale, cfg.freq_scale, cfg.time_scale, generator)
        return spec


def svm_train_audio_view(logmel: LogMel, sample_rate: int, volume_jitter: float = 0.1) -> AudioView:
    """The SVM feature-extraction training augmentation (spec §A10): the whole window, gain ~U(1 -+ jitter)."""
    cfg = AudioViewConfig(duration=None, gain=(1.0 - volume_jitter, 1.0 + volume_jitter), random_resize_crop=False)
    return AudioView(cfg, logmel, sample_rate)


class EvalAudioView:
    """Deterministic test view: the log-mel of the whole window. ``view(wave)``: wave [S] -> [1, F, T]."""

    def __init__(self, logmel: LogMel):
        self.logmel = logmel

    def __call__(self, wave: Tensor) -> Tensor:
        return self.logmel(wave).unsqueeze(0)
