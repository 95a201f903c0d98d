"""The C heap of this process: glibc keeps freed blocks resident until asked to give them back.

Image buffers of a few hundred kilobytes land in the heap once glibc's dynamic mmap threshold has
risen, and a long run of mixed sizes fragments it: the RSS then creeps up although the bytes in use
stay flat. On CPU the RSS *is* the usage the MemoryManager admits against, so freed-but-resident
heap would be counted as used. `malloc_trim(0)` hands every free page back to the kernel (the top of
each arena and, since glibc 2.8, whole free pages inside it); it is the CPU's `empty_cache()`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        log.info("the C library has no malloc_trim: freed heap stays resident on CPU")
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def can_trim() -> bool:
    """Whether this process's C library can return freed heap pages to the kernel."""
    return _malloc_trim() is not None


def trim() -> bool:
    """Return free heap pages to the kernel; whether any were returned (False if unsupported)."""
    function = _malloc_trim()
    return bool(function(0)) if function is not None else False
