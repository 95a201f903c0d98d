"""POST /colorize: multipart and raw bodies, headers, formats, hints, references."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support.apps import running_app
from tests.support.images import decode, is_colour


def test_multipart_upload_answers_a_colour_image_of_the_same_size(
    app_client: tuple[TestClient, object], gray_png: bytes
) -> None:
    client, _ = app_client
    r = client.post("/colorize", files={"image": ("a.png", gray_png, "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    out = decode(r.content)
    assert out.shape == (128, 128, 3)
    assert is_colour(out)
    assert len(r.headers["x-request-id"]) >= 20
    phases = [p.split(";")[0] for p in r.headers["server-timing"].split(", ")]
    assert phases == ["decode", "queue", "compute", "finish", "encode"]
    durations = [float(p.split("dur=")[1]) for p in r.headers["server-timing"].split(", ")]
    assert all(d >= 0 for d in durations), r.headers["server-timing"]


@pytest.mark.parametrize(
    ("fmt", "media"),
    [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")],
    ids=["png", "jpeg", "webp"],
)
def test_raw_body_with_query_options(
    app_client: tuple[TestClient, object], gray_png: bytes, fmt: str, media: str
) -> None:
    client, _ = app_client
    r = client.post(
        f"/colorize?format={fmt}&quality=80",
        content=gray_png,
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    assert decode(r.content).shape == (128, 128, 3)


def test_model_field_picks_the_engine(
    app_client: tuple[TestClient, dict[str, object]], gray_png: bytes
) -> None:
    client, engines = app_client
    r = client.post("/colorize", files={"image": ("a.png", gray_png)}, data={"model": "siggraph17"})
    assert r.status_code == 200
    assert engines["siggraph17"].batches == [1]  # type: ignore[attr-defined]
    assert engines["eccv16"].batches == []  # type: ignore[attr-defined]


def test_hints_are_parsed_and_validated_against_the_image(
    app_client: tuple[TestClient, object], gray_png: bytes
) -> None:
    client, _ = app_client
    good = json.dumps([{"x": 5, "y": 6, "color": "#c04020"}, {"x": 1, "y": 2, "color": [1, 2, 3]}])
    r = client.post(
        "/colorize",
        files={"image": ("a.png", gray_png)},
        data={"model": "siggraph17", "hints": good},
    )
    assert r.status_code == 200, r.text
    outside = json.dumps([{"x": 500, "y": 6, "color": "#c04020"}])
    r = client.post(
        "/colorize",
        files={"image": ("a.png", gray_png)},
        data={"model": "siggraph17", "hints": outside},
    )
    assert r.status_code == 422
    assert "outside" in r.json()["detail"]


def test_exemplar_takes_a_colour_reference(
    app_client: tuple[TestClient, object], gray_png: bytes, colour_png: bytes
) -> None:
    client, _ = app_client
    r = client.post(
        "/colorize",
        files={"image": ("a.png", gray_png), "reference": ("r.png", colour_png)},
        data={"model": "exemplar"},
    )
    assert r.status_code == 200, r.text


def test_same_image_twice_gives_identical_bytes(
    app_client: tuple[TestClient, object], gray_png: bytes
) -> None:
    client, _ = app_client
    a = client.post("/colorize", files={"image": ("a.png", gray_png)}).content
    b = client.post("/colorize", files={"image": ("a.png", gray_png)}).content
    assert a == b


def test_jpeg_with_html_appended_is_reencoded_without_the_payload(gray_png: bytes) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(gray_png)).save(buf, format="JPEG")
    payload = b"<html><script>alert(1)</script></html>"
    with running_app() as (client, _):
        r = client.post(
            "/colorize?format=jpeg",
            content=buf.getvalue() + payload,
            headers={"content-type": "image/jpeg"},
        )
    assert r.status_code == 200
    assert b"<script>" not in r.content
    assert np.asarray(decode(r.content)).shape == (128, 128, 3)
