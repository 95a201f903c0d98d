"""eccv16: automatic colorization by classification over quantised ab bins (Zhang et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from service.engines.base import ColorizeRequest
from service.engines.fixed import ECCV16_ITEM_BYTES, FixedInputEngine
from service.engines.networks import ECCV16Net


class Eccv16Engine(FixedInputEngine):
    """The ECCV 2016 network; takes no hints."""

    name = "eccv16"
    item_bytes = ECCV16_ITEM_BYTES

    def build_network(self) -> nn.Module:
        return ECCV16Net()

    def predict(
        self, network: nn.Module, lightness: torch.Tensor, requests: Sequence[ColorizeRequest]
    ) -> torch.Tensor:
        ab: torch.Tensor = network(lightness)
        return ab
