"""What every colorization engine is: a memory model, readiness, and a batched `run`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from service.engines.fast import Precision


@dataclass(frozen=True)
class Hint:
    """A siggraph17 colour hint: pixel (x, y) of the input image should be `color` (RGB)."""

    x: int
    y: int
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ColorizeRequest:
    """One image to colorize: RGB uint8 (H, W, 3); only its luminance is used."""

    image: np.ndarray
    hints: tuple[Hint, ...] = ()
    reference: np.ndarray | None = None
    """RGB uint8 (h, w, 3) colour reference; required by the exemplar engine."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives it."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class MemoryModel:
    """Upper bound of a job's device bytes: fixed per batch item plus per output pixel.

    `estimate` is what the MemoryManager reserves before the job runs. Resident weights are not
    part of it: they are loaded once and already count as in use.
    """

    per_item_bytes: int
    """Network activations for one item at its fixed input size (0 for pixel-proportional work)."""
    per_pixel_bytes: int
    """Full-resolution working tensors (colour conversion, resize, output) per input pixel."""
    fixed_bytes: int = 0
    """Per-batch overhead that does not scale with items or pixels."""
    reference_pixel_bytes: int = 0
    """Bytes per reference pixel (exemplar only)."""
    notes: str = field(default="", compare=False)

    def estimate(self, width: int, height: int, batch: int = 1, reference_pixels: int = 0) -> int:
        """Bytes for `batch` images of width x height (and a reference of that many pixels)."""
        if width <= 0 or height <= 0 or batch <= 0:
            raise ValueError(f"bad size {width}x{height} x{batch}")
        return (
            self.fixed_bytes
            + batch * (self.per_item_bytes + self.per_pixel_bytes * width * height)
            + self.reference_pixel_bytes * reference_pixels
        )

    def largest_square(self, budget: int) -> int:
        """Side of the largest square image whose estimate fits `budget` (0 if none)."""
        room = budget - self.fixed_bytes - self.per_item_bytes
        if room <= 0:
            return 0
        if self.per_pixel_bytes == 0:
            return 1 << 16
        return int((room // self.per_pixel_bytes) ** 0.5)


class EngineError(Exception):
    """An engine could not process a request for a reason the client caused or can fix."""


class EngineNotReady(EngineError):
    """Weights missing or not loaded; `reason` says how to fix it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"engine {name!r} is not ready: {reason}")
        self.name = name
        self.reason = reason


class InvalidRequest(EngineError):
    """The request is wrong for this engine (missing reference, hint outside the image...)."""


class Engine(ABC):
    """A colorizer bound to one device. `load` may be slow; `run` is called by one thread only."""

    name: str
    """Registry name (eccv16, siggraph17, exemplar)."""
    batchable: bool = False
    """True when several requests can share one forward pass (fixed-size network input)."""
    needs_weights: bool = True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    @abstractmethod
    def memory_model(self) -> MemoryModel:
        """Bytes this engine needs for a job, as a function of size and batch."""

    @abstractmethod
    def load(self) -> None:
        """Load weights onto the device; raises EngineNotReady naming the file and the fix."""

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Whether `run` can be called now."""

    @property
    def not_ready_reason(self) -> str | None:
        """Why the engine is not ready (None when it is)."""
        return None if self.ready else "not loaded"

    @property
    def precision(self) -> Precision:
        """The precision its network runs in: fp32, bf16 or fp16 (see engines/fast.py)."""
        return "fp32"

    @property
    def precision_reason(self) -> str:
        """Why it runs in `precision`: what was asked and what refused or admitted it."""
        return "fp32 only: this engine does not use reduced precision"

    def estimate(self, request: ColorizeRequest, batch: int = 1) -> int:
        """Bytes to reserve for `request` (in a batch of `batch` like it)."""
        w, h = request.size
        ref = (
            0
            if request.reference is None
            else request.reference.shape[0] * request.reference.shape[1]
        )
        return self.memory_model.estimate(w, h, batch, ref)

    def validate(self, request: ColorizeRequest) -> None:
        """Raise InvalidRequest if this engine cannot take `request`; cheap, no device work."""
        if request.hints:
            raise InvalidRequest(f"engine {self.name!r} does not take hints")

    @abstractmethod
    def run(
        self, requests: Sequence[ColorizeRequest], chunk_bytes: int | None = None
    ) -> list[np.ndarray]:
        """Colorize `requests` (one forward pass where batchable); RGB uint8 of each input's size.

        `chunk_bytes` bounds the working memory of engines that process in chunks (exemplar); the
        worker passes a smaller value when it retries after an out-of-memory error.
        """
