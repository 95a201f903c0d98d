"""/jobs: 202 + Location, status while queued and running, result, cancel, retention."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.support.apps import running_app
from tests.support.engines import ScriptedEngine
from tests.support.held import holds_only_kept_results
from tests.support.images import decode


def wait_state(client: TestClient, url: str, states: set[str], timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["state"] in states:
            return body  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"{url} never reached {states}")


def test_job_lifecycle_queued_running_done(gray_png: bytes) -> None:
    with running_app(batch_max_size=1) as (client, engines):
        eccv16: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        eccv16.gate.clear()
        first = client.post("/jobs", files={"image": ("a.png", gray_png)})
        assert first.status_code == 202
        url = first.headers["location"]
        assert url == f"/jobs/{first.json()['id']}"
        assert wait_state(client, url, {"running"})["position"] is None
        second = client.post("/jobs", files={"image": ("a.png", gray_png)}).json()
        assert second["state"] == "queued" and second["position"] == 1
        assert client.get(f"{url}/result").status_code == 409
        eccv16.gate.set()
        done = wait_state(client, url, {"done"})
        assert done["result_url"] == f"{url}/result"
        assert set(done["timings"]) == {"decode", "queue", "compute", "finish", "encode"}
        result = client.get(f"{url}/result")
        assert result.status_code == 200 and result.headers["content-type"] == "image/png"
        assert decode(result.content).shape == (128, 128, 3)


def test_deleting_a_running_job_stops_it_at_its_next_step(gray_png: bytes) -> None:
    # A DELETE reaches a running job (a video must stop within seconds, and in the shared
    # store it may run on another replica): it ends cancelled, and its result is never kept.
    with running_app(batch_max_size=1) as (client, engines):
        eccv16: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        eccv16.gate.clear()
        url = client.post("/jobs", files={"image": ("a.png", gray_png)}).headers["location"]
        wait_state(client, url, {"running"})
        r = client.delete(url)
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        eccv16.gate.set()
        ended = wait_state(client, url, {"cancelled"})
        assert ended["result_url"] is None
        assert client.get(f"{url}/result").status_code == 409
        assert holds_only_kept_results(client.app.state.svc)  # type: ignore[attr-defined]


def test_cancelling_a_queued_job_takes_it_out_of_the_queue(gray_png: bytes) -> None:
    with running_app(batch_max_size=1) as (client, engines):
        eccv16: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        eccv16.gate.clear()
        running = client.post("/jobs", files={"image": ("a.png", gray_png)}).json()
        wait_state(client, f"/jobs/{running['id']}", {"running"})
        queued = client.post("/jobs", files={"image": ("a.png", gray_png)}).json()
        r = client.delete(f"/jobs/{queued['id']}")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert client.get("/v1/status").json()["queue_depth"] == 0
        eccv16.gate.set()
        wait_state(client, f"/jobs/{running['id']}", {"done"})
        assert eccv16.batches == [1]  # the cancelled job never ran
        assert client.get(f"/jobs/{queued['id']}/result").status_code == 409
        # A second DELETE forgets it, as it forgets any finished job (it once never did).
        assert client.delete(f"/jobs/{queued['id']}").json()["state"] == "cancelled"
        assert client.get(f"/jobs/{queued['id']}").status_code == 404


def test_failed_job_reports_its_error(gray_png: bytes) -> None:
    with running_app() as (client, engines):
        engines["eccv16"].failures.append(ValueError("boom"))  # type: ignore[attr-defined]
        job = client.post("/jobs", files={"image": ("a.png", gray_png)}).json()
        body = wait_state(client, f"/jobs/{job['id']}", {"failed"})
        assert body["error"]["error"] == "engine_error" and "boom" in body["error"]["detail"]
        assert body["error"]["status"] == 500
        assert client.get(f"/jobs/{job['id']}/result").status_code == 409


def test_results_expire_after_the_retention_time_and_the_status_says_so(gray_png: bytes) -> None:
    with running_app(result_ttl_s=0.3) as (client, _):
        job = client.post("/jobs", files={"image": ("a.png", gray_png)}).json()
        wait_state(client, f"/jobs/{job['id']}", {"done"})
        time.sleep(0.4)
        body = client.get(f"/jobs/{job['id']}").json()
        assert body["result_url"] is None and "retention" in body["result_note"]
        r = client.get(f"/jobs/{job['id']}/result")
        assert r.status_code == 404 and r.json()["error"] == "result_expired"


def test_results_past_the_size_budget_drop_the_oldest_first(gray_png: bytes) -> None:
    with running_app(result_max_bytes=60_000) as (client, _):
        ids = []
        for _ in range(3):
            job = client.post("/jobs", files={"image": ("a.png", gray_png)}).json()
            wait_state(client, f"/jobs/{job['id']}", {"done"})
            ids.append(job["id"])
        first, last = client.get(f"/jobs/{ids[0]}").json(), client.get(f"/jobs/{ids[-1]}").json()
        assert first["result_url"] is None and "exceeded 60000 bytes" in first["result_note"]
        assert last["result_url"] is not None


@pytest.mark.parametrize("n", [32])
def test_job_ids_are_unguessable(gray_png: bytes, n: int) -> None:
    with running_app(queue_size=64) as (client, _):
        ids = {
            client.post("/jobs", files={"image": ("a.png", gray_png)}).json()["id"]
            for _ in range(n)
        }
    assert len(ids) == n
    assert all(len(i) >= 24 for i in ids)  # 18 random bytes, URL-safe base64
