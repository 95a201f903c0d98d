"""The cache cleared once the device stays idle: after a lone job the heap waits for the next."""

from __future__ import annotations

import threading
import time

import torch

from service.memory import MemoryManager
from service.memory.idle_clear import IdleClear
from tests.support.apps import running_app
from tests.support.waiting import wait_for


class Clears:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.cleared = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.cleared.set()


def test_it_clears_once_the_delay_passes() -> None:
    clears = Clears()
    idle = IdleClear(clears, lambda: False, 0.2)
    armed = time.monotonic()
    idle.arm()
    assert idle.pending
    assert clears.cleared.wait(5)
    assert clears.times[0] - armed >= 0.2
    assert not idle.pending
    idle.close()


def test_arming_again_postpones_it() -> None:
    clears = Clears()
    idle = IdleClear(clears, lambda: False, 0.3)
    idle.arm()
    time.sleep(0.2)
    rearmed = time.monotonic()
    idle.arm()
    assert clears.cleared.wait(5)
    assert clears.times[0] - rearmed >= 0.3
    assert len(clears.times) == 1
    idle.close()


def test_busy_or_cancelled_it_does_not_clear() -> None:
    clears = Clears()
    busy = True
    idle = IdleClear(clears, lambda: busy, 0.1)
    idle.arm()
    wait_for(lambda: not idle.pending)
    assert not clears.times  # work came in: its own end arms again
    busy = False
    idle.arm()
    idle.cancel()
    time.sleep(0.3)
    assert not clears.times
    idle.close()


def cpu_manager() -> MemoryManager:
    return MemoryManager(torch.device("cpu"), 0.9)


def test_after_a_lone_job_on_a_cpu_the_heap_is_kept_until_the_delay(gray_png: bytes) -> None:
    manager = cpu_manager()
    with running_app(manager=manager, clear_cache="always", clear_cache_idle_s=1.5) as (
        client,
        _,
    ):
        before = manager.stats.cache_clears
        r = client.post("/colorize", files={"image": ("a.png", gray_png, "image/png")})
        assert r.status_code == 200
        time.sleep(0.3)  # the lane is done with the job: without the delay it has cleared
        assert manager.stats.cache_clears == before
        wait_for(lambda: manager.stats.cache_clears == before + 1, timeout=10)


def test_a_zero_delay_clears_after_every_job(gray_png: bytes) -> None:
    manager = cpu_manager()
    with running_app(manager=manager, clear_cache="always", clear_cache_idle_s=0) as (client, _):
        before = manager.stats.cache_clears
        r = client.post("/colorize", files={"image": ("a.png", gray_png, "image/png")})
        assert r.status_code == 200
        wait_for(lambda: manager.stats.cache_clears == before + 1, timeout=10)
