"""What a MemoryManager hands out: a reservation of its budget, and a measured peak."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.memory.manager import MemoryManager


@dataclass
class Measurement:
    """Peak bytes a block of work added above its starting point (filled in on exit)."""

    peak_bytes: int = 0
    measured: bool = True
    """False when another measurement was under way (the peak is process-wide): no figure."""


class Reservation:
    """Bytes held from the admission budget; released on exit, exceptions included."""

    def __init__(
        self, manager: MemoryManager, nbytes: int, used_at_start: int, purpose: str = "job"
    ) -> None:
        self.manager = manager
        self.nbytes = nbytes
        self.used_at_start = used_at_start
        self.purpose = purpose
        """What the bytes are for (`body`, `upload`, `pixels`, `compute`, ...): a metric label."""
        self.released = False

    def release(self) -> None:
        """Give the bytes back (idempotent)."""
        self.manager._release(self)

    def shrink(self, nbytes: int) -> bool:
        """Keep only `nbytes` (never more than held); False if already released."""
        return self.manager._resize(self, min(self.nbytes, max(0, nbytes)))

    def grow(self, extra: int) -> None:
        """Hold `extra` more bytes now, without waiting; raises MemoryRefused or NeverFits."""
        self.manager._grow(self, extra)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
