"""The worker through HTTP: queue full, admission wait, OOM recovery, engine errors, death,
batching and timeouts."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from service.memory import CudaBackend, MemoryManager
from tests.support.apps import running_app
from tests.support.engines import KillWorker, ScriptedEngine
from tests.support.fake_devices import FakeCuda, GiB
from tests.support.waiting import wait_for


def post(client: TestClient, png: bytes, **data: str):  # type: ignore[no-untyped-def]
    return client.post("/colorize", files={"image": ("a.png", png)}, data=data)


def in_threads(n: int, fn):  # type: ignore[no-untyped-def]
    results: list[object] = [None] * n

    def run(i: int) -> None:
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_full_queue_answers_503_with_retry_after(gray_png: bytes) -> None:
    with running_app(queue_size=2, batch_max_size=1) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.gate.clear()
        ids = [client.post("/jobs", files={"image": ("a.png", gray_png)}).json()["id"]]
        assert engine.started.wait(30)  # the first job holds the device
        ids += [
            client.post("/jobs", files={"image": ("a.png", gray_png)}).json()["id"]
            for _ in range(2)
        ]
        assert client.get("/v1/status").json()["queue_depth"] == 2
        r = post(client, gray_png)
        assert r.status_code == 503 and r.json()["error"] == "queue_full"
        assert int(r.headers["retry-after"]) >= 1
        engine.gate.set()
        wait_for(lambda: all(client.get(f"/jobs/{i}").json()["state"] == "done" for i in ids))
        assert post(client, gray_png).status_code == 200


def test_admission_waits_for_memory_then_succeeds(gray_png: bytes) -> None:
    fake = FakeCuda(total=10 * GiB, others=7 * GiB)  # another tenant holds 70 %
    manager = MemoryManager(torch.device("cuda", 0), 0.8, backend=CudaBackend(0, cuda=fake))
    engines = {"eccv16": ScriptedEngine(torch.device("cpu"), per_item_bytes=2 * GiB)}
    with running_app(engines=engines, manager=manager, admission_wait_s=5.0) as (client, _):
        threading.Timer(0.3, lambda: setattr(fake, "others", 0)).start()
        started = time.monotonic()
        assert post(client, gray_png).status_code == 200
        assert time.monotonic() - started >= 0.3
        assert manager.stats.admissions_waited == 1
        assert "colorize_admissions_waited_total 1.0" in client.get("/metrics").text


def test_admission_that_times_out_is_503(gray_png: bytes) -> None:
    fake = FakeCuda(total=10 * GiB, others=7 * GiB)
    manager = MemoryManager(torch.device("cuda", 0), 0.8, backend=CudaBackend(0, cuda=fake))
    engines = {"eccv16": ScriptedEngine(torch.device("cpu"), per_item_bytes=2 * GiB)}
    with running_app(engines=engines, manager=manager, admission_wait_s=0.2) as (client, e):
        r = post(client, gray_png)
        assert r.status_code == 503 and r.json()["error"] == "memory_busy"
        assert "retry-after" in r.headers
        assert e["eccv16"].batches == []  # type: ignore[attr-defined]  # never ran unreserved


def test_out_of_memory_once_is_retried_and_succeeds(gray_png: bytes) -> None:
    with running_app() as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.failures.append(
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        )
        assert post(client, gray_png).status_code == 200
        assert 'colorize_oom_events_total{model="eccv16"} 1.0' in client.get("/metrics").text


def test_out_of_memory_twice_is_507_and_the_next_job_runs(gray_png: bytes) -> None:
    with running_app() as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.failures += [torch.OutOfMemoryError("oom 1"), RuntimeError("CUDA out of memory 2")]
        r = post(client, gray_png)
        assert r.status_code == 507 and r.json()["error"] == "out_of_memory"
        assert "retry" in r.json()["detail"]
        assert post(client, gray_png).status_code == 200
        assert client.get("/v1/status").json()["ready"] is True


def test_engine_exception_fails_only_its_job(gray_png: bytes) -> None:
    with running_app() as (client, engines):
        engines["eccv16"].failures.append(ValueError("weights exploded"))  # type: ignore[attr-defined]
        r = post(client, gray_png)
        assert r.status_code == 500 and r.json()["error"] == "engine_error"
        assert "Traceback" not in r.text
        assert post(client, gray_png).status_code == 200


def test_worker_death_turns_readiness_red_and_answers_every_waiter(gray_png: bytes) -> None:
    with running_app(batch_max_size=1) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.gate.clear()
        engine.failures.append(KillWorker())
        threads, results = in_threads(3, lambda: post(client, gray_png))
        wait_for(lambda: client.get("/v1/status").json()["queue_depth"] >= 2, timeout=60)
        engine.gate.set()
        for t in threads:
            t.join(timeout=10)
        assert all(not t.is_alive() for t in threads), "a waiter hung"
        assert sorted(r.status_code for r in results) == [503, 503, 503]  # type: ignore[attr-defined]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "worker thread is not running" in ready.text
        assert client.get("/livez").status_code == 503  # so the orchestrator restarts us
        r = post(client, gray_png)
        assert r.status_code == 503 and r.json()["error"] == "worker_dead"


def test_batchable_jobs_share_a_forward_pass(gray_png: bytes) -> None:
    with running_app(batch_max_size=4, batch_max_wait_ms=50) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.gate.clear()
        first, _ = in_threads(1, lambda: post(client, gray_png))
        assert engine.started.wait(5)
        threads, results = in_threads(4, lambda: post(client, gray_png))
        wait_for(lambda: client.get("/v1/status").json()["queue_depth"] >= 4, timeout=60)
        engine.gate.set()
        for t in first + threads:
            t.join()
        assert engine.batches == [1, 4]
        assert all(r.status_code == 200 for r in results)  # type: ignore[attr-defined]


def test_job_waiting_past_the_time_limit_is_504(gray_png: bytes) -> None:
    with running_app(job_timeout_s=0.5, batch_max_size=1) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.gate.clear()
        threading.Timer(1.5, engine.gate.set).start()
        r = post(client, gray_png)
        assert r.status_code == 504 and r.json()["error"] == "timeout"


@pytest.mark.parametrize("policy", ["always", "threshold", "never"])
def test_cache_clear_policy(gray_png: bytes, policy: str) -> None:
    fake = FakeCuda(total=10 * GiB)
    manager = MemoryManager(torch.device("cuda", 0), 0.8, backend=CudaBackend(0, cuda=fake))
    with running_app(manager=manager, clear_cache=policy) as (client, _):
        assert post(client, gray_png).status_code == 200
    expected = {"always": 1, "threshold": 0, "never": 0}[policy]
    assert fake.empty_cache_calls == expected
