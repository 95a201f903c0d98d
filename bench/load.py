"""A closed-loop HTTP load generator: N client threads, each sending its next request on answer.

Bounded both ways: at most `requests` are sent and none is started after `max_seconds`. Every
answer's status, latency and `Server-Timing` phases (decode, queue, compute, encode) are kept, so
a cell can report throughput, latency percentiles, queue wait, compute time and errors by status.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np

from bench.inputs import Payload

CLIENT_TIMEOUT_S = 600.0
"""Per request; the service's own job limit answers 504 well before this."""


@dataclass(frozen=True)
class Answer:
    """One request as the client saw it."""

    status: int | str
    """HTTP status, or the transport error's class name (ReadTimeout, ConnectError...)."""
    started: float
    latency_s: float
    phases: dict[str, float]
    """Server-Timing phases in seconds (empty for the naive server, which sends none)."""


@dataclass
class Outcome:
    """All answers of one cell, and the wall time they took."""

    answers: list[Answer] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 200]

    def errors(self) -> dict[str, int]:
        """Count of answers by status, failures only (e.g. {"503": 2, "ReadTimeout": 1})."""
        counts = Counter(str(a.status) for a in self.answers if a.status != 200)
        return dict(sorted(counts.items()))

    def throughput(self) -> float:
        """Successful images per second over the cell's wall time."""
        return len(self.ok) / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self, q: float) -> float | None:
        """The q-th percentile (0-100) of successful requests' latency, in seconds."""
        values = [a.latency_s for a in self.ok]
        return float(np.percentile(values, q)) if values else None

    def phase_median(self, phase: str) -> float | None:
        values = [a.phases[phase] for a in self.ok if phase in a.phases]
        return statistics.median(values) if values else None


def parse_server_timing(header: str | None) -> dict[str, float]:
    """`decode;dur=1.2, queue;dur=30.0` -> {"decode": 0.0012, "queue": 0.03} (seconds)."""
    phases: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                with contextlib.suppress(ValueError):
                    phases[name] = float(value) / 1000.0
    return phases


def send(client: httpx.Client, base: str, model: str, payload: Payload) -> Answer:
    """POST one payload to `/colorize` as multipart and time it."""
    files: dict[str, tuple[str, bytes, str]] = {
        "image": (f"{payload.name}.png", payload.image, "image/png")
    }
    if payload.reference is not None:
        files["reference"] = (f"{payload.name}-ref.png", payload.reference, "image/png")
    started = time.perf_counter()
    try:
        response = client.post(f"{base}/colorize", files=files, data={"model": model})
        response.read()
    except httpx.HTTPError as exc:
        return Answer(type(exc).__name__, started, time.perf_counter() - started, {})
    latency = time.perf_counter() - started
    phases = parse_server_timing(response.headers.get("server-timing"))
    return Answer(response.status_code, started, latency, phases)


def drive(
    base: str,
    model: str,
    payloads: Sequence[Payload],
    concurrency: int,
    requests: int,
    max_seconds: float,
) -> Outcome:
    """Send `requests` uploads (cycling through `payloads`) from `concurrency` threads."""
    if concurrency < 1 or requests < 1 or not payloads:
        raise ValueError("need at least one client, one request and one payload")
    lock = threading.Lock()
    issued = 0
    outcome = Outcome()
    started = time.perf_counter()
    deadline = started + max_seconds

    def client_loop() -> None:
        nonlocal issued
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
            while True:
                with lock:
                    if issued >= requests or time.perf_counter() >= deadline:
                        return
                    index = issued
                    issued += 1
                answer = send(client, base, model, payloads[index % len(payloads)])
                with lock:
                    outcome.answers.append(answer)

    threads = [
        threading.Thread(target=client_loop, name=f"bench-client-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.wall_s = time.perf_counter() - started
    return outcome
