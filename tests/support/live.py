"""Real servers on loopback for tests: uvicorn in a thread of this process, or
`tests.support.serve_scripted` in a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.api.http11 import RefusingH11Protocol

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
"""A server imports torch and builds its engines before it listens."""


def loopback_socket() -> socket.socket:
    """A listening-ready socket on 127.0.0.1 with a port the kernel picked."""
    # proto=IPPROTO_TCP, as getaddrinfo gives uvicorn when it binds itself: asyncio sets
    # TCP_NODELAY on accepted sockets only when proto says TCP, and without it every keep-alive
    # response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """Run `app` under uvicorn (lifespan included) in a thread; yields its base URL.

    The socket is bound before the thread starts, so no other process can take the port in
    between. `log_config=None`: uvicorn's default logging config would disable propagation and
    raise levels process-wide, for every later test. HTTP/1.1 as the service speaks it
    (RefusingH11Protocol, which `colorize-service serve` uses).
    """
    sock = loopback_socket()
    port = sock.getsockname()[1]
    options: dict[str, Any] = {
        "log_config": None,
        "timeout_graceful_shutdown": 5,
        "ws": "none",
        "http": RefusingH11Protocol,
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_live(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base}/livez", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base} did not come up in {timeout} s")


@contextmanager
def server_process(
    args: Sequence[str], port: int, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `python <args>` (a server on `port`) and stop it however the test ends."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=full_env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
