"""siggraph17: user-guided colorization, steered by optional colour hints (Zhang et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from service.engines.base import ColorizeRequest, Hint, InvalidRequest
from service.engines.fixed import HINT_SIZE, SIGGRAPH17_ITEM_BYTES, FixedInputEngine
from service.engines.networks import INPUT_SIZE, SIGGRAPH17Net
from service.imaging.lab import rgb_to_lab


class Siggraph17Engine(FixedInputEngine):
    """The SIGGRAPH 2017 network; each hint colours a HINT_SIZE square of its 256x256 grid."""

    name = "siggraph17"
    item_bytes = SIGGRAPH17_ITEM_BYTES
    takes_hints = True

    def build_network(self) -> nn.Module:
        return SIGGRAPH17Net()

    def validate(self, request: ColorizeRequest) -> None:
        """Each hint must lie inside the image and have an 8-bit RGB colour."""
        super().validate(request)
        width, height = request.size
        for index, hint in enumerate(request.hints):
            if not (0 <= hint.x < width and 0 <= hint.y < height):
                raise InvalidRequest(
                    f"hint {index} at {hint.where} is outside the {width}x{height} image"
                )
            if len(hint.color) != 3 or not all(
                isinstance(c, int) and 0 <= c <= 255 for c in hint.color
            ):
                raise InvalidRequest(
                    f"hint {index} at {hint.where} has colour {hint.color!r}; "
                    "expected three values 0-255"
                )

    def predict(
        self, network: nn.Module, lightness: torch.Tensor, requests: Sequence[ColorizeRequest]
    ) -> torch.Tensor:
        hint_ab, hint_mask = hint_planes(requests, lightness.device)
        ab: torch.Tensor = network(lightness, hint_ab, hint_mask)
        return ab


def hint_planes(
    requests: Sequence[ColorizeRequest], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's hint inputs: ab (N,2,256,256) in Lab units and a 0/1 mask (N,1,256,256)."""
    # Zeros where there is no hint, as the published forward fills in when given none; a hint
    # sets its colour's ab and mask 1 on a HINT_SIZE square, the later of overlapping hints winning.
    n = len(requests)
    hint_ab = torch.zeros(n, 2, INPUT_SIZE, INPUT_SIZE)
    hint_mask = torch.zeros(n, 1, INPUT_SIZE, INPUT_SIZE)
    half = HINT_SIZE // 2
    for i, request in enumerate(requests):
        width, height = request.size
        for hint in request.hints:
            gx, gy = grid_cell(hint, width, height)
            rows = slice(max(gy - half, 0), gy + half + 1)
            cols = slice(max(gx - half, 0), gx + half + 1)
            hint_ab[i, :, rows, cols] = hint_chroma(hint.color).view(2, 1, 1)
            hint_mask[i, :, rows, cols] = 1.0
    return hint_ab.to(device), hint_mask.to(device)


def grid_cell(hint: Hint, width: int, height: int) -> tuple[int, int]:
    """The 256x256 grid cell under the centre of the hint's input pixel."""
    gx = int((hint.x + 0.5) * INPUT_SIZE / width)
    gy = int((hint.y + 0.5) * INPUT_SIZE / height)
    return min(gx, INPUT_SIZE - 1), min(gy, INPUT_SIZE - 1)


def hint_chroma(color: tuple[int, int, int]) -> torch.Tensor:
    """The (a, b) of an sRGB colour, by the same conversion the pipeline uses."""
    rgb = torch.tensor(color, dtype=torch.float32).view(3, 1, 1) / 255.0
    return rgb_to_lab(rgb)[1:, 0, 0]
