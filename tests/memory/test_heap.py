"""The C heap: freed blocks stay resident until clear_cache() hands them back on CPU."""

from __future__ import annotations

import numpy as np
import psutil
import pytest
import torch

from service.memory import MemoryManager, heap

MiB = 1 << 20
BLOCK = 64 * 1024
"""Below glibc's mmap threshold (128 KiB at least): such blocks always come from the heap."""

needs_trim = pytest.mark.skipif(
    not heap.can_trim(), reason="the C library has no malloc_trim (not glibc)"
)


@pytest.fixture(autouse=True)
def trimmed_heap() -> None:
    """Start from a heap with nothing free in it: earlier tests leave freed blocks that the
    allocations below would reuse without growing the RSS."""
    heap.trim()


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def fragment_heap(total: int) -> np.ndarray:
    """Fill the heap with `total` bytes of written blocks, free all but the last; keep that one.

    The kept block pins the top of the heap, so glibc's own trim-on-free cannot return the rest.
    """
    blocks = [np.ones(BLOCK // 8) for _ in range(total // BLOCK)]
    last = blocks[-1]
    del blocks
    return last


@needs_trim
def test_freed_heap_stays_resident_until_cleared() -> None:
    manager = MemoryManager(torch.device("cpu"))
    manager.clear_cache()
    counted = manager.stats.bytes_freed
    start = rss()
    pin = fragment_heap(256 * MiB)
    resident = rss()
    assert resident - start > 192 * MiB, "freed heap blocks should still be resident"

    freed = manager.clear_cache()

    assert freed > 192 * MiB
    assert rss() < resident - 192 * MiB
    assert manager.stats.bytes_freed - counted == freed and manager.stats.cache_clears == 2
    del pin


@needs_trim
def test_gc_above_threshold_counts_the_trim_once() -> None:
    manager = MemoryManager(torch.device("cpu"), memory_threshold=1e-6)
    pin = fragment_heap(128 * MiB)

    assert manager.trigger_gc_if_needed()

    # Trimming returned most of it; the GC's own share is added without counting the trim twice.
    assert 96 * MiB < manager.stats.bytes_freed < 256 * MiB
    assert manager.stats.gc_runs == 1
    del pin


def test_trim_reports_what_it_could_do() -> None:
    assert heap.trim() in (True, False)
    assert heap.can_trim() or heap.trim() is False


@needs_trim
def test_less_freed_than_the_slack_is_left_resident() -> None:
    manager = MemoryManager(torch.device("cpu"))
    manager.clear_cache()
    slack = manager.backend.trim_slack_bytes  # type: ignore[attr-defined]
    pin = fragment_heap(slack // 4)
    resident = rss()

    assert manager.clear_cache() == 0
    assert rss() >= resident - BLOCK * 4

    more = fragment_heap(2 * slack)
    assert manager.clear_cache() > slack
    del pin, more
