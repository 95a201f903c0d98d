"""What every engine built on a published checkpoint shares: loading, the forward pass, and
where the full-resolution colour join runs.

eccv16, siggraph17 (service/engines/fixed.py) and the DDColor engines (service/engines/ddcolor/)
read their checkpoints differently and predict at different grids, but all of them predict ab
for a batch and join it with each photo's own full-resolution L. What a network supplies is
listed under NetworkEngine; loading, precision, readiness and the place of the join are here.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar, cast

import numpy as np
import torch
from torch import nn

from service.engines import weights
from service.engines.base import ColorizeRequest, Engine, EngineNotReady, InvalidRequest
from service.engines.fast import Accelerated, FastPath, Precision

logger = logging.getLogger(__name__)

Input = TypeVar("Input")
"""What `prepare` makes of a request for the network (a resized image, a grey tensor...)."""


class NetworkEngine(Engine, Generic[Input]):
    """An engine whose network loads from a checkpoint in `weights_dir` onto `device`.

    A network supplies: `read_state` (its checked checkpoint), `build_network`, `probe` (ab for
    the fast path's precision check), `prepare` (CPU work before the device), `predict_ab` (the
    batch's ab on the device), `join` (a photo's L with its ab), the bytes of the two
    (`forward_bytes`, `join_bytes`) and, as every engine, its `memory_model`. Whether the join
    runs in `forward` or in `finish` is decided here, by `joins_on_host`, and the stage
    estimates follow from it.
    """

    batchable = True

    def __init__(
        self, device: torch.device, weights_dir: Path, fast: FastPath | None = None
    ) -> None:
        super().__init__(device)
        self.weights_dir = Path(weights_dir)
        self.fast = fast or FastPath()
        """Precision, memory format and uploads (COLORIZE_PRECISION, COLORIZE_CHANNELS_LAST)."""
        self.precision_note = ""
        """Said before the fast path's reason (a precision this engine refuses up front)."""
        self._network: nn.Module | None = None
        self._accelerated: Accelerated | None = None
        self._load_error: str | None = None

    # -- what a network supplies ---------------------------------------------------------------

    @abstractmethod
    def read_state(self) -> dict[str, torch.Tensor]:
        """The checkpoint's state dict, checked against the network; EngineNotReady naming the
        file and the fix when it is missing, unreadable or does not fit."""

    @abstractmethod
    def build_network(self) -> nn.Module:
        """A fresh, untrained network in the published layout."""

    @abstractmethod
    def probe(self, network: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
        """ab for the fast path's probe L (N,1,256,256): what its precision check compares."""

    @abstractmethod
    def prepare(self, request: ColorizeRequest) -> Input:
        """The request's network input, made on the CPU (the request was validated before)."""

    @abstractmethod
    def predict_ab(
        self,
        network: nn.Module,
        accelerated: Accelerated,
        requests: Sequence[ColorizeRequest],
        inputs: Sequence[Input],
    ) -> torch.Tensor:
        """ab (N,2,S,S) on the device for the batch's prepared `inputs`, the network's forward
        pass under `accelerated.autocast()`."""

    @abstractmethod
    def join(
        self, request: ColorizeRequest, ab: torch.Tensor, chunk_bytes: int | None
    ) -> np.ndarray:
        """The photo's own L joined with its `ab` (1,2,S,S), as RGB uint8 of the photo's size,
        on `ab`'s device; `chunk_bytes` bounds its working memory."""

    @abstractmethod
    def forward_bytes(self, request: ColorizeRequest, batch: int = 1) -> int:
        """Bytes of a forward pass of `batch` requests like `request`, without the join."""

    @abstractmethod
    def join_bytes(self, request: ColorizeRequest) -> int:
        """Bytes `request`'s join needs in the finish stage: its whole-image tensors and a band."""

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the checkpoint strictly, build the network on the device, pick the precision."""
        if self.ready:
            return
        try:
            state = self.read_state()
        except EngineNotReady as exc:
            self._load_error = exc.reason
            raise
        self.load_state_dict(state)

    def load_state_dict(self, state: object) -> None:
        """Build on the meta device, take `state` strictly, move to the device, pick precision.

        `state` is a checked state dict: `read_state`'s, or a benchmark's random network's.
        """
        # Built on the meta device and given the loaded tensors (assign=True): initialising
        # millions of random weights only to overwrite them would cost seconds per load.
        with torch.device("meta"):
            network = self.build_network()
        network.load_state_dict(state, strict=True, assign=True)  # type: ignore[arg-type]
        network.requires_grad_(False)
        # float32 whatever the file holds: the pipeline feeds float32 and the constants assume it
        # (reduced precision is autocast around the forward pass, never the stored weights).
        network = network.to(device=self.device, dtype=torch.float32).eval()
        self._accelerated = self.fast.prepare(network, self.device, self.probe)
        self._network = network
        self._load_error = None
        logger.info(
            "%s loaded on %s from %s (%s%s)",
            self.name,
            self.device,
            self.weights_dir,
            self._accelerated.precision,
            ", channels_last" if self.fast.channels_last else "",
        )

    # -- where the colour join runs --------------------------------------------------------------

    @property
    def joins_on_host(self) -> bool:
        """Whether `forward` leaves the full-resolution colour join to `finish`.

        On a CPU device the join is CPU work like any other: it runs in the finish pool, so the
        device thread moves on to the next forward pass. On a GPU the join is faster on the
        device and stays in the forward stage.
        """
        return self.device.type == "cpu"

    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        """One forward pass: ab (1,2,S,S) per request for `finish`, or joined images on a GPU."""
        network, accelerated = self.loaded()
        if not requests:
            return []
        # What the prepare stage made of each request (the worker keeps it as an object).
        inputs = [
            self.prepare(r) if p is None else cast(Input, p)
            for r, p in zip(requests, prepared, strict=True)
        ]
        with torch.inference_mode(), deterministic_convolutions():
            # float32 and the default memory format whatever the fast path did, so the join is
            # the same with or without it.
            ab = self.predict_ab(network, accelerated, requests, inputs).float().contiguous()
            if self.joins_on_host:
                return [ab[i : i + 1].clone() for i in range(len(requests))]
            return [self.join(r, ab[i : i + 1], chunk_bytes) for i, r in enumerate(requests)]

    def finish(
        self, request: ColorizeRequest, output: object, chunk_bytes: int | None = None
    ) -> np.ndarray:
        """Join the photo's own L with the predicted ab (CPU devices); images pass through."""
        if isinstance(output, np.ndarray):
            return output
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{self.name} forward returned {type(output).__name__}")
        with torch.inference_mode():
            return self.join(request, output, chunk_bytes)

    def device_estimate(self, request: ColorizeRequest, batch: int = 1) -> int:
        if self.joins_on_host:
            return self.forward_bytes(request, batch)
        return self.estimate(request, batch)

    def finish_estimate(self, request: ColorizeRequest) -> int:
        return self.join_bytes(request) if self.joins_on_host else 0

    def loaded(self) -> tuple[nn.Module, Accelerated]:
        """The network and its fast path; EngineNotReady (naming the fix) until loaded."""
        if self._network is None or self._accelerated is None:
            raise EngineNotReady(self.name, self.not_ready_reason or "not loaded")
        return self._network, self._accelerated

    @property
    def precision(self) -> Precision:
        """The precision the network runs in (fp32 until loaded)."""
        return "fp32" if self._accelerated is None else self._accelerated.precision

    @property
    def precision_reason(self) -> str:
        if self._accelerated is None:
            return (
                f"{self.precision_note}not loaded yet "
                f"(COLORIZE_PRECISION={self.fast.precision} is checked at load)"
            )
        return self.precision_note + self._accelerated.reason

    @property
    def ready(self) -> bool:
        return self._network is not None

    @property
    def not_ready_reason(self) -> str | None:
        if self._network is not None:
            return None
        if self._load_error is not None:
            return self._load_error
        try:
            path = weights.locate(self.name, self.weights_dir)
        except weights.WeightsError as exc:
            return str(exc)
        return f"weights at {path} are not loaded yet"


def check_image(request: ColorizeRequest) -> None:
    """InvalidRequest unless the request's image is a non-empty RGB uint8 (H, W, 3) array."""
    image = request.image
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidRequest(
            f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidRequest(f"empty image {image.shape}")


@contextmanager
def deterministic_convolutions() -> Iterator[None]:
    """cuDNN without autotuning and with deterministic algorithms, for repeatable outputs."""
    # benchmark=True could pick another algorithm per batch size (and per run), so an output
    # would depend on what else was in its batch. Only these two flags change, and only for the
    # call: cudnn.flags() would also reset TF32 and precision settings the operator chose.
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved
