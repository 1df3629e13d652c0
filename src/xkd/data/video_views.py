"""Video augmentation: functional ops on clips and the view transforms built from them (spec §A2, §A10).

Every op acts on a float clip ``video: [C, T, H, W]`` with values in [0, 1] and treats all frames alike, so an
augmented clip stays temporally consistent; the colour, blur and normalisation ops also take a batch of clips
``[B, C, T, H, W]`` with one factor per clip (a tensor broadcast against it), which is how :func:`finish_views` applies
a batch's views on the training device (``data.video_views_on: device``). The ops follow torchvision's tensor
semantics (re-implemented here; torchvision is not a dependency). All randomness comes from a ``torch.Generator``
argument, so a view is reproducible from its seed.
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


def _channels(video: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The R, G and B planes of ``[..., 3, T, H, W]``, each ``[..., 1, T, H, W]``."""
    return video[..., 0:1, :, :, :], video[..., 1:2, :, :, :], video[..., 2:3, :, :, :]


def rgb_to_grayscale(video: Tensor) -> Tensor:
    """Luma of RGB clips. video: [..., 3, T, H, W] -> [..., 1, T, H, W]."""
    r, g, b = _channels(video)
    return LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b


def grayscale(video: Tensor) -> Tensor:
    """Grey RGB clips: every channel holds the luma. video: [..., 3, T, H, W] -> the same shape."""
    return rgb_to_grayscale(video).expand_as(video).contiguous()


def _blend(video: Tensor, other: Tensor, factor: float | Tensor) -> Tensor:
    return (factor * video + (1.0 - factor) * other).clamp_(0.0, 1.0)


def adjust_brightness(video: Tensor, factor: float | Tensor) -> Tensor:
    """Scale intensities by ``factor`` (0 = black, 1 = unchanged)."""
    return (video * factor).clamp_(0.0, 1.0)


def adjust_contrast(video: Tensor, factor: float | Tensor) -> Tensor:
    """Blend each frame with its mean luma (0 = flat grey frame, 1 = unchanged)."""
    mean = rgb_to_grayscale(video).mean(dim=(-2, -1), keepdim=True)  # [..., 1, T, 1, 1]: per frame, as torchvision
    return _blend(video, mean, factor)


def adjust_saturation(video: Tensor, factor: float | Tensor) -> Tensor:
    """Blend with the grayscale clip (0 = grey, 1 = unchanged)."""
    return _blend(video, rgb_to_grayscale(video), factor)


def adjust_hue(video: Tensor, shift: float | Tensor) -> Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]), as an HSV round trip. video: [..., 3, T, H, W] in [0, 1].

    Value (max) and chroma (max - min) do not change under a hue rotation, so the round trip needs only the hue in
    sixths of a turn, ``h6`` (the sector offset 0 / 2 / 4 of the largest channel plus the difference of the other
    two over the chroma). Channel n in (r, g, b) = (5, 3, 1) of the result is ``max - chroma clamp(min(k, 4 - k), 0,
    1)`` with ``k = (n + h6 + 6 shift) mod 6``: the six-sector formula in one expression for all three channels.
    Grey pixels (chroma 0) keep their value whatever their arbitrary hue.
    """
    r, g, b = _channels(video)
    maxc, minc = video.amax(dim=-4, keepdim=True), video.amin(dim=-4, keepdim=True)
    chroma = maxc - minc
    red_max, green_max = maxc == r, maxc == g
    difference = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    turn = 6.0 * shift
    offset = torch.where(red_max, turn, torch.where(green_max, 2.0 + turn, 4.0 + turn))
    h6 = difference.div_(torch.where(chroma > 0, chroma, torch.ones_like(chroma))).add_(offset)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=video.dtype, device=video.device).view(3, 1, 1, 1)
    k = (n + h6).remainder_(6.0)
    return maxc - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


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


def _on_clips(clips: Tensor, chosen: Tensor, op) -> Tensor:
    """``op`` applied to the clips of ``clips`` [B, ...] where ``chosen`` [B] holds, the others unchanged."""
    if not bool(chosen.any()):
        return clips
    if bool(chosen.all()):
        return op(clips)
    out = clips.clone()
    out[chosen] = op(clips[chosen])
    return out


def jitter_clips(clips: Tensor, order: Tensor, factors: Tensor) -> Tensor:
    """Brightness / contrast / saturation / hue (indices 0..3) of each clip in its own order.

    clips: [B, 3, T, H, W]; order: [B, 4] (a permutation of 0..3 per clip); factors: [B, 4] indexed like the ops,
    NaN where an op is skipped.
    """
    for position in range(4):
        for index, op in enumerate(_JITTER_OPS):
            factor = factors[:, index]
            chosen = (order[:, position] == index) & ~factor.isnan()
            clips = _on_clips(clips, chosen, lambda x, f=factor[chosen]: op(x, f.view(-1, 1, 1, 1, 1)))
    return clips


# ---------------------------------------------------------------------------------------------------------------------
# blur and normalisation


def gaussian_kernel1d(kernel_size: int, sigma: float | Tensor) -> Tensor:
    """Normalised 1-D Gaussian taps centred on the middle tap: [kernel_size], or [B, kernel_size] for sigma [B]."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    x = torch.arange(kernel_size, dtype=torch.float32, device=sigma.device) - (kernel_size - 1) / 2
    pdf = torch.exp(-0.5 * (x / sigma.unsqueeze(-1)) ** 2)
    return pdf / pdf.sum(dim=-1, keepdim=True)


def gaussian_blur(video: Tensor, kernel_size: int, sigma: float | Tensor) -> Tensor:
    """Separable Gaussian blur of every frame with reflect padding, kernel_size odd. video: [C, T, H, W] with one
    sigma, or [B, C, T, H, W] with sigma [B] (one per clip)."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    *lead, h, w = video.shape
    planes = math.prod(lead)
    sigma = torch.as_tensor(sigma, device=video.device)
    per_clip = planes // sigma.numel()  # frames of one clip (C T)
    kernel = gaussian_kernel1d(kernel_size, sigma).to(video)
    kernel = kernel.reshape(-1, kernel_size).repeat_interleave(per_clip, dim=0)  # [planes, k]: each plane its clip's
    pad = kernel_size // 2
    x = F.pad(video.reshape(1, planes, h, w), (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(planes, 1, kernel_size, 1), groups=planes)
    x = F.conv2d(x, kernel.view(planes, 1, 1, kernel_size), groups=planes)
    return x.view(video.shape)


def normalize(video: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(video - mean) / std per channel. video: [..., C, T, H, W]."""
    m = torch.as_tensor(mean, dtype=video.dtype, device=video.device).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=video.dtype, device=video.device).view(-1, 1, 1, 1)
    return (video - m) / s


# ---------------------------------------------------------------------------------------------------------------------
# the draws after the crop, and their application to a batch

FINISH_PARAMS = 10  # per view: jitter order (4), jitter factors (4, NaN = skipped), grayscale (1 / 0), blur sigma


def _coin(p: float, generator: torch.Generator) -> bool:
    return torch.rand((), generator=generator).item() < p


def draw_finish(cfg: VideoViewConfig, generator: torch.Generator) -> Tensor:
    """The random draws of a view after its crop and flip -> [FINISH_PARAMS]: the jitter's order and factors (all
    NaN when the colour coin fails), grayscale 1 or 0, the blur's sigma (0 = no blur)."""
    params = torch.full((FINISH_PARAMS,), float("nan"))
    params[:4] = torch.arange(4)
    if _coin(cfg.p_color, generator):
        order, factors = color_jitter_params(cfg.color_jitter, generator)
        params[:4] = torch.tensor(order)
        params[4:8] = torch.tensor([float("nan") if f is None else f for f in factors])
    params[8] = float(_coin(cfg.p_gray, generator))
    params[9] = _uniform(*cfg.blur_sigma, generator) if _coin(cfg.p_blur, generator) else 0.0
    return params


def finish_views(clips: Tensor, params: Tensor, blur_kernel: int, mean: Sequence[float],
                 std: Sequence[float]) -> Tensor:
    """Colour jitter -> grayscale -> blur -> normalise, each clip with its own draws, on the clips' device.

    clips: [B, 3, T, S, S] float in [0, 1] (cropped, resized, flipped); params: [B, FINISH_PARAMS] from
    :func:`draw_finish`. Returns [B, 3, T, S, S]."""
    params = params.to(clips.device)
    clips = jitter_clips(clips, params[:, :4].long(), params[:, 4:8])
    clips = _on_clips(clips, params[:, 8] > 0, grayscale)
    blurred = params[:, 9] > 0
    clips = _on_clips(clips, blurred, lambda x: gaussian_blur(x, blur_kernel, params[blurred, 9]))
    return normalize(clips, mean, std)


def to_uint8(video: Tensor) -> Tensor:
    """float [0, 1] -> uint8 [0, 255], rounded (the inverse of :func:`to_float` up to 0.5 / 255)."""
    return video.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


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
    other random draws of the same seed. ``deferred``: the view stops after the flip and returns ``(uint8 [3, T, S,
    S], params [FINISH_PARAMS])``, the same draws; :func:`finish_views` applies the rest to a batch of them later
    (on the training device), which equals the whole view up to the uint8 rounding of the resized crop.
    """

    def __init__(self, cfg: VideoViewConfig, mean: Sequence[float], std: Sequence[float], deferred: bool = False):
        self.cfg = cfg
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.deferred = deferred

    def __call__(self, video: Tensor, generator: torch.Generator) -> Tensor | tuple[Tensor, Tensor]:
        cfg = self.cfg
        _, height, width, _ = video.shape
        box = random_resized_crop_params(height, width, cfg.crop_scale, cfg.crop_ratio, generator)
        x = resize(to_float(crop(video.permute(3, 0, 1, 2), *box)), (cfg.crop_size, cfg.crop_size))
        if _coin(cfg.p_flip, generator):
            x = hflip(x)
        params = draw_finish(cfg, generator)
        if self.deferred:
            return to_uint8(x), params
        return finish_views(x[None], params[None], cfg.blur_kernel, self.mean, self.std)[0]


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
