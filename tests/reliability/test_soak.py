"""Soak: as many sequential jobs as fit in SOAK_S seconds, of mixed sizes, engines, formats and
routes (/colorize and /jobs), on a real uvicorn in its own process; scripted engines for volume
plus the real exemplar engine now and then. The second half is compared with the first, in level
and slope, for what a leak would move: tracked Python objects, C heap bytes in use, the process's
RSS and the MemoryManager's view. The /jobs record table is capped low so it is full before the
comparison starts (its bound is what keeps it flat; a test of the store checks the bound).

Run with `-s` to see the figures (they are recorded in docs/reliability.md).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from service.memory import CpuBackend
from tests.reliability.workload import Kind, Tally, draw, gray, mixed_kinds, send
from tests.support.servers import server_process

MiB = 1 << 20
SOAK_S = 60.0
MAX_JOBS = 20_000
SAMPLE_EVERY = 25
WARM_UP_FRACTION = 0.1
"""The first tenth is warm-up (caches, allocator arenas) and is left out of the comparison."""
RSS_TOLERANCE = 2 * CpuBackend.trim_slack_bytes
"""Most the RSS median (and so the MemoryManager's job budget, which is the limit minus our own
resident memory) may move between the halves. Freed heap is handed back to the kernel only once
the RSS has grown by the trim slack, so the RSS saw-tooths within it, plus pages that trimming
cannot return (a live block on them). Its slope over a minute says where the tooth happens to be,
not whether memory leaks: the heap and object counts say that."""
RSS_RANGE = 3 * CpuBackend.trim_slack_bytes
"""Widest the RSS may range after warm-up: gross growth that the C heap would not show."""
HEAP_TOLERANCE = 4 * MiB
"""Most the C heap in use may grow between the halves' medians: about 1,500 jobs apart, so a leak
of 3 kB a job (one 32x32 RGB buffer) would exceed it. Unlike the RSS it does not move when freed
blocks stay resident, so it can be held much tighter."""
OBJECT_TOLERANCE = 1_000
"""Most tracked Python objects may grow between the halves' medians: one object leaked per job
would add about 1,500."""
JOBS_KEPT = 64
RESULT_BUDGET = 8 * MiB
MIN_JOBS = 500
"""As many jobs as fit in SOAK_S; about 1,500 on two busy cores, more on a quiet machine."""


@dataclass
class Sample:
    jobs: int
    rss: int
    heap: int
    objects: int
    jobs_kept: int
    used: float
    budget: float
    available: float
    reserved: float
    queue: float
    results_kept: int
    """Bytes of the /jobs results the store keeps: the only memory reserved between jobs."""


def slope_per_1000(points: list[tuple[int, int]]) -> float:
    """Least-squares growth of y per 1,000 x."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def job_round_trip(client: httpx.Client, kind: Kind) -> httpx.Response:
    """/jobs: submit, poll until finished, fetch the result."""
    files = {"image": ("a.png", gray(kind.size))}
    created = client.post("/jobs", files=files, data={"model": kind.model, "format": kind.fmt})
    if created.status_code != 202:
        return created
    url = created.headers["location"]
    while client.get(url).json()["state"] in ("queued", "running"):
        time.sleep(0.002)
    return client.get(f"{url}/result")


@pytest.mark.slow
def test_thousands_of_sequential_jobs_leave_memory_flat() -> None:
    env = {
        "COLORIZE_QUEUE_SIZE": "8",
        "COLORIZE_RESULT_MAX_BYTES": str(RESULT_BUDGET),
        "COLORIZE_JOB_TIMEOUT_S": "30",
        "COLORIZE_MAX_JOBS_KEPT": str(JOBS_KEPT),
        "SCRIPTED_REAL_EXEMPLAR": "1",
    }
    # The real exemplar engine takes about a second a job on two CPU cores: 1 job in ~150.
    kinds = [k for k in mixed_kinds(exemplar_weight=0) if k.weight]
    exemplar = Kind("real-exemplar-64", "exemplar", (64, 48))
    rng = random.Random(20240601)
    tally = Tally()
    samples: list[Sample] = []
    with server_process(env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        started = time.monotonic()
        for n in range(1, MAX_JOBS + 1):
            if time.monotonic() - started > SOAK_S:
                break
            # The real exemplar engine first (its first run sizes the allocator's heap: that is
            # warm-up), then one job in 150.
            kind = exemplar if n % 150 == 1 else draw(rng, kinds)
            t0 = time.monotonic()
            try:
                r: httpx.Response | Exception = (
                    job_round_trip(client, kind)
                    if n % 5 == 0 and kind.model != "exemplar" and not kind.raw
                    else send(client, kind)
                )
            except Exception as exc:
                r = exc
            tally.record(kind, t0, r)
            if n % SAMPLE_EVERY == 0:
                m = server.metrics(client)
                heap = server.heap(client)
                samples.append(
                    Sample(
                        n,
                        heap["rss"] or 0,
                        heap["malloc_in_use"] or 0,
                        heap["python_objects"] or 0,
                        heap["jobs_kept"] or 0,
                        m["colorize_device_memory_used_bytes"],
                        m["colorize_admission_budget_bytes"],
                        m["colorize_admission_available_bytes"],
                        m["colorize_admission_reserved_bytes"],
                        m["colorize_queue_depth"],
                        heap["results_kept_bytes"] or 0,
                    )
                )
        elapsed = time.monotonic() - started
        kept = server.metrics(client)
        kept_results = server.heap(client)["results_kept_bytes"]

    steady = samples[int(len(samples) * WARM_UP_FRACTION) :]
    half = len(steady) // 2
    first, second = steady[:half], steady[half:]

    def drift(value: Callable[[Sample], float]) -> float:
        """Second half's median minus the first half's."""
        return statistics.median(map(value, second)) - statistics.median(map(value, first))

    def slope(part: list[Sample], value: Callable[[Sample], float]) -> float:
        return slope_per_1000([(s.jobs, value(s)) for s in part])

    def rss(s: Sample) -> float:
        return s.rss

    def heap(s: Sample) -> float:
        return s.heap

    def objects(s: Sample) -> float:
        return s.objects

    def budget(s: Sample) -> float:
        return s.budget

    print(
        f"\nsoak: {tally.total} jobs in {elapsed:.0f} s ({tally.total / elapsed:.0f}/s), "
        f"{tally.by_kind}; {tally.summary()}\n"
        f"soak: RSS start {samples[0].rss / MiB:.0f} MiB, end {samples[-1].rss / MiB:.0f} MiB, "
        f"steady min {min(s.rss for s in steady) / MiB:.0f}, "
        f"max {max(s.rss for s in steady) / MiB:.0f} MiB; halves {drift(rss) / MiB:+.1f} MiB, "
        f"slope {slope(first, rss) / MiB:+.2f} then {slope(second, rss) / MiB:+.2f} MiB/1000 jobs\n"
        f"soak: C heap in use {first[0].heap / MiB:.1f} -> {second[-1].heap / MiB:.1f} MiB, "
        f"halves {drift(heap) / MiB:+.2f} MiB, slope {slope(second, heap) / MiB:+.2f} "
        f"MiB/1000 jobs; Python objects {first[0].objects} -> {second[-1].objects}, "
        f"halves {drift(objects):+.0f}; /jobs records kept at most "
        f"{max(s.jobs_kept for s in samples)}\n"
        f"soak: MemoryManager: job budget drift {drift(budget) / MiB:+.1f} MiB, reserved at "
        f"every sample {sorted({s.reserved for s in samples})}, "
        f"queue {sorted({s.queue for s in samples})}"
    )
    assert tally.unexpected == [], tally.unexpected[:10]
    assert tally.busy == 0, "a sequential client never fills the queue"
    assert tally.total >= MIN_JOBS, "the soak must run many jobs"
    assert tally.by_kind.get("exemplar", 0) >= 3, "some real exemplar jobs must run"
    # Between jobs the only memory reserved is the kept /jobs results' (host retention).
    assert all(s.reserved == s.results_kept for s in samples)
    assert {s.queue for s in samples} == {0.0}
    assert kept["colorize_admission_reserved_bytes"] == kept_results
    assert max(s.jobs_kept for s in samples) <= JOBS_KEPT
    assert drift(objects) < OBJECT_TOLERANCE
    assert all(s.heap > 0 for s in samples), "the server's C library reports its heap"
    assert drift(heap) < HEAP_TOLERANCE
    assert abs(drift(rss)) < RSS_TOLERANCE
    assert max(map(rss, steady)) - min(map(rss, steady)) < RSS_RANGE
    assert abs(drift(budget)) < RSS_TOLERANCE
