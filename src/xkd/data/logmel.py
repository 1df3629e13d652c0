"""Log-mel spectrogram in torch, matching librosa's conventions (spec §A2).

The original code computes ``librosa.feature.melspectrogram`` (centred STFT, Hann window, power 2, Slaney mel scale
and Slaney area normalisation) then ``log(mel + eps)`` and a fixed mean/std normalisation. This module reproduces that
in torch: the signal is reflect-padded by ``n_fft // 2`` on each side (librosa's padding before version 0.10; librosa
0.10+ pads with zeros unless ``pad_mode="reflect"`` is given), the Hann window is periodic and centred in ``n_fft``
when ``win_length < n_fft``, and the mel filterbank is built here from the Slaney formulas rather than by librosa.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from xkd.config import LogMelConfig

_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular Slaney mel filters with area (Slaney) normalisation -> float64 ``[n_mels, n_fft // 2 + 1]``."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(edges_hz)  # [n_mels + 1]
    ramps = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, F]
    lower = -ramps[:-2] / widths[:-1, None]  # rising edge of filter m, from edge m to edge m + 1
    upper = ramps[2:] / widths[1:, None]  # falling edge, from edge m + 1 to edge m + 2
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # each filter has unit area in Hz / 2


class LogMel(nn.Module):
    """Waveform -> normalised log-mel spectrogram.

    ``forward(wave: [..., S]) -> [..., n_mels, 1 + S // hop_length]``; e.g. 4 s at 16 kHz -> ``[80, 448]``.
    With ``center_bands`` each band first loses its mean over the frames; with ``normalize`` the output is then
    ``(x - norm_mean) / norm_std``.
    """

    def __init__(self, cfg: LogMelConfig | None = None, normalize: bool = True):
        super().__init__()
        cfg = cfg if cfg is not None else LogMelConfig()
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"win_length {cfg.win_length} must not exceed n_fft {cfg.n_fft}")
        if not 0 <= cfg.f_min < cfg.f_max <= cfg.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {cfg.f_min}, {cfg.f_max}")
        self.cfg = cfg
        self.normalize = normalize
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        # not persistent: both are rebuilt from the config, so checkpoints do not depend on them
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)  # [n_mels, F]
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        lead = wave.shape[:-1]
        x = wave.reshape(-1, wave.shape[-1]).float()  # [B, S]
        if x.shape[-1] <= cfg.n_fft // 2:
            raise ValueError(f"reflect padding needs more than n_fft // 2 = {cfg.n_fft // 2} samples")
        spec = torch.stft(
            x,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # [B, F, frames]; the window is zero-padded to n_fft, centred, as librosa does
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.mel_fb, power)  # [B, n_mels, frames]
        out = torch.log(mel + cfg.log_eps)
        if cfg.center_bands:  # per-clip mean normalisation: removes the clip's average spectrum (voice, channel)
            out = out - out.mean(dim=-1, keepdim=True)
        if self.normalize:
            out = (out - cfg.norm_mean) / cfg.norm_std
        return out.reshape(*lead, *out.shape[-2:])

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples."""
        return 1 + num_samples // self.cfg.hop_length

    def extra_repr(self) -> str:
        c = self.cfg
        return f"sr={c.sample_rate}, n_fft={c.n_fft}, hop={c.hop_length}, n_mels={c.n_mels}, normalize={self.normalize}"
