"""A /colorize client that leaves, or is told 504, gives back everything its job held, at every
stage its job can be in: queued, preparing, on the device, finishing, or while its answer is
being sent. Each counts once, as `cancelled` (or `timeout`), never as `done`.

Once, a client that left while its job ran kept the result's host reservation for ever
(1,147,356 bytes for a 3000x3000 photo, every time) and was counted `done`.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from PIL import Image

from service.api.app import create_app
from service.settings import Settings
from tests.support.apps import scripted_engines
from tests.support.engines import ScriptedEngine
from tests.support.held import holds_only_kept_results
from tests.support.servers import serve_in_thread
from tests.support.waiting import wait_for


@dataclass
class Live:
    app: FastAPI
    url: str
    engine: ScriptedEngine

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def counted(self, outcome: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        needle = f'colorize_jobs_total{{model="eccv16",outcome="{outcome}"}} '
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(needle))

    def idle(self) -> bool:
        return holds_only_kept_results(self.app.state.svc)


@pytest.fixture
def live() -> Iterator[Live]:
    engines = scripted_engines(torch.device("cpu"))
    settings = Settings(queue_size=8, admission_wait_s=1.0, job_timeout_s=30.0)
    app = create_app(settings, engines=engines)
    with serve_in_thread(app) as url:
        yield Live(app, url, engines["eccv16"])
        for gate in (live_gate for live_gate in engines["eccv16"].stage_gates.values()):
            gate.set()
        engines["eccv16"].gate.set()


def png(side: int, noise: bool = False) -> bytes:
    pixels = (
        np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
        if noise
        else np.full((side, side), 100, np.uint8)
    )
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def send_upload(port: int, data: bytes, rcvbuf: int | None = None) -> socket.socket:
    """A socket that has sent a whole /colorize upload and reads nothing yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting, so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    boundary = b"leaving"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="a.png"'
        b"\r\nContent-Type: image/png\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"
    )
    head = (
        b"POST /colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    sock.sendall(head + body)
    return sock


def leave(sock: socket.socket) -> None:
    # SO_LINGER 0: the close is a reset, as when a client process dies.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def other_job_holds_the_device(live: Live) -> socket.socket:
    live.engine.gate.clear()
    holder = send_upload(live.port, png(32))
    assert live.engine.started.wait(10)
    return holder


STAGES = ["queued", "preparing", "on-the-device", "finishing"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_client_that_leaves_gives_back_everything_and_counts_cancelled(
    live: Live, stage: str
) -> None:
    before = live.counted("cancelled"), live.counted("done")
    holder = None
    engine = live.engine
    if stage == "queued":
        holder = other_job_holds_the_device(live)
    elif stage == "preparing":
        engine.stage_gates["prepare"].clear()
    elif stage == "on-the-device":
        engine.gate.clear()
    else:
        engine.stage_gates["finish"].clear()
    sock = send_upload(live.port, png(600))
    if stage == "queued":
        wait_for(lambda: live.app.state.svc.worker.queue_depth == 1, timeout=10)
    elif stage == "preparing":
        assert engine.reached["prepare"].wait(10)
    elif stage == "on-the-device":
        assert engine.started.wait(10)
    else:
        assert engine.reached["finish"].wait(10)
    leave(sock)
    time.sleep(0.3)  # the server notices the reset
    for gate in (*engine.stage_gates.values(), engine.gate):
        gate.set()
    if holder is not None:
        holder.recv(65536)
        holder.close()
    wait_for(live.idle, timeout=10)
    wait_for(lambda: live.counted("cancelled") == before[0] + 1, timeout=10)
    expected_done = before[1] + (1 if holder is not None else 0)
    assert live.counted("done") == expected_done, "the job that left is not counted done"


def test_a_client_that_leaves_while_its_answer_is_sent_gives_the_result_back(live: Live) -> None:
    # A noisy 2000x2000 photo: a result of about 12 MB, far more than the sockets buffer when
    # the client reads nothing (a 4 KiB receive window).
    before = live.counted("cancelled"), live.counted("done")
    sock = send_upload(live.port, png(2000, noise=True), rcvbuf=4096)
    assert sock.recv(12).startswith(b"HTTP/1.1 200")
    time.sleep(0.5)  # the server is blocked sending: its result is still reserved
    assert live.app.state.svc.host.held_by_purpose().get("result", 0) > 1_000_000
    leave(sock)
    wait_for(live.idle, timeout=10)
    wait_for(lambda: live.counted("cancelled") == before[0] + 1, timeout=10)
    assert live.counted("done") == before[1]


def test_five_clients_leaving_mid_job_leave_no_reserved_byte(live: Live) -> None:
    engine = live.engine
    engine.gate.clear()
    sockets = [send_upload(live.port, png(800)) for _ in range(5)]
    assert engine.started.wait(10)
    wait_for(lambda: live.app.state.svc.worker.queue_depth == 4, timeout=10)
    for sock in sockets:
        leave(sock)
    time.sleep(0.3)
    engine.gate.set()
    wait_for(live.idle, timeout=10)
    svc = live.app.state.svc
    assert svc.host.snapshot().reserved_for_jobs == 0
    assert svc.manager.snapshot().reserved_for_jobs == 0


def test_a_504_while_the_job_runs_gives_the_result_back_and_counts_timeout() -> None:
    engines = scripted_engines(torch.device("cpu"))
    app = create_app(Settings(job_timeout_s=0.5), engines=engines)
    with serve_in_thread(app) as url:
        engines["eccv16"].gate.clear()
        r = httpx.post(f"{url}/colorize", files={"image": ("a.png", png(300))}, timeout=10)
        assert r.status_code == 504
        engines["eccv16"].gate.set()
        wait_for(lambda: holds_only_kept_results(app.state.svc), timeout=10)
        metrics = httpx.get(f"{url}/metrics").text
        assert 'colorize_jobs_total{model="eccv16",outcome="timeout"} 1.0' in metrics
        assert 'outcome="done"' not in metrics
