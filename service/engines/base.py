"""What every colorization engine is: requests, a memory model, readiness, and three stages."""

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

    @property
    def where(self) -> str:
        """ "(x, y)" for messages, a number too long to be a pixel abbreviated (a client's
        4,000-digit coordinate is not echoed back to it)."""
        return f"({_short(self.x)}, {_short(self.y)})"


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 12 else f"{text[:6]}...({len(text)} digits)"


@dataclass(frozen=True)
class ColorizeRequest:
    """One image to colorize: RGB uint8 (H, W, 3); only its luminance is used."""

    image: np.ndarray
    hints: tuple[Hint, ...] = ()
    reference: np.ndarray | None = None
    """RGB uint8 (h, w, 3) colour reference; required by the exemplar engine."""
    render_size: int | None = None
    """Side of the square the network renders at, for engines that take one (DDColor);
    None: the engine's default."""

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


@dataclass(frozen=True)
class RenderLimits:
    """The render sizes an engine with a square network input of free size accepts (DDColor)."""

    default: int = 256
    """Used when a request names none (COLORIZE_DDCOLOR_RENDER_SIZE)."""
    maximum: int = 1024
    """The largest a request may ask for (COLORIZE_MAX_RENDER_SIZE)."""
    minimum: int = 64
    """Below this the encoder's coarsest scale is 2x2 cells: nothing left to colour from."""
    multiple: int = 32
    """The encoder's total stride: sides must be multiples of it."""

    def __post_init__(self) -> None:
        for size in (self.default, self.maximum):
            if size % self.multiple or not self.minimum <= size:
                raise ValueError(
                    f"render size {size} is not a multiple of {self.multiple} >= {self.minimum}"
                )
        if self.default > self.maximum:
            raise ValueError(f"default render size {self.default} exceeds {self.maximum}")

    def check(self, size: int) -> None:
        """Raise InvalidRequest naming the rule `size` breaks."""
        if size % self.multiple or not self.minimum <= size <= self.maximum:
            raise InvalidRequest(
                f"render_size must be a multiple of {self.multiple} from {self.minimum} to "
                f"{self.maximum} (COLORIZE_MAX_RENDER_SIZE), got {size}"
            )


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
    """A colorizer bound to one device, run by the worker in three stages.

    `prepare` (a CPU pool) -> `forward` (a device thread) -> `finish` (a CPU pool): the stage
    methods are the contract, and `forward` is the one every engine implements. Stages of
    different jobs run at once in different threads (on a CPU device, by default, two forward
    passes too), so an engine keeps nothing between calls. `load` may be slow and comes first.
    """

    name: str
    """Its name in the catalog (service/engines/catalog.py), which requests and settings use."""
    batchable: bool = False
    """True when several requests can share one forward pass (a network with a square input)."""
    needs_weights: bool = True
    takes_render_size: bool = False
    """True when a request may choose the network's square input side (`render_limits`)."""
    takes_reference: bool = False
    """True when the engine colours from a reference photo, which each request must then carry."""
    takes_hints: bool = False
    """True when a request may carry colour hints (points that should have a given colour)."""

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
        """Whether `forward` can be called now."""

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
        """Raise InvalidRequest if this engine cannot take `request`; cheap, no device work.

        The API calls it at upload with placeholder arrays of the decoded shapes (no pixels),
        and the prepare stage again with the decoded image.
        """
        if request.hints and not self.takes_hints:
            raise InvalidRequest(f"engine {self.name!r} does not take hints")
        if request.render_size is not None:
            limits = self.render_limits
            if limits is None:
                raise InvalidRequest(f"engine {self.name!r} does not take a render size")
            limits.check(request.render_size)
        if request.reference is None and self.takes_reference:
            raise InvalidRequest(f"the {self.name} engine needs a reference image")

    @property
    def render_limits(self) -> RenderLimits | None:
        """The render sizes this engine takes (None: a fixed input size, or none at all)."""
        return None

    def largest_render_size(
        self, budget: int, image_size: tuple[int, int] | None = None
    ) -> int | None:
        """The largest render size whose estimate fits `budget` bytes, for an image of
        `image_size` (width, height) or the forward pass alone (None: none fits, or no size)."""
        return None

    def batch_key(self, request: ColorizeRequest) -> object:
        """Requests share a forward pass only when their keys are equal (DDColor: render size)."""
        return None

    # -- the stages: prepare (CPU pool) -> forward (device thread) -> finish (CPU pool) ----------

    def prepare(self, request: ColorizeRequest) -> object | None:
        """CPU work before the device (resize to the network input...); default: none."""
        return None

    @abstractmethod
    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        """The device stage: one output per request, each final (an image) or for `finish`.

        `prepared` holds `prepare`'s result for each request (one forward pass where
        batchable). `chunk_bytes` bounds the working memory of engines that work in chunks or
        bands; the worker passes a smaller value when it retries after running out of memory.
        """

    def finish(
        self, request: ColorizeRequest, output: object, chunk_bytes: int | None = None
    ) -> np.ndarray:
        """CPU work after the device (colour join on a CPU device); default: `output` as is."""
        if not isinstance(output, np.ndarray):
            raise TypeError(f"{self.name} forward returned {type(output).__name__}, not an image")
        return output

    def device_estimate(self, request: ColorizeRequest, batch: int = 1) -> int:
        """Bytes the device stage reserves for `request` (in a batch of `batch` like it)."""
        return self.estimate(request, batch)

    def finish_estimate(self, request: ColorizeRequest) -> int:
        """Bytes the finish stage reserves for `request` beyond its pixels (0: none)."""
        return 0

    def run(
        self, requests: Sequence[ColorizeRequest], chunk_bytes: int | None = None
    ) -> list[np.ndarray]:
        """The three stages in this thread (tests, benchmarks): RGB uint8 of each input's size.

        Each request is validated here; in the service, admission has validated it once
        (service/worker/admission.py) and the stages trust it.
        """
        for request in requests:
            self.validate(request)
        prepared = [self.prepare(r) for r in requests]
        outputs = self.forward(requests, prepared, chunk_bytes)
        return [self.finish(r, o, chunk_bytes) for r, o in zip(requests, outputs, strict=True)]
