"""A video job through the shared store (real Redis and SeaweedFS): the upload goes to the object
store from its spool file, the record is kind=video and shows progress, the replica that pulls it
colours it and stores the result from its file, the result is fetched back; a DELETE reaches the
replica running it and stops it within two seconds."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import httpx

from tests.jobs.test_shared_replicas import result_objects
from tests.support.images import is_colour
from tests.support.servers import server_process
from tests.support.services import SeaweedServer
from tests.support.store import SharedEnv
from tests.support.videos import make_clip, with_spec


def wait_state(client: httpx.Client, url: str, states: set[str], timeout: float = 60) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["state"] in states:
            return body  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"{url} never reached {states}: {body}")


def test_a_video_job_in_shared_mode_completes_and_its_result_is_fetched(
    shared_env: SharedEnv, seaweed: SeaweedServer, tmp_path: Path
) -> None:
    short = make_clip(tmp_path / "short.mp4", with_spec(audio=True))
    long = make_clip(tmp_path / "long.mp4", with_spec(frames=96, width=96, height=64))
    env = shared_env(SCRIPTED_DELAY_S="0.02", COLORIZE_VIDEO_SPOOL_DIR=str(tmp_path / "spool"))
    with server_process(env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/jobs", files={"video": ("short.mp4", short.read_bytes())})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["kind"] == "video" and job["progress"]["frames_total"] == 24
        done = wait_state(client, f"/jobs/{job['id']}", {"done", "failed"})
        assert done["state"] == "done", done
        assert done["progress"]["frames_done"] == 24
        result = client.get(f"/jobs/{job['id']}/result")
        assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(result.content)) as container:
            assert [s.type for s in container.streams] == ["video", "audio"]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 24 and all(is_colour(f) for f in frames)
        # Completed once: only the result is left in the bucket (the upload was deleted).
        assert result_objects(seaweed, env["COLORIZE_SHARED_PREFIX"])[job["id"]] == ["result"]

        # DELETE reaches the replica that runs it, through the store.
        running = client.post("/jobs", files={"video": ("long.mp4", long.read_bytes())}).json()
        url = f"/jobs/{running['id']}"
        deadline = time.monotonic() + 60
        while client.get(url).json()["progress"]["frames_done"] == 0:
            assert time.monotonic() < deadline, client.get(url).json()
            time.sleep(0.05)
        started = time.monotonic()
        assert client.delete(url).json()["cancel_requested"] is True
        ended = wait_state(client, url, {"cancelled", "done", "failed"}, timeout=10)
        assert ended["state"] == "cancelled", ended
        assert time.monotonic() - started < 2.0
        metrics = client.get("/metrics").text
    assert 'colorize_video_jobs_total{model="eccv16",outcome="done"} 1.0' in metrics
    assert 'colorize_video_jobs_total{model="eccv16",outcome="cancelled"} 1.0' in metrics
    assert list((tmp_path / "spool").iterdir()) == [], "the replica removed its spool"
