"""The ConvNeXt encoder (Liu et al., CVPR 2022) as DDColor uses it: four normalised feature maps.

Module names follow piddnad/DDColor `basicsr/archs/ddcolor_arch_utils/convnext.py`, because the
published checkpoints key the encoder by them (`encoder.arch.stages.2.26.pwconv1.weight`, ...).
Upstream the four `norm0`..`norm3` outputs are caught by forward hooks and stored on the module;
here `forward` returns them, so nothing outlives a call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

LAYER_NORM_EPS = 1e-6
LAYER_SCALE_INIT = 1e-6
"""ConvNeXt's initial per-channel residual scale (`gamma`)."""


@dataclass(frozen=True)
class ConvNeXtSpec:
    """Blocks per stage and channels per stage."""

    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int]


CONVNEXT_TINY = ConvNeXtSpec(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
CONVNEXT_LARGE = ConvNeXtSpec(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536))


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an (N, C, H, W) tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upstream computes mean and biased variance by hand; F.layer_norm on the channels-last
        # view is the same normalisation (agrees to float rounding) in one fused kernel.
        y = F.layer_norm(
            x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, LAYER_NORM_EPS
        )
        return y.permute(0, 3, 1, 2)


class Block(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, 4x MLP with GELU, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        out: torch.Tensor = x + (self.gamma * y).permute(0, 3, 1, 2)
        return out


class ConvNeXt(nn.Module):
    """Image (N, 3, H, W), H and W multiples of 32 -> features at 1/4, 1/8, 1/16 and 1/32."""

    def __init__(self, spec: ConvNeXtSpec, in_channels: int = 3) -> None:
        super().__init__()
        dims = spec.dims
        stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
            ChannelsFirstLayerNorm(dims[0]),
        )
        downsamples = [
            nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
            )
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamples])
        self.stages = nn.ModuleList(
            nn.Sequential(*(Block(dim) for _ in range(depth)))
            for depth, dim in zip(spec.depths, dims, strict=True)
        )
        # The per-stage output norms whose results the decoders consume.
        self.norm0 = ChannelsFirstLayerNorm(dims[0])
        self.norm1 = ChannelsFirstLayerNorm(dims[1])
        self.norm2 = ChannelsFirstLayerNorm(dims[2])
        self.norm3 = ChannelsFirstLayerNorm(dims[3])
        # The classifier's final norm: in the checkpoints, but its output (a pooled vector for a
        # classification head) never reaches the colour output, so forward skips it.
        self.norm = nn.LayerNorm(dims[-1], eps=LAYER_NORM_EPS)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The four stage outputs after their norms, finest first."""
        norms = (self.norm0, self.norm1, self.norm2, self.norm3)
        features = []
        for downsample, stage, norm in zip(self.downsample_layers, self.stages, norms, strict=True):
            x = stage(downsample(x))
            # The norm feeds the decoders only; the next stage continues from the raw stage output.
            features.append(norm(x))
        return tuple(features)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ImageEncoder(nn.Module):
    """Holds the ConvNeXt under `arch`, the prefix the checkpoints use."""

    def __init__(self, spec: ConvNeXtSpec) -> None:
        super().__init__()
        self.arch = ConvNeXt(spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features: tuple[torch.Tensor, ...] = self.arch(x)
        return features
