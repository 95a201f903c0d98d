"""Whether reduced precision is faster here: one piece of the network timed both ways.

A CPU without native bfloat16 emulates it about 300x slower than float32 (issue 13: minutes for
one forward pass), so nothing larger than a piece runs in a reduced precision until this says
it is faster. SpeedCheck says how the piece is timed; `measure_speed` times it; FastPath
(service/engines/fast.py) decides with the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

PIECE_SEED = 1234
"""Seed of the random inputs a piece is timed on."""

Timer = Callable[[Callable[[], object], str], float]
"""Seconds one call of `run` takes; `run` executes the piece in the precision named (fp32, bf16
or fp16: a label here, which the timers of tests script by)."""


def wall_clock(run: Callable[[], object], precision: str) -> float:
    """The elapsed time of one call (the precision only names it): the Timer for GPUs."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def process_clock(run: Callable[[], object], precision: str) -> float:
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

    def describe(self, precision: str) -> str:
        return (
            f"{self.piece} at {self.size}x{self.size}: {precision} {_ms(self.reduced_s)} vs "
            f"fp32 {_ms(self.fp32_s)} (speed-up {self.speedup:.2f}x; "
            f"check took {self.elapsed_s:.2f} s)"
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


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
    generator = torch.Generator().manual_seed(PIECE_SEED)
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
    precision: str,
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
        precision: str,
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
