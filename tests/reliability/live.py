"""The service in a separate process (`python -m tests.reliability.server`) that a test can
measure, load and signal; uvicorn in a thread is tests.support.live.serve_in_thread."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.support.live import STARTUP_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    """A `tests.reliability.server` process: its URL, its psutil handle and its output so far."""

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
        """RSS, C heap in use, Python objects and /jobs records, from the wrapper's test route."""
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


@contextmanager
def server_process(env: Mapping[str, str], grace_s: float = 20.0) -> Iterator[ServerProcess]:
    """Start `python -m tests.reliability.server` with `env` added; stop it with SIGTERM."""
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COLORIZE_")},
        "COLORIZE_DEVICE": "cpu",
        "COLORIZE_DEVICE_WORKERS": os.environ.get("COLORIZE_DEVICE_WORKERS", "1"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    popen = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.server"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert popen.stdout is not None
    output: list[str] = []
    port = None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for line in popen.stdout:
        output.append(line)
        if line.startswith("LISTENING "):
            port = int(line.split()[1])
            break
        if time.monotonic() > deadline:
            break
    if port is None:
        popen.kill()
        popen.wait()
        raise RuntimeError("the server process did not start:\n" + "".join(output))
    # Keep reading its output so a chatty server never blocks on a full pipe.
    reader = threading.Thread(
        target=lambda: output.extend(popen.stdout or ()), name="server-output", daemon=True
    )
    reader.start()
    server = ServerProcess(f"http://127.0.0.1:{port}", popen, output)
    try:
        yield server
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
