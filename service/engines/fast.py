"""The fast path of the fixed-input networks: precision, memory format and pinned uploads.

Every step is guarded by the device type, and reduced precision is used only where it keeps the
outputs within TOLERANCE of float32 (docs/performance.md has what was measured where):

- `torch.inference_mode()`: already around `FixedInputEngine.run` (no autograd bookkeeping).
- channels_last weights: convolutions run NHWC, which oneDNN and cuDNN prefer; the values are
  the same up to summation order (measured on CPU: at most 0.1 ab units, under one 8-bit level).
- reduced precision: autocast (bf16 or fp16) around the network's forward only; colour conversion
  and resizing stay float32, and the first block stays float32 (it sees the raw luminance, and
  keeping it halves the error for ~2-3 % of the FLOPs). It is chosen for speed and accuracy, in
  that order, and the engine stays float32 with a logged reason otherwise:
  1. speed: one piece of the network (its heaviest convolution by default) is timed both ways on
     small inputs, growing only while the time budget allows. A CPU without native bf16 emulates
     it about 300x slower than fp32 (issue 13: minutes for one forward pass), so nothing larger
     runs in a precision until this says it is faster.
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
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

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
"""Runs the network on L (N,1,256,256) and returns its ab (N,2,256,256)."""

Timer = Callable[[Callable[[], object], Precision], float]
"""Seconds one call of `run` takes; `run` executes the piece in the precision named."""


def wall_clock(run: Callable[[], object], precision: Precision) -> float:
    """The elapsed time of one call (the precision only names it): the Timer for GPUs."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def process_clock(run: Callable[[], object], precision: Precision) -> float:
    """The CPU time this process spent in one call, all threads: the Timer for CPUs.

    Other processes on the same cores inflate wall times by 5-10x at small sizes (measured at a
    load average of 6-14 on 2 cores, where bf16 then looked 1.0-1.3x faster than fp32 instead
    of 2x); CPU time leaves out the time their work took and read 1.8-2.2x there.
    """
    start = time.process_time()
    run()
    return time.process_time() - start


@dataclass(frozen=True)
class Piece:
    """A part of a network whose speed stands for the whole: a module and inputs of any size."""

    name: str
    """What was timed, for the logs and /v1/models (e.g. "model4.2 (Conv2d 512->512, 3x3)")."""
    module: nn.Module
    make_input: Callable[[int], torch.Tensor]
    """An input of spatial side `size` (or `size` x `size` tokens), on the module's device."""


@dataclass(frozen=True)
class SpeedCheck:
    """How reduced precision is timed against fp32 before the network runs in it at all.

    The piece runs at each size in turn, fp32 and reduced interleaved (one warm-up, then timed
    calls; the best of each kept). It stops growing once a reduced call takes `enough_s`, or
    when the next size (about 4x the work, judged from the best times) would not fit the
    `budget_s` left; the size it stops at decides, after more calls as the budget allows (the
    best of more calls is less likely to be one where other processes held the cores). The
    budget is checked after each pair of calls, so it is overrun by one pair at most. Measured
    (docs/performance.md): native bf16 decides at 32x32, emulated bf16 at 4x4, where its calls
    take 25-60 ms; either way the check takes about `budget_s` or less.
    """

    sizes: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    """Sides tried in turn (eccv16's 512-channel body runs at 32x32). A GPU, whose calls stay
    short, grows to the largest as its budget allows, past the kernel launch costs."""
    repeats: int = 3
    """Timed calls of each, after the warm-up, at a size the check grows past."""
    confirm_repeats: int = 10
    """Timed calls of each at the size that decides, as far as the budget allows."""
    enough_s: float = 0.05
    """A reduced call this long decides: past fixed costs (casting the weights each call), which
    under other processes' load can take the small sizes' calls to 5-50 ms."""
    budget_s: float = 1.0
    min_speedup: float = 1.0
    """Reduced precision must beat fp32 by more than this factor to be used."""
    timer: Timer | None = None
    """None: process_clock on a CPU, wall_clock elsewhere; tests inject scripted times."""


@dataclass(frozen=True)
class Speed:
    """What the speed check measured: the piece's best times at the size that decided."""

    piece: str
    size: int
    fp32_s: float
    reduced_s: float
    elapsed_s: float
    """The whole check's cost, warm-ups and smaller sizes included."""

    @property
    def speedup(self) -> float:
        return self.fp32_s / self.reduced_s if self.reduced_s > 0 else math.inf

    def describe(self, precision: Precision) -> str:
        return (
            f"{self.piece} at {self.size}x{self.size}: {precision} {_ms(self.reduced_s)} vs "
            f"fp32 {_ms(self.fp32_s)} (speed-up {self.speedup:.2f}x; "
            f"check took {self.elapsed_s:.2f} s)"
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


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


def heaviest_piece(
    network: nn.Module, device: torch.device, skip: tuple[str, ...] = ()
) -> Piece | None:
    """The convolution or linear layer with the most weights (most work per output position),
    outside the submodules in `skip`; None if the network has neither."""
    best: tuple[str, nn.Conv2d | nn.Linear] | None = None
    for name, module in network.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(module, nn.Conv2d | nn.Linear) and (
            best is None or module.weight.numel() > best[1].weight.numel()
        ):
            best = name, module
    if best is None:
        return None
    name, layer = best
    generator = torch.Generator().manual_seed(PROBE_SEED)
    if isinstance(layer, nn.Conv2d):
        conv = layer
        memory_format = (
            torch.channels_last
            if conv.weight.is_contiguous(memory_format=torch.channels_last)
            and not conv.weight.is_contiguous()
            else torch.contiguous_format
        )

        def conv_input(size: int) -> torch.Tensor:
            x = torch.randn(1, conv.in_channels, size, size, generator=generator)
            return x.to(device).contiguous(memory_format=memory_format)

        kernel = "x".join(str(k) for k in conv.kernel_size)
        label = f"{name} (Conv2d {conv.in_channels}->{conv.out_channels}, {kernel})"
        return Piece(label, conv, conv_input)
    linear = layer

    def tokens(size: int) -> torch.Tensor:
        return torch.randn(1, size * size, linear.in_features, generator=generator).to(device)

    label = f"{name} (Linear {linear.in_features}->{linear.out_features})"
    return Piece(label, linear, tokens)


def measure_speed(
    piece: Piece,
    device: torch.device,
    dtype: torch.dtype,
    precision: Precision,
    check: SpeedCheck,
) -> Speed:
    """Time `piece` in float32 and under autocast to `dtype`, as SpeedCheck describes."""
    timer = check.timer or (process_clock if device.type == "cpu" else wall_clock)
    spent = 0.0
    with torch.inference_mode():
        for index, size in enumerate(check.sizes):
            pairs = _Pairs(piece, piece.make_input(size), device, dtype, precision, timer)
            at_start = spent
            while pairs.count < 1 + check.repeats and spent <= check.budget_s:
                spent += pairs.time_one()
            last = index == len(check.sizes) - 1
            # Each size doubles the side: about 4x the work of this one, judged from the best
            # times (a call slowed by other processes would stop the growth too early).
            best_pair = _best(pairs.fp32) + _best(pairs.reduced)
            if (
                not last
                and _best(pairs.reduced) < check.enough_s
                and spent + 4 * (1 + check.repeats) * best_pair <= check.budget_s
            ):
                continue
            # This size decides: what is left of the budget buys more pairs, so that a moment
            # when other processes held the cores is less likely to be the best time seen.
            pair_s = (spent - at_start) / pairs.count
            while pairs.count < 1 + check.confirm_repeats and spent + pair_s <= check.budget_s:
                spent += pairs.time_one()
            return Speed(piece.name, size, _best(pairs.fp32), _best(pairs.reduced), spent)
    raise ValueError("SpeedCheck.sizes is empty")


class _Pairs:
    """One input through the piece in fp32, then under autocast, as often as asked; the times."""

    def __init__(
        self,
        piece: Piece,
        sample: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
        precision: Precision,
        timer: Timer,
    ) -> None:
        self.piece, self.sample, self.device, self.dtype = piece, sample, device, dtype
        self.precision, self.timer = precision, timer
        self.fp32: list[float] = []
        self.reduced: list[float] = []

    @property
    def count(self) -> int:
        return len(self.fp32)

    def time_one(self) -> float:
        """Time one call each way; the seconds both took."""
        self.fp32.append(self.timer(self._plain, "fp32"))
        self.reduced.append(self.timer(self._reduced, self.precision))
        return self.fp32[-1] + self.reduced[-1]

    def _plain(self) -> None:
        self.piece.module(self.sample)
        _synchronize(self.device)

    def _reduced(self) -> None:
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            self.piece.module(self.sample)
        _synchronize(self.device)


def _best(times: list[float]) -> float:
    """The fastest call after the first, a warm-up (kernel choice, weight layout); the warm-up
    stands in only where the budget allowed no other, and then overstates the time."""
    return min(times[1:] or times)


def _synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a timed call covers its kernels (CUDA is async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
