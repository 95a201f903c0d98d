"""The two published colorization networks (Zhang et al.), laid out so the official files load.

Module names and `nn.Sequential` indices follow richzhang/colorization `colorizers/eccv16.py` and
`colorizers/siggraph17.py` exactly, because the official checkpoints are plain state dicts keyed
by them (`model1.0.weight`, `model1.4.running_mean`, ...).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

L_CENTER = 50.0
L_SCALE = 100.0
AB_SCALE = 110.0
INPUT_SIZE = 256
"""Both networks were trained on 256x256 inputs; the engines resize to it."""


def _conv_block(
    channels: tuple[int, ...],
    *,
    dilation: int = 1,
    last_stride: int = 1,
    lead_relu: bool = False,
) -> nn.Sequential:
    """[ReLU], then Conv3x3+ReLU per channel step, then BatchNorm: the papers' repeated unit."""
    layers: list[nn.Module] = [nn.ReLU(True)] if lead_relu else []
    steps = list(itertools.pairwise(channels))
    for i, (c_in, c_out) in enumerate(steps):
        stride = last_stride if i == len(steps) - 1 else 1
        layers.append(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=True)
        )
        layers.append(nn.ReLU(True))
    layers.append(nn.BatchNorm2d(channels[-1]))
    return nn.Sequential(*layers)


def _upconv(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=True)


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=True)


class ECCV16Net(nn.Module):
    """ "Colorful Image Colorization" (ECCV 2016): L (N,1,256,256) -> ab (N,2,256,256)."""

    def __init__(self) -> None:
        super().__init__()
        self.model1 = _conv_block((1, 64, 64), last_stride=2)
        self.model2 = _conv_block((64, 128, 128), last_stride=2)
        self.model3 = _conv_block((128, 256, 256, 256), last_stride=2)
        self.model4 = _conv_block((256, 512, 512, 512))
        self.model5 = _conv_block((512, 512, 512, 512), dilation=2)
        self.model6 = _conv_block((512, 512, 512, 512), dilation=2)
        self.model7 = _conv_block((512, 512, 512, 512))
        self.model8 = nn.Sequential(
            _upconv(512, 256),
            nn.ReLU(True),
            _conv3(256, 256),
            nn.ReLU(True),
            _conv3(256, 256),
            nn.ReLU(True),
            nn.Conv2d(256, 313, kernel_size=1, bias=True),
        )
        # Expectation over the 313 quantised ab bins: a 1x1 conv whose weights are the bin centres.
        self.model_out = nn.Conv2d(313, 2, kernel_size=1, bias=False)

    def forward(self, lightness: torch.Tensor) -> torch.Tensor:
        """L in [0, 100] at 256x256 -> predicted ab at the same size."""
        x = (lightness - L_CENTER) / L_SCALE
        for stage in (self.model1, self.model2, self.model3, self.model4):
            x = stage(x)
        for stage in (self.model5, self.model6, self.model7, self.model8):
            x = stage(x)
        ab = self.model_out(torch.softmax(x, dim=1))
        # The network predicts at 1/4 resolution; align_corners=False is nn.Upsample's default,
        # which is what the official module uses.
        ab = nn.functional.interpolate(ab, scale_factor=4, mode="bilinear", align_corners=False)
        return ab * AB_SCALE


class SIGGRAPH17Net(nn.Module):
    """ "Real-Time User-Guided Image Colorization" (SIGGRAPH 2017): L, ab hints, mask -> ab."""

    def __init__(self) -> None:
        super().__init__()
        # Input: normalised L, normalised hint ab (2 channels) and the hint mask.
        self.model1 = _conv_block((4, 64, 64))
        self.model2 = _conv_block((64, 128, 128))
        self.model3 = _conv_block((128, 256, 256, 256))
        self.model4 = _conv_block((256, 512, 512, 512))
        self.model5 = _conv_block((512, 512, 512, 512), dilation=2)
        self.model6 = _conv_block((512, 512, 512, 512), dilation=2)
        self.model7 = _conv_block((512, 512, 512, 512))
        # Registration order follows the original so a saved state dict lists keys the same way.
        self.model8up = nn.Sequential(_upconv(512, 256))
        self.model8 = _conv_block((256, 256, 256), lead_relu=True)
        self.model9up = nn.Sequential(_upconv(256, 128))
        self.model9 = _conv_block((128, 128), lead_relu=True)
        self.model10up = nn.Sequential(_upconv(128, 128))
        self.model10 = nn.Sequential(nn.ReLU(True), _conv3(128, 128), nn.LeakyReLU(0.2))
        # Skip connections, added to the upsampled features of the matching resolution.
        self.model3short8 = nn.Sequential(_conv3(256, 256))
        self.model2short9 = nn.Sequential(_conv3(128, 128))
        self.model1short10 = nn.Sequential(_conv3(64, 128))
        # The classification head is in the checkpoint but the regression output does not use it;
        # it stays so that loading with strict=True still works.
        self.model_class = nn.Sequential(nn.Conv2d(256, 529, kernel_size=1, bias=True))
        self.model_out = nn.Sequential(nn.Conv2d(128, 2, kernel_size=1, bias=True), nn.Tanh())

    def forward(
        self, lightness: torch.Tensor, hint_ab: torch.Tensor, hint_mask: torch.Tensor
    ) -> torch.Tensor:
        """L in [0, 100], hint ab (unscaled Lab units) and a 0/1 mask, all 256x256 -> ab."""
        x = torch.cat(((lightness - L_CENTER) / L_SCALE, hint_ab / AB_SCALE, hint_mask), dim=1)
        conv1 = self.model1(x)
        conv2 = self.model2(conv1[:, :, ::2, ::2])
        conv3 = self.model3(conv2[:, :, ::2, ::2])
        x = self.model4(conv3[:, :, ::2, ::2])
        x = self.model7(self.model6(self.model5(x)))
        x = self.model8(self.model8up(x) + self.model3short8(conv3))
        x = self.model9(self.model9up(x) + self.model2short9(conv2))
        # The official forward runs the last three stages twice with identical results; once is
        # enough (same output, less time and memory).
        x = self.model10(self.model10up(x) + self.model1short10(conv1))
        ab: torch.Tensor = self.model_out(x) * AB_SCALE
        return ab
