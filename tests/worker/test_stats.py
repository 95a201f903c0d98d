"""The pipeline's counters under concurrent writers: two device lanes and the finish pool add
their busy time at once, and none of it may be lost (the device's once was, from two lanes
updating one dict entry without a lock)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest

from service.worker.stats import PipelineStats


@pytest.fixture
def switch_often() -> Iterator[None]:
    # Thread switches as often as the interpreter allows: a read-modify-write around a clock
    # read without a lock loses about half its updates with eight writers.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("switch_often")
def test_busy_time_from_many_threads_adds_up_exactly() -> None:
    stats = PipelineStats()
    threads, calls = 8, 20_000

    def lane() -> None:
        for _ in range(calls):
            stats.add_busy("device", time.monotonic() - 1.0)  # a second's work, each
            stats.count_job("eccv16", "done")

    workers = [threading.Thread(target=lane) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert stats.busy_seconds["device"] >= threads * calls
    assert stats.jobs[("eccv16", "done")] == threads * calls == stats.completed
