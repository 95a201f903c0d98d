"""A Timer for the fast path's speed check that reports scripted durations instead of measuring.

With it a test decides whether reduced precision is "faster" on any CPU, while the speed check
itself (sizes, budget, decision, reason) runs as in production. It never calls the piece, so a
precision this CPU emulates slowly costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from service.engines.fast import Precision
from service.engines.speed import SpeedCheck


class ScriptedTimer:
    """Every timed call in `precision` takes `seconds[precision]`; the calls are recorded."""

    def __init__(self, fp32: float, bf16: float) -> None:
        self.seconds: dict[Precision, float] = {"fp32": fp32, "bf16": bf16}
        self.calls: list[Precision] = []

    def __call__(self, run: Callable[[], object], precision: Precision) -> float:
        self.calls.append(precision)
        return self.seconds[precision]


def bf16_faster() -> SpeedCheck:
    """A speed check that finds bf16 twice as fast as fp32, for tests of what happens next
    (accuracy, the network in bf16): their outcome must not depend on the machine's load."""
    return SpeedCheck(timer=ScriptedTimer(fp32=0.002, bf16=0.001))
