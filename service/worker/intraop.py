"""Which threads run torch's CPU operators on a team of threads: the first device lane only.

GNU OpenMP (torch's intra-op pool on Linux) gives every thread that starts a parallel region a
pool of its own, kept until that thread ends. Once the pools hold more threads than the machine
has CPUs, an idle pool thread spins about 100 times instead of about 300,000 before it sleeps, so
each of the thousands of parallel regions in a forward pass waits for a futex wake-up. The stages
are threads (prepare, lanes, finish, video): left alone, their pools throttled every forward pass
(measured on 2 cores: ddcolor-tiny 10-15 % slower through the service than the same pass in a
process with one pool). The first lane, the one a lone job runs on, keeps the whole pool; every
other thread that touches torch runs its operators on itself.

Under load the first lane gives its pool up too: while another lane is busy or jobs wait, it
runs on one thread, so each lane keeps one core busy. Keeping the pool then cost about 40 % more
CPU per job (4 clients on 2 cores): the pool's threads, which no longer throttle, spin for the
next parallel region on cores the other lane needs.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch

log = logging.getLogger(__name__)

_RUNTIMES = ("libgomp", "libiomp5", "libomp")
"""OpenMP runtimes torch may be built with (GNU on Linux wheels, Intel's or LLVM's elsewhere)."""


@functools.cache
def _set_num_threads() -> Callable[[int], None] | None:
    """`omp_set_num_threads` of the OpenMP runtime torch loaded, or None if there is none."""
    # The copy torch loaded (its wheel bundles one) may not be the one the linker would find.
    for library in [*_loaded_runtimes(), None]:
        try:
            function = ctypes.CDLL(library).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_int]
        function.restype = None
        return cast(Callable[[int], None], function)
    log.info("no OpenMP runtime found: torch's thread pools are left as they are")
    return None


def _loaded_runtimes() -> list[str]:
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    paths = {line.split()[-1] for line in maps if "/" in line}
    return sorted(p for p in paths if Path(p).name.startswith(_RUNTIMES))


def run_serially() -> bool:
    """From now on, torch runs this thread's CPU operators on this thread alone; whether it could.

    Call it first thing in a stage thread other than the first device lane.
    """
    return use_threads(1)


def use_threads(threads: int) -> bool:
    """Run this thread's torch operators on `threads` threads from now on; whether it could.

    A pool that already has more threads keeps the rest asleep (they stay in the count above).
    """
    function = _set_num_threads()
    if function is None:
        return False
    # torch sets each thread's team size the first time that thread asks for it: ask first, or
    # that first use would undo what follows.
    torch.get_num_threads()
    function(threads)
    return torch.get_num_threads() == threads
