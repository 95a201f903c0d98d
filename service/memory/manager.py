"""MemoryManager: measures a device, keeps an admission budget, clears caches, collects garbage."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from service.memory.backends import DeviceBackend, backend_for
from service.memory.errors import MemoryRefused, NeverFits
from service.memory.reservation import Measurement, Reservation

log = logging.getLogger(__name__)

# Default memory model for pixel-proportional work: the full-resolution colour pipeline
# (uint8 -> float RGB -> Lab -> join upsampled ab -> RGB -> uint8). Measured on CPU with
# `python bench/calibrate_memory.py` (peak RSS growth, one fresh process per size, torch 2.13.0,
# 2026-11-26): 164.7 MB at 1024^2 (157 B/px), 554.9 MB at 2048^2 (132 B/px), 2199 MB at 4096^2
# (131 B/px), i.e. ~131 B/px plus ~27 MB fixed. 140 B/px + 32 MiB bounds all three with 8-12%
# headroom (estimate / measured = 1.09, 1.12, 1.08).
DEFAULT_BYTES_PER_PIXEL = 140
DEFAULT_FIXED_BYTES = 32 * 1024 * 1024

ObserveFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class MemorySnapshot:
    """Everything known about the device's memory at one moment, in bytes."""

    device: str
    used: int
    total: int
    usage_ratio: float
    allocated: int | None
    reserved: int | None
    peak_allocated: int | None
    limit: int
    """threshold x total: what this service allows itself."""
    job_budget: int
    """limit minus our idle resident memory: the largest single job that could ever be admitted."""
    available: int
    """What a new reservation could get right now."""
    reserved_for_jobs: int
    """Sum of the reservations currently held."""


@dataclass
class MemoryStats:
    """Counters since start-up, for /metrics."""

    cache_clears: int = 0
    gc_runs: int = 0
    bytes_freed: int = 0
    admissions: int = 0
    admissions_waited: int = 0
    refused_never_fits: int = 0
    refused_timeout: int = 0
    measurements: deque[tuple[str, int, int]] = field(default_factory=lambda: deque(maxlen=1000))


class MemoryManager:
    """Admission control and hygiene for one device's memory."""

    poll_interval_s = 0.05
    """How often a waiting reservation re-reads the device (other processes free silently)."""
    body_floor_share = 0.0
    """Share of the job budget that reservations other than request bodies leave free
    (COLORIZE_BODY_MEMORY_FLOOR, set on the host's manager)."""

    def __init__(
        self,
        device: torch.device,
        memory_threshold: float = 0.8,
        backend: DeviceBackend | None = None,
    ) -> None:
        if not (isinstance(memory_threshold, int | float) and 0.0 < memory_threshold <= 1.0):
            raise ValueError(f"memory_threshold must be in (0, 1], got {memory_threshold!r}")
        self.device = device
        self.memory_threshold = float(memory_threshold)
        self.backend = backend if backend is not None else backend_for(device)
        self.stats = MemoryStats()
        self.observers: list[ObserveFn] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # A backend whose peak is process-wide (CPU) shares one lock among all its managers.
        self._measure_lock: threading.Lock = getattr(self.backend, "measure_lock", None) or (
            threading.Lock()
        )
        self._held: list[Reservation] = []
        self._idle_resident = self.backend.resident()

    # -- the original interface ---------------------------------------------------------------

    def clear_cache(self) -> int:
        """Hand cached blocks back (CPU: free heap pages to the kernel); the bytes freed."""
        before = self.backend.read()
        self.backend.empty_cache()
        after = self.backend.read()
        # CPU has no allocator counters: what the process gave back shows in its RSS.
        if before.reserved is None or after.reserved is None:
            freed = max(0, before.used - after.used)
        else:
            freed = max(0, before.reserved - after.reserved)
        with self._lock:
            self.stats.cache_clears += 1
            self.stats.bytes_freed += freed
        return freed

    def check_memory_usage(self) -> float:
        """Used / capacity, in [0, 1]."""
        reading = self.backend.read()
        return _ratio(reading.used, reading.total)

    def trigger_gc_if_needed(self) -> bool:
        """Above the threshold, collect garbage and clear the cache; whether it ran."""
        before = self.backend.read()
        ratio = _ratio(before.used, before.total)
        if ratio <= self.memory_threshold:
            return False
        gc.collect()
        cleared = self.clear_cache()
        after = self.backend.read()
        freed = max(0, before.used - after.used)
        with self._lock:
            self.stats.gc_runs += 1
            # clear_cache() has counted its share already.
            self.stats.bytes_freed += max(0, freed - cleared)
        log.info(
            "memory usage %.1f%% above threshold %.0f%%: GC freed %d bytes (%d -> %d used)",
            100 * ratio,
            100 * self.memory_threshold,
            freed,
            before.used,
            after.used,
        )
        return True

    def estimate_memory_required(self, image_size: tuple[int, int]) -> int:
        """Bytes for pixel-proportional work on a (width, height) image (default model)."""
        width, height = image_size
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {image_size!r}")
        return DEFAULT_FIXED_BYTES + DEFAULT_BYTES_PER_PIXEL * width * height

    # -- beyond the spec ----------------------------------------------------------------------

    def snapshot(self) -> MemorySnapshot:
        """A typed reading of device, allocator and budget."""
        reading = self.backend.read()
        with self._lock:
            held = sum(r.nbytes for r in self._held)
            available = self._available(reading.used, reading.total)
            budget = self._job_budget(reading.total)
        return MemorySnapshot(
            device=str(self.device),
            used=reading.used,
            total=reading.total,
            usage_ratio=_ratio(reading.used, reading.total),
            allocated=reading.allocated,
            reserved=reading.reserved,
            peak_allocated=reading.peak_allocated,
            limit=self._limit(reading.total),
            job_budget=budget,
            available=available,
            reserved_for_jobs=held,
        )

    def available_bytes(self) -> int:
        """What a reservation could get right now."""
        reading = self.backend.read()
        with self._lock:
            return self._available(reading.used, reading.total)

    def job_budget(self) -> int:
        """The largest reservation that could ever be granted (the device idle but for us)."""
        total = self.backend.read().total
        with self._lock:
            return self._job_budget(total)

    def check_fits(self, nbytes: int) -> None:
        """Raise NeverFits if `nbytes` exceeds the whole job budget (cheap; for the API thread)."""
        budget = self.job_budget()
        if nbytes > budget:
            with self._lock:
                self.stats.refused_never_fits += 1
            raise NeverFits(
                f"needs {nbytes} bytes but the whole job budget is {budget} bytes",
                requested=nbytes,
                budget=budget,
            )

    def reserve(self, nbytes: int, timeout: float = 0.0, purpose: str = "job") -> Reservation:
        """Hold `nbytes` of the budget, waiting up to `timeout` s (clearing caches once) for room.

        Raises NeverFits when waiting cannot help and MemoryRefused when the wait runs out.
        """
        if nbytes < 0:
            raise ValueError(f"cannot reserve a negative size ({nbytes})")
        self.check_fits(nbytes)
        deadline = time.monotonic() + timeout
        cleaned = False
        waited = False
        while True:
            reading = self.backend.read()
            with self._lock:
                available = self._available_for(purpose, reading.used, reading.total)
                if nbytes + self._floor(nbytes, purpose, reading.total) <= available:
                    reservation = Reservation(self, nbytes, reading.used, purpose)
                    self._held.append(reservation)
                    self.stats.admissions += 1
                    if waited:
                        self.stats.admissions_waited += 1
                    return reservation
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stats.refused_timeout += 1
                    raise MemoryRefused(
                        f"needs {nbytes} bytes, {available} available after waiting {timeout:g} s",
                        requested=nbytes,
                        budget=available,
                    )
                waited = True
                if cleaned:
                    self._changed.wait(min(remaining, self.poll_interval_s))
                    continue
            # Freed-but-cached blocks and unreachable cycles are the cheapest room to find.
            cleaned = True
            gc.collect()
            self.clear_cache()

    @contextmanager
    def measure(self, blocking: bool = True) -> Iterator[Measurement]:
        """Measure the peak bytes the enclosed work adds (CUDA: allocator peak; CPU: RSS HWM).

        Not `blocking`: if another measurement is under way, run the work unmeasured
        (`measured` False) instead of waiting for it.
        """
        result = Measurement()
        if not self._measure_lock.acquire(blocking=blocking):
            result.measured = False
            yield result
            return
        try:
            baseline = self.backend.reset_peak()
            try:
                yield result
            finally:
                result.peak_bytes = max(0, self.backend.peak() - baseline)
        finally:
            self._measure_lock.release()

    def record_estimate(self, model: str, estimate: int, measured: int) -> None:
        """Keep an (estimate, measured peak) pair and tell observers (the metrics histogram)."""
        with self._lock:
            self.stats.measurements.append((model, estimate, measured))
        for observe in list(self.observers):
            observe(model, estimate, measured)

    def held_by_purpose(self) -> dict[str, int]:
        """Bytes of the reservations held now, by what they are for."""
        held: dict[str, int] = {}
        with self._lock:
            for r in self._held:
                held[r.purpose] = held.get(r.purpose, 0) + r.nbytes
        return held

    def refresh_idle(self) -> None:
        """Note our resident memory while no job runs (after loading engines, between jobs)."""
        resident = self.backend.resident()
        with self._lock:
            if not self._held:
                self._idle_resident = resident

    # -- internals (call with the lock held) --------------------------------------------------

    def _limit(self, total: int) -> int:
        return int(self.memory_threshold * total)

    def _job_budget(self, total: int) -> int:
        return max(0, self._limit(total) - self._idle_resident)

    def _floor(self, nbytes: int, purpose: str, total: int) -> int:
        # What a job's reservation must leave free for request bodies, so that an upload always
        # finds room however busy the jobs are; never more than would keep `nbytes` from ever
        # fitting the job budget.
        if purpose == "body" or not self.body_floor_share:
            return 0
        budget = self._job_budget(total)
        return min(int(self.body_floor_share * budget), max(0, budget - nbytes))

    def _available_for(self, purpose: str, used: int, total: int) -> int:
        available = self._available(used, total)
        if purpose != "body" or not self.body_floor_share:
            return available
        # The floor is the bodies' own: jobs whose memory overran their reservations (the live
        # reading above what they hold) must not take it, or an upload finds no room during a
        # flood after all. Bodies together still never hold more than the floor past the limit.
        floor = int(self.body_floor_share * self._job_budget(total))
        bodies = sum(r.nbytes for r in self._held if r.purpose == "body")
        return max(available, floor - bodies)

    def _available(self, used: int, total: int) -> int:
        # A held reservation may not be allocated yet, or only partly: count each at its full
        # size on top of what was in use when the first one was granted, or the live reading
        # if that is higher (the jobs overran, or another process grew).
        if self._held:
            base = min(r.used_at_start for r in self._held)
            committed = max(used, base + sum(r.nbytes for r in self._held))
        else:
            committed = used
        return max(0, self._limit(total) - committed)

    def _resize(self, reservation: Reservation, nbytes: int) -> bool:
        with self._lock:
            if reservation.released:
                return False
            shrunk = nbytes < reservation.nbytes
            reservation.nbytes = nbytes
            if shrunk:
                self._changed.notify_all()
            return True

    def _grow(self, reservation: Reservation, extra: int) -> None:
        if extra <= 0:
            return
        self.check_fits(reservation.nbytes + extra)
        reading = self.backend.read()
        with self._lock:
            if reservation.released:
                raise ValueError("cannot grow a released reservation")
            available = self._available_for(reservation.purpose, reading.used, reading.total)
            if extra > available:
                self.stats.refused_timeout += 1
                raise MemoryRefused(
                    f"needs {extra} more bytes, {available} available",
                    requested=reservation.nbytes + extra,
                    budget=available,
                )
            reservation.nbytes += extra

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation.released:
                return
            reservation.released = True
            self._held.remove(reservation)
            self._changed.notify_all()


def _ratio(used: int, total: int) -> float:
    return 0.0 if total <= 0 else min(1.0, max(0.0, used / total))
