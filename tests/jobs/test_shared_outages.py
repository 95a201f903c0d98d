"""Redis or the object store down: POST /jobs answers 503 with a JSON error and Retry-After
(never 500, never a 202 for a job not stored), /readyz names the cause, /colorize keeps serving,
and everything recovers by itself when the store comes back, without a restart."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.servers import ServerProcess, server_process
from tests.support.services import ACCESS_KEY, SECRET_KEY, RedisServer, SeaweedServer
from tests.support.store import JOBS_BUCKET as BUCKET
from tests.support.waiting import wait_for


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[RedisServer, SeaweedServer]]:
    redis = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always")
    redis.directory.mkdir()
    redis.start()
    weed = SeaweedServer(tmp_path / "weed")
    weed.directory.mkdir()
    weed.start()
    weed.wait_writable(BUCKET)
    try:
        yield redis, weed
    finally:
        redis.stop()
        weed.stop()


def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def post(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", files={"image": ("a.png", png())}, timeout=60)


def down_then_back(server: ServerProcess, store: str, stop: object, start: object) -> None:
    stop()  # type: ignore[operator]
    r = post(server, "/jobs")
    assert r.status_code == 503 and r.json()["error"] == "job_store_unavailable", r.text
    assert int(r.headers["retry-after"]) >= 1
    wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, timeout=20)
    reasons = " ".join(httpx.get(f"{server.url}/readyz").json()["reasons"])
    assert store in reasons, reasons
    assert post(server, "/colorize").status_code == 200  # needs no shared state
    # ...so a balancer that asks for what /colorize needs keeps this replica in.
    assert httpx.get(f"{server.url}/readyz?scope=colorize").status_code == 200
    start()  # type: ignore[operator]
    wait_for(lambda: post(server, "/jobs").status_code == 202, timeout=60, interval=0.5)
    wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, timeout=30)


def test_outages_answer_503_and_recover_without_a_restart(
    stores: tuple[RedisServer, SeaweedServer],
) -> None:
    redis, weed = stores
    env = {
        "COLORIZE_REDIS_URL": redis.url,
        "COLORIZE_OBJECT_STORE_URL": weed.endpoint,
        "COLORIZE_OBJECT_STORE_BUCKET": BUCKET,
        "COLORIZE_SHARED_HEARTBEAT_S": "0.5",
        "COLORIZE_SHARED_CLAIM_AFTER_S": "2",
        "COLORIZE_SHARED_TIMEOUT_S": "1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }
    with server_process(env) as server:
        assert post(server, "/jobs").status_code == 202
        down_then_back(server, "redis", redis.stop, redis.start)
        down_then_back(server, "object store", weed.stop, weed.start)
        assert "Traceback" not in server.log()
