"""Torch's thread pool belongs to the first device lane; every other stage thread runs its torch
operators on itself, and a lone job is decoded on that first lane."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from service.worker import intraop
from tests.support.apps import running_app
from tests.support.engines import ScriptedEngine
from tests.support.waiting import wait_for


def os_threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    # The suite may run with OMP_NUM_THREADS=1, where no thread would start a pool at all.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def pool_threads_started(serial: bool) -> int:
    """OS threads a new thread's parallel torch operator starts (and keeps while it lives);
    threads that end meanwhile, other tests' leftovers, do not count."""
    counted: list[int] = []
    done = threading.Event()

    def work() -> None:
        if serial:
            assert intraop.run_serially()
            assert torch.get_num_threads() == 1
        before = os_threads()
        x = torch.randn(1 << 22)
        (x * 2).sum()
        counted.append(len(os_threads() - before))
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert done.is_set()
    return counted[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_a_serial_thread_starts_no_pool_of_its_own(two_torch_threads: None) -> None:
    assert pool_threads_started(serial=False) >= 1  # the control: a thread does get a pool
    assert pool_threads_started(serial=True) == 0
    assert torch.get_num_threads() == 2  # other threads keep the setting


def post(client: TestClient, png: bytes) -> int:
    return client.post("/colorize", files={"image": ("a.png", png, "image/png")}).status_code


def test_a_lone_job_is_decoded_on_the_first_lane_and_a_waiting_one_by_a_preparer(
    gray_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_app(batch_max_size=1, device_workers=2) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        where: list[str] = []
        prepare = engine.prepare

        def recording(request):  # type: ignore[no-untyped-def]
            where.append(threading.current_thread().name)
            return prepare(request)

        monkeypatch.setattr(engine, "prepare", recording)
        assert post(client, gray_png) == 200
        assert where == ["colorize-device-0"]

        # With the first lane busy, the next job is decoded by a preparer (for the second lane).
        engine.gate.clear()
        engine.started.clear()
        statuses: list[int] = []
        first = threading.Thread(target=lambda: statuses.append(post(client, gray_png)))
        first.start()
        assert engine.started.wait(10)
        second = threading.Thread(target=lambda: statuses.append(post(client, gray_png)))
        second.start()
        wait_for(lambda: len(where) == 3)
        engine.gate.set()
        first.join(30)
        second.join(30)
        assert statuses == [200, 200]
        assert where[1] == "colorize-device-0"
        assert where[2].startswith("colorize-prepare")


def test_the_first_lane_uses_the_whole_pool_only_for_a_lone_job(
    gray_png: bytes, monkeypatch: pytest.MonkeyPatch, two_torch_threads: None
) -> None:
    with running_app(batch_max_size=1, device_workers=2) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        seen: list[tuple[str, int]] = []
        second_lane = threading.Event()
        forward = engine.forward

        def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
            name = threading.current_thread().name
            seen.append((name, torch.get_num_threads()))
            if name == "colorize-device-1":
                assert second_lane.wait(30)
            return forward(*args, **kwargs)

        monkeypatch.setattr(engine, "forward", recording)
        assert post(client, gray_png) == 200
        assert seen == [("colorize-device-0", 2)]

        # Three at once: the first lane's job holds the device, the second lane takes the next
        # and keeps it; the third reaches the first lane while the second is busy.
        engine.gate.clear()
        engine.started.clear()
        statuses: list[int] = []

        def send() -> None:
            statuses.append(post(client, gray_png))

        threads = [threading.Thread(target=send) for _ in range(3)]
        threads[0].start()
        assert engine.started.wait(10)
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: len(seen) == 3)
        engine.gate.set()  # the first lane's job ends; the third job comes to that lane
        wait_for(lambda: len(seen) == 4)
        second_lane.set()
        for thread in threads:
            thread.join(30)
        assert statuses == [200, 200, 200]
        assert seen[1] == ("colorize-device-0", 2)  # alone when it started
        assert seen[2] == ("colorize-device-1", 1)
        assert seen[3] == ("colorize-device-0", 1)  # the other lane was busy
