"""Nobody gets in: the API key on every route but the open ones, compared in constant time and
never logged; nothing a client sends is followed as a URL or a path; job ids are unguessable;
every response says `nosniff` and carries a content type we chose.
"""

from __future__ import annotations

import base64
import hmac
import inspect
import itertools
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.middleware import auth
from service.engines.base import ColorizeRequest
from service.settings import Settings
from service.web import STATIC_DIR
from service.worker import jobs
from tests.support.apps import running_app, scripted_engines
from tests.support.engines import ScriptedEngine
from tests.support.images import decode
from tests.support.servers import serve_in_thread

KEY = "sk-reliability-5b1e0c7d9a3f4e2b8c6d"
"""Distinctive enough that any appearance in a log line is this key."""
NEAR_MISS = KEY[:-1] + "X"
OPEN_PATHS = {"/livez", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc", "/"}


def keyed_app(**overrides: Any) -> FastAPI:
    settings = Settings(api_key=KEY, queue_size=4, admission_wait_s=1.0, **overrides)  # type: ignore[arg-type]
    return create_app(settings, engines=scripted_engines(torch.device("cpu")))


@pytest.fixture(scope="module")
def keyed() -> Iterator[TestClient]:
    with TestClient(keyed_app()) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def documented_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every operation in the OpenAPI document."""
    concrete = {"{job_id}": "no-such-job", "{name}": "eccv16"}
    operations = []
    for path, methods in app.openapi()["paths"].items():
        for placeholder, value in concrete.items():
            path = path.replace(placeholder, value)
        operations += [(method.upper(), path) for method in methods]
    return sorted(operations)


def call(client: TestClient, method: str, path: str, png: bytes, **kwargs: Any) -> httpx.Response:
    files = {"image": ("a.png", png)} if method == "POST" else None
    return client.request(method, path, files=files, **kwargs)


# --- the API key --------------------------------------------------------------------------------


def test_every_documented_operation_is_either_open_or_needs_the_key(
    keyed: TestClient, gray_png: bytes
) -> None:
    operations = documented_operations(keyed.app)  # type: ignore[arg-type]
    assert len(operations) >= 10
    for method, path in operations:
        open_path = path in OPEN_PATHS
        for headers in ({}, bearer(NEAR_MISS), bearer(""), {"authorization": KEY}):
            r = call(keyed, method, path, gray_png, headers=headers)
            if open_path:
                assert r.status_code != 401, (method, path)
            else:
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.json() == {
                    "error": "unauthorized",
                    "detail": "a valid 'Authorization: Bearer <key>' is required",
                }
                assert r.headers["www-authenticate"] == "Bearer"
        r = call(keyed, method, path, gray_png, headers=bearer(KEY))
        assert r.status_code != 401, (method, path)


@pytest.mark.parametrize(
    "path",
    [
        "/colorize/",
        "//colorize",
        "/COLORIZE",
        "/static/../colorize",
        "/static/%2e%2e/colorize",
        "/livez/../colorize",
        "/v1/models/",
        "/jobs/../colorize",
    ],
)
def test_path_tricks_do_not_reach_a_protected_route_without_the_key(
    keyed: TestClient, gray_png: bytes, path: str
) -> None:
    r = keyed.post(path, files={"image": ("a.png", gray_png)})
    assert r.status_code in (401, 404, 405), (path, r.status_code)
    assert r.status_code == 401 or "image" not in r.headers.get("content-type", "")


@pytest.mark.parametrize(
    ("where", "kwargs"),
    [
        ("query-api_key", {"params": {"api_key": KEY}}),
        ("query-key", {"params": {"key": KEY}}),
        ("x-api-key-header", {"headers": {"x-api-key": KEY}}),
        ("cookie", {"headers": {"cookie": f"api_key={KEY}"}}),
        ("basic-auth", {"auth": ("user", KEY)}),
        ("token-scheme", {"headers": {"authorization": f"Token {KEY}"}}),
    ],
)
def test_the_key_is_only_taken_from_the_authorization_header(
    keyed: TestClient, gray_png: bytes, where: str, kwargs: dict[str, Any]
) -> None:
    r = keyed.post("/colorize", files={"image": ("a.png", gray_png)}, **kwargs)
    assert r.status_code == 401, where


@pytest.mark.parametrize(
    "value",
    [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER {KEY}", f"Bearer {KEY}  "],
    ids=["canonical", "lower-case-scheme", "upper-case-scheme", "trailing-spaces"],
)
def test_the_right_key_is_accepted_in_its_usual_spellings(
    keyed: TestClient, gray_png: bytes, value: str
) -> None:
    r = keyed.post(
        "/colorize", files={"image": ("a.png", gray_png)}, headers={"authorization": value}
    )
    assert r.status_code == 200, r.text[:200]


def test_the_key_is_compared_in_constant_time(
    keyed: TestClient, gray_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    # A wrong key of the same length, a shorter one, a longer one, an empty one, the right one:
    # each is compared exactly once by compare_digest (no early length check, no ==).
    tokens = [NEAR_MISS, KEY[:5], KEY + "extra", "", KEY]
    for token in tokens:
        keyed.get("/v1/status", headers=bearer(token))
    assert calls == [(t.encode(), KEY.encode()) for t in tokens]
    source = inspect.getsource(auth.ApiKey._authorized)
    assert "hmac.compare_digest(" in source
    assert "== self.api_key" not in source and "self.api_key ==" not in source


def test_the_key_never_appears_in_any_log_line(
    gray_png: bytes,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    # A real uvicorn with its access log on, every logger at DEBUG, the key (and a near miss)
    # sent with requests that succeed, fail, overflow and crash an engine.
    caplog.set_level(logging.DEBUG)
    # Any uvicorn.Config built earlier in this process applied uvicorn's logging config: its
    # loggers stop propagating to the root logger (where caplog listens) and take that test's
    # level. Undo both for this test.
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "propagate", True)
        request.addfinalizer(lambda lg=logger, old=logger.level: lg.setLevel(old))  # type: ignore[misc]
        logger.setLevel(logging.DEBUG)
    app = keyed_app(max_upload_bytes=64 * 1024)
    with serve_in_thread(app, access_log=True) as url:
        engine: ScriptedEngine = app.state.svc.engines["eccv16"]
        engine.failures.append(ValueError(f"an engine error (the key is {'*' * 8})"))
        with httpx.Client(base_url=url, timeout=10) as c:
            for key in (KEY, NEAR_MISS):
                for method, path, kwargs in [
                    ("POST", "/colorize", {"files": {"image": ("a.png", gray_png)}}),
                    ("POST", "/colorize", {"files": {"image": ("a.png", b"not an image")}}),
                    ("POST", "/colorize", {"content": bytes(100_000)}),
                    ("POST", "/jobs", {"files": {"image": ("a.png", gray_png)}}),
                    ("GET", "/jobs/nope", {}),
                    ("GET", "/v1/status", {}),
                    ("GET", "/metrics", {}),
                    # A key in the query string is refused, and never written down either.
                    ("GET", f"/v1/status?api_key={key}", {}),
                    ("GET", f"/v1/status?format=png&token={key}", {}),
                ]:
                    r = c.request(method, path, headers=bearer(key), **kwargs)
                    assert KEY not in r.text and KEY not in str(r.headers)
            # Job ids protect results when no key is set: the access log keeps only a prefix.
            job = c.post("/jobs", files={"image": ("a.png", gray_png)}, headers=bearer(KEY))
            job_id = job.json()["id"]
            assert c.get(f"/jobs/{job_id}", headers=bearer(KEY)).status_code == 200
    # The server's records (the client's own httpx log shows the URLs it was asked to send).
    server = [r for r in caplog.records if r.name.startswith(("uvicorn", "service"))]
    lines = [r.getMessage() + (r.exc_text or "") for r in server]
    served = [r.getMessage() for r in server]
    assert any(f"/jobs/{job_id[:4]}" in line for line in served)
    assert not [line for line in served if job_id in line]
    assert len(lines) > 10, "the capture must see the server's logs"
    assert any("engine eccv16 failed" in line for line in lines)
    assert any("POST /colorize" in line for line in lines), "the access log must be captured"
    assert not [line for line in lines if KEY in line or NEAR_MISS in line]
    for record in server:
        assert KEY not in repr(record.args) and NEAR_MISS not in repr(record.args)


# --- nothing a client sends is followed ---------------------------------------------------------

_watching: list[list[tuple[str, tuple[Any, ...]]]] = []
_WATCHED = ("open", "socket.connect", "urllib.Request", "subprocess.Popen", "os.system", "os.exec")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching and event.startswith(_WATCHED):
        _watching[-1].append((event, args))


sys.addaudithook(_audit)  # Audit hooks cannot be removed; this one is idle unless watching.


@contextmanager
def watching() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Record file opens, connections and processes started by anyone during the block."""
    events: list[tuple[str, tuple[Any, ...]]] = []
    _watching.append(events)
    try:
        yield events
    finally:
        _watching.remove(events)


@contextmanager
def listener() -> Iterator[tuple[int, list[object]]]:
    """A loopback port that records every connection made to it."""
    accepted: list[object] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, name="listener", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(2)
        server.close()


def opened_paths(events: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    return [str(args[0]) for event, args in events if event == "open" and args[0] is not None]


Request = Callable[[TestClient, bytes, str], httpx.Response]
FOLLOW_BAIT: list[tuple[str, Request, set[int]]] = [
    # (id, request given the client, a valid PNG and a URL to bait; acceptable statuses)
    (
        "url-as-image",
        lambda c, png, url: c.post("/colorize", files={"image": ("a.png", url.encode())}),
        {415},
    ),
    (
        "file-url-as-image",
        lambda c, png, url: c.post("/colorize", files={"image": ("a.png", b"file:///etc/passwd")}),
        {415},
    ),
    (
        "path-as-image",
        lambda c, png, url: c.post("/colorize", files={"image": ("a.png", b"/etc/passwd")}),
        {415},
    ),
    (
        "url-as-raw-body",
        lambda c, png, url: c.post(
            "/colorize", content=url.encode(), headers={"content-type": "image/png"}
        ),
        {415},
    ),
    (
        "url-as-reference",
        lambda c, png, url: c.post(
            "/colorize",
            files={"image": ("a.png", png), "reference": ("r.png", url.encode())},
            data={"model": "exemplar"},
        ),
        {415},
    ),
    (
        "url-as-reference-field",
        lambda c, png, url: c.post(
            "/colorize",
            files={"image": ("a.png", png)},
            data={"model": "exemplar", "reference": url},
        ),
        {400, 422},
    ),
    (
        "url-as-image-field",
        lambda c, png, url: c.post("/colorize", data={"image": url}),
        {400, 422},
    ),
    (
        "traversal-filename",
        lambda c, png, url: c.post("/colorize", files={"image": ("../../../../etc/passwd", png)}),
        {200},
    ),
    (
        "absolute-filename",
        lambda c, png, url: c.post("/colorize", files={"image": ("/etc/passwd", png)}),
        {200},
    ),
    ("url-filename", lambda c, png, url: c.post("/colorize", files={"image": (url, png)}), {200}),
    (
        "traversal-model",
        lambda c, png, url: c.post(
            "/colorize", files={"image": ("a.png", png)}, data={"model": "../../../../etc/passwd"}
        ),
        {422},
    ),
    (
        "url-model",
        lambda c, png, url: c.post(
            "/colorize", files={"image": ("a.png", png)}, data={"model": url}
        ),
        {422},
    ),
    (
        "traversal-format",
        lambda c, png, url: c.post(
            "/colorize", files={"image": ("a.png", png)}, data={"format": "../../etc/passwd"}
        ),
        {400},
    ),
    (
        "url-in-hints",
        lambda c, png, url: c.post(
            "/colorize",
            files={"image": ("a.png", png)},
            data={"model": "siggraph17", "hints": f'[{{"x":1,"y":1,"color":"{url}"}}]'},
        ),
        {400},
    ),
    (
        "url-as-raw-query-model",
        lambda c, png, url: c.post(
            "/colorize", params={"model": url}, content=png, headers={"content-type": "image/png"}
        ),
        {422},
    ),
    ("traversal-job-id", lambda c, png, url: c.get("/jobs/..%2F..%2F..%2Fetc%2Fpasswd"), {404}),
    (
        "traversal-job-result",
        lambda c, png, url: c.get("/jobs/..%2F..%2Fetc%2Fpasswd/result"),
        {404},
    ),
    (
        "traversal-model-name",
        lambda c, png, url: c.get("/v1/models/..%2F..%2F..%2Fetc%2Fpasswd"),
        {404},
    ),
    (
        "traversal-static",
        lambda c, png, url: c.get("/static/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
        {404},
    ),
    (
        "traversal-static-dots",
        lambda c, png, url: c.get("/static/../../../../../../etc/passwd"),
        {404},
    ),
    (
        "url-as-static-path",
        lambda c, png, url: c.get("/static/" + url.replace("://", "%3A%2F%2F")),
        {404},
    ),
]


@pytest.fixture(scope="module")
def open_client() -> Iterator[TestClient]:
    with running_app() as (client, _):
        yield client


@pytest.mark.parametrize(
    ("send", "statuses"), [b[1:] for b in FOLLOW_BAIT], ids=[b[0] for b in FOLLOW_BAIT]
)
def test_nothing_a_client_sends_is_fetched_or_opened(
    open_client: TestClient, gray_png: bytes, send: Request, statuses: set[int]
) -> None:
    allowed = (
        str(Path(STATIC_DIR).resolve()),  # the page's own files
        f"/proc/{os.getpid()}/",  # the memory manager reads our own usage
        "/proc/self/",
        "/sys/fs/cgroup/",
    )
    with listener() as (port, accepted), watching() as events:
        r = send(open_client, gray_png, f"http://127.0.0.1:{port}/x.png")
    assert r.status_code in statuses, r.text[:200]
    assert accepted == [], "the server connected to a URL a client gave it"
    assert [e for e, _ in events if e != "open"] == []
    outside = [
        p
        for p in opened_paths(events)
        if "passwd" in p or "x.png" in p or not p.startswith(allowed)
    ]
    assert outside == [], f"the server opened {outside}"


def test_the_watch_sees_a_file_being_opened(tmp_path: Path) -> None:
    # Guards the test above: a blind audit hook would make it pass vacuously.
    target = tmp_path / "seen.txt"
    target.write_text("x")
    with watching() as events:
        target.read_text()
    assert str(target) in opened_paths(events)


# --- job ids ------------------------------------------------------------------------------------


def _bits(job_id: str) -> int:
    raw = base64.urlsafe_b64decode(job_id + "=" * (-len(job_id) % 4))
    assert len(raw) == 18, f"{job_id!r} does not carry 144 random bits"
    return int.from_bytes(raw, "big")


def test_sequential_job_ids_are_unrelated(gray_png: bytes) -> None:
    with running_app(queue_size=128, batch_max_size=8) as (client, _):
        ids = [
            client.post("/jobs", files={"image": ("a.png", gray_png)}).json()["id"]
            for _ in range(64)
        ]
        for near in (ids[0][:-1], ids[0] + "A", ids[0].swapcase(), ids[0][1:] + ids[0][0]):
            assert client.get(f"/jobs/{near}").status_code == 404
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and set(i) <= set(ALPHABET) for i in ids)
    values = [_bits(i) for i in ids]
    # Neighbours differ in about half their 144 bits (mean 72, sd 6): 40..104 is > 5 sd.
    distances = [bin(a ^ b).count("1") for a, b in itertools.pairwise(values)]
    assert all(40 <= d <= 104 for d in distances), distances
    # No shared prefixes beyond chance (a counter or a clock would share many characters).
    assert max(shared_prefix(a, b) for a, b in itertools.pairwise(ids)) < 4
    ones = sum(bin(v).count("1") for v in values) / (144 * len(values))
    assert 0.47 < ones < 0.53, ones


def shared_prefix(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_job_ids_come_from_the_operating_systems_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def token(nbytes: int) -> str:
        seen.append(nbytes)
        return "from-secrets"

    monkeypatch.setattr(jobs.secrets, "token_urlsafe", token)
    job = jobs.Job("eccv16", ColorizeRequest(image=torch.zeros(1).numpy()), estimate=0)
    assert job.id == "from-secrets" and seen == [18]


# --- response headers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def header_client() -> Iterator[TestClient]:
    with running_app(max_upload_bytes=64 * 1024, max_pixels=1_000_000) as (client, engines):
        client.engines = engines  # type: ignore[attr-defined]
        yield client


def _png(rgb_side: int = 8) -> bytes:
    from PIL import Image

    from tests.support.bad_inputs import save

    return save(Image.new("L", (rgb_side, rgb_side), 128), "PNG")


HEADER_CASES: list[tuple[str, Callable[[TestClient, bytes], httpx.Response], int]] = [
    ("200-image", lambda c, png: c.post("/colorize", files={"image": ("a.png", png)}), 200),
    ("202-job", lambda c, png: c.post("/jobs", files={"image": ("a.png", png)}), 202),
    ("200-json", lambda c, png: c.get("/v1/models"), 200),
    ("200-metrics", lambda c, png: c.get("/metrics"), 200),
    ("200-openapi", lambda c, png: c.get("/openapi.json"), 200),
    ("200-docs", lambda c, png: c.get("/docs"), 200),
    ("200-page", lambda c, png: c.get("/"), 200),
    (
        "400-bad-field",
        lambda c, png: c.post("/colorize", files={"image": ("a.png", png)}, data={"quality": "x"}),
        400,
    ),
    (
        "400-bad-multipart",
        lambda c, png: c.post(
            "/colorize", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
        ),
        400,
    ),
    ("404-job", lambda c, png: c.get("/jobs/nope"), 404),
    ("404-route", lambda c, png: c.get("/nowhere"), 404),
    ("404-static", lambda c, png: c.get("/static/nothing.js"), 404),
    ("405-method", lambda c, png: c.put("/colorize"), 405),
    (
        "413-declared-length",
        lambda c, png: c.post(
            "/colorize", content=bytes(70_000), headers={"content-type": "image/png"}
        ),
        413,
    ),
    (
        "413-streamed",
        lambda c, png: c.post(
            "/colorize",
            content=iter([bytes(40_000), bytes(40_000)]),
            headers={"content-type": "image/png"},
        ),
        413,
    ),
    ("413-pixels", lambda c, png: c.post("/colorize", files={"image": ("a.png", _png(1001))}), 413),
    (
        "415-format",
        lambda c, png: c.post("/colorize", files={"image": ("a.svg", b"<svg></svg>")}),
        415,
    ),
    (
        "422-undecodable",
        lambda c, png: c.post("/colorize", files={"image": ("a.png", png[:40])}),
        422,
    ),
    ("422-missing", lambda c, png: c.post("/colorize", files={"other": ("a.png", png)}), 422),
]


@pytest.mark.parametrize(
    ("send", "status"), [h[1:] for h in HEADER_CASES], ids=[h[0] for h in HEADER_CASES]
)
def test_every_response_says_nosniff(
    header_client: TestClient, gray_png: bytes, send: Callable[..., httpx.Response], status: int
) -> None:
    r = send(header_client, gray_png)
    assert r.status_code == status, r.text[:200]
    assert r.headers["x-content-type-options"] == "nosniff"
    if status >= 400:
        assert r.headers["content-type"] == "application/json"
        assert set(r.json()) == {"error", "detail"}


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (ValueError("engine bug"), 500),
        (torch.OutOfMemoryError("CUDA out of memory (twice)"), 507),
    ],
    ids=["500-engine-error", "507-out-of-memory"],
)
def test_failed_jobs_say_nosniff_too(gray_png: bytes, failure: Exception, status: int) -> None:
    with running_app() as (client, engines):
        engines["eccv16"].failures += [failure, failure]  # type: ignore[attr-defined]
        r = client.post("/colorize", files={"image": ("a.png", gray_png)})
    assert r.status_code == status
    assert r.headers["x-content-type-options"] == "nosniff"


def test_unready_says_nosniff_too(gray_png: bytes) -> None:
    with running_app() as (client, engines):
        for engine in engines.values():
            engine.loaded = False  # type: ignore[attr-defined]
        for r in (
            client.post("/colorize", files={"image": ("a.png", gray_png)}),
            client.get("/readyz"),
        ):
            assert r.status_code == 503
            assert r.headers["x-content-type-options"] == "nosniff"


class CrashingValidation(ScriptedEngine):
    """A bug in the API thread's path (an engine's validate raising what it should not)."""

    def validate(self, request: ColorizeRequest) -> None:
        raise RuntimeError("a bug in validate")


def test_an_unhandled_error_says_nosniff_too(gray_png: bytes) -> None:
    engines = {"eccv16": CrashingValidation(torch.device("cpu"))}
    with running_app(engines=engines) as (client, _):
        quiet = TestClient(client.app, raise_server_exceptions=False)
        r = quiet.post("/colorize", files={"image": ("a.png", gray_png)})
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    assert r.headers.get("x-content-type-options") == "nosniff"


@pytest.mark.parametrize(
    ("declared", "fmt", "served"),
    [
        ("image/svg+xml", "png", "image/png"),
        ("text/html", "png", "image/png"),
        ("image/svg+xml", "jpeg", "image/jpeg"),
        ("application/javascript", "webp", "image/webp"),
    ],
)
def test_the_response_type_is_ours_not_the_clients(
    header_client: TestClient, gray_png: bytes, declared: str, fmt: str, served: str
) -> None:
    evil = {"x-request-id": "<script>", "accept": "text/html", "content-disposition": "inline"}
    multipart = header_client.post(
        "/colorize",
        files={"image": ("a.svg", gray_png, declared)},
        data={"format": fmt},
        headers=evil,
    )
    raw_declared = declared if declared.startswith("image/") else "image/png"
    raw = header_client.post(
        f"/colorize?format={fmt}", content=gray_png, headers={**evil, "content-type": raw_declared}
    )
    for r in (multipart, raw):
        assert r.status_code == 200, r.text[:200]
        assert r.headers["content-type"] == served
        assert r.headers["x-request-id"] != "<script>"
        assert "content-disposition" not in r.headers
        assert decode(r.content).shape == (128, 128, 3)


def test_a_file_name_with_header_injection_is_not_reflected(
    header_client: TestClient, gray_png: bytes
) -> None:
    name = 'a.png"\r\nSet-Cookie: session=stolen\r\nX-Injected: 1'
    r = header_client.post("/colorize", files={"image": (name, gray_png)})
    assert r.status_code == 200
    assert "set-cookie" not in r.headers and "x-injected" not in r.headers
