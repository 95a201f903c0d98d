"""Engines without weights for tests and benchmarks: deterministic stand-ins with a known
behaviour, implementing the engine contract (service/engines/base.py) like the real ones."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

from service.engines.base import ColorizeRequest, Engine, MemoryModel
from service.imaging.lab import lab_to_rgb, rgb_to_lab, to_tensor, to_uint8


class JitterEngine(Engine):
    """Colours like a network that flickers: a fixed mapping from luminance to ab, shifted by an
    offset that depends on the exact pixels (so two frames of a pan get different colours, the
    same frame always the same ones). Deterministic; no weights."""

    needs_weights = False
    batchable = True

    def __init__(self, device: torch.device, jitter: float = 8.0, name: str = "jitter") -> None:
        super().__init__(device)
        self.name = name
        self.jitter = jitter
        self.batches: list[int] = []
        """The size of each forward pass, in order."""

    @property
    def memory_model(self) -> MemoryModel:
        return MemoryModel(per_item_bytes=0, per_pixel_bytes=64)

    def load(self) -> None:
        pass

    @property
    def ready(self) -> bool:
        return True

    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        self.batches.append(len(requests))
        outputs: list[object] = []
        for request in requests:
            seed = zlib.crc32(np.ascontiguousarray(request.image).tobytes())
            da, db = np.random.default_rng(seed).uniform(-self.jitter, self.jitter, 2)
            lab = rgb_to_lab(to_tensor(request.image, self.device))
            lightness = lab[0]
            lab[1] = 0.4 * (lightness - 50.0) + 12.0 + float(da)
            lab[2] = 28.0 - 0.3 * (lightness - 50.0) + float(db)
            outputs.append(to_uint8(lab_to_rgb(lab)))
        return outputs
