"""Real servers on loopback for tests: uvicorn in a thread of this process (`serve_in_thread`),
or a service in a process of its own (`server_process`), by default the scripted one
(`python -m tests.support.scripted_server`)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn

from service.api.http11 import RefusingH11Protocol

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 60.0
"""A server imports torch and builds its engines before it listens."""


# --- uvicorn in a thread ------------------------------------------------------------------------


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


# --- a service in a process of its own ---------------------------------------------------------

SCRIPTED_SERVER = ("-m", "tests.support.scripted_server")
"""`server_process`'s default arguments to `python`: the service around scripted engines."""

SESSION_VARIABLES = {"COLORIZE_DEVICE_WORKERS": "1", "COLORIZE_FETCH_MISSING": "false"}
"""Set by the root conftest for the whole session and passed on to the server (these values
outside a session); no other COLORIZE_* variable of the developer's shell reaches it."""


@dataclass
class ServerProcess:
    """A server in its own process: its URL, its psutil handle and its output so far."""

    url: str
    popen: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def rss(self) -> int:
        """Resident set size of the server process, in bytes."""
        return int(self.process.memory_info().rss)

    def metrics(self, client: httpx.Client) -> dict[str, float]:
        """The unlabelled and device-labelled `colorize_*` samples of /metrics."""
        return parse_metrics(client.get(f"{self.url}/metrics").text)

    def heap(self, client: httpx.Client) -> dict[str, int | None]:
        """RSS, C heap in use, Python objects and /jobs records, from the scripted server's test
        route."""
        return dict(client.get(f"{self.url}/_test/heap").json())

    def log(self) -> str:
        return "".join(self.output)


SAMPLE = re.compile(r'^(colorize_[a-z_]+)(?:\{device="[^"]*"\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {name: value} for samples without labels other than `device`."""
    values = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def _answers_livez(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def server_process(
    env: Mapping[str, str] | None = None,
    grace_s: float = 20.0,
    *,
    args: Sequence[str] = SCRIPTED_SERVER,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """Run `python <args>` with `env` added, keeping its output; stop it with SIGTERM (SIGKILL
    after `grace_s`) however the test ends.

    The server gets COLORIZE_DEVICE=cpu, SESSION_VARIABLES and no other COLORIZE_* variable of
    this process; `env` overrides them. Its URL comes from the `LISTENING <port>` line the
    scripted server prints or, for a server that prints none (`-m service serve --port N`), from
    `port`, once /livez answers 200.
    """
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COLORIZE_")},
        **{name: os.environ.get(name, value) for name, value in SESSION_VARIABLES.items()},
        "COLORIZE_DEVICE": "cpu",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    popen = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert popen.stdout is not None
    output: list[str] = []
    announced: list[int] = []

    def read() -> None:
        # Keep reading its output so a chatty server never blocks on a full pipe.
        for line in popen.stdout or ():
            output.append(line)
            if not announced and line.startswith("LISTENING "):
                announced.append(int(line.split()[1]))

    reader = threading.Thread(target=read, name="server-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if port is None and announced:
                url = f"http://127.0.0.1:{announced[0]}"
                break
            if port is not None and _answers_livez(url := f"http://127.0.0.1:{port}"):
                break
            if popen.poll() is not None or time.monotonic() > deadline:
                reader.join(5)
                raise RuntimeError(
                    f"the server process did not start (exit code {popen.poll()}):\n"
                    + "".join(output)
                )
            time.sleep(0.05)
        yield ServerProcess(url, popen, output)
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        reader.join(5)
        popen.stdout.close()
