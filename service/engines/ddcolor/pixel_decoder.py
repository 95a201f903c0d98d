"""DDColor's pixel decoder: a U-Net path from the 1/32 encoder features back to full resolution.

Layout follows piddnad/DDColor `basicsr/archs/ddcolor_arch_utils/unet.py` (itself from DeOldify):
each step upsamples with a 1x1 conv and pixel shuffle, blurs away the shuffle's checkerboard,
and merges the encoder's skip feature of the same scale. Indices inside the `nn.Sequential`s
(`conv.0` the conv, `conv.2` the BatchNorm after a ReLU) are the checkpoints' key names.
Upstream reads each skip feature from a hook stored on the block; here it is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from service.engines.ddcolor.spectral import SpectralConv2d


class PixelShuffleUp(nn.Module):
    """1x1 conv to `out * scale^2` channels, [BatchNorm], ReLU, pixel shuffle, 2x2 blur."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, batch_norm: bool) -> None:
        super().__init__()
        conv = SpectralConv2d(in_channels, out_channels * scale * scale, 1, bias=not batch_norm)
        layers: list[nn.Module] = [conv]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels * scale * scale))
        self.conv = nn.Sequential(*layers)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(F.relu(self.conv(x)), self.scale)
        # Replicate one row and column at the top-left, then a stride-1 2x2 mean: the blur from
        # "Super-resolution using CNNs without any checkerboard artifacts" (arXiv 1806.02658).
        return F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)


class UpBlock(nn.Module):
    """Upsample 2x, concatenate the BatchNormed skip feature, ReLU, 3x3 conv, ReLU, BatchNorm."""

    def __init__(self, up_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shuf = PixelShuffleUp(up_channels, out_channels, scale=2, batch_norm=True)
        self.bn = nn.BatchNorm2d(skip_channels)
        self.conv = nn.Sequential(
            SpectralConv2d(out_channels + skip_channels, out_channels, 3, bias=False),
            nn.ReLU(),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.shuf(x), self.bn(skip)), dim=1)
        out: torch.Tensor = self.conv(F.relu(merged))
        return out


def make_up_blocks(encoder_dims: Sequence[int], nf: int) -> nn.ModuleList:
    """The three U-Net steps from the 1/32 features to 1/4: widths nf, nf, nf/2."""
    deepest, *skips = reversed(encoder_dims)
    widths = [nf] * (len(skips) - 1) + [nf // 2]
    blocks = []
    in_channels = deepest
    for skip, width in zip(skips, widths, strict=True):
        blocks.append(UpBlock(in_channels, skip, width))
        in_channels = width
    return nn.ModuleList(blocks)
