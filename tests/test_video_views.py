"""Video ops and views: geometry, colour (against per-pixel references), blur, determinism and shapes."""

import colorsys
from dataclasses import replace

import pytest
import torch

from xkd.config import IMAGENET_MEAN, IMAGENET_STD, VideoViewConfig
from xkd.data import video_views as vv


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_clip(t=4, h=20, w=28, seed=0):
    """uint8 [T, H, W, 3]"""
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=gen(seed))


def no_aug_config(crop_size, height, width):
    """A view that keeps the whole frame and applies nothing but resize + normalise."""
    return VideoViewConfig(
        crop_size=crop_size,
        crop_scale=(1.0, 1.0),
        crop_ratio=(width / height, width / height),
        p_flip=0.0,
        color_jitter=(0.0, 0.0, 0.0, 0.0),
        p_gray=0.0,
        p_blur=0.0,
    )


# ------------------------------------------------------------------------------------------------ random resized crop


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.2, 1.0), (0.08, 0.4)])
def test_rrc_box_inside_image_and_area_in_scale(scale):
    height, width, g = 112, 149, gen(1)
    fractions, ratios = [], []
    for _ in range(1000):
        top, left, h, w = vv.random_resized_crop_params(height, width, scale, (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        fractions.append(h * w / (height * width))
        ratios.append(w / h)
    fractions, ratios = torch.tensor(fractions), torch.tensor(ratios)
    tol = 0.01  # integer rounding of the box sides
    assert fractions.min() >= scale[0] - tol and fractions.max() <= scale[1] + tol
    assert fractions.min() < scale[0] + 0.05 and fractions.max() > scale[1] - 0.1  # the range is explored
    assert ratios.min() >= 3 / 4 - 0.05 and ratios.max() <= 4 / 3 + 0.05
    if scale[1] <= 0.4:  # small boxes always fit: area fraction uniform, aspect ratio log-uniform (mean log = 0)
        assert fractions.mean().item() == pytest.approx(sum(scale) / 2, abs=0.01)
        assert abs(ratios.log().mean().item()) < 0.012  # a uniform ratio on (3/4, 4/3) would give 0.028


def test_rrc_falls_back_to_a_centre_crop_clamped_to_the_ratio():
    # aspect ratios of at least 10 never fit a square image with half its area: every try fails
    top, left, h, w = vv.random_resized_crop_params(100, 100, (0.5, 1.0), (10.0, 20.0), gen(0))
    assert (top, left, h, w) == (45, 0, 10, 100)


def test_rrc_is_reproducible_from_the_generator():
    draws = [vv.random_resized_crop_params(64, 80, (0.08, 1.0), (0.75, 4 / 3), gen(s)) for s in (3, 3, 4)]
    assert draws[0] == draws[1] and draws[0] != draws[2]


# ------------------------------------------------------------------------------------------------ resize, crop, flip


def test_resize_short_side_and_antialias():
    x = torch.rand(3, 2, 112, 149)
    assert vv.resize_short_side(x, 128).shape == (3, 2, 128, 170)
    assert vv.resize_short_side(x.transpose(-1, -2), 56).shape == (3, 2, 74, 56)
    const = torch.full((3, 2, 30, 40), 0.3)
    assert torch.allclose(vv.resize(const, (17, 23)), const[..., :17, :23], atol=1e-6)
    # a 1-pixel checkerboard shrunk ~4x: antialiasing averages it to grey; plain bilinear sampling aliases (0.06-0.94)
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float().expand(3, 1, 64, 64)
    small = vv.resize(checker, (15, 15))
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)


def test_hflip_reverses_width():
    x = torch.rand(3, 2, 5, 7)
    y = vv.hflip(x)
    for j in range(7):
        assert torch.equal(y[..., j], x[..., 6 - j])


def test_view_flip_mirrors_the_same_random_view():
    # the flip coin is drawn whatever its probability, so p_flip=1 and p_flip=0 share every other random draw
    clip = random_clip()
    base = VideoViewConfig(crop_size=16, p_gray=0.5, p_blur=0.5, blur_kernel=5)
    for seed in range(4):
        flipped = vv.VideoView(replace(base, p_flip=1.0), IMAGENET_MEAN, IMAGENET_STD)
        kept = vv.VideoView(replace(base, p_flip=0.0), IMAGENET_MEAN, IMAGENET_STD)
        assert torch.allclose(flipped(clip, gen(seed)), kept(clip, gen(seed)).flip(-1), atol=1e-5)


def test_center_and_three_crops_take_the_right_columns():
    # pixel value = column index, so a crop's first column tells where it starts
    s = 8
    cols = torch.arange(2 * s, dtype=torch.uint8).view(1, 1, -1, 1).expand(2, s, 2 * s, 3).contiguous()
    view = vv.EvalVideoView(s, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), short_side=s, three_crop=True)
    crops = view(cols)
    assert crops.shape == (3, 3, 2, s, s)
    assert [round(c[0, 0, 0, 0].item()) for c in crops] == [0, s // 2, s]
    assert torch.equal(crops[2, 0, 0, 0].round(), torch.arange(s, 2 * s, dtype=torch.float32))
    tall = vv.EvalVideoView(s, (0.0,) * 3, (1 / 255,) * 3, short_side=s, three_crop=True)(cols.transpose(1, 2))
    assert [round(c[0, 0, 0, 0].item()) for c in tall] == [0, s // 2, s]
    centre = vv.EvalVideoView(s, (0.0,) * 3, (1 / 255,) * 3, short_side=s)(cols)
    assert torch.equal(centre, crops[1])


def test_eval_view_default_resize_and_determinism():
    clip = random_clip(t=3, h=32, w=44)
    view = vv.EvalVideoView(16, IMAGENET_MEAN, IMAGENET_STD)
    assert view.short_side == int(16 / 0.875)
    out = view(clip)
    assert out.shape == (3, 3, 16, 16) and torch.equal(out, view(clip))
    expected = vv.normalize(vv.center_crop(vv.resize_short_side(vv.to_float(clip.permute(3, 0, 1, 2)), 18), 16),
                            IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(out, expected)


# ------------------------------------------------------------------------------------------------ colour


def test_grayscale_uses_luma_weights_and_equal_channels():
    pixels = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.2, 0.5, 0.9]]).T.reshape(3, 1, 1, 4)
    gray = vv.grayscale(pixels)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    expected = torch.tensor([0.2989, 0.587, 0.114, 0.2989 * 0.2 + 0.587 * 0.5 + 0.114 * 0.9])
    assert torch.allclose(gray[0].flatten(), expected, atol=1e-6)


def color_jitter(video, strength, generator):
    """One clip [3, T, H, W] jittered as a view does: factors drawn once, applied in their drawn order."""
    order, factors = vv.color_jitter_params(strength, generator)
    factors = torch.tensor([[float("nan") if f is None else f for f in factors]])
    return vv.jitter_clips(video[None], torch.tensor([order]), factors)[0]


def test_zero_strength_jitter_is_identity():
    x = torch.rand(3, 2, 6, 6)
    assert torch.equal(color_jitter(x, (0.0, 0.0, 0.0, 0.0), gen(0)), x)


# a few pixels (one frame) with flat, saturated, dark and bright colours
PIXELS = [(0.2, 0.5, 0.9), (0.9, 0.1, 0.1), (0.3, 0.3, 0.3), (0.0, 0.0, 0.0), (0.95, 0.9, 0.05), (0.1, 0.8, 0.4)]


def pixel_tensor():
    return torch.tensor(PIXELS).T.reshape(3, 1, 1, len(PIXELS))


def luma(p):
    return 0.2989 * p[0] + 0.587 * p[1] + 0.114 * p[2]


def clamp01(v):
    return min(max(v, 0.0), 1.0)


def ref_brightness(pixels, f):
    return [tuple(clamp01(f * c) for c in p) for p in pixels]


def ref_contrast(pixels, f):
    mean = sum(luma(p) for p in pixels) / len(pixels)
    return [tuple(clamp01(f * c + (1 - f) * mean) for c in p) for p in pixels]


def ref_saturation(pixels, f):
    return [tuple(clamp01(f * c + (1 - f) * luma(p)) for c in p) for p in pixels]


def ref_hue(pixels, shift):
    out = []
    for p in pixels:
        h, s, v = colorsys.rgb_to_hsv(*p)
        out.append(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v))
    return out


REFERENCES = (ref_brightness, ref_contrast, ref_saturation, ref_hue)


def as_pixels(x):
    return [tuple(x[:, 0, 0, i].tolist()) for i in range(x.shape[-1])]


@pytest.mark.parametrize(
    "op, ref, factor",
    [
        (vv.adjust_brightness, ref_brightness, 1.35),
        (vv.adjust_brightness, ref_brightness, 0.6),
        (vv.adjust_contrast, ref_contrast, 1.4),
        (vv.adjust_contrast, ref_contrast, 0.7),
        (vv.adjust_saturation, ref_saturation, 1.4),
        (vv.adjust_saturation, ref_saturation, 0.0),
        (vv.adjust_hue, ref_hue, 0.2),
        (vv.adjust_hue, ref_hue, -0.15),
        (vv.adjust_hue, ref_hue, 0.5),
    ],
)
def test_jitter_op_matches_per_pixel_reference(op, ref, factor):
    got = as_pixels(op(pixel_tensor(), factor))
    for g, e in zip(got, ref(PIXELS, factor)):
        assert g == pytest.approx(e, abs=1e-5)


def test_contrast_uses_each_frame_mean():
    dark, bright = torch.full((3, 1, 2, 2), 0.2), torch.full((3, 1, 2, 2), 0.8)
    dark[:, :, 0, 0], bright[:, :, 0, 0] = 0.4, 1.0
    out = vv.adjust_contrast(torch.cat([dark, bright], dim=1), 0.5)
    for t, frame in enumerate((dark, bright)):
        mean = frame.mean() * sum(vv.LUMA_WEIGHTS)  # grey frames: luma = value x sum of the weights (0.9999)
        assert torch.allclose(out[:, t], 0.5 * frame[:, 0] + 0.5 * mean, atol=1e-6)


def test_hue_matches_colorsys_on_random_grey_and_tied_pixels():
    x = torch.rand(3, 2, 9, 9, generator=gen(5))
    x[:, 0, :3] = x[:1, 0, :3]  # grey: every channel equal
    x[1, 1, :3] = x[0, 1, :3]  # red and green tie for the largest (or the smallest) channel
    x[2, 1, 3:6] = x[1, 1, 3:6]  # green and blue tie
    pixels = [tuple(p) for p in x.reshape(3, -1).T.tolist()]
    for shift in (0.0, 0.3, -0.5):
        got = vv.adjust_hue(x, shift).reshape(3, -1).T.tolist()
        for g, e in zip(got, ref_hue(pixels, shift)):
            assert g == pytest.approx(e, abs=1e-5)


def test_color_jitter_matches_reference_in_the_drawn_order():
    strength = (0.4, 0.4, 0.4, 0.2)
    orders = set()
    for seed in range(6):
        order, factors = vv.color_jitter_params(strength, gen(seed))
        orders.add(tuple(order))
        assert sorted(order) == [0, 1, 2, 3]
        assert all(0.6 <= f <= 1.4 for f in factors[:3]) and -0.2 <= factors[3] <= 0.2
        expected = PIXELS
        for i in order:
            expected = REFERENCES[i](expected, factors[i])
        got = as_pixels(color_jitter(pixel_tensor(), strength, gen(seed)))
        for g, e in zip(got, expected):
            assert g == pytest.approx(e, abs=1e-5)
    assert len(orders) > 1


def test_jitter_is_consistent_across_frames():
    frame = random_clip(t=1, h=24, w=24)
    clip = frame.expand(5, -1, -1, -1).contiguous()
    cfg = VideoViewConfig(crop_size=16, p_gray=0.5, p_blur=0.5, blur_kernel=5)
    for seed in range(4):
        out = vv.VideoView(cfg, IMAGENET_MEAN, IMAGENET_STD)(clip, gen(seed))
        assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)


# ------------------------------------------------------------------------------------------------ blur, normalise


def test_gaussian_blur_preserves_constants_and_mass():
    const = torch.full((3, 2, 12, 12), 0.37)
    assert torch.allclose(vv.gaussian_blur(const, 9, 1.7), const, atol=1e-6)
    blob = torch.zeros(3, 2, 21, 21)
    blob[:, :, 9:12, 8:11] = torch.rand(3, 2, 3, 3)  # far from the borders: no mass leaves the frame
    out = vv.gaussian_blur(blob, 5, 1.0)
    assert torch.allclose(out.sum(dim=(-2, -1)), blob.sum(dim=(-2, -1)), atol=1e-5)
    assert out.max() < blob.max()


def test_gaussian_blur_equals_2d_convolution():
    x = torch.rand(1, 1, 15, 15, generator=gen(2))
    k = vv.gaussian_kernel1d(7, 1.3)
    assert torch.allclose(k.sum(), torch.tensor(1.0)) and torch.allclose(k, k.flip(0))
    assert k.argmax() == 3
    padded = torch.nn.functional.pad(x[0], (3, 3, 3, 3), mode="reflect")
    ref = torch.nn.functional.conv2d(padded.unsqueeze(0), torch.outer(k, k).view(1, 1, 7, 7))[0]
    assert torch.allclose(vv.gaussian_blur(x, 7, 1.3), ref, atol=1e-6)


def test_normalize():
    x = torch.rand(3, 2, 4, 4)
    out = vv.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    for c in range(3):
        assert torch.allclose(out[c], (x[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])


# ------------------------------------------------------------------------------------------------ views


@pytest.mark.parametrize(
    "cfg, clip_shape",
    [
        (VideoViewConfig(), (32, 112, 149)),  # paper global view
        (VideoViewConfig(crop_size=96, crop_scale=(0.08, 0.4), p_gray=0.2, p_blur=0.5), (8, 112, 149)),  # local
        (VideoViewConfig(crop_size=32), (16, 32, 42)),  # tiny global
        (VideoViewConfig(crop_size=27, crop_scale=(0.08, 0.4), p_gray=0.2, p_blur=0.5), (4, 32, 42)),  # tiny local
    ],
)
def test_video_view_shape_determinism_and_variation(cfg, clip_shape):
    clip = random_clip(*clip_shape)
    view = vv.VideoView(cfg, IMAGENET_MEAN, IMAGENET_STD)
    a, b, c = view(clip, gen(7)), view(clip, gen(7)), view(clip, gen(8))
    assert a.shape == (3, clip_shape[0], cfg.crop_size, cfg.crop_size) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_video_view_without_augmentation_is_resize_and_normalise():
    clip = random_clip(t=3, h=20, w=28)
    out = vv.VideoView(no_aug_config(14, 20, 28), IMAGENET_MEAN, IMAGENET_STD)(clip, gen(0))
    expected = vv.normalize(vv.resize(vv.to_float(clip.permute(3, 0, 1, 2)), (14, 14)), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(out, expected, atol=1e-6)


def test_video_view_grayscale_and_blur_probabilities_act():
    clip = random_clip(t=2, h=24, w=24)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    gray = vv.VideoView(VideoViewConfig(crop_size=16, p_gray=1.0), mean, std)(clip, gen(0))
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    base = VideoViewConfig(crop_size=16, color_jitter=(0.0, 0.0, 0.0, 0.0), p_flip=0.0)
    sharp = vv.VideoView(base, mean, std)(clip, gen(0))
    blurred = vv.VideoView(replace(base, p_blur=1.0), mean, std)(clip, gen(0))
    # same crop, but blurring removes high frequencies: neighbouring pixels get closer
    assert blurred.diff(dim=-1).abs().mean() < 0.8 * sharp.diff(dim=-1).abs().mean()


def test_svm_train_config_is_the_paper_recipe():
    cfg = vv.svm_train_video_config(112)
    assert cfg.crop_size == 112 and cfg.crop_scale == (0.08, 1.0) and cfg.p_flip == 0.5
    assert cfg.color_jitter == (0.4, 0.4, 0.4, 0.2) and cfg.p_color == 1.0 and cfg.p_gray == 0.2 and cfg.p_blur == 0.0


# ------------------------------------------------------------------------------------------------ deferred views


LOCAL = VideoViewConfig(crop_size=16, crop_scale=(0.08, 0.4), p_gray=0.5, p_blur=0.5, blur_kernel=5)


@pytest.mark.parametrize("cfg", [VideoViewConfig(crop_size=16), LOCAL])
def test_a_deferred_view_finished_later_equals_the_whole_view(cfg):
    clip, unit = random_clip(t=3, h=24, w=30), ((0.0,) * 3, (1.0,) * 3)  # no normalisation: errors in [0, 1] units
    for seed in range(8):
        whole = vv.VideoView(cfg, *unit)(clip, gen(seed))
        crop, params = vv.VideoView(cfg, *unit, deferred=True)(clip, gen(seed))
        assert crop.dtype == torch.uint8 and params.shape == (vv.FINISH_PARAMS,)
        finished = vv.finish_views(vv.to_float(crop)[None], params[None], cfg.blur_kernel, *unit)[0]
        # the only difference is the resized crop's rounding (0.5 / 255), grown by the jitter (up to x1.4 for each of
        # brightness, contrast and saturation, and the hue's rotation): a few levels of 255 at most
        assert (finished - whole).abs().max() <= 4 / 255


def test_a_batch_of_views_finished_together_equals_each_finished_alone():
    clip = random_clip(t=3, h=24, w=30)
    view = vv.VideoView(LOCAL, IMAGENET_MEAN, IMAGENET_STD, deferred=True)
    crops, params = zip(*(view(clip, gen(seed)) for seed in range(10)))
    params = torch.stack(params)
    assert len(set(map(tuple, params[:, :4].tolist()))) > 1  # the clips' jitter orders differ
    assert 0 < int((params[:, 8] > 0).sum()) < 10 and 0 < int((params[:, 9] > 0).sum()) < 10
    clips = vv.to_float(torch.stack(crops))
    together = vv.finish_views(clips, params, LOCAL.blur_kernel, IMAGENET_MEAN, IMAGENET_STD)
    for i in range(10):
        alone = vv.finish_views(clips[i : i + 1], params[i : i + 1], LOCAL.blur_kernel, IMAGENET_MEAN, IMAGENET_STD)
        assert torch.allclose(together[i], alone[0], atol=1e-5)


def test_skipped_draws_leave_the_clip_unchanged():
    clips = vv.to_float(random_clip(t=2, h=8, w=8).permute(3, 0, 1, 2))[None]
    params = torch.full((1, vv.FINISH_PARAMS), float("nan"))
    params[0, :4], params[0, 8:] = torch.arange(4), 0.0  # no jitter, no grayscale, no blur
    assert torch.equal(vv.finish_views(clips, params, 5, (0.0,) * 3, (1.0,) * 3), clips)
