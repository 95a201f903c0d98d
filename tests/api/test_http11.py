"""The HTTP/1.1 layer (service/api/http11.py) on a real uvicorn: requests it cannot parse get a
JSON 4xx that the client reads every time, not a connection reset."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import httpx
import pytest
import requests
import torch

from service.api.app import create_app
from service.api.http11 import LINGER_S, protocol_for
from service.settings import Settings
from tests.support.apps import scripted_engines
from tests.support.servers import serve_in_thread

LONG_HINTS = "%3A" * 65_000
"""A 195 kB query string: what schema fuzzing sent when it found the reset."""


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = create_app(Settings(queue_size=4), engines=scripted_engines(torch.device("cpu")))
    with serve_in_thread(app) as url:
        yield url


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def test_a_long_url_is_431_naming_the_limit_every_time(base: str, gray_png: bytes) -> None:
    for _ in range(10):
        r = requests.post(f"{base}/colorize?format=png&hints={LONG_HINTS}", timeout=10)
        assert r.status_code == 431
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-content-type-options"] == "nosniff"
        body = r.json()
        assert body["error"] == "request_head_too_large" and "16384 bytes" in body["detail"]
    ok = httpx.post(f"{base}/colorize", files={"image": ("a.png", gray_png)}, timeout=10)
    assert ok.status_code == 200


def test_a_long_url_with_a_body_still_being_sent_gets_its_answer(base: str) -> None:
    """The refused client is mid-upload: its bytes are drained, not answered with a reset."""
    r = requests.post(
        f"{base}/colorize?hints={LONG_HINTS}",
        data=b"\0" * (2 << 20),
        headers={"content-type": "image/png"},
        timeout=10,
    )
    assert r.status_code == 431


def test_a_header_still_unfinished_after_16_kib_is_431(base: str) -> None:
    """h11 judges the head while it is incomplete: a 20 kB header arriving in one read parses."""
    with socket.create_connection(("127.0.0.1", port_of(base)), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 20_000)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 431
        assert json.loads(response.read())["error"] == "request_head_too_large"


def test_a_malformed_request_line_is_400_then_the_connection_ends(base: str) -> None:
    with socket.create_connection(("127.0.0.1", port_of(base)), timeout=LINGER_S + 5) as sock:
        sock.sendall(b"POST /colorize HTTP/1.1 extra\r\nHost: x\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 400
        assert json.loads(response.read())["error"] == "malformed_http"
        assert sock.recv(1) == b"", "the server closes its side after the answer"


def test_every_operation_documents_the_http_layer_refusal(base: str) -> None:
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "431" in operation["responses"], f"{method.upper()} {path}"


def exchange_all(base: str, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes (or goes quiet); everything it answered."""
    with socket.create_connection(("127.0.0.1", port_of(base)), timeout=LINGER_S + 5) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


STRICT = {
    "bare-lf": (b"GET /livez HTTP/1.1\nHost: x\n\n", 400, "bare LF"),
    "bare-lf-last-line": (b"GET /livez HTTP/1.1\r\nHost: x\n\r\n", 400, "bare LF"),
    "obsolete-folding": (
        b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n",
        400,
        "folding",
    ),
    "http-2-request-line": (b"GET /livez HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/1.1"),
    "length-and-chunked": (
        b"POST /colorize HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "Transfer-Encoding",
    ),
}


@pytest.mark.parametrize("raw,status,phrase", STRICT.values(), ids=STRICT.keys())
def test_loose_framing_is_refused_and_the_connection_closed(
    base: str, raw: bytes, status: int, phrase: str
) -> None:
    # Each also carries a pipelined second request: it must never be served on this connection.
    received = exchange_all(base, raw + b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 %d " % status), received[:80]
    assert received.count(b"HTTP/1.1 ") == 1, "a request after the refused one was served"
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert phrase in json.loads(body)["detail"]


def test_a_pipelined_request_with_loose_framing_after_a_good_one_is_refused(base: str) -> None:
    good = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
    received = exchange_all(base, good + b"GET /livez HTTP/1.1\nHost: x\n\n" + good)
    assert received.count(b"HTTP/1.1 200") == 1 and received.count(b"HTTP/1.1 400") == 1
    assert received.count(b"HTTP/1.1 ") == 2


def test_head_on_a_get_endpoint_answers_its_headers(base: str) -> None:
    r = httpx.head(f"{base}/livez", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == len(httpx.get(f"{base}/livez").content)
    assert httpx.head(f"{base}/jobs/nope", timeout=10).status_code == 404


def test_connections_refused_together_do_not_fill_the_cap_while_they_linger() -> None:
    """Under a flood of slow heads many time out at once; while those answered connections
    linger to drain their clients, a new client still gets in (they are cut short for it)."""
    settings = Settings(queue_size=4, max_connections=20, header_timeout_s=1)
    app = create_app(settings, engines=scripted_engines(torch.device("cpu")))
    with serve_in_thread(app, http=protocol_for(settings)) as url:
        port = port_of(url)
        slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        try:
            for sock in slow:
                sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            for sock in slow:  # every head timed out: each one answered 408 and now lingers
                assert b" 408 " in sock.recv(4096).split(b"\r\n", 1)[0]
            assert LINGER_S > 1
            r = httpx.get(f"{url}/livez", timeout=5)
            assert r.status_code == 200, r.text
        finally:
            for sock in slow:
                sock.close()
