"""Video augmentation: functional ops on clips and the view transforms built from them (spec §A2, §A10).

Every op acts on a float clip ``video: [C, T, H, W]`` with values in [0, 1] and treats all frames alike, so an
augmented clip stays temporally consistent. The ops follow torchvision's tensor semantics (re-implemented here;
torchvision is not a dependency). All randomness comes from a ``torch.Generator`` argument, so a view is
reproducible from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from xkd.config import VideoViewConfig

LUMA_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as in torchvision's rgb_to_grayscale


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


# ---------------------------------------------------------------------------------------------------------------------
# geometry


def to_float(video: Tensor) -> Tensor:
    """uint8 [C, T, H, W] in [0, 255] -> float32 [C, T, H, W] in [0, 1]."""
    return video.float().div_(255.0)


def random_resized_crop_params(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """A crop box ``(top, left, h, w)`` with area fraction ~U(scale) and log-uniform aspect ratio w/h in ratio.

    torchvision semantics: 10 tries, then a centre crop of the whole image clamped to the ratio range.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def crop(video: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """video: [C, T, H, W] -> [C, T, height, width] (a view; any dtype)."""
    return video[..., top : top + height, left : left + width]


def resize(video: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of every frame to ``size = (h, w)``, antialiased when shrinking. video: [C, T, H, W]."""
    in_h, in_w = video.shape[-2:]
    if (in_h, in_w) == tuple(size):
        return video
    frames = video.transpose(0, 1)  # [T, C, H, W]: frames are the batch
    antialias = size[0] < in_h or size[1] < in_w
    out = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return out.transpose(0, 1).contiguous()


def resize_short_side(video: Tensor, short_side: int) -> Tensor:
    """Resize so the shorter side is ``short_side``, keeping the aspect ratio (the long side is truncated to int)."""
    h, w = video.shape[-2:]
    if h <= w:
        size = (short_side, int(short_side * w / h))
    else:
        size = (int(short_side * h / w), short_side)
    return resize(video, size)


def center_crop(video: Tensor, size: int) -> Tensor:
    """A centred ``size x size`` crop. video: [C, T, H, W] with H, W >= size."""
    h, w = video.shape[-2:]
    return crop(video, round((h - size) / 2), round((w - size) / 2), size, size)


def three_crop(video: Tensor, size: int) -> Tensor:
    """Start / centre / end ``size x size`` crops along the long side -> [3, C, T, size, size]."""
    h, w = video.shape[-2:]
    top, left = round((h - size) / 2), round((w - size) / 2)
    if h > w:
        boxes = [(0, left), (top, left), (h - size, left)]
    else:
        boxes = [(top, 0), (top, left), (top, w - size)]
    return torch.stack([crop(video, t, l, size, size) for t, l in boxes])


def hflip(video: Tensor) -> Tensor:
    """Mirror every frame left-right. video: [C, T, H, W]."""
    return video.flip(-1)


# ---------------------------------------------------------------------------------------------------------------------
# colour


def rgb_to_grayscale(video: Tensor) -> Tensor:
    """Luma of an RGB clip. video: [3, T, H, W] -> [1, T, H, W]."""
    r, g, b = video.unbind(0)
    return (LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b).unsqueeze(0)


def grayscale(video: Tensor) -> Tensor:
    """Grey RGB clip: every channel holds the luma. video: [3, T, H, W] -> [3, T, H, W]."""
    return rgb_to_grayscale(video).expand_as(video).contiguous()


def _blend(video: Tensor, other: Tensor, factor: float) -> Tensor:
    return (factor * video + (1.0 - factor) * other).clamp_(0.0, 1.0)


def adjust_brightness(video: Tensor, factor: float) -> Tensor:
    """Scale intensities by ``factor`` (0 = black, 1 = unchanged)."""
    return _blend(video, torch.zeros_like(video), factor)


def adjust_contrast(video: Tensor, factor: float) -> Tensor:
    """Blend each frame with its mean luma (0 = flat grey frame, 1 = unchanged)."""
    mean = rgb_to_grayscale(video).mean(dim=(-2, -1), keepdim=True)  # [1, T, 1, 1]: per frame, as torchvision
    return _blend(video, mean, factor)


def adjust_saturation(video: Tensor, factor: float) -> Tensor:
    """Blend with the grayscale clip (0 = grey, 1 = unchanged)."""
    return _blend(video, rgb_to_grayscale(video), factor)


def rgb_to_hsv(video: Tensor) -> Tensor:
    """RGB [3, ...] in [0, 1] -> HSV [3, ...], all channels in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = video.unbind(0)
    maxc, minc = video.max(dim=0).values, video.min(dim=0).values
    flat = maxc == minc
    chroma = maxc - minc
    sat = chroma / torch.where(flat, torch.ones_like(maxc), maxc)
    divisor = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack((hue, sat, maxc))


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV [3, ...] -> RGB [3, ...] (inverse of :func:`rgb_to_hsv`).

    Channel n in (r, g, b) = (5, 3, 1) is ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``: the
    six-sector formula in one expression for all three channels.
    """
    h, s, v = hsv.unbind(0)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(3, *([1] * h.dim()))
    k = (n + 6.0 * h).remainder_(6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def adjust_hue(video: Tensor, shift: float) -> Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]) in HSV space. video: [3, T, H, W]."""
    hsv = rgb_to_hsv(video)
    hsv[0] = torch.remainder(hsv[0] + shift, 1.0)
    return hsv_to_rgb(hsv)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter_params(
    strength: Sequence[float], generator: torch.Generator
) -> tuple[list[int], list[float | None]]:
    """Draw a jitter once per clip: a random order of the 4 ops and their factors.

    strength = (brightness, contrast, saturation, hue). Brightness, contrast and saturation factors are
    ~U(max(0, 1 - s), 1 + s); the hue shift is ~U(-s, s). An op with strength 0 gets factor None (skipped).
    Returns (order, factors), factors indexed like ``strength``.
    """
    order = torch.randperm(4, generator=generator).tolist()
    factors: list[float | None] = []
    for i, s in enumerate(strength):
        if s == 0:
            factors.append(None)
        elif i == 3:
            factors.append(_uniform(-s, s, generator))
        else:
            factors.append(_uniform(max(0.0, 1.0 - s), 1.0 + s, generator))
    return order, factors


def apply_color_jitter(video: Tensor, order: Sequence[int], factors: Sequence[float | None]) -> Tensor:
    """Apply brightness / contrast / saturation / hue (indices 0..3) in ``order``; None factors are skipped."""
    for i in order:
        if factors[i] is not None:
            video = _JITTER_OPS[i](video, factors[i])
    return video


def color_jitter(video: Tensor, strength: Sequence[float], generator: torch.Generator) -> Tensor:
    """torchvision ColorJitter with factors drawn once for the whole clip. video: [3, T, H, W]."""
    order, factors = color_jitter_params(strength, generator)
    return apply_color_jitter(video, order, factors)


# ---------------------------------------------------------------------------------------------------------------------
# blur and normalisation


def gaussian_kernel1d(kernel_size: int, sigma: float) -> Tensor:
    """Normalised 1-D Gaussian taps centred on the middle tap: [kernel_size]."""
    x = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    return pdf / pdf.sum()


def gaussian_blur(video: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of every frame with reflect padding. video: [C, T, H, W], kernel_size odd."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    c, t, h, w = video.shape
    kernel = gaussian_kernel1d(kernel_size, sigma).to(video)
    pad = kernel_size // 2
    x = F.pad(video.reshape(c * t, 1, h, w), (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, kernel_size, 1))
    x = F.conv2d(x, kernel.view(1, 1, 1, kernel_size))
    return x.view(c, t, h, w)


def normalize(video: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(video - mean) / std per channel. video: [C, T, H, W]."""
    m = torch.as_tensor(mean, dtype=video.dtype).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=video.dtype).view(-1, 1, 1, 1)
    return (video - m) / s


# ---------------------------------------------------------------------------------------------------------------------
# views


def svm_train_video_config(crop_size: int) -> VideoViewConfig:
    """The SVM feature-extraction training augmentation (spec §A10): RRC (0.08, 1), flip, jitter, gray 0.2."""
    return VideoViewConfig(
        crop_size=crop_size,
        crop_scale=(0.08, 1.0),
        p_flip=0.5,
        color_jitter=(0.4, 0.4, 0.4, 0.2),
        p_color=1.0,
        p_gray=0.2,
        p_blur=0.0,
    )


class VideoView:
    """One random video view: RRC -> flip -> colour jitter -> grayscale -> blur -> normalise.

    ``view(video, generator)``: video uint8 [T, H, W, 3] -> float [3, T, S, S], S = cfg.crop_size. One coin is
    drawn per op on every call (also when its probability is 0 or 1), so changing a probability never shifts the
    other random draws of the same seed.
    """

    def __init__(self, cfg: VideoViewConfig, mean: Sequence[float], std: Sequence[float]):
        self.cfg = cfg
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, video: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.cfg
        _, height, width, _ = video.shape
        box = random_resized_crop_params(height, width, cfg.crop_scale, cfg.crop_ratio, generator)
        x = resize(to_float(crop(video.permute(3, 0, 1, 2), *box)), (cfg.crop_size, cfg.crop_size))
        if self._coin(cfg.p_flip, generator):
            x = hflip(x)
        if self._coin(cfg.p_color, generator):
            x = color_jitter(x, cfg.color_jitter, generator)
        if self._coin(cfg.p_gray, generator):
            x = grayscale(x)
        if self._coin(cfg.p_blur, generator):
            x = gaussian_blur(x, cfg.blur_kernel, _uniform(*cfg.blur_sigma, generator))
        return normalize(x, self.mean, self.std)

    @staticmethod
    def _coin(p: float, generator: torch.Generator) -> bool:
        return torch.rand((), generator=generator).item() < p


class MildVideoView:
    """The classifier's training view (evaluation protocols): the test view (short side resized, centre crop) with a
    small random zoom and shift, and a horizontal flip when the labels allow it.

    ``view(video, generator)``: video uint8 [T, H, W, 3] -> float [3, T, S, S]. Inside the S x S centre crop a box of
    area fraction ~U(``crop_scale``) and aspect ratio in (3/4, 4/3) is resized back to S; ``flip`` flips with
    probability 0.5. No colour change, so training clips look like test clips.
    """

    def __init__(self, crop_size: int, mean: Sequence[float], std: Sequence[float], short_side: int | None = None,
                 crop_scale: Sequence[float] = (1.0, 1.0), flip: bool = True):
        self.test_view = EvalVideoView(crop_size, mean, std, short_side=short_side)
        self.crop_scale = tuple(crop_scale)
        self.flip = flip

    def __call__(self, video: Tensor, generator: torch.Generator) -> Tensor:
        x = self.test_view(video)  # [3, T, S, S], normalised: cropping and flipping commute with the normalisation
        size = x.shape[-1]
        box = random_resized_crop_params(size, size, self.crop_scale, (3 / 4, 4 / 3), generator)
        x = resize(crop(x, *box), (size, size))
        if torch.rand((), generator=generator).item() < (0.5 if self.flip else 0.0):
            x = hflip(x)
        return x


class EvalVideoView:
    """Deterministic test view: resize the short side, then a centre crop (or three crops along the long side).

    ``view(video)``: video uint8 [T, H, W, 3] -> float [3, T, S, S], or [3 crops, 3, T, S, S] with ``three_crop``.
    ``short_side=None`` follows the released code: ``int(S / 0.875)`` for the centre crop (Resize 128 + CenterCrop
    112) and ``S`` for three crops (the fine-tune test, spec §A10).
    """

    def __init__(
        self,
        crop_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        short_side: int | None = None,
        three_crop: bool = False,
    ):
        self.crop_size = crop_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.three_crop = three_crop
        if short_side is None:
            short_side = crop_size if three_crop else int(crop_size / 0.875)
        if short_side < crop_size:
            raise ValueError(f"short_side {short_side} is smaller than crop_size {crop_size}")
        self.short_side = short_side

    def __call__(self, video: Tensor) -> Tensor:
        x = resize_short_side(to_float(video.permute(3, 0, 1, 2)), self.short_side)
        x = three_crop(x, self.crop_size) if self.three_crop else center_crop(x, self.crop_size)
        return normalize(x, self.mean, self.std)
