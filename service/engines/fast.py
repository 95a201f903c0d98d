"""The fast path of the networks (eccv16, siggraph17, DDColor): precision, memory format and
pinned uploads.

Every step is guarded by the device type, and reduced precision is used only where it keeps the
outputs within TOLERANCE of float32 (docs/performance.md has what was measured where):

- `torch.inference_mode()`: already around `NetworkEngine.forward` (no autograd bookkeeping).
- channels_last weights: convolutions run NHWC, which oneDNN and cuDNN prefer; the values are
  the same up to summation order (measured on CPU: at most 0.1 ab units, under one 8-bit level).
- reduced precision: autocast (bf16 or fp16) around the network's forward only; colour conversion
  and resizing stay float32, and eccv16's and siggraph17's first block stays float32 (it sees
  the raw luminance, and keeping it halves the error for ~2-3 % of the FLOPs). It is chosen for
  speed and accuracy, in that order, and the engine stays float32 with a logged reason otherwise:
  1. speed: one piece of the network (its heaviest convolution or linear layer by default) is
     timed both ways on small inputs, growing only while the time budget allows
     (service/engines/speed.py): nothing larger runs in a precision until it is found faster.
  2. accuracy: a probe image runs through the whole network both ways; if the ab outputs differ
     by more than the tolerance, reduced precision is refused.
- pinned host memory for CUDA uploads: the bytes are copied into page-locked memory and sent
  asynchronously (PyTorch's caching host allocator holds the block until the copy completes).
- not done: `torch.compile` and CUDA graphs. Both need static shapes, and dynamic batching
  gives 1..COLORIZE_BATCH_MAX_SIZE items per forward: a graph (and a compile) per size, paid at
  start-up, and CUDA graphs keep a private memory pool that the MemoryManager's per-job
  estimates and cache clearing cannot see. Revisit with a measured GPU profile.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from service.engines.speed import Piece, Speed, SpeedCheck, heaviest_piece, measure_speed

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")

DTYPES: Mapping[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}

FLOAT32_STAGES: Mapping[str, tuple[str, ...]] = {
    "ECCV16Net": ("model1",),
    "SIGGRAPH17Net": ("model1",),
}
"""Submodules kept in float32 under autocast, by network class name."""

PROBE_SIZE = 256
PROBE_SEED = 1234

Probe = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""Runs the network on L (N,1,256,256) and returns its ab (N,2,S,S) on the network's own grid."""


@dataclass(frozen=True)
class PrecisionError:
    """How far reduced-precision ab outputs are from float32, in Lab units."""

    mean_ab: float
    p99_ab: float
    max_ab: float


@dataclass(frozen=True)
class Tolerance:
    """The largest difference from float32 that reduced precision may make, in ab (Lab) units.

    For scale: a colour difference of about 2.3 Lab units is just noticeable side by side.
    """

    mean_ab: float = 1.0
    """Mean absolute difference over all ab values."""
    p99_ab: float = 6.0
    """99th percentile: a few pixels may move by a barely visible amount, no more."""

    def admits(self, error: PrecisionError) -> bool:
        return error.mean_ab <= self.mean_ab and error.p99_ab <= self.p99_ab


TOLERANCE = Tolerance()


@dataclass(frozen=True)
class FastPath:
    """How the networks run: `COLORIZE_PRECISION` and `COLORIZE_CHANNELS_LAST`.

    Any engine can use it: `prepare` needs the loaded network, a Probe, and optionally the Piece
    whose speed stands for the network (by default its heaviest convolution or linear layer).
    """

    precision: Precision = "fp32"
    channels_last: bool = False
    pin_memory: bool = True
    """Stage CUDA uploads in page-locked memory (ignored on other devices)."""
    tolerance: Tolerance = field(default=TOLERANCE)
    speed_check: SpeedCheck = field(default_factory=SpeedCheck)

    def precision_for(self, device: torch.device) -> Precision:
        """The precision this device can use: unsupported combinations fall back to fp32."""
        return self._supported(device)[0]

    def _supported(self, device: torch.device) -> tuple[Precision, str]:
        wanted = self.precision
        if wanted == "fp32":
            return "fp32", "fp32 requested (COLORIZE_PRECISION)"
        why = _unsupported(wanted, device)
        if why is not None:
            logger.warning("COLORIZE_PRECISION=%s on %s: %s; using fp32", wanted, device, why)
            return "fp32", f"{wanted} refused: {why}"
        return wanted, f"{wanted} requested"

    def prepare(
        self,
        network: nn.Module,
        device: torch.device,
        probe: Probe,
        piece: Piece | None = None,
    ) -> Accelerated:
        """Apply the memory format and precision to a loaded network (on `device`, eval mode).

        Reduced precision is timed on `piece` first, then checked for accuracy with `probe`;
        the returned Accelerated says which precision won and why.
        """
        if self.channels_last:
            # Module.to(memory_format=...) works but is missing from torch's type stubs.
            network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        precision, reason = self._supported(device)
        if precision == "fp32":
            return Accelerated(network, device, None, None, self.pin_memory, reason=reason)
        dtype = DTYPES[precision]
        kept = FLOAT32_STAGES.get(type(network).__name__, ())
        if piece is None:
            piece = heaviest_piece(network, device, skip=kept)
        if piece is None:
            reason = f"{precision} refused: no convolution or linear layer to time it on"
            logger.warning("%s %s; using fp32", type(network).__name__, reason)
            return Accelerated(network, device, None, None, self.pin_memory, reason=reason)
        speed = measure_speed(piece, device, dtype, precision, self.speed_check)
        if speed.speedup <= self.speed_check.min_speedup:
            reason = (
                f"{precision} refused: not faster than fp32 on {device} "
                f"({speed.describe(precision)})"
            )
            logger.warning("%s %s; using fp32", type(network).__name__, reason)
            return Accelerated(
                network, device, None, None, self.pin_memory, speed=speed, reason=reason
            )
        restore = keep_float32(network, kept)
        error = measure_precision_error(network, device, dtype, probe)
        if not self.tolerance.admits(error):
            restore()
            reason = (
                f"{precision} refused: differs from fp32 by mean {error.mean_ab:.2f} / p99 "
                f"{error.p99_ab:.2f} ab units on the probe image, beyond the tolerance (mean "
                f"{self.tolerance.mean_ab:.2f} / p99 {self.tolerance.p99_ab:.2f})"
            )
            logger.warning("%s %s; using fp32", type(network).__name__, reason)
            return Accelerated(
                network, device, None, error, self.pin_memory, speed=speed, reason=reason
            )
        reason = (
            f"{precision}: {speed.speedup:.2f}x faster than fp32 ({speed.describe(precision)}), "
            f"within tolerance (probe: mean {error.mean_ab:.3f} / p99 {error.p99_ab:.3f} ab units)"
        )
        logger.info("%s runs in %s on %s: %s", type(network).__name__, precision, device, reason)
        return Accelerated(
            network, device, dtype, error, self.pin_memory, speed=speed, reason=reason
        )


@dataclass
class Accelerated:
    """A prepared network and how to call it: the autocast dtype (None: float32), uploads."""

    network: nn.Module
    device: torch.device
    dtype: torch.dtype | None
    probe_error: PrecisionError | None
    """The probe's difference from float32 when its accuracy was checked (else None)."""
    pin_memory: bool = True
    speed: Speed | None = None
    """The speed check's figures when reduced precision was timed (else None)."""
    reason: str = "fp32 requested (COLORIZE_PRECISION)"
    """Why the network runs in `precision`: what was asked, and what refused or admitted it."""

    @property
    def precision(self) -> Precision:
        if self.dtype is None:
            return "fp32"
        return "bf16" if self.dtype == torch.bfloat16 else "fp16"

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to the chosen dtype around the forward pass (nothing for float32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """A tensor of `array` on the device: through pinned memory on CUDA, else a plain copy."""
        if self.device.type == "cuda" and self.pin_memory:
            staging = torch.empty(array.shape, dtype=_torch_dtype(array), pin_memory=True)
            staging.numpy()[...] = array
            return staging.to(self.device, non_blocking=True)
        # torch.from_numpy warns on read-only memory, since the tensor could be written through.
        writable = array if array.flags.writeable else array.copy()
        return torch.from_numpy(writable).to(self.device)


def _unsupported(precision: Precision, device: torch.device) -> str | None:
    """Why `precision` cannot run on `device` (None when it can)."""
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support"
        return None
    if device.type == "cpu":
        if precision == "fp16":
            # Measured: about 70x slower than fp32 on a Zen 4 CPU (no fp16 convolution kernels).
            return "CPUs have no fast float16 convolutions"
        return None
    return f"reduced precision is not measured on {device.type}"


def _torch_dtype(array: np.ndarray) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype


class _Float32(nn.Module):
    """Runs the wrapped module in float32 whatever autocast says around it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        device_type = inputs[0].device.type if inputs else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            out: torch.Tensor = self.module(*(x.float() for x in inputs))
        return out


def keep_float32(network: nn.Module, names: tuple[str, ...]) -> Callable[[], None]:
    """Wrap the named submodules so they run in float32; returns a function that unwraps them."""
    wrapped: list[tuple[nn.Module, str, nn.Module]] = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        original = getattr(parent, child)
        setattr(parent, child, _Float32(original))
        wrapped.append((parent, child, original))

    def restore() -> None:
        for parent, child, original in reversed(wrapped):
            setattr(parent, child, original)

    return restore


def probe_lightness(batch: int = 1, size: int = PROBE_SIZE) -> torch.Tensor:
    """A deterministic L image (N,1,size,size) in [0, 100]: smooth regions, edges and texture."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    total = torch.zeros(batch, 1, size, size)
    # Blobs at several scales (regions and shading), then fine noise (texture, grain).
    for cells, weight in ((4, 1.0), (16, 0.6), (size // 4, 0.3)):
        noise = torch.rand(batch, 1, cells, cells, generator=generator)
        total += weight * nn.functional.interpolate(noise, size=(size, size), mode="bicubic")
    total += 0.1 * torch.rand(batch, 1, size, size, generator=generator)
    # Hard edges: a few flat rectangles, like objects against a background.
    for _ in range(6):
        y, x = (int(v) for v in torch.randint(0, size - size // 4, (2,), generator=generator))
        side = int(torch.randint(size // 16, size // 4, (1,), generator=generator))
        total[:, :, y : y + side, x : x + side] = float(torch.rand(1, generator=generator)) * 2
    total -= total.amin(dim=(2, 3), keepdim=True)
    return 100.0 * total / total.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def precision_error(reference: torch.Tensor, reduced: torch.Tensor) -> PrecisionError:
    """Mean, 99th percentile and max of |reduced - reference| (both ab, Lab units)."""
    diff = (reduced.float() - reference.float()).abs().flatten().cpu()
    # quantile() refuses inputs over 16M values; a strided sample keeps it exact enough.
    step = max(1, math.ceil(diff.numel() / (1 << 22)))
    return PrecisionError(
        mean_ab=float(diff.mean()),
        p99_ab=float(diff[::step].quantile(0.99)),
        max_ab=float(diff.max()),
    )


def measure_precision_error(
    network: nn.Module, device: torch.device, dtype: torch.dtype, probe: Probe
) -> PrecisionError:
    """Run the probe image in float32 and under autocast to `dtype`; their ab difference."""
    lightness = probe_lightness().to(device)
    with torch.inference_mode():
        reference = probe(network, lightness).float()
        with torch.autocast(device_type=device.type, dtype=dtype):
            reduced = probe(network, lightness)
        return precision_error(reference, reduced)
