"""The service's real /metrics exposition (the deployment files: tests/support/deploy.py)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.settings import Settings
from service.store import QueueStats, StoreMetrics
from tests.support.apps import running_app


@pytest.fixture(scope="session")
def exposition(gray_png: bytes, colour_png: bytes) -> str:
    """GET /metrics of the real app after a job on each engine, so every histogram has series."""
    with running_app(Settings(queue_size=8)) as (client, _):
        jobs = [
            ({"image": ("a.png", gray_png)}, {"model": "eccv16"}),
            ({"image": ("a.png", gray_png)}, {"model": "siggraph17"}),
            (
                {"image": ("a.png", gray_png), "reference": ("r.png", colour_png)},
                {"model": "exemplar"},
            ),
        ]
        for files, data in jobs:
            r = client.post("/colorize", files=files, data=data)
            assert r.status_code == 200, r.text
        r = client.get("/metrics")
        assert r.status_code == 200
        return r.text


@pytest.fixture(scope="session")
def store_exposition() -> str:
    """What the shared store's collector adds to /metrics in shared mode (the lifespan registers
    it on the app's registry when COLORIZE_REDIS_URL is set: service/api/app.py, open_shared),
    with one of everything recorded so that every family has samples. No servers needed: the
    collector only reports what the store told it (tests/store/test_metrics.py checks that
    against real servers)."""
    metrics = StoreMetrics()
    metrics.observe_call("redis", "submit", 0.002, ok=True)
    metrics.observe_call("object_store", "put", 0.04, ok=False)
    metrics.observe_claim()
    metrics.observe_dead_letter()
    metrics.observe_refusal("jobs")
    metrics.observe_queue(
        QueueStats(
            jobs=3,
            bytes=15,
            stream_length=3,
            lag=2,
            pending=1,
            consumers=2,
            max_jobs=1000,
            max_bytes=4 << 30,
        )
    )
    registry = CollectorRegistry()
    registry.register(metrics)
    return generate_latest(registry).decode()


@pytest.fixture(scope="session")
def shared_exposition(exposition: str, store_exposition: str) -> str:
    """/metrics of a replica in shared mode: the app's families and the store's."""
    return exposition + store_exposition
