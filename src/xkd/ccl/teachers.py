"""Frozen teachers behind one interface (spec §B2): any image or audio model a user has, plus packaged ones.

A :class:`Teacher` maps a batch to features and never trains:

- image teachers: ``features(images: [B, 3, H, W] float in [0, 1]) -> [B, D]``;
- audio teachers: ``features(wave: [B, S] float in [-1, 1] at teacher.sample_rate) -> [B, N, D]``, a sequence of
  N time steps (N = 1 for a model that embeds the whole clip), as CCL's precomputed CNN14 sequences.

Each teacher does its own preprocessing (resize, grayscale, normalisation, int16 scaling), runs under ``no_grad`` in
eval mode with frozen parameters, and has a :attr:`Teacher.fingerprint` (weights digest + preprocessing) that keys its
feature cache. Nothing is downloaded: a missing package or file raises :class:`TeacherUnavailableError` saying how to
get it.

The teachers that ship in wheels are in :mod:`xkd.ccl.packaged`; the kinds a config can name and the builder,
in :mod:`xkd.ccl.teacher_kinds`.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xkd.ccl.config import TeacherConfig
from xkd.data.video_views import LUMA_WEIGHTS

CCL_EXTRA = "pip install 'xkd[ccl]'"


class TeacherUnavailableError(FileNotFoundError):
    """A teacher whose package or weights file is not on this machine; the message says how to get it."""


def file_digest(path: str | Path, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of a file (a teacher's weights identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def package_file(package: str, relative: str, install: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package.

    Raises :class:`TeacherUnavailableError` naming ``install`` (the pip command that provides it) when the package or
    the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise TeacherUnavailableError(
            f"the Python package '{package}' is not installed; it ships this teacher's weights (nothing is downloaded "
            f"at run time). Install it with: {install}"
        )
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise TeacherUnavailableError(
            f"'{package}' is installed but {path} is missing (a damaged install?); reinstall it with: {install}"
        )
    return path


def user_file(path: str, kind: str) -> Path:
    """A user-supplied teacher file, or a :class:`TeacherUnavailableError` explaining how to make one."""
    how = {
        "torchscript": "save your model with torch.jit.save(torch.jit.script(model), PATH) (or torch.jit.trace)",
        "onnx": "export your model with torch.onnx.export(model, example_input, PATH)",
        "safetensors": "save the weights with safetensors.torch.save_file(model.state_dict(), PATH)",
    }[kind]
    if not path:
        raise TeacherUnavailableError(f"a '{kind}' teacher needs 'path' (the model file): {how}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise TeacherUnavailableError(
            f"teacher file not found: {p}. xkd never downloads teachers; {how}. An AudioSet model such as PANNs "
            "CNN14 must be obtained and exported by you (see docs/CCL.md)"
        )
    return p


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for every parameter of ``module``; returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def resize_images(images: Tensor, size: int) -> Tensor:
    """Bilinear resize (antialiased when shrinking) to ``size x size``. images: [B, C, H, W] -> [B, C, size, size]."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = size < images.shape[-2] or size < images.shape[-1]
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def grayscale(images: Tensor) -> Tensor:
    """ITU-R 601 luma. images: [B, 3, H, W] -> [B, 1, H, W]."""
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def normalize_images(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(images - mean) / std per channel. images: [B, C, H, W], mean / std: C values (or one for all channels)."""
    m = images.new_tensor(mean).view(1, -1, 1, 1)
    s = images.new_tensor(std).view(1, -1, 1, 1)
    return (images - m) / s


class Teacher(nn.Module, metaclass=abc.ABCMeta):
    """A frozen feature extractor. Subclasses set ``modality``, ``dim`` (and ``sample_rate`` for audio) and implement
    :meth:`_features` (a subclass without it cannot be instantiated); callers use :meth:`features`, which runs it in
    eval mode without gradients."""

    modality: str = "image"  # "image" or "audio"
    dim: int = 0
    sample_rate: int = 16000  # audio teachers: the rate their input waveform must have

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self._identity: list[str] = [name]

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode whatever its owner does."""
        return super().train(False)

    @property
    def fingerprint(self) -> str:
        """Identity of the weights and the preprocessing: equal fingerprints give equal features."""
        text = "|".join(self._identity + [f"dim={self.dim}", f"sr={self.sample_rate}"])
        return f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    @abc.abstractmethod
    def _features(self, x: Tensor) -> Tensor:
        """The teacher's own computation on validated float32 input (see :meth:`features`)."""

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """image: x [B, 3, H, W] in [0, 1] -> [B, D]; audio: x [B, S] in [-1, 1] -> [B, N, D]. Always float32."""
        self.train(False)
        if self.modality == "image" and (x.ndim != 4 or x.shape[1] != 3):
            raise ValueError(f"{self.name}: images must be [B, 3, H, W], got {tuple(x.shape)}")
        if self.modality == "audio" and x.ndim != 2:
            raise ValueError(f"{self.name}: waveforms must be [B, S], got {tuple(x.shape)}")
        out = self._features(x.float()).float()
        expected = 2 if self.modality == "image" else 3
        if out.ndim != expected or out.shape[-1] != self.dim:
            raise RuntimeError(f"{self.name}: expected features of {expected} dims ending in {self.dim}, "
                               f"got {tuple(out.shape)}")
        return out


class OnnxModel:
    """One onnxruntime CPU session: ``model(array) -> array`` for the first input and first output."""

    def __init__(self, path: str | Path, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            raise TeacherUnavailableError(
                f"running the ONNX model {path} needs onnxruntime: pip install onnxruntime==1.31.1 (or {CCL_EXTRA})"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's errors derive from Exception only (InvalidProtobuf, Fail, ...)
            raise ValueError(f"onnxruntime cannot load {path}: {type(e).__name__}: {e}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})[0]


class _FilePreprocessing:
    """The preprocessing a user's file teacher declares in its :class:`TeacherConfig`."""

    def __init__(self, cfg: TeacherConfig, modality: str):
        self.cfg = cfg
        self.modality = modality

    def identity(self) -> list[str]:
        c = self.cfg
        if self.modality == "image":
            return [f"size={c.input_size}", f"gray={c.grayscale}", f"mean={c.mean}", f"std={c.std}"]
        return [f"scale={c.input_scale}"]

    def __call__(self, x: Tensor) -> Tensor:
        c = self.cfg
        if self.modality == "audio":
            return x * c.input_scale
        if c.grayscale:
            x = grayscale(x)
        if c.input_size > 0:
            x = resize_images(x, c.input_size)
        return normalize_images(x, c.mean, c.std)


def _as_features(out: Tensor, modality: str, name: str) -> Tensor:
    """A model's raw output as [B, D] (image) or [B, N, D] (audio), after dropping every size-1 axis but the batch
    (e.g. [B, D, 1, 1] pooled maps, [B, 1, N, D] sequences)."""
    out = out.reshape(out.shape[0], *[n for n in out.shape[1:] if n != 1])
    if modality == "image":
        if out.ndim != 2:
            raise RuntimeError(f"{name}: an image teacher must return [B, D] features, got {tuple(out.shape)}")
        return out
    if out.ndim == 2:
        return out.unsqueeze(1)
    if out.ndim != 3:
        raise RuntimeError(f"{name}: an audio teacher must return [B, D] or [B, N, D], got {tuple(out.shape)}")
    return out


class ModuleTeacher(Teacher):
    """A user's ``nn.Module`` (TorchScript file, or safetensors weights + factory) as a teacher."""

    def __init__(self, name: str, module: nn.Module, cfg: TeacherConfig, modality: str, digest: str, probe: Tensor):
        super().__init__(name)
        self.modality = modality
        self.sample_rate = cfg.sample_rate
        self.model = freeze(module)
        self.pre = _FilePreprocessing(cfg, modality)
        self._identity += [digest, *self.pre.identity()]
        self.dim = int(self._run(probe).shape[-1])

    def _run(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return _as_features(self.model(self.pre(x)), self.modality, self.name)

    def _features(self, x: Tensor) -> Tensor:
        return self._run(x)


class OnnxTeacher(Teacher):
    """A user's ONNX model as a teacher (first input, first output)."""

    def __init__(self, name: str, path: Path, cfg: TeacherConfig, modality: str, probe: Tensor):
        super().__init__(name)
        self.modality = modality
        self.sample_rate = cfg.sample_rate
        self.model = OnnxModel(path, cfg.threads)
        self.pre = _FilePreprocessing(cfg, modality)
        self._identity += [file_digest(path), *self.pre.identity()]
        self.dim = int(self._features(probe).shape[-1])

    def _features(self, x: Tensor) -> Tensor:
        out = torch.from_numpy(self.model(self.pre(x).cpu().numpy())).to(x.device)
        return _as_features(out, self.modality, self.name)
