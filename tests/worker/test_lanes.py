"""Two device lanes on a CPU: forward passes overlap, each still admitted against one budget."""

from __future__ import annotations

import threading

import pytest
import torch
from fastapi.testclient import TestClient

from service.memory import CudaBackend, MemoryManager
from service.worker.worker import device_lanes
from tests.support.apps import running_app
from tests.support.engines import ScriptedEngine
from tests.support.fake_devices import FakeCuda, GiB
from tests.support.waiting import wait_for


@pytest.mark.parametrize(
    ("setting", "device", "lanes"),
    [
        ("auto", "cpu", 2),
        ("auto", "cuda", 1),
        ("auto", "mps", 1),
        (3, "cuda", 3),
        (1, "cpu", 1),
    ],
)
def test_auto_is_two_lanes_on_a_cpu_and_one_elsewhere(
    setting: int | str, device: str, lanes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert device_lanes(setting, torch.device(device)) == lanes  # type: ignore[arg-type]


def test_a_one_core_machine_gets_one_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert device_lanes("auto", torch.device("cpu")) == 1


def post(client: TestClient, png: bytes) -> int:
    return client.post("/colorize", files={"image": ("a.png", png)}).status_code


def post_in_threads(
    client: TestClient, png: bytes, n: int
) -> tuple[list[int], list[threading.Thread]]:
    """Start `n` uploads at once; their statuses land in the list as they finish."""
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(post(client, png))) for _ in range(n)]
    for t in threads:
        t.start()
    return results, threads


def test_two_lanes_run_two_jobs_at_once(gray_png: bytes) -> None:
    engine = ScriptedEngine(torch.device("cpu"), batchable=False)
    with running_app(engines={"eccv16": engine}, device_workers=2) as (client, _):
        engine.gate.clear()
        results, threads = post_in_threads(client, gray_png, 2)
        try:
            wait_for(lambda: client.get("/v1/status").json()["jobs_running"] == 2)
            wait_for(lambda: len(engine.batches) == 2)
            assert client.get("/v1/status").json()["queue_depth"] == 0
        finally:
            engine.gate.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200]


def test_two_lanes_still_admit_against_one_budget(gray_png: bytes) -> None:
    # Each job needs 5 GiB of an 8 GiB budget: the second lane waits for the first job's memory.
    fake = FakeCuda(total=10 * GiB)
    manager = MemoryManager(torch.device("cuda", 0), 0.8, backend=CudaBackend(0, cuda=fake))
    engine = ScriptedEngine(torch.device("cpu"), batchable=False, per_item_bytes=5 * GiB)
    with running_app(
        engines={"eccv16": engine}, manager=manager, device_workers=2, admission_wait_s=30.0
    ) as (client, _):
        engine.gate.clear()
        results, threads = post_in_threads(client, gray_png, 2)
        try:
            wait_for(lambda: client.get("/v1/status").json()["jobs_running"] == 2)
            wait_for(lambda: len(engine.batches) == 1)
            assert manager.snapshot().reserved_for_jobs == engine.memory_model.estimate(128, 128)
            assert len(engine.batches) == 1, "the second lane waits for memory, not the device"
        finally:
            engine.gate.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200]
        assert manager.stats.admissions_waited == 1


def test_a_lane_that_dies_takes_the_service_down_cleanly(gray_png: bytes) -> None:
    from tests.support.engines import KillWorker

    engine = ScriptedEngine(torch.device("cpu"), batchable=False)
    with running_app(engines={"eccv16": engine}, device_workers=2) as (client, _):
        engine.failures.append(KillWorker())
        assert post(client, gray_png) == 503
        wait_for(lambda: client.get("/readyz").status_code == 503)
        assert post(client, gray_png) == 503
