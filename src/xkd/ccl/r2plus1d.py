"""The CCL student (spec §B3): R(2+1)D, a ResNet whose 3-D convolutions are factorised into spatial + temporal.

Layout (as the released CCL code): a (2+1)D stem with kernel 3x7x7 and stride (1, 2, 2), then four stages of residual
blocks; stages 2-4 halve time, height and width in their first block. Global average pooling gives the feature
``x_v: [B, widths[-1]]`` and a linear layer gives the class logits. No pooling layer anywhere else.

Depth. :data:`LAYER_SIZES` holds the standard blocks per stage of R(2+1)D-10/16/18/26/34 (Tran et al., CVPR 2018).
``one_block_per_stage=True`` reproduces the released CCL code instead, where every depth except 34 builds a single
block per stage (so its "R(2+1)D-18" is an R(2+1)D-10).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

LAYER_SIZES = {10: (1, 1, 1, 1), 16: (2, 2, 2, 1), 18: (2, 2, 2, 2), 26: (2, 3, 4, 3), 34: (3, 4, 6, 3)}


def layer_sizes(depth: int, one_block_per_stage: bool = False) -> tuple[int, int, int, int]:
    """Blocks per stage for ``depth``; ``one_block_per_stage`` follows the released code (34 keeps (3, 4, 6, 3))."""
    if depth not in LAYER_SIZES:
        raise ValueError(f"R(2+1)D depth must be one of {sorted(LAYER_SIZES)}, got {depth}")
    if one_block_per_stage and depth != 34:
        return (1, 1, 1, 1)
    return LAYER_SIZES[depth]


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


class SpatioTemporalConv(nn.Module):
    """A t x h x w convolution as a 1 x h x w spatial conv, BN + ReLU, then a t x 1 x 1 temporal conv.

    The intermediate width M = floor(t h w C_in C_out / (h w C_in + t C_out)) keeps the parameter count of the full 3-D
    kernel (R(2+1)D paper, §3.5). x: [B, C_in, T, H, W] -> [B, C_out, T / s_t, H / s_h, W / s_w].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        st, sh, sw = _triple(stride)
        pt, ph, pw = _triple(padding)
        mid = (kt * kh * kw * in_channels * out_channels) // (kh * kw * in_channels + kt * out_channels)
        self.spatial = nn.Conv3d(in_channels, mid, (1, kh, kw), stride=(1, sh, sw), padding=(0, ph, pw), bias=False)
        self.bn = nn.BatchNorm3d(mid)
        self.relu = nn.ReLU(inplace=True)
        self.temporal = nn.Conv3d(mid, out_channels, (kt, 1, 1), stride=(st, 1, 1), padding=(pt, 0, 0), bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal(self.relu(self.bn(self.spatial(x))))


class ResBlock(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, plus the (projected, when downsampling) input, then ReLU.

    ``downsample`` halves T, H and W with stride 2 in the first conv and a strided 1x1x1 (2+1)D projection of the input.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = SpatioTemporalConv(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = SpatioTemporalConv(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.shortcut = None
        if downsample or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                SpatioTemporalConv(in_channels, out_channels, 1, stride=stride), nn.BatchNorm3d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


class R2Plus1D(nn.Module):
    """R(2+1)D video classifier. ``forward(video) -> (logits [B, num_classes], x_v [B, widths[-1]])``.

    video: [B, 3, T, H, W] with values in [0, 1]; it is normalised with ``mean`` / ``std`` inside the model, so every
    consumer of a clip (the student and an image teacher looking at one of its frames) sees the same [0, 1] pixels.
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 18,
        one_block_per_stage: bool = False,
        widths: Sequence[int] = (64, 128, 256, 512),
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"widths must list the 4 stage widths, got {tuple(widths)}")
        self.layers = layer_sizes(depth, one_block_per_stage)
        self.feature_dim = widths[-1]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            SpatioTemporalConv(3, widths[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3)),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, in_ch = [], widths[0]
        for i, (width, blocks) in enumerate(zip(widths, self.layers)):
            downsample = i > 0  # stage 1 keeps the stem's resolution
            stage = [ResBlock(in_ch, width, downsample)] + [ResBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):  # He init for ReLU networks, as torchvision's video ResNets
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, video: Tensor) -> Tensor:
        """video: [B, 3, T, H, W] in [0, 1] -> x_v: [B, D] (global average pool of the last stage)."""
        x = (video - self.mean) / self.std
        if x.device.type == "cpu":  # oneDNN's 3-D convolutions run about 25% faster channels-last (docs/BENCHMARKS.md)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.stages(self.stem(x))
        return self.pool(x).flatten(1)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        x_v = self.features(video)
        return self.fc(x_v), x_v
