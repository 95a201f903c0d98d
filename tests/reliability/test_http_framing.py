"""Requests whose framing lies, sent byte by byte to a real uvicorn on the loopback interface:
Content-Length shorter or longer than the body, over the limit, malformed, or beside chunked
encoding. Each gets its stated answer, nothing is queued or reserved for it, and the next request
on a fresh connection succeeds.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import torch
from fastapi import FastAPI

from service.api.app import create_app
from service.settings import Settings
from tests.reliability.corpus import MAX_UPLOAD
from tests.support.apps import scripted_engines
from tests.support.held import wait_until_idle
from tests.support.servers import serve_in_thread


@dataclass
class Live:
    app: FastAPI
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def idle(self) -> None:
        """Nothing queued, running or reserved."""
        svc = self.app.state.svc
        wait_until_idle(svc)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    settings = Settings(queue_size=4, max_upload_bytes=MAX_UPLOAD, admission_wait_s=1.0)
    app = create_app(settings, engines=scripted_engines(torch.device("cpu")))
    with serve_in_thread(app) as url:
        yield Live(app, url)


def ok_after(live: Live, gray_png: bytes) -> None:
    r = httpx.post(f"{live.url}/colorize", files={"image": ("a.png", gray_png)}, timeout=10)
    assert r.status_code == 200, r.text[:200]
    live.idle()


def head(length: bytes | None, content_type: bytes = b"image/png", *extra: bytes) -> bytes:
    lines = [b"POST /colorize HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: " + content_type]
    if length is not None:
        lines.append(b"Content-Length: " + length)
    return b"\r\n".join([*lines, *extra, b"", b""])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def exchange(live: Live, data: bytes, *, half_close: bool = False, timeout: float = 5.0) -> Answer:
    """Send raw bytes on a fresh connection and read one response."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, headers, response.read(), time.monotonic() - started)


def chunked(data: bytes, size: int = 65_536) -> bytes:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


def test_content_length_shorter_than_the_body_reads_only_that_much(
    live: Live, gray_png: bytes
) -> None:
    # The server takes Content-Length at its word: the image is cut, hence truncated (422); the
    # rest of the bytes would be the next request on this connection, which we close instead.
    answer = exchange(live, head(str(len(gray_png) - 100).encode()) + gray_png)
    assert answer.status == 422
    assert b"truncated" in answer.body
    ok_after(live, gray_png)


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(
    live: Live, gray_png: bytes
) -> None:
    answer = exchange(live, head(str(10**12).encode()) + b"\x89PNG")
    assert answer.status == 413
    assert f"exceeds the {MAX_UPLOAD}-byte upload limit".encode() in answer.body
    assert answer.headers["connection"] == "close"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.seconds < 2
    ok_after(live, gray_png)


def test_chunked_body_over_the_limit_is_413_while_streaming(live: Live, gray_png: bytes) -> None:
    answer = exchange(
        live,
        head(None, b"image/png", b"Transfer-Encoding: chunked") + chunked(bytes(MAX_UPLOAD + 1)),
    )
    assert answer.status == 413
    assert f"exceeds the {MAX_UPLOAD}-byte upload limit".encode() in answer.body
    ok_after(live, gray_png)


def test_content_length_longer_than_the_body_waits_without_holding_anything(
    live: Live, gray_png: bytes
) -> None:
    # The server waits for bytes that never come (until COLORIZE_BODY_IDLE_TIMEOUT_S: 408).
    # Meanwhile it serves others and has queued nothing for the stalled request: it holds only
    # the host memory for the bytes that arrived, and gives that back when it leaves.
    announced = len(gray_png) + 100
    svc = live.app.state.svc
    with socket.create_connection(("127.0.0.1", live.port), timeout=1.0) as stalled:
        stalled.sendall(head(str(announced).encode()) + gray_png)
        with pytest.raises(TimeoutError):
            stalled.recv(1)
        assert live.app.state.svc.host.held_by_purpose() == {"body": len(gray_png)}
        r = httpx.post(f"{live.url}/colorize", files={"image": ("ok.png", gray_png)})
        assert r.status_code == 200
        assert svc.worker.queue_depth == 0
    ok_after(live, gray_png)


@pytest.mark.parametrize(
    "length",
    [b"-5", b"abc", b"1e3", b"0x10", b"5, 6"],
    ids=["negative", "not-a-number", "exponent", "hex", "two-values"],
)
def test_malformed_content_length_is_400_from_the_http_layer(
    live: Live, gray_png: bytes, length: bytes
) -> None:
    answer = exchange(live, head(length) + gray_png)
    # h11 refuses the request before it reaches the app; service/api/http11.py words the 400.
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body)["error"] == "malformed_http"
    ok_after(live, gray_png)


def test_two_different_content_lengths_are_400(live: Live, gray_png: bytes) -> None:
    answer = exchange(live, head(b"3", b"image/png", b"Content-Length: 5") + b"abcde")
    assert answer.status == 400
    ok_after(live, gray_png)


def test_content_length_beside_chunked_encoding_is_refused_and_closed(
    live: Live, gray_png: bytes
) -> None:
    # RFC 9112 6.1: such a request "ought to be handled as an error" and the connection closed;
    # behind a proxy that frames by Content-Length, what follows would be a smuggled request.
    answer = exchange(
        live, head(b"3", b"image/png", b"Transfer-Encoding: chunked") + chunked(gray_png, 1000)
    )
    assert answer.status == 400
    assert answer.headers["connection"] == "close"
    assert "Transfer-Encoding" in json.loads(answer.body)["detail"]
    ok_after(live, gray_png)


def test_content_length_longer_than_the_body_then_hang_up_leaves_nothing(
    live: Live, gray_png: bytes
) -> None:
    with pytest.raises(http.client.RemoteDisconnected):
        exchange(live, head(str(len(gray_png) + 100).encode()) + gray_png, half_close=True)
    time.sleep(0.2)  # let the server notice
    ok_after(live, gray_png)


def test_a_client_hanging_up_mid_body_is_not_logged_as_a_server_error(
    live: Live, gray_png: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(http.client.RemoteDisconnected):
        exchange(live, head(str(len(gray_png) + 100).encode()) + gray_png, half_close=True)
    time.sleep(0.2)
    ok_after(live, gray_png)
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
