"""What each kind of device reports about its memory, behind one small interface.

Tests replace the `torch.cuda` / `torch.mps` modules given to a backend with fakes: that fakes the
hardware's answers, while every decision stays in MemoryManager.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import psutil
import torch

from service.memory import heap
from service.memory.capacity import host_capacity_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceReading:
    """One reading of a device's memory, in bytes."""

    used: int
    """In use on the whole device (CUDA: driver view, other processes included; CPU: our RSS)."""
    total: int
    """Capacity we may use (CUDA: device total; MPS: recommended max; CPU: cgroup limit or RAM)."""
    allocated: int | None
    """Bytes of live tensors according to the caching allocator (None on CPU)."""
    reserved: int | None
    """Bytes the caching allocator holds, live or cached (None on CPU)."""
    peak_allocated: int | None
    """Highest `allocated` since the last peak reset (None on CPU)."""


class DeviceBackend(Protocol):
    """The memory questions MemoryManager asks of a device."""

    kind: str

    def read(self) -> DeviceReading: ...

    def empty_cache(self) -> None: ...

    def reset_peak(self) -> int:
        """Start a peak measurement; returns the baseline it is measured from."""
        ...

    def peak(self) -> int:
        """Highest usage since `reset_peak`, on the same scale as its baseline."""
        ...

    def resident(self) -> int:
        """Bytes our own process keeps while idle (weights, runtime); other tenants excluded."""
        ...


class CudaBackend:
    """A CUDA device: the driver's view plus the caching allocator's."""

    kind = "cuda"

    def __init__(self, index: int = 0, cuda: ModuleType | Any = None) -> None:
        self.index = index
        self.cuda = torch.cuda if cuda is None else cuda

    def read(self) -> DeviceReading:
        free, total = self.cuda.mem_get_info(self.index)
        return DeviceReading(
            used=int(total - free),
            total=int(total),
            allocated=int(self.cuda.memory_allocated(self.index)),
            reserved=int(self.cuda.memory_reserved(self.index)),
            peak_allocated=int(self.cuda.max_memory_allocated(self.index)),
        )

    def empty_cache(self) -> None:
        self.cuda.empty_cache()

    def reset_peak(self) -> int:
        self.cuda.reset_peak_memory_stats(self.index)
        return int(self.cuda.memory_allocated(self.index))

    def peak(self) -> int:
        return int(self.cuda.max_memory_allocated(self.index))

    def resident(self) -> int:
        return int(self.cuda.memory_allocated(self.index))


class MpsBackend:
    """Apple's Metal device; MPS has no peak counter, so the peak is the larger end reading."""

    kind = "mps"

    def __init__(self, mps: ModuleType | Any = None) -> None:
        self.mps = torch.mps if mps is None else mps
        self._baseline = 0

    def _total(self) -> int:
        recommended = getattr(self.mps, "recommended_max_memory", None)
        if recommended is not None:
            return int(recommended())
        return int(psutil.virtual_memory().total)

    def read(self) -> DeviceReading:
        allocated = int(self.mps.current_allocated_memory())
        driver = int(self.mps.driver_allocated_memory())
        return DeviceReading(
            used=driver,
            total=self._total(),
            allocated=allocated,
            reserved=driver,
            peak_allocated=None,
        )

    def empty_cache(self) -> None:
        self.mps.empty_cache()

    def reset_peak(self) -> int:
        self._baseline = int(self.mps.current_allocated_memory())
        return self._baseline

    def peak(self) -> int:
        return max(self._baseline, int(self.mps.current_allocated_memory()))

    def resident(self) -> int:
        return int(self.mps.current_allocated_memory())


class CpuBackend:
    """Host memory: the process's RSS against the cgroup limit (else physical RAM).

    The peak is the kernel's high-water mark (VmHWM), reset by writing 5 to clear_refs
    (Linux >= 4.0); where that is not possible the peak falls back to the current RSS.
    """

    kind = "cpu"
    measure_lock = threading.Lock()
    """One for the process, shared by every CPU backend: the high-water mark is the process's,
    so a reset by one measurement would cut short another's."""
    trim_slack_bytes = 32 << 20
    """Freed heap that may stay resident: trimming makes the next job fault its pages in again
    (measured: trimming after every job cost 2.6 % with the real networks, ~30 % with tiny jobs),
    and no more than this can be reclaimed when the RSS has grown less since the last trim."""

    def __init__(
        self,
        proc_self: Path = Path("/proc/self"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        capacity: int | None = None,
    ) -> None:
        self.proc_self = proc_self
        self.cgroup_root = cgroup_root
        self._process = psutil.Process(os.getpid())
        self._trimmed_at = self._rss()
        # COLORIZE_HOST_MEMORY_BYTES, when set, wins over what the kernel says.
        self._total = capacity or host_capacity_bytes(proc_self / "cgroup", cgroup_root)
        self._hwm_resettable = True

    def _rss(self) -> int:
        return int(self._process.memory_info().rss)

    def read(self) -> DeviceReading:
        return DeviceReading(
            used=self._rss(), total=self._total, allocated=None, reserved=None, peak_allocated=None
        )

    def empty_cache(self) -> None:
        """Give the C heap's free pages back to the kernel (service/memory/heap.py), once the
        RSS has grown by `trim_slack_bytes` since the last time."""
        rss = self._rss()
        if rss - self._trimmed_at < self.trim_slack_bytes:
            self._trimmed_at = min(self._trimmed_at, rss)
            return
        heap.trim()
        self._trimmed_at = self._rss()

    def reset_peak(self) -> int:
        try:
            (self.proc_self / "clear_refs").write_text("5")
        except OSError:
            if self._hwm_resettable:
                log.debug("cannot reset VmHWM; CPU peaks fall back to the current RSS")
            self._hwm_resettable = False
        return self._rss()

    def _hwm(self) -> int | None:
        try:
            for line in (self.proc_self / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    def peak(self) -> int:
        hwm = self._hwm() if self._hwm_resettable else None
        return max(self._rss(), hwm or 0)

    def resident(self) -> int:
        return self._rss()


def backend_for(device: torch.device, host_capacity: int | None = None) -> DeviceBackend:
    """The backend that answers for `device`; `host_capacity` overrides the CPU's capacity."""
    if device.type == "cuda":
        return CudaBackend(0 if device.index is None else device.index)
    if device.type == "mps":
        return MpsBackend()
    if device.type == "cpu":
        return CpuBackend(capacity=host_capacity)
    raise ValueError(f"no memory backend for device type {device.type!r}")
