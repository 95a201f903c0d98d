"""Clients that hold, trickle or lie cannot take the memory budget or the process hostage.

A real server process (the scripted service on loopback) with a 2 GB host budget, as a small
pod would run it. Measured once, before these defences: 60 connections that declared 25 MiB and
sent 4 bytes held 1.05 GB, and every other client waited 10 s for a 503 for as long as they
stayed; 1,500 heads sent a line every few seconds stayed open for ever, and about 20,000 ran the
process out of descriptors, flooding the log with 160 MB of tracebacks in 40 s.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.servers import ServerProcess, server_process
from tests.support.waiting import wait_for

HOST_BYTES = 2_000_000_000
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {
        "COLORIZE_HOST_MEMORY_BYTES": str(HOST_BYTES),
        "COLORIZE_BODY_IDLE_TIMEOUT_S": "4",
        "COLORIZE_BODY_RATE_GRACE_S": "1",
        "COLORIZE_BODY_MIN_RATE_BYTES_S": "20000",
        "COLORIZE_HEADER_TIMEOUT_S": "5",
        "COLORIZE_MAX_CONNECTIONS": "1000",
    }
    with server_process(env) as srv:
        yield srv


def port_of(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def held_body(server: ServerProcess) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith('colorize_host_memory_held_bytes{purpose="body"}'):
            return float(line.split()[-1])
    raise AssertionError("no body gauge")


def counted(server: ServerProcess, outcome: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    needle = f'outcome="{outcome}"}} '
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("colorize_jobs_total{") and needle in line
    )


def upload_head(length: int) -> bytes:
    return (
        b"POST /colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def read_status(sock: socket.socket, timeout: float) -> int:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def test_idle_uploads_that_declare_25_mib_hold_only_what_arrived(server: ServerProcess) -> None:
    port = port_of(server)
    idle = []
    for _ in range(60):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(upload_head(25 * MiB) + b"\x89PNG")
        idle.append(sock)
    try:
        wait_for(lambda: held_body(server) == 60 * 4, timeout=10)
        started = time.monotonic()
        r = httpx.post(
            f"{server.url}/colorize", files={"image": ("a.png", small_png())}, timeout=30
        )
        answered = time.monotonic() - started
        assert r.status_code == 200 and answered < 30, (r.status_code, answered)
        print(
            f"\nhostage: 60 idle 25 MiB uploads hold 240 bytes; a 64x64 job answered in "
            f"{answered:.2f} s"
        )
        before = counted(server, "body_timeout")
        # Past COLORIZE_BODY_IDLE_TIMEOUT_S each gets 408 and its bytes go back.
        statuses = [read_status(sock, 15) for sock in idle]
        assert statuses == [408] * 60
        wait_for(lambda: held_body(server) == 0, timeout=10)
        assert counted(server, "body_timeout") == before + 60
    finally:
        for sock in idle:
            sock.close()


def test_a_body_that_trickles_below_the_minimum_rate_is_408(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", port_of(server))) as sock:
        sock.sendall(upload_head(1_000_000))
        started = time.monotonic()
        status = 0

        def trickle() -> None:
            try:
                while time.monotonic() - started < 10:
                    sock.sendall(b"\0" * 100)
                    time.sleep(0.1)
            except OSError:
                pass  # the server answered and closed

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        status = read_status(sock, 10)
        assert status == 408 and time.monotonic() - started < 5
    wait_for(lambda: held_body(server) == 0, timeout=10)


def test_one_client_holds_at_most_its_share_of_the_budget(server: ServerProcess) -> None:
    # Bodies of 20 MiB sent but not finished, all from one address: past the client's share
    # (a quarter of the host budget) the next is refused at once, and a finished upload from
    # the same address is refused too until they let go.
    port = port_of(server)
    budget = httpx.get(f"{server.url}/metrics").text
    limit = next(
        float(line.split()[-1])
        for line in budget.splitlines()
        if line.startswith("colorize_host_memory_budget_bytes ")
    )
    share = 0.25 * limit
    open_bodies = []
    try:
        refused = 0
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(upload_head(24 * MiB) + b"\0" * (20 * MiB))
            open_bodies.append(sock)
            time.sleep(0.05)
            if held_body(server) + 24 * MiB > share:
                break
        # Next one: refused before a byte of its body is read.
        with socket.create_connection(("127.0.0.1", port)) as extra:
            extra.sendall(upload_head(24 * MiB))
            refused = read_status(extra, 5)
        assert refused == 503
        assert held_body(server) <= share
    finally:
        for sock in open_bodies:
            sock.close()
    wait_for(lambda: held_body(server) == 0, timeout=10)


def test_unfinished_heads_are_closed_while_livez_answers(server: ServerProcess) -> None:
    port = port_of(server)
    log_before = len(server.log())
    slow = []
    for _ in range(1500):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /colorize HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append(sock)
    started = time.monotonic()
    worst = 0.0
    try:
        while time.monotonic() - started < 60:
            for sock in slow:  # one more header line each, as a slow client sends them
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")
            probe = time.monotonic()
            assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
            worst = max(worst, time.monotonic() - probe)
            if all(_closed(sock) for sock in slow):
                break
            time.sleep(1)
        closed_after = time.monotonic() - started
        assert all(_closed(sock) for sock in slow), "the server left unfinished heads open"
    finally:
        for sock in slow:
            sock.close()
    grown = len(server.log()) - log_before
    print(
        f"\nhostage: 1,500 unfinished heads closed after {closed_after:.1f} s; /livez at worst "
        f"{worst * 1000:.0f} ms; the log grew {grown} bytes"
    )
    assert closed_after < 60 and worst < 3, (closed_after, worst)
    assert grown < 5 * MiB


def _closed(sock: socket.socket) -> bool:
    """Whether the server has answered (408) or closed this connection."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)
    return data == b"" or data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 503")
