"""A convolution whose weight is divided by its spectral norm, laid out as `nn.utils.spectral_norm`.

DDColor's pixel decoder and refinement layer were trained with `torch.nn.utils.spectral_norm`,
so the checkpoints store `weight_orig` plus the power-iteration vectors `weight_u` and
`weight_v`. That utility works through a forward pre-hook and, in training mode, updates `u`
and `v` on every call. This module keeps the same three tensors but computes the normalised
weight inside `forward` and never writes to them, so a forward pass has no side effects.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SIGMA_EPS = 1e-12
"""`nn.utils.spectral_norm`'s default eps: the floor under a vector's norm when normalising."""


class SpectralConv2d(nn.Module):
    """Conv2d (stride 1, 'same' padding) with weight `weight_orig / sigma`, sigma = u . (W v)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> None:
        super().__init__()
        self.padding = (kernel_size - 1) // 2
        # Registration order follows a spectral-normed Conv2d's state dict: spectral_norm
        # re-registers the weight as `weight_orig` after the conv's bias, then adds u and v.
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_orig = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        )
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size))
        self.reset_parameters()

    weight_u: torch.Tensor
    weight_v: torch.Tensor

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal weight, zero bias, random unit u and v (as spectral_norm starts)."""
        nn.init.kaiming_normal_(self.weight_orig)
        if self.bias is not None:
            self.bias.zero_()
        self.weight_u.copy_(F.normalize(torch.randn_like(self.weight_u), dim=0, eps=SIGMA_EPS))
        self.weight_v.copy_(F.normalize(torch.randn_like(self.weight_v), dim=0, eps=SIGMA_EPS))

    def normalised_weight(self) -> torch.Tensor:
        """The weight the convolution uses: `weight_orig` over its largest singular value."""
        matrix = self.weight_orig.flatten(1)
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        return self.weight_orig / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalised_weight(), self.bias, padding=self.padding)
