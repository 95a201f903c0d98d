"""Job and JobStore: one final state, inputs freed, results and records bounded."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import torch

from service.engines.base import ColorizeRequest
from service.memory import CudaBackend, MemoryManager
from service.outcomes import Outcome
from service.worker.jobs import Job, JobInput, JobState, JobStore
from tests.support.fake_devices import FakeCuda, GiB

TTL = 10.0
"""Long enough that JobStore.add, which prunes against the real clock, drops nothing mid-test."""


def job(pixels: int = 8) -> Job:
    j = Job("eccv16", JobInput(b"png bytes", pixels, pixels), 1)
    j.request = ColorizeRequest(image=np.zeros((pixels, pixels, 3), np.uint8))
    return j


def fake_host() -> MemoryManager:
    return MemoryManager(torch.device("cuda", 0), 1.0, CudaBackend(0, cuda=FakeCuda(total=GiB)))


def finished(store: JobStore, result: bytes, at: float) -> Job:
    """A job added to `store` and done at monotonic time `at` with `result`."""
    j = job()
    store.add(j)
    j.finish(JobState.DONE, result=result)
    j.finished_at = at
    return j


def test_a_job_finishes_once_and_lets_go_of_its_input() -> None:
    j = job(512)
    seen: list[JobState] = []
    j.on_finish(lambda done: seen.append(done.state))

    assert j.finish(JobState.DONE, result=b"png")
    assert not j.fail(Outcome.ERROR, "a second outcome is ignored")

    assert (j.state, j.result, j.failure, seen) == (JobState.DONE, b"png", None, [JobState.DONE])
    assert (j.input, j.request, j.prepared) == (None, None, None)
    assert j.outcome is Outcome.DONE
    assert j.wait(0)


def test_a_finished_job_keeps_host_memory_for_its_result_only_while_it_has_it() -> None:
    host = fake_host()
    j = job(64)
    j.hold(host.reserve(1000, purpose="upload"))
    j.hold(host.reserve(64 * 64 * 14, purpose="pixels"))
    assert host.snapshot().reserved_for_jobs == 1000 + 64 * 64 * 14

    j.finish(JobState.DONE, result=b"r" * 300)
    assert host.held_by_purpose() == {"result": 300}, "the largest hold shrinks to the result"

    j.drop_result("sent")
    assert host.snapshot().reserved_for_jobs == 0 and j.result is None
    j.hold(host.reserve(10, purpose="late"))
    assert host.snapshot().reserved_for_jobs == 0, "a finished job releases what it is handed"


def test_a_failed_job_gives_back_all_its_host_memory() -> None:
    host = fake_host()
    j = job(64)
    j.hold(host.reserve(5000, purpose="pixels"))
    assert j.fail(Outcome.MEMORY_BUSY, "busy", 2)
    assert host.snapshot().reserved_for_jobs == 0
    assert j.outcome is Outcome.MEMORY_BUSY and j.failure is not None
    assert j.failure.retry_after == 2


def test_results_expire_after_the_retention_and_say_so() -> None:
    t0 = time.monotonic()
    store = JobStore(TTL, max_bytes=1 << 20, max_jobs=100)
    j = finished(store, b"x" * 10, at=t0)

    store.prune(now=t0 + TTL - 1)
    assert j.result == b"x" * 10 and j.result_dropped is None

    store.prune(now=t0 + TTL + 1)
    assert j.result is None and j.result_dropped is not None and "10 s" in j.result_dropped
    assert store.get(j.id) is j, "the record outlives its result"


def test_the_oldest_results_go_first_past_the_size_limit() -> None:
    t0 = time.monotonic()
    store = JobStore(TTL, max_bytes=25, max_jobs=100)
    old, middle, new = (finished(store, b"x" * 10, at=t0 + t) for t in (1.0, 2.0, 3.0))

    store.prune(now=t0 + 3.0)

    assert (old.result, middle.result, new.result) == (None, b"x" * 10, b"x" * 10)
    assert old.result_dropped is not None and "25 bytes" in old.result_dropped
    assert store.result_bytes() == 20


def test_records_go_after_twice_the_retention() -> None:
    t0 = time.monotonic()
    store = JobStore(TTL, max_bytes=1 << 20, max_jobs=100)
    j = finished(store, b"x", at=t0)

    store.prune(now=t0 + 2 * TTL - 1)
    assert len(store) == 1
    store.prune(now=t0 + 2 * TTL + 1)
    assert len(store) == 0 and store.get(j.id) is None


def test_the_record_table_is_capped_oldest_first_but_never_drops_a_waiting_job() -> None:
    t0 = time.monotonic()
    store = JobStore(TTL, max_bytes=1 << 20, max_jobs=3)
    waiting = job()
    store.add(waiting)
    done = [finished(store, b"x", at=t0 + t) for t in range(4)]

    # The oldest entry is still queued: the cap waits rather than lose it.
    assert len(store) == 5
    waiting.finish(JobState.CANCELLED)
    store.prune(now=t0 + 4)

    assert len(store) == 3
    assert store.get(waiting.id) is None and store.get(done[0].id) is None
    assert all(store.get(j.id) is j for j in done[1:])


def test_a_finished_record_costs_about_two_kilobytes() -> None:
    """What the default table (COLORIZE_MAX_JOBS_KEPT=10,000) costs when full, documented in
    docs/reliability.md: a finished record must not keep its input or its callbacks."""
    store = JobStore(TTL, max_bytes=0, max_jobs=2_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1_000):
            j = job(64)
            j.timings.update(decode=0.001, queue=0.002, compute=0.003, encode=0.004)
            j.on_finish(lambda _: None)
            store.add(j)
            j.finish(JobState.DONE, result=b"x" * 1000)
        store.prune()
        per_record = (tracemalloc.get_traced_memory()[0] - before) / 1_000
    finally:
        tracemalloc.stop()
    assert len(store) == 1_000 and store.result_bytes() == 0
    assert 500 < per_record < 3_000, per_record
