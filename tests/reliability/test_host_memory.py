"""Host memory is admitted: floods of small uploads that decode to huge images, synchronous and
through /jobs, keep the server within COLORIZE_HOST_MEMORY_BYTES, and nothing accepted is lost.

A real server process (tests.support.scripted_server: `colorize-service serve`'s code with scripted
engines that tint cheaply, so that memory and not compute is under test) on loopback, a 1.2 GB
host budget, and 16-megapixel grey PNGs of about 50 kB each: 40 of them decoded at once take
1.9 GB of pixels alone. Measured here (2026-12-02, 2 cores): before the host budget existed, the
first flood peaked at 1.89 GB (33 answered 200, 7 queue-full 503s); with it, at 0.80 GB with a
2 GB budget (40 of 40 answered 200). A flood of 40 uploads of 6000x6000 once took the server from
0.5 to 12 GB.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.servers import ServerProcess, server_process
from tests.support.waiting import wait_for

HOST_BYTES = 1_200_000_000
SIDE = 4000
FLOOD = 40


def huge_png() -> bytes:
    """A 4000x4000 grey PNG: 16 million pixels in about 50 kB."""
    buf = io.BytesIO()
    Image.fromarray(np.full((SIDE, SIDE), 90, np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def peak_rss(server: ServerProcess) -> int:
    """The kernel's high-water mark of the server's resident set (VmHWM), in bytes."""
    with open(f"/proc/{server.popen.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for the server process")


def held(server: ServerProcess, client: httpx.Client) -> dict[str, float]:
    """colorize_host_memory_held_bytes by purpose."""
    values = {}
    for line in client.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("colorize_host_memory_held_bytes{"):
            purpose = line.split('purpose="', 1)[1].split('"', 1)[0]
            values[purpose] = float(line.rsplit(" ", 1)[1])
    return values


def flood(n: int, send: object) -> list[httpx.Response | BaseException]:
    results: list[httpx.Response | BaseException] = [RuntimeError("not run")] * n

    def run(i: int) -> None:
        try:
            results[i] = send()  # type: ignore[operator]
        except BaseException as exc:  # a reset or a timeout is a finding, not a crash
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


ENV = {
    "SCRIPTED_CHEAP": "1",
    "COLORIZE_DEVICE_WORKERS": "auto",  # the CPU default: two device lanes
    "COLORIZE_HOST_MEMORY_BYTES": str(HOST_BYTES),
    "COLORIZE_ADMISSION_WAIT_S": "2",
    "COLORIZE_JOB_TIMEOUT_S": "30",
    "COLORIZE_QUEUE_SIZE": "32",
}


@pytest.fixture(scope="module")
def server() -> ServerProcess:  # type: ignore[misc]
    with server_process(ENV) as running:
        yield running


def test_a_flood_of_huge_decodes_stays_within_the_host_budget(server: ServerProcess) -> None:
    data = huge_png()
    assert len(data) < 100_000
    baseline = server.rss()

    def colorize() -> httpx.Response:
        files = {"image": ("huge.png", data, "image/png")}
        return httpx.post(f"{server.url}/colorize", files=files, timeout=60)

    results = flood(FLOOD, colorize)
    statuses = Counter(r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results)
    assert set(statuses) <= {200, 503, 504}, statuses
    assert statuses[200] >= 1, statuses
    for r in results:
        assert isinstance(r, httpx.Response)
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"] in ("memory_busy", "queue_full"), r.json()
        if r.status_code == 200:
            with Image.open(io.BytesIO(r.content)) as im:
                assert im.size == (SIDE, SIDE)
    peak = peak_rss(server)
    assert peak <= HOST_BYTES, f"peak RSS {peak / 1e9:.2f} GB (idle {baseline / 1e9:.2f} GB)"


def test_a_flood_through_jobs_loses_nothing_and_stays_within_budget(
    server: ServerProcess,
) -> None:
    data = huge_png()

    def submit() -> httpx.Response:
        files = {"image": ("huge.png", data, "image/png")}
        return httpx.post(f"{server.url}/jobs", files=files, timeout=60)

    results = flood(FLOOD, submit)
    statuses = Counter(r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results)
    assert set(statuses) <= {202, 503}, statuses
    accepted = [
        r.json()["id"] for r in results if isinstance(r, httpx.Response) and r.status_code == 202
    ]
    assert accepted, statuses
    with httpx.Client(timeout=10) as client:
        # The queue holds uploads, not pixels: 32 queued 16-megapixel photos cost their bytes.
        queued = held(server, client).get("upload", 0.0)
        assert queued <= len(accepted) * (len(data) + 4096)

        def ended() -> bool:
            states = [client.get(f"{server.url}/jobs/{i}").json() for i in accepted]
            return all(s["state"] in ("done", "failed") for s in states)

        wait_for(ended, timeout=120)
        for job_id in accepted:
            status = client.get(f"{server.url}/jobs/{job_id}").json()
            if status["state"] == "failed":
                error = status["error"]
                assert error["status"] in (503, 504) and error["detail"], status
        assert peak_rss(server) <= HOST_BYTES
        # Finished: only kept results are held now.
        wait_for(lambda: held(server, client).get("pixels", 0.0) <= 64 * 1024 * 1024)
        small = client.post(
            f"{server.url}/colorize", files={"image": ("s.png", small_png(), "image/png")}
        )
        assert small.status_code == 200


def test_a_slow_body_and_a_client_that_leaves_give_their_memory_back(
    server: ServerProcess,
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    body = small_png()
    with httpx.Client(timeout=10) as client:
        # A body announced at 2 MB that trickles in: what arrived is held, not what it declares...
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head = (
                b"POST /colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: image/png\r\nContent-Length: 2000000\r\n\r\n"
            )
            sock.sendall(head + body[:20])
            wait_for(lambda: held(server, client).get("body", 0.0) == 20)
            for _ in range(5):
                sock.sendall(b"\0" * 1000)
                time.sleep(0.05)
            wait_for(lambda: held(server, client).get("body", 0.0) == 5020)
        # ...and given back when the client leaves halfway.
        wait_for(lambda: held(server, client).get("body", 0.0) == 0.0)
        ok = client.post(f"{server.url}/colorize", files={"image": ("s.png", body, "image/png")})
        assert ok.status_code == 200
