"""The C heap: freed blocks stay resident until clear_cache() hands them back on CPU."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from service.memory import MemoryManager, heap
from tests.support.servers import ROOT

MiB = 1 << 20
BLOCK = 64 * 1024
"""Below glibc's mmap threshold (128 KiB at least): such blocks always come from the heap."""

needs_trim = pytest.mark.skipif(
    not heap.can_trim(), reason="the C library has no malloc_trim (not glibc)"
)


SAME_READING = 4 * MiB
"""How far two RSS readings around the same event may differ: the manager reads the RSS a moment
after the test does (a log line, a few Python objects), never by the size of a trim."""


@pytest.fixture(autouse=True)
def trimmed_heap() -> None:
    """Start from a heap with nothing free in it and no garbage waiting to be collected.

    Earlier tests leave freed blocks that the allocations below would reuse without growing the
    RSS, and cyclic garbage that a GC run (ours or an automatic one) frees into the heap.
    """
    gc.collect()
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
    before = rss()

    assert manager.trigger_gc_if_needed()

    returned = before - rss()
    # The trim returned most of the fragmented heap. How much more the GC and the trim return
    # depends on what this process held before (issue 13: 301 MB after a run where tests had
    # timed out), so the count is compared with what this test saw leave, not with a constant.
    assert returned > 96 * MiB
    # Counted once: the trim's share is part of the GC's drop, not added to it again.
    assert abs(manager.stats.bytes_freed - returned) < SAME_READING, (
        manager.stats.bytes_freed,
        returned,
    )
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


def run_script(script: str, *args: str) -> list[str]:
    """`script` in a fresh interpreter (malloc's settings are the process's); its words out."""
    # glibc's defaults, whatever this environment set (MALLOC_ARENA_MAX, GLIBC_TUNABLES...).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    return done.stdout.split()


ARENAS_SCRIPT = """
import ctypes, sys, threading
from service.memory import heap

took = heap.tune(int(sys.argv[1]), 0)
together = threading.Barrier(4)

def work():
    blocks = [bytearray(200_000) for _ in range(20)]  # malloc'd on this thread
    together.wait()  # all four threads alive at once, each after its first malloc
    del blocks

threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
out = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, out)
libc.fclose(out)
print(took, open(sys.argv[2]).read().count("<heap nr="))
"""


@needs_trim  # glibc: mallopt and malloc_info come with malloc_trim
@pytest.mark.parametrize(("cap", "arenas"), [(0, 5), (1, 1)])
def test_capped_arenas_make_threads_share_the_heap(tmp_path: Path, cap: int, arenas: int) -> None:
    # Uncapped, each of the four threads gets an arena of its own besides the main one.
    assert run_script(ARENAS_SCRIPT, str(cap), str(tmp_path / "info.xml")) == ["True", str(arenas)]


THRESHOLD_SCRIPT = """
import sys
import numpy as np, psutil
from service.memory import heap

took = heap.tune(0, int(sys.argv[1]))
rss = lambda: psutil.Process().memory_info().rss
before = rss()
block = np.ones(48 << 17)  # 48 MiB, written
del block
kept = rss() - before
heap.trim()
print(took, kept >> 20, max(0, rss() - before) >> 20)
"""


@needs_trim
@pytest.mark.parametrize(("threshold", "kept"), [(0, 0), (256 * MiB, 48), (1 << 30, 48)])
def test_a_fixed_mmap_threshold_keeps_large_blocks_until_cleared(threshold: int, kept: int) -> None:
    # glibc's own threshold tops out at 32 MiB: a 48 MiB block is unmapped when freed, and the
    # next job maps and faults it in again. Under a fixed 256 MiB threshold it stays in the heap
    # for the next job, until the cache is cleared.
    took, kept_mib, after_trim_mib = run_script(THRESHOLD_SCRIPT, str(threshold))
    assert took == "True"
    assert abs(int(kept_mib) - kept) <= 2
    assert int(after_trim_mib) <= 2
