"""MemoryManager: the original interface, the admission budget, measurement and counters."""

from __future__ import annotations

import logging
import math
import mmap
import threading
import time

import numpy as np
import pytest
import torch

from service.memory import (
    CudaBackend,
    MemoryManager,
    MemoryRefused,
    MpsBackend,
    NeverFits,
)
from tests.support.fake_devices import FakeCuda, FakeMps, GiB


def cuda_manager(fake: FakeCuda, threshold: float = 0.8) -> MemoryManager:
    return MemoryManager(torch.device("cuda", 0), threshold, backend=CudaBackend(0, cuda=fake))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, 2, math.nan], ids=str)
def test_threshold_outside_unit_interval_is_rejected_by_value(bad: float) -> None:
    with pytest.raises(ValueError, match=f"memory_threshold must be in \\(0, 1\\], got {bad!r}"):
        MemoryManager(torch.device("cpu"), bad)


def test_threshold_of_one_is_allowed() -> None:
    assert MemoryManager(torch.device("cpu"), 1.0).memory_threshold == 1.0


# -- clear_cache -------------------------------------------------------------------------------


def test_clear_cache_on_cuda_empties_the_allocator_cache_and_counts_freed_bytes() -> None:
    fake = FakeCuda()
    fake.alloc(3 * GiB)
    fake.free(2 * GiB)
    manager = cuda_manager(fake)
    assert manager.clear_cache() == 2 * GiB
    assert fake.empty_cache_calls == 1
    assert (manager.stats.cache_clears, manager.stats.bytes_freed) == (1, 2 * GiB)


def test_clear_cache_on_mps_calls_mps_empty_cache() -> None:
    fake = FakeMps()
    fake.current, fake.driver = GiB, 3 * GiB
    manager = MemoryManager(torch.device("mps"), backend=MpsBackend(mps=fake))
    assert manager.clear_cache() == 2 * GiB
    assert fake.empty_cache_calls == 1


def test_clear_cache_on_cpu_is_counted() -> None:
    """What it frees on CPU (the C heap's free pages) is tested in test_heap.py."""
    manager = MemoryManager(torch.device("cpu"))
    assert manager.clear_cache() >= 0
    assert manager.stats.cache_clears == 1


# -- check_memory_usage ------------------------------------------------------------------------


def test_cuda_usage_is_the_device_wide_view_including_other_processes() -> None:
    fake = FakeCuda(total=10 * GiB, others=4 * GiB)
    fake.alloc(GiB)
    assert cuda_manager(fake).check_memory_usage() == pytest.approx(0.5)


def test_mps_usage_is_against_recommended_max_memory() -> None:
    fake = FakeMps(recommended=8 * GiB)
    fake.current = fake.driver = 2 * GiB
    manager = MemoryManager(torch.device("mps"), backend=MpsBackend(mps=fake))
    assert manager.check_memory_usage() == pytest.approx(0.25)


def test_cpu_usage_is_process_rss_against_capacity_and_moves_with_allocation() -> None:
    manager = MemoryManager(torch.device("cpu"))
    before = manager.check_memory_usage()
    block = np.ones(400 * 1024 * 1024, dtype=np.uint8)  # touch every page
    during = manager.check_memory_usage()
    del block
    assert 0.0 < before < during <= 1.0
    assert during - before == pytest.approx(400 * 1024 * 1024 / manager.snapshot().total, rel=0.3)


# -- trigger_gc_if_needed ----------------------------------------------------------------------


def test_gc_does_not_run_below_threshold() -> None:
    fake = FakeCuda(total=10 * GiB)
    fake.alloc(7 * GiB)
    manager = cuda_manager(fake, 0.8)
    assert manager.trigger_gc_if_needed() is False
    assert (manager.stats.gc_runs, fake.empty_cache_calls) == (0, 0)


def test_gc_runs_above_threshold_clears_cache_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeCuda(total=10 * GiB)
    fake.alloc(9 * GiB)
    fake.free(3 * GiB)  # 9 GiB reserved, 6 GiB live: usage 0.9
    manager = cuda_manager(fake, 0.8)
    with caplog.at_level(logging.INFO, logger="service.memory.manager"):
        assert manager.trigger_gc_if_needed() is True
    assert fake.empty_cache_calls == 1
    assert manager.stats.gc_runs == 1
    assert manager.check_memory_usage() == pytest.approx(0.6)
    message = caplog.records[-1].getMessage()
    assert "90.0%" in message and str(9 * GiB) in message and str(6 * GiB) in message


def test_gc_runs_on_cpu_when_rss_is_above_a_tiny_threshold() -> None:
    manager = MemoryManager(torch.device("cpu"), memory_threshold=1e-6)
    assert manager.trigger_gc_if_needed() is True
    assert manager.stats.gc_runs == 1


# -- estimate_memory_required ------------------------------------------------------------------


SIZES = [(1, 1), (64, 64), (256, 256), (512, 384), (1024, 1024), (4096, 2048)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_estimate_is_monotone_in_each_dimension(size: tuple[int, int]) -> None:
    manager = MemoryManager(torch.device("cpu"))
    w, h = size
    base = manager.estimate_memory_required((w, h))
    assert base > 0
    assert manager.estimate_memory_required((w + 1, h)) > base
    assert manager.estimate_memory_required((w, h + 1)) > base


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (-1, 5)], ids=str)
def test_estimate_rejects_empty_sizes(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        MemoryManager(torch.device("cpu")).estimate_memory_required(size)


# -- snapshot ----------------------------------------------------------------------------------


def test_snapshot_on_cuda_has_driver_allocator_and_budget_views() -> None:
    fake = FakeCuda(total=10 * GiB, others=GiB)
    fake.alloc(2 * GiB)  # weights, resident before the manager starts
    manager = cuda_manager(fake, 0.5)
    fake.alloc(GiB)
    fake.free(GiB)
    with manager.reserve(GiB):
        snap = manager.snapshot()
    assert snap.device == "cuda:0"
    assert (snap.used, snap.total) == (4 * GiB, 10 * GiB)
    assert (snap.allocated, snap.reserved, snap.peak_allocated) == (2 * GiB, 3 * GiB, 3 * GiB)
    assert snap.usage_ratio == pytest.approx(0.4)
    assert snap.limit == 5 * GiB
    assert snap.job_budget == 3 * GiB  # limit minus our resident weights; other tenants excluded
    assert snap.reserved_for_jobs == GiB
    assert snap.available == 0  # 4 GiB used + 1 GiB held = the 5 GiB limit


def test_snapshot_on_cpu_has_no_allocator_view() -> None:
    snap = MemoryManager(torch.device("cpu")).snapshot()
    assert (snap.allocated, snap.reserved, snap.peak_allocated) == (None, None, None)
    assert 0 < snap.used < snap.total


# -- reservations ------------------------------------------------------------------------------


def test_reservation_is_held_inside_and_released_on_exit() -> None:
    manager = cuda_manager(FakeCuda(total=10 * GiB))
    assert manager.available_bytes() == 8 * GiB
    with manager.reserve(3 * GiB) as r:
        assert r.nbytes == 3 * GiB
        assert manager.available_bytes() == 5 * GiB
    assert manager.available_bytes() == 8 * GiB


def test_reservation_is_released_when_the_job_raises() -> None:
    manager = cuda_manager(FakeCuda(total=10 * GiB))
    with pytest.raises(RuntimeError), manager.reserve(3 * GiB):
        raise RuntimeError("engine failed")
    assert manager.snapshot().reserved_for_jobs == 0


def test_allocations_inside_a_reservation_are_not_counted_twice() -> None:
    fake = FakeCuda(total=10 * GiB)
    manager = cuda_manager(fake)
    with manager.reserve(3 * GiB):
        fake.alloc(2 * GiB)  # the job uses less than it reserved
        assert manager.available_bytes() == 5 * GiB
        fake.alloc(2 * GiB)  # and then more: the live reading wins
        assert manager.available_bytes() == 4 * GiB


def test_request_larger_than_the_whole_budget_never_fits() -> None:
    manager = cuda_manager(FakeCuda(total=10 * GiB))
    with pytest.raises(NeverFits, match="whole job budget is") as info:
        manager.reserve(9 * GiB, timeout=5.0)
    assert info.value.budget == 8 * GiB
    assert manager.stats.refused_never_fits == 1


def test_request_that_fits_only_an_idle_device_is_refused_after_waiting() -> None:
    fake = FakeCuda(total=10 * GiB, others=5 * GiB)  # another process holds half the GPU
    manager = cuda_manager(fake)
    started = time.monotonic()
    with pytest.raises(MemoryRefused, match=r"after waiting 0\.2 s"):
        manager.reserve(4 * GiB, timeout=0.2)
    assert time.monotonic() - started >= 0.2
    assert fake.empty_cache_calls == 1  # it tried to make room once
    assert manager.stats.refused_timeout == 1


def test_waiting_reservation_is_granted_when_another_is_released() -> None:
    manager = cuda_manager(FakeCuda(total=10 * GiB))
    first = manager.reserve(6 * GiB)
    threading.Timer(0.15, first.release).start()
    with manager.reserve(6 * GiB, timeout=5.0):
        assert manager.snapshot().reserved_for_jobs == 6 * GiB
    assert manager.stats.admissions_waited == 1


def test_waiting_reservation_is_granted_when_another_process_frees_memory() -> None:
    fake = FakeCuda(total=10 * GiB, others=6 * GiB)
    manager = cuda_manager(fake)
    threading.Timer(0.15, lambda: setattr(fake, "others", 0)).start()
    with manager.reserve(5 * GiB, timeout=5.0):
        pass
    assert manager.stats.admissions_waited == 1


def test_concurrent_reservations_never_exceed_the_limit() -> None:
    manager = cuda_manager(FakeCuda(total=10 * GiB))
    peak = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal peak
        try:
            for _ in range(20):
                with manager.reserve(3 * GiB, timeout=10.0):
                    held = manager.snapshot().reserved_for_jobs
                    with lock:
                        peak = max(peak, held)
                    time.sleep(0.001)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert peak <= 8 * GiB and peak >= 6 * GiB  # two 3 GiB jobs fit an 8 GiB limit, three don't
    assert manager.stats.admissions == 160
    assert manager.snapshot().reserved_for_jobs == 0


def test_release_is_idempotent() -> None:
    manager = cuda_manager(FakeCuda())
    r = manager.reserve(GiB)
    r.release()
    r.release()
    assert manager.snapshot().reserved_for_jobs == 0


# -- measurement -------------------------------------------------------------------------------


def test_measure_on_cpu_sees_peak_rss_growth_of_a_job() -> None:
    manager = MemoryManager(torch.device("cpu"))
    size = 300 * 1024 * 1024
    with manager.measure() as m:
        # Fresh pages from the kernel, touched: late in a long suite the C heap can hold enough
        # freed-but-resident memory to serve a malloc of this size without the RSS growing.
        block = mmap.mmap(-1, size)
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        block.close()
    assert size * 0.9 <= m.peak_bytes <= size * 1.5


def test_measure_on_cuda_uses_the_allocator_peak_above_the_baseline() -> None:
    fake = FakeCuda()
    fake.alloc(GiB)
    fake.alloc(GiB)
    fake.free(GiB)  # an old peak of 2 GiB must not leak into the next measurement
    manager = cuda_manager(fake)
    with manager.measure() as m:
        fake.alloc(3 * GiB)
        fake.free(3 * GiB)
    assert m.peak_bytes == 3 * GiB


def test_record_estimate_keeps_pairs_and_tells_observers() -> None:
    manager = MemoryManager(torch.device("cpu"))
    seen: list[tuple[str, int, int]] = []
    manager.observers.append(lambda *args: seen.append(args))
    manager.record_estimate("eccv16", 1000, 800)
    assert seen == [("eccv16", 1000, 800)]
    assert list(manager.stats.measurements) == [("eccv16", 1000, 800)]


# -- real CUDA ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_real_cuda_snapshot_measure_and_clear() -> None:
    device = torch.device("cuda", 0)
    manager = MemoryManager(device)
    with manager.measure() as m:
        x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=device)
        del x
    assert m.peak_bytes >= 256 * 1024 * 1024
    snap = manager.snapshot()
    assert snap.reserved is not None and snap.reserved >= 256 * 1024 * 1024
    manager.clear_cache()
    assert manager.snapshot().reserved == torch.cuda.memory_reserved(0)
    assert 0.0 < manager.check_memory_usage() <= 1.0


def test_jobs_leave_the_body_floor_free_and_bodies_may_use_it() -> None:
    # An upload must find room however busy the jobs are: every reservation but a body's leaves
    # `body_floor_share` of the job budget free (COLORIZE_BODY_MEMORY_FLOOR).
    manager = cuda_manager(FakeCuda(total=10 * GiB))  # limit 8 GiB, job budget 8 GiB
    manager.body_floor_share = 0.25
    jobs = manager.reserve(5 * GiB, purpose="pixels")
    with pytest.raises(MemoryRefused):
        manager.reserve(2 * GiB, purpose="pixels")  # would leave 1 GiB < the 2 GiB floor
    body = manager.reserve(2 * GiB + GiB // 2, purpose="body")
    body.release()
    jobs.release()
    # A job as large as the whole budget still fits an idle service: the floor yields.
    manager.reserve(8 * GiB, purpose="compute").release()


def test_jobs_that_overran_their_reservations_leave_the_body_floor_to_bodies() -> None:
    # Jobs' memory beyond what they reserved (the live reading over the limit) takes the room of
    # other jobs, never the floor that uploads were promised; bodies hold at most the floor.
    cuda = FakeCuda(total=10 * GiB)
    manager = cuda_manager(cuda)  # limit 8 GiB, job budget 8 GiB, floor 2 GiB
    manager.body_floor_share = 0.25
    jobs = manager.reserve(6 * GiB, purpose="pixels")
    cuda.alloc(9 * GiB)  # the jobs use 3 GiB more than they hold: 1 GiB over the limit
    with pytest.raises(MemoryRefused):
        manager.reserve(1, purpose="pixels")
    body = manager.reserve(GiB, purpose="body")
    body.grow(GiB)
    with pytest.raises(MemoryRefused):
        body.grow(1)  # the floor is used up
    with pytest.raises(MemoryRefused):
        manager.reserve(1, purpose="body")
    body.release()
    jobs.release()
