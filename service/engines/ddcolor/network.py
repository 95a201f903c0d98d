"""DDColor (Kang et al., ICCV 2023): a grey RGB image -> the ab channels of its colour version.

Laid out as piddnad/DDColor's `DDColor` module with the published inference configuration
(`inference/colorization_pipeline.py`: MultiScaleColorDecoder, 100 queries, 3 scales, 9 layers,
nf 512, spectral-normed last layer, two output channels, no output denormalisation), so the
official checkpoints load key for key. Unlike upstream, no feature is kept on a module between
calls: the encoder returns its features and the decoders take them as arguments, so one module
serves concurrent threads and mixed batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import torch
from torch import nn

from service.engines.ddcolor.color_decoder import MultiScaleColorDecoder
from service.engines.ddcolor.convnext import (
    CONVNEXT_LARGE,
    CONVNEXT_TINY,
    ConvNeXtSpec,
    ImageEncoder,
)
from service.engines.ddcolor.pixel_decoder import PixelShuffleUp, make_up_blocks
from service.engines.ddcolor.spectral import SpectralConv2d

Variant = Literal["large", "tiny"]

ENCODERS: Mapping[str, ConvNeXtSpec] = MappingProxyType(
    {"large": CONVNEXT_LARGE, "tiny": CONVNEXT_TINY}
)
"""DDColor-L (ddcolor_modelscope, ddcolor_artistic, ddcolor_paper) and DDColor-T (paper_tiny)."""

NUM_QUERIES = 100
NUM_SCALES = 3
DECODER_LAYERS = 9
NF = 512
"""Width of the pixel decoder's first two steps (the last is half)."""
SIZE_MULTIPLE = 32
"""Input sides must be multiples of the encoder's total stride."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DualDecoder(nn.Module):
    """Pixel decoder (U-Net path to full resolution) and the colour decoder reading its scales."""

    def __init__(self, encoder_dims: Sequence[int]) -> None:
        super().__init__()
        self.layers = make_up_blocks(encoder_dims, NF)
        embed_dim = NF // 2
        self.last_shuf = PixelShuffleUp(embed_dim, embed_dim, scale=4, batch_norm=False)
        self.color_decoder = MultiScaleColorDecoder(
            in_channels=(NF, NF, embed_dim),
            num_queries=NUM_QUERIES,
            num_scales=NUM_SCALES,
            num_layers=DECODER_LAYERS,
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Encoder features (finest first) -> one channel per colour query, at full resolution."""
        *skips, x = features
        scales = []
        for block, skip in zip(self.layers, reversed(skips), strict=True):
            x = block(x, skip)
            scales.append(x)
        out: torch.Tensor = self.color_decoder(scales, self.last_shuf(x))
        return out


class DDColor(nn.Module):
    """Grey RGB (N, 3, S, S) in [0, 1], S a multiple of 32 -> predicted ab (N, 2, S, S).

    Inference only: BatchNorm uses its running statistics, so keep the module in eval mode.
    """

    def __init__(self, variant: Variant = "large") -> None:
        super().__init__()
        if variant not in ENCODERS:
            raise ValueError(f"unknown DDColor variant {variant!r}; known: {', '.join(ENCODERS)}")
        self.variant = variant
        spec = ENCODERS[variant]
        self.encoder = ImageEncoder(spec)
        self.decoder = DualDecoder(spec.dims)
        # Upstream wraps its one conv in two Sequentials (the key is `refine_net.0.0.weight_orig`).
        self.refine_net = nn.Sequential(
            nn.Sequential(SpectralConv2d(NUM_QUERIES + 3, 2, 1, bias=True))
        )
        for name, value in normalisation_buffers().items():
            self.register_buffer(name, value)

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected RGB (N, 3, S, S), got {tuple(rgb.shape)}")
        if rgb.shape[2] % SIZE_MULTIPLE or rgb.shape[3] % SIZE_MULTIPLE:
            raise ValueError(f"sides must be multiples of {SIZE_MULTIPLE}, got {tuple(rgb.shape)}")
        x = (rgb - self.mean) / self.std
        query_maps = self.decoder(self.encoder(x))
        # The last layer sees the normalised input beside the query maps, as upstream's does.
        ab: torch.Tensor = self.refine_net(torch.cat((query_maps, x), dim=1))
        return ab


def normalisation_buffers() -> dict[str, torch.Tensor]:
    """The `mean` and `std` buffers: ImageNet's statistics, shaped (1, 3, 1, 1), on the CPU."""
    return {
        "mean": torch.tensor(IMAGENET_MEAN, device="cpu").view(1, 3, 1, 1),
        "std": torch.tensor(IMAGENET_STD, device="cpu").view(1, 3, 1, 1),
    }
