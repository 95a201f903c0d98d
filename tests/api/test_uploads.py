"""One options model for form fields and query parameters (service/api/uploads.py,
service/worker/options.py): a form takes what its query adds, and refuses a field given twice
with two values; an engine that takes no reference refuses one before anything is decoded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.apps import running_app
from tests.support.images import decode


@pytest.fixture
def client() -> TestClient:
    with running_app() as (client, _):
        yield client  # type: ignore[misc]


def test_query_parameters_fill_a_form(client: TestClient, gray_png: bytes) -> None:
    r = client.post("/colorize?format=jpeg", files={"image": ("a.png", gray_png)})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_a_bad_query_parameter_on_a_form_is_refused_not_ignored(
    client: TestClient, gray_png: bytes
) -> None:
    r = client.post("/colorize?model=nope", files={"image": ("a.png", gray_png)})
    assert r.status_code == 422 and r.json()["error"] == "unknown_model"
    r = client.post("/colorize?quality=0", files={"image": ("a.png", gray_png)})
    assert r.status_code == 400 and "quality" in r.json()["detail"]


def test_a_field_given_twice_with_two_values_is_400(client: TestClient, gray_png: bytes) -> None:
    r = client.post(
        "/colorize?format=jpeg", files={"image": ("a.png", gray_png)}, data={"format": "webp"}
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_field"
    assert "format" in r.json()["detail"]
    same = client.post(
        "/colorize?format=webp", files={"image": ("a.png", gray_png)}, data={"format": "webp"}
    )
    assert same.status_code == 200 and same.headers["content-type"] == "image/webp"


def test_an_engine_without_references_refuses_one_before_decoding(
    client: TestClient, gray_png: bytes
) -> None:
    # Once a 16 MP reference cost eccv16 a decode, and a grayscale one failed its request 422
    # for a photo it never needed.
    files = {"image": ("a.png", gray_png), "reference": ("r.png", b"not even an image")}
    r = client.post("/colorize", files=files, data={"model": "eccv16"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert "reference" in r.json()["detail"]
    assert decode(client.post("/colorize", files={"image": ("a.png", gray_png)}).content).any()


def test_a_4000_digit_hint_coordinate_is_not_echoed(client: TestClient, gray_png: bytes) -> None:
    x = 10**4000
    hints = f'[{{"x": {x}, "y": 1, "color": "#ff0000"}}]'
    r = client.post(
        "/colorize",
        files={"image": ("a.png", gray_png)},
        data={"model": "siggraph17", "hints": hints},
    )
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    assert len(r.text) < 500 and "4001 digits" in r.json()["detail"]
