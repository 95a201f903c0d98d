"""Every row of the status table (GUIDE.md section 2) and every bad input (section 4) over HTTP."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from devkit.checkpoints import save_random_checkpoint
from service.engines.base import Engine
from service.engines.eccv16 import Eccv16Engine
from service.engines.exemplar import ExemplarEngine
from service.engines.fast import FastPath
from service.engines.siggraph17 import Siggraph17Engine
from service.engines.speed import SpeedCheck
from service.memory import CudaBackend, MemoryManager
from service.settings import Settings
from tests.support.apps import running_app
from tests.support.bad_inputs import LONG_TEXT_FIELD, Case, cases
from tests.support.engines import ScriptedEngine
from tests.support.fake_devices import FakeCuda, GiB
from tests.support.images import decode
from tests.support.timing import ScriptedTimer

MAX_PIXELS = 4_000_000
MAX_UPLOAD = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def client() -> TestClient:
    with running_app(max_pixels=MAX_PIXELS, max_upload_bytes=MAX_UPLOAD) as (c, _):
        yield c  # type: ignore[misc]


def ok_after(client: TestClient, gray_png: bytes) -> None:
    r = client.post("/colorize", files={"image": ("ok.png", gray_png, "image/png")})
    assert r.status_code == 200, "the service must answer the next normal request"


@pytest.mark.parametrize(
    "case", cases(max_pixels=MAX_PIXELS, max_upload_bytes=MAX_UPLOAD), ids=lambda c: c.id
)
def test_bad_input_gets_its_exact_status_and_the_next_request_works(
    client: TestClient, gray_png: bytes, case: Case
) -> None:
    r = client.post("/colorize", files={"image": (case.filename, case.data, case.content_type)})
    assert r.status_code == case.status, r.text[:300]
    if case.status == 200:
        out = decode(r.content)
        assert (out.shape[1], out.shape[0]) == case.size
        if case.check is not None:
            case.check(out)
    else:
        body = r.json()
        assert set(body) == {"error", "detail"} and body["detail"]
        assert "Traceback" not in r.text
    ok_after(client, gray_png)


TABLE = [
    # (id, request kwargs, status, a phrase the detail must contain)
    ("hints-not-json", {"data": {"model": "siggraph17", "hints": "{nope"}}, 400, "not valid JSON"),
    ("hints-not-list", {"data": {"model": "siggraph17", "hints": '{"x": 1}'}}, 400, "JSON list"),
    (
        "hint-bad-colour",
        {"data": {"model": "siggraph17", "hints": '[{"x":1,"y":1,"color":"red"}]'}},
        400,
        "#rrggbb",
    ),
    ("quality-out-of-range", {"data": {"quality": "500"}}, 400, "quality"),
    ("quality-not-int", {"data": {"quality": "high"}}, 400, "quality"),
    ("unknown-format", {"data": {"format": "gif"}}, 400, "format"),
    ("two-mib-text-field", {"data": {"model": LONG_TEXT_FIELD}}, 400, "maximum size"),
    ("unknown-model", {"data": {"model": "dalle"}}, 422, "unknown model"),
    ("exemplar-without-reference", {"data": {"model": "exemplar"}}, 422, "reference"),
    (
        "hints-for-eccv16",
        {"data": {"model": "eccv16", "hints": '[{"x":1,"y":1,"color":"#ffffff"}]'}},
        422,
        "hints",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "phrase"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_bad_fields(
    client: TestClient, gray_png: bytes, kwargs: dict[str, object], status: int, phrase: str
) -> None:
    r = client.post("/colorize", files={"image": ("a.png", gray_png)}, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text[:300]
    assert phrase in r.json()["detail"]
    ok_after(client, gray_png)


def test_grayscale_reference_is_refused(client: TestClient, gray_png: bytes) -> None:
    r = client.post(
        "/colorize",
        files={"image": ("a.png", gray_png), "reference": ("r.png", gray_png)},
        data={"model": "exemplar"},
    )
    assert r.status_code == 422
    assert r.json()["error"] == "grayscale_reference"


def test_missing_image_field_is_422(client: TestClient) -> None:
    r = client.post("/colorize", files={"other": ("a.txt", b"x")})
    assert r.status_code == 422
    assert "'image'" in r.json()["detail"]


def test_malformed_multipart_is_400(client: TestClient) -> None:
    r = client.post(
        "/colorize",
        content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\n",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code in (400, 422)
    assert r.json()["detail"]


def test_json_body_is_415(client: TestClient) -> None:
    r = client.post("/colorize", json={"image": "http://example.com/a.jpg"})
    assert r.status_code == 415
    assert "multipart/form-data" in r.json()["detail"]


def test_unknown_job_and_model_are_404(client: TestClient) -> None:
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/jobs/nope/result").status_code == 404
    assert client.delete("/jobs/nope").status_code == 404
    assert client.get("/v1/models/dalle").status_code == 404


def test_body_over_the_limit_with_content_length_is_413_before_reading(client: TestClient) -> None:
    r = client.post(
        "/colorize", content=b"\0" * (MAX_UPLOAD + 1), headers={"content-type": "image/png"}
    )
    assert r.status_code == 413
    assert str(MAX_UPLOAD) in r.json()["detail"]


def test_body_over_the_limit_without_content_length_is_413_while_streaming(
    client: TestClient, gray_png: bytes
) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(MAX_UPLOAD // 65536 + 2):
            yield b"\0" * 65536

    r = client.post("/colorize", content=chunks(), headers={"content-type": "image/png"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    ok_after(client, gray_png)


def test_multipart_over_the_limit_without_content_length_is_413(client: TestClient) -> None:
    boundary = b"b0undary"

    def body():  # type: ignore[no-untyped-def]
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; '
        yield b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        for _ in range(MAX_UPLOAD // 65536 + 2):
            yield b"\0" * 65536
        yield b"\r\n--" + boundary + b"--\r\n"

    r = client.post(
        "/colorize",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert r.status_code == 413


def test_job_that_can_never_fit_the_budget_is_413_naming_the_largest_image(gray_png: bytes) -> None:
    fake = FakeCuda(total=GiB)
    manager = MemoryManager(torch.device("cuda", 0), 0.8, backend=CudaBackend(0, cuda=fake))
    engines = {"eccv16": ScriptedEngine(torch.device("cpu"), per_pixel_bytes=100_000)}
    with running_app(engines=engines, manager=manager) as (client, _):
        r = client.post("/colorize", files={"image": ("a.png", gray_png)})
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "largest square image that fits for eccv16 is about 92x92 pixels" in detail
    with running_app(engines=engines, manager=manager) as (client, _):
        info = client.get("/v1/models/eccv16").json()["memory_model"]
    assert (info["largest_square_px"], info["largest_square_limited_by"]) == (92, "memory")


def test_models_name_the_pixel_limit_when_it_is_the_smaller_bound() -> None:
    with running_app(max_pixels=250_000) as (client, _):
        models = client.get("/v1/models").json()
    for model in models:
        info = model["memory_model"]
        assert (info["largest_square_px"], info["largest_square_limited_by"]) == (500, "pixels")


def test_models_report_the_precision_in_use_and_why(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    save_random_checkpoint("eccv16", tmp_path)
    # bf16 "slower" on any CPU: the speed check runs as in production, on scripted timings.
    slower = SpeedCheck(timer=ScriptedTimer(fp32=0.001, bf16=0.010))
    engines: dict[str, Engine] = {
        "eccv16": Eccv16Engine(cpu, tmp_path, FastPath(precision="bf16", speed_check=slower)),
        "siggraph17": Siggraph17Engine(cpu, tmp_path),
        "exemplar": ExemplarEngine(cpu),
    }
    engines["eccv16"].load()
    with running_app(engines=engines) as (client, _):
        models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert {name: m["precision"] for name, m in models.items()} == {
        "eccv16": "fp32",
        "siggraph17": "fp32",
        "exemplar": "fp32",
    }
    assert models["eccv16"]["precision_reason"] == (
        "bf16 refused: not faster than fp32 on cpu (model4.2 (Conv2d 512->512, 3x3) at "
        "128x128: bf16 10 ms vs fp32 1 ms (speed-up 0.10x; check took 0.34 s))"
    )
    assert models["siggraph17"]["precision_reason"] == (
        "not loaded yet (COLORIZE_PRECISION=fp32 is checked at load)"
    )
    assert models["exemplar"]["precision_reason"] == (
        "fp32 only: this engine does not use reduced precision"
    )


def test_weights_not_installed_is_503_with_the_fix(tmp_path: object, gray_png: bytes) -> None:
    from service.engines.registry import create_engine

    engine = create_engine("eccv16", torch.device("cpu"), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="fetch-weights"):
        engine.load()
    with running_app(engines={"eccv16": engine}) as (client, _):
        r = client.post("/colorize", files={"image": ("a.png", gray_png)})
        assert r.status_code == 503
        # Nothing fetches the weights: a client that obeys Retry-After must not loop forever.
        assert "fetch-weights" in r.json()["detail"] and "retry-after" not in r.headers
        models = client.get("/v1/models").json()
        assert models[0]["ready"] is False and "fetch-weights" in models[0]["reason"]
        assert client.get("/readyz").status_code == 503


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic c2VjcmV0"},
        {"authorization": "secret"},
    ],
    ids=["none", "wrong-key", "wrong-scheme", "no-scheme"],
)
def test_api_key_is_checked_on_every_upload_path(gray_png: bytes, headers: dict[str, str]) -> None:
    settings = Settings(api_key="secret")  # type: ignore[arg-type]
    with running_app(settings) as (client, _):
        for method, path in [
            ("POST", "/colorize"),
            ("POST", "/jobs"),
            ("GET", "/jobs/x"),
            ("GET", "/v1/models"),
            ("GET", "/v1/status"),
        ]:
            r = client.request(
                method,
                path,
                files={"image": ("a.png", gray_png)} if method == "POST" else None,
                headers=headers,
            )
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
        for path in ("/livez", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
        ok = client.post(
            "/colorize",
            files={"image": ("a.png", gray_png)},
            headers={"authorization": "Bearer secret"},
        )
        assert ok.status_code == 200


def test_api_key_is_checked_before_the_body_is_read() -> None:
    settings = Settings(api_key="secret")  # type: ignore[arg-type]
    from service.api.middleware.auth import ApiKey

    reads = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        reads.append(await receive())

    guard = ApiKey(app, api_key="secret")
    sent: list[dict[str, object]] = []

    async def receive():  # type: ignore[no-untyped-def]
        reads.append("body read")
        return {"type": "http.request", "body": b"x" * 100}

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    import asyncio

    scope = {"type": "http", "path": "/colorize", "headers": [(b"content-length", b"100")]}
    asyncio.run(guard(scope, receive, send))
    assert reads == [] and sent[0]["status"] == 401
    assert settings.api_key is not None


def test_metrics_can_be_protected_too() -> None:
    settings = Settings(api_key="secret", protect_metrics=True)  # type: ignore[arg-type]
    with running_app(settings) as (client, _):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer secret"}).status_code == 200


def test_the_server_never_fetches_a_url_it_is_given(client: TestClient) -> None:
    # A URL where an image should be is just undecodable bytes; nothing connects anywhere.
    connects: list[object] = []
    original = socket.socket.connect
    socket.socket.connect = lambda self, addr: connects.append(addr)  # type: ignore[method-assign]
    try:
        r = client.post("/colorize", files={"image": ("a.jpg", b"http://127.0.0.1:9/x.jpg")})
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
    assert r.status_code in (415, 422)
    assert connects == []


def test_readyz_is_red_while_the_default_model_is_not_ready(gray_png: bytes) -> None:
    # Every request that names no model would get 503: the replica must leave the Service.
    with running_app() as (client, engines):
        assert client.get("/readyz").status_code == 200
        engines["eccv16"].loaded = False  # type: ignore[attr-defined]
        r = client.get("/readyz")
        assert r.status_code == 503
        assert any("COLORIZE_DEFAULT_MODEL" in reason for reason in r.json()["reasons"])
        named = client.post(
            "/colorize", files={"image": ("a.png", gray_png)}, data={"model": "siggraph17"}
        )
        assert named.status_code == 200  # the other engines still serve who names them


def test_an_unknown_model_in_a_request_is_422_and_in_a_path_404(gray_png: bytes) -> None:
    with running_app() as (client, _):
        r = client.post("/colorize", files={"image": ("a.png", gray_png)}, data={"model": "nope"})
        assert r.status_code == 422 and r.json()["error"] == "unknown_model"
        assert client.get("/v1/models/nope").status_code == 404
