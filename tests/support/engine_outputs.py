"""Engine outputs the engine suites compare against: each image run on its own, kept."""

from __future__ import annotations

import numpy as np

from service.engines.base import ColorizeRequest
from service.engines.fixed import FixedInputEngine

PIXEL = np.array([[[200, 30, 90]]], dtype=np.uint8)
"""A 1x1 image: the smallest input, stretched to the whole 256x256 grid."""


class AloneOutputs:
    """Each engine's output for a named image run on its own, computed once and kept."""

    def __init__(self, images: dict[str, np.ndarray]) -> None:
        self.images = images
        self._kept: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, engine: FixedInputEngine, image: str) -> np.ndarray:
        key = (engine.name, image)
        if key not in self._kept:
            self._kept[key] = engine.run([ColorizeRequest(self.images[image])])[0]
        return self._kept[key]
