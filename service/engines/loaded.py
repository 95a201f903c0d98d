"""What every engine built on a published checkpoint shares: readiness, precision, installation.

eccv16, siggraph17 (service/engines/fixed.py) and the DDColor engines (service/engines/ddcolor/)
read their checkpoint differently, but once they hold a checked state dict they build, install
and report the network the same way.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.engines import weights
from service.engines.base import ColorizeRequest, Engine, EngineNotReady, InvalidRequest
from service.engines.fast import Accelerated, FastPath, Precision, Probe

logger = logging.getLogger(__name__)


class NetworkEngine(Engine):
    """An engine whose network loads from a checkpoint in `weights_dir` onto `device`."""

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

    def install(self, build: Callable[[], nn.Module], state: object, probe: Probe) -> None:
        """Build on the meta device, take `state` strictly, move to the device, pick precision."""
        # Built on the meta device and given the loaded tensors (assign=True): initialising
        # millions of random weights only to overwrite them would cost seconds per load.
        with torch.device("meta"):
            network = build()
        network.load_state_dict(state, strict=True, assign=True)  # type: ignore[arg-type]
        network.requires_grad_(False)
        # float32 whatever the file holds: the pipeline feeds float32 and the constants assume it
        # (reduced precision is autocast around the forward pass, never the stored weights).
        network = network.to(device=self.device, dtype=torch.float32).eval()
        self._accelerated = self.fast.prepare(network, self.device, probe)
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

    @property
    def joins_on_host(self) -> bool:
        """Whether `forward` leaves the full-resolution colour join to `finish`.

        On a CPU device the join is CPU work like any other: it runs in the finish pool, so the
        device thread moves on to the next forward pass. On a GPU the join is faster on the
        device and stays in the forward stage.
        """
        return self.device.type == "cpu"

    @abstractmethod
    def join(
        self, request: ColorizeRequest, ab: torch.Tensor, chunk_bytes: int | None
    ) -> np.ndarray:
        """The photo's own L joined with `ab` from `forward`, as RGB uint8 of the photo's size."""

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

    def run(
        self, requests: Sequence[ColorizeRequest], chunk_bytes: int | None = None
    ) -> list[np.ndarray]:
        """All three stages in this thread (benchmarks, tests): one forward pass for `requests`."""
        prepared = [self.prepare(r) for r in requests]
        outputs = self.forward(requests, prepared, chunk_bytes)
        return [self.finish(r, o, chunk_bytes) for r, o in zip(requests, outputs, strict=True)]

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
