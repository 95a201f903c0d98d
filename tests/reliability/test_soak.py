"""Soak: as many sequential jobs as fit in SOAK_S seconds, of mixed sizes, engines, formats and
routes (/colorize and /jobs), on a real uvicorn in its own process; scripted engines for volume
plus the real exemplar engine now and then. The process's RSS and the MemoryManager's view must
stay flat: the second half's level and slope compared with the first half's.

Run with `-s` to see the figures (they are recorded in docs/reliability.md).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability.live import server_process
from tests.reliability.workload import Kind, Tally, draw, gray, mixed_kinds, send

MiB = 1 << 20
SOAK_S = 60.0
MAX_JOBS = 20_000
SAMPLE_EVERY = 25
WARM_UP_FRACTION = 0.1
"""The first tenth is warm-up (caches, allocator arenas) and is left out of the comparison."""
LEVEL_TOLERANCE = 24 * MiB
"""Most the second half's median RSS may exceed the first half's."""
SLOPE_TOLERANCE = 16 * MiB
"""Most the RSS may grow per 1,000 jobs over the second half (least squares). A leak of 16 kB
per job, far smaller than one output image, would exceed it."""
RESULT_BUDGET = 8 * MiB
MIN_JOBS = 500
"""As many jobs as fit in SOAK_S; about 1,500 on two busy cores, more on a quiet machine."""


@dataclass
class Sample:
    jobs: int
    rss: int
    used: float
    budget: float
    available: float
    reserved: float
    queue: float


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
        "RELIABILITY_REAL_EXEMPLAR": "1",
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
                samples.append(
                    Sample(
                        n,
                        server.rss(),
                        m["colorize_device_memory_used_bytes"],
                        m["colorize_admission_budget_bytes"],
                        m["colorize_admission_available_bytes"],
                        m["colorize_admission_reserved_bytes"],
                        m["colorize_queue_depth"],
                    )
                )
        elapsed = time.monotonic() - started
        kept = server.metrics(client)

    steady = samples[int(len(samples) * WARM_UP_FRACTION) :]
    half = len(steady) // 2
    first, second = steady[:half], steady[half:]
    level_first = statistics.median(s.rss for s in first)
    level_second = statistics.median(s.rss for s in second)
    slope_first = slope_per_1000([(s.jobs, s.rss) for s in first])
    slope_second = slope_per_1000([(s.jobs, s.rss) for s in second])
    budget_drift = statistics.median(s.budget for s in second) - statistics.median(
        s.budget for s in first
    )
    print(
        f"\nsoak: {tally.total} jobs in {elapsed:.0f} s ({tally.total / elapsed:.0f}/s), "
        f"{tally.by_kind}; {tally.summary()}\n"
        f"soak: RSS start {samples[0].rss / MiB:.0f} MiB, end {samples[-1].rss / MiB:.0f} MiB, "
        f"steady min {min(s.rss for s in steady) / MiB:.0f}, "
        f"max {max(s.rss for s in steady) / MiB:.0f} MiB\n"
        f"soak: first half median {level_first / MiB:.1f} MiB, slope {slope_first / MiB:+.2f} "
        f"MiB/1000 jobs; second half median {level_second / MiB:.1f} MiB, slope "
        f"{slope_second / MiB:+.2f} MiB/1000 jobs\n"
        f"soak: MemoryManager: job budget drift {budget_drift / MiB:+.1f} MiB, reserved at "
        f"every sample {sorted({s.reserved for s in samples})}, "
        f"queue {sorted({s.queue for s in samples})}"
    )
    assert tally.unexpected == [], tally.unexpected[:10]
    assert tally.busy == 0, "a sequential client never fills the queue"
    assert tally.total >= MIN_JOBS, "the soak must run many jobs"
    assert tally.by_kind.get("exemplar", 0) >= 3, "some real exemplar jobs must run"
    assert {s.reserved for s in samples} == {0.0} and {s.queue for s in samples} == {0.0}
    assert kept["colorize_admission_reserved_bytes"] == 0
    assert level_second - level_first < LEVEL_TOLERANCE
    assert slope_second < SLOPE_TOLERANCE
    assert abs(budget_drift) < LEVEL_TOLERANCE
