"""The C heap of this process: glibc keeps freed blocks resident until asked to give them back.

Image buffers of a few hundred kilobytes land in the heap once glibc's dynamic mmap threshold has
risen, and a long run of mixed sizes fragments it: the RSS then creeps up although the bytes in use
stay flat. On CPU the RSS *is* the usage the MemoryManager admits against, so freed-but-resident
heap would be counted as used. `malloc_trim(0)` hands every free page back to the kernel (the top of
each arena and, since glibc 2.8, whole free pages inside it); it is the CPU's `empty_cache()`.

Two more glibc habits made a lone job slower through the service than in a script (a ddcolor-tiny
job at 2048 px by 7-12 %, docs/performance.md, "One client"), because the job's large buffers
were mapped and faulted in afresh on every job instead of coming back from the heap:
- each new thread gets an arena of its own (up to 8 per core), and a thread's arena grows in
  mmapped heaps of at most 64 MiB; the stages run a job on several threads;
- blocks above the mmap threshold (dynamic, at most 32 MiB) are mapped on their own and unmapped
  when freed, and the heap's free top is handed back past the trim threshold.
`tune` caps the arenas and fixes both thresholds (COLORIZE_MALLOC_ARENAS,
COLORIZE_MALLOC_MMAP_THRESHOLD_BYTES): freed buffers then stay in the heap until the cache is
cleared, which the worker does after every batch under load and once idle (idle_clear.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""mallopt's parameter numbers (glibc's malloc.h)."""


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else ctypes.CDLL(None)
    except OSError:
        return None


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS, Windows)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        log.info("the C library has no malloc_trim: freed heap stays resident on CPU")
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    function: Callable[[int], int] = trim
    return function


def can_trim() -> bool:
    """Whether this process's C library can return freed heap pages to the kernel."""
    return _malloc_trim() is not None


def trim() -> bool:
    """Return free heap pages to the kernel; whether any were returned (False if unsupported)."""
    function = _malloc_trim()
    return bool(function(0)) if function is not None else False


def tune(arenas: int, mmap_threshold: int) -> bool:
    """Cap the malloc arenas that threads started from now on may take, and fix the mmap
    threshold (and the trim threshold, at twice it, as glibc's own rule keeps them); 0 leaves
    either as glibc has it. Whether the C library took all of it (what it refused is logged).
    Call it before the stage threads start."""
    wanted = [(M_ARENA_MAX, arenas, "COLORIZE_MALLOC_ARENAS")] if arenas > 0 else []
    if mmap_threshold > 0:
        wanted += [
            (M_MMAP_THRESHOLD, mmap_threshold, "COLORIZE_MALLOC_MMAP_THRESHOLD_BYTES"),
            # mallopt takes a C int: at the 1 GiB maximum, twice is one byte past it.
            (
                M_TRIM_THRESHOLD,
                min(2 * mmap_threshold, 2**31 - 1),
                "COLORIZE_MALLOC_MMAP_THRESHOLD_BYTES",
            ),
        ]
    mallopt = getattr(_libc(), "mallopt", None) if wanted else None
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
    refused = sorted(
        {name for parameter, value, name in wanted if not (mallopt and mallopt(parameter, value))}
    )
    if refused:
        log.warning("the C library ignores %s: glibc's malloc defaults apply", ", ".join(refused))
    return not refused
