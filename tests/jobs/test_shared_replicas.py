"""Accepted jobs survive any replica: two service processes share one Redis (AOF on) and one S3
server; jobs posted to either are answered by either; a replica killed mid-run loses nothing (its
work is claimed by the other, by heartbeat); one stopped with SIGTERM hands its queue back; a
Redis restart loses no accepted job. Every job ends with exactly one result object."""

from __future__ import annotations

import io
import time
from collections.abc import Iterable

import httpx
import numpy as np
from PIL import Image

from tests.support.servers import ServerProcess, server_process
from tests.support.services import RedisServer, SeaweedServer, aws_session
from tests.support.store import JOBS_BUCKET as BUCKET
from tests.support.store import SharedEnv
from tests.support.waiting import wait_for


def small_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def post_job(server: ServerProcess, seed: int) -> str:
    r = httpx.post(f"{server.url}/jobs", files={"image": ("a.png", small_png(seed))}, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def states(server: ServerProcess, ids: Iterable[str]) -> dict[str, str]:
    with httpx.Client(timeout=30) as client:
        return {i: client.get(f"{server.url}/jobs/{i}").json()["state"] for i in ids}


def result_objects(seaweed: SeaweedServer, prefix: str) -> dict[str, list[str]]:
    """Job id -> object names under its key, as the object store lists them."""
    s3 = aws_session().client("s3", endpoint_url=seaweed.endpoint)
    found: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            _, _, job_id, name = item["Key"].split("/", 3)
            found.setdefault(job_id, []).append(name)
    return found


def running(server: ServerProcess) -> int:
    return int(httpx.get(f"{server.url}/v1/status", timeout=10).json()["jobs_running"])


def claims(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("colorize_shared_claims_total")
    )


def test_a_hundred_jobs_across_two_replicas_one_killed(
    shared_env: SharedEnv, seaweed: SeaweedServer
) -> None:
    # 30 s of work for two replicas: A is still busy when it is killed, however slow the
    # machine was at posting.
    env = shared_env(SCRIPTED_DELAY_S="0.3")
    with server_process(env) as a, server_process(env) as b:
        posted = [post_job(a if i % 2 == 0 else b, i) for i in range(100)]
        # Any replica answers for any job: each is looked at on the other one.
        with httpx.Client(timeout=10) as client:
            for i, job_id in enumerate(posted):
                other = b if i % 2 == 0 else a
                assert client.get(f"{other.url}/jobs/{job_id}").status_code == 200
        # Kill A while it holds a job: one on its device (its queue may hold more).
        wait_for(lambda: running(a) >= 1, timeout=30, interval=0.005)
        a.popen.kill()  # SIGKILL while it runs jobs: nothing of it survives but its records
        killed = time.monotonic()
        assert set(states(b, posted).values()) != {"done"}, "all done before the kill"
        wait_for(lambda: claims(b) >= 1, timeout=30)
        claimed_after = time.monotonic() - killed
        wait_for(lambda: set(states(b, posted).values()) == {"done"}, timeout=120)
        with httpx.Client(timeout=30) as client:
            for job_id in posted:
                r = client.get(f"{b.url}/jobs/{job_id}/result")
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    objects = result_objects(seaweed, shared_env.prefix)  # type: ignore[attr-defined]
    # Exactly one result object each. (An upload may outlive its job when a replica dies
    # between completing it and deleting the upload: housekeeping deletes it with the record.)
    results = {i: [n for n in objects.get(i, []) if n == "result"] for i in posted}
    assert results == {i: ["result"] for i in posted}
    print(f"\nshared: the survivor claimed the killed replica's work {claimed_after:.1f} s after")
    assert claimed_after < 30


def test_sigterm_hands_the_queue_back_and_nothing_fails(shared_env: SharedEnv) -> None:
    env = shared_env(SCRIPTED_DELAY_S="0.4")
    with server_process(env) as a:
        ids = [post_job(a, i) for i in range(10)]
        wait_for(lambda: "done" in states(a, ids).values(), timeout=30)
        a.popen.terminate()  # SIGTERM: the running job finishes, the queued ones go back
        a.popen.wait(30)
        with server_process(env) as b:
            wait_for(lambda: set(states(b, ids).values()) == {"done"}, timeout=60)


def test_a_redis_restart_loses_no_accepted_job(shared_env: SharedEnv, redis: RedisServer) -> None:
    env = shared_env(SCRIPTED_DELAY_S="0.1")
    with server_process(env) as a:
        ids = [post_job(a, i) for i in range(20)]
        redis.restart()  # AOF with fsync always: what was acknowledged is on disk
        wait_for(lambda: set(states(a, ids).values()) == {"done"}, timeout=90)
