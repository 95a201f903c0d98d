"""Against a real uvicorn process on loopback: SIGTERM, disconnects, many clients, metrics."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from service.api.app import create_app
from service.settings import Settings
from tests.support.apps import running_app, scripted_engines
from tests.support.images import decode
from tests.support.servers import serve_in_thread, server_process
from tests.support.tools import needs
from tests.support.waiting import wait_for


@contextmanager
def _url_and_popen(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with server_process(env) as server:
        yield server.url, server.popen


def scripted_server(tmp_path: Path, grace: float = 5.0):  # type: ignore[no-untyped-def]
    gate = tmp_path / "gate"
    env = {
        "SCRIPTED_GATE_FILE": str(gate),
        "COLORIZE_SHUTDOWN_GRACE_S": str(grace),
        "COLORIZE_QUEUE_SIZE": "8",
        "COLORIZE_BATCH_MAX_SIZE": "1",
        "COLORIZE_LOG_LEVEL": "warning",
    }
    return _url_and_popen(env), gate


def status(base: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{base}/v1/status", timeout=5).json()  # type: ignore[no-any-return]


def post_in_thread(base: str, png: bytes, results: dict[str, httpx.Response], key: str):  # type: ignore[no-untyped-def]
    def run() -> None:
        results[key] = httpx.post(f"{base}/colorize", files={"image": ("a.png", png)}, timeout=30)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_sigterm_finishes_the_running_job_and_fails_the_queued_one(
    tmp_path: Path, gray_png: bytes
) -> None:
    ctx, gate = scripted_server(tmp_path, grace=5.0)
    with ctx as (base, proc):
        results: dict[str, httpx.Response] = {}
        running = post_in_thread(base, gray_png, results, "running")
        wait_for(lambda: status(base)["jobs_running"] == 1)
        queued = post_in_thread(base, gray_png, results, "queued")
        wait_for(lambda: status(base)["queue_depth"] == 1)
        proc.send_signal(signal.SIGTERM)
        queued.join(timeout=5)
        assert results["queued"].status_code == 503
        assert "shutting down" in results["queued"].json()["detail"]
        assert "retry-after" in results["queued"].headers
        gate.touch()
        running.join(timeout=10)
        assert results["running"].status_code == 200
        assert decode(results["running"].content).shape == (128, 128, 3)
        # uvicorn re-raises the captured signal once it has shut down cleanly.
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)


def test_sigterm_exits_within_the_grace_period_even_if_a_job_hangs(
    tmp_path: Path, gray_png: bytes
) -> None:
    ctx, _ = scripted_server(tmp_path, grace=2.0)
    with ctx as (base, proc):
        results: dict[str, httpx.Response] = {}
        post_in_thread(base, gray_png, results, "stuck")
        wait_for(lambda: status(base)["jobs_running"] == 1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert time.monotonic() - started < 2.0 + 5.0  # grace + start-up slack


def test_client_that_disconnects_takes_its_queued_job_away(tmp_path: Path, gray_png: bytes) -> None:
    ctx, gate = scripted_server(tmp_path)
    with ctx as (base, _):
        results: dict[str, httpx.Response] = {}
        running = post_in_thread(base, gray_png, results, "running")
        wait_for(lambda: status(base)["jobs_running"] == 1)
        boundary = "xyzzy"
        body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="image"; filename="a.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + gray_png
            + f"\r\n--{boundary}--\r\n".encode()
        )
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head = (
                f"POST /colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            ).encode()
            sock.sendall(head + body)
            wait_for(lambda: status(base)["queue_depth"] == 1)
        wait_for(lambda: status(base)["queue_depth"] == 0, timeout=5)
        metrics = httpx.get(f"{base}/metrics").text
        assert 'colorize_jobs_total{model="eccv16",outcome="cancelled"} 1.0' in metrics
        gate.touch()
        running.join(timeout=10)
        assert results["running"].status_code == 200


def test_many_concurrent_clients_each_get_their_own_image() -> None:
    app = create_app(Settings(queue_size=64), engines=scripted_engines(torch.device("cpu")))
    sizes = [(40 + 7 * i, 30 + 5 * i) for i in range(24)]
    results: list[tuple[tuple[int, int], httpx.Response] | None] = [None] * len(sizes)
    with serve_in_thread(app) as base:

        def client(i: int) -> None:
            w, h = sizes[i]
            buf = io.BytesIO()
            Image.fromarray(np.full((h, w), 30 + 8 * i, np.uint8)).save(buf, format="PNG")
            model = "siggraph17" if i % 2 else "eccv16"
            r = httpx.post(
                f"{base}/colorize",
                files={"image": ("a.png", buf.getvalue())},
                data={"model": model},
                timeout=60,
            )
            results[i] = (sizes[i], r)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(sizes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    for item in results:
        assert item is not None
        (w, h), r = item
        assert r.status_code == 200, r.text
        assert decode(r.content).shape == (h, w, 3)


@needs("promtool", "prometheus")
def test_metrics_pass_promtool_check(gray_png: bytes) -> None:
    with running_app() as (client, _):
        for model in ("eccv16", "siggraph17"):
            assert (
                client.post(
                    "/colorize", files={"image": ("a.png", gray_png)}, data={"model": model}
                ).status_code
                == 200
            )
        text = client.get("/metrics").text
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out
    for family in (
        "colorize_memory_usage_ratio",
        "colorize_jobs_total",
        "colorize_queue_depth",
        "colorize_request_duration_seconds_bucket",
        "colorize_allocator_reserved_bytes",
        "colorize_admission_budget_bytes",
        "colorize_memory_peak_to_estimate_ratio_count",
    ):
        assert family in text


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_usage_ratio_gauge_moves_while_a_job_holds_memory(gray_png: bytes) -> None:
    hold = 800 * 1024 * 1024
    with running_app() as (client, engines):
        engine = engines["eccv16"]
        idle = gauge(client.get("/metrics").text, "colorize_memory_usage_ratio")
        total = gauge(client.get("/metrics").text, "colorize_device_memory_total_bytes")
        engine.hold_bytes = hold  # type: ignore[attr-defined]
        engine.gate.clear()  # type: ignore[attr-defined]
        results: dict[str, object] = {}
        t = threading.Thread(
            target=lambda: results.update(
                r=client.post("/colorize", files={"image": ("a.png", gray_png)})
            )
        )
        t.start()
        assert engine.started.wait(10)  # type: ignore[attr-defined]
        busy = gauge(client.get("/metrics").text, "colorize_memory_usage_ratio")
        engine.gate.set()  # type: ignore[attr-defined]
        t.join(timeout=20)
        after = gauge(client.get("/metrics").text, "colorize_memory_usage_ratio")
    assert busy - idle == pytest.approx(hold / total, rel=0.35)
    assert after < busy
