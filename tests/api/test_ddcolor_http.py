"""The DDColor engines over HTTP: each colorizes a photo, render_size validation, batching by
render size, 413 naming the largest render size that fits, and /v1/models."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.engines.base import ColorizeRequest, Engine, RenderLimits
from service.engines.ddcolor.engine import DDColorEngine, DDColorTiny
from service.memory import CudaBackend, MemoryManager
from service.settings import Settings
from tests.support.apps import running_app
from tests.support.fake_devices import FakeCuda, GiB
from tests.support.images import decode, is_colour, png_bytes

DDCOLOR = ("ddcolor", "ddcolor-artistic", "ddcolor-tiny")


@pytest.fixture(scope="module")
def photo_png(astronaut: np.ndarray) -> bytes:
    """A 512x384 grey photo (the astronaut, resized)."""
    resized = np.asarray(Image.fromarray(astronaut).resize((512, 384), Image.Resampling.BILINEAR))
    return png_bytes(resized)


@pytest.fixture(scope="module")
def app(ddcolor_weights_dir: Path) -> Iterator[tuple[TestClient, Mapping[str, Engine]]]:
    """The service with every engine loaded as in production (DDColor from generated files)."""
    settings = Settings(
        weights_dir=ddcolor_weights_dir,
        ddcolor_render_size=64,
        max_render_size=512,
        batch_max_size=4,
        batch_max_wait_ms=300,
        queue_size=8,
    )
    with TestClient(create_app(settings)) as client:
        yield client, client.app.state.svc.engines  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", DDCOLOR)
def test_each_engine_colorizes_a_photo(
    app: tuple[TestClient, Mapping[str, Engine]], photo_png: bytes, model: str
) -> None:
    client, _ = app
    r = client.post(
        "/colorize",
        files={"image": ("a.png", photo_png)},
        data={"model": model, "render_size": "64"},
    )
    assert r.status_code == 200, r.text
    out = decode(r.content)
    assert out.shape == (384, 512, 3)
    assert is_colour(out)


def test_raw_body_takes_render_size_as_a_query_parameter(
    app: tuple[TestClient, Mapping[str, Engine]], photo_png: bytes
) -> None:
    client, _ = app
    r = client.post(
        "/colorize?model=ddcolor-tiny&render_size=96",
        content=photo_png,
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    assert decode(r.content).shape == (384, 512, 3)


@pytest.mark.parametrize(
    ("model", "value", "status", "error", "names"),
    [
        ("ddcolor-tiny", "abc", 400, "bad_field", "render_size"),
        ("ddcolor-tiny", "1.5", 400, "bad_field", "render_size"),
        ("ddcolor-tiny", "100", 422, "invalid_request", "multiple of 32 from 64 to 512"),
        ("ddcolor-tiny", "32", 422, "invalid_request", "multiple of 32 from 64 to 512"),
        ("ddcolor-tiny", "544", 422, "invalid_request", "COLORIZE_MAX_RENDER_SIZE"),
        ("ddcolor-tiny", "-64", 422, "invalid_request", "multiple of 32 from 64 to 512"),
        ("exemplar", "64", 422, "invalid_request", "does not take a render size"),
    ],
    ids=[
        "not-a-number",
        "fraction",
        "not-multiple",
        "below-min",
        "above-max",
        "negative",
        "engine-without-one",
    ],
)
@pytest.mark.parametrize("path", ["/colorize", "/jobs"])
def test_bad_render_size_names_the_rule(
    app: tuple[TestClient, Mapping[str, Engine]],
    photo_png: bytes,
    path: str,
    model: str,
    value: str,
    status: int,
    error: str,
    names: str,
) -> None:
    client, _ = app
    r = client.post(
        path, files={"image": ("a.png", photo_png)}, data={"model": model, "render_size": value}
    )
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert names in r.json()["detail"]


def test_requests_of_different_render_sizes_never_share_a_forward_pass(
    app: tuple[TestClient, Mapping[str, Engine]], photo_png: bytes
) -> None:
    client, engines = app
    engine = engines["ddcolor-tiny"]
    assert isinstance(engine, DDColorEngine)
    passes: list[list[int]] = []
    real_forward = engine.forward

    def spy(
        requests: Sequence[ColorizeRequest], prepared: Sequence[object | None], chunk: int | None
    ) -> list[object]:
        passes.append([engine.render_size(r) for r in requests])
        return real_forward(requests, prepared, chunk)

    engine.forward = spy  # type: ignore[method-assign]
    try:
        sizes = [64, 96, 64, 96]
        results: list[int] = [0] * len(sizes)

        def post(i: int) -> None:
            r = client.post(
                "/colorize",
                files={"image": ("a.png", photo_png)},
                data={"model": "ddcolor-tiny", "render_size": str(sizes[i])},
            )
            results[i] = r.status_code

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(sizes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del engine.forward
    assert results == [200] * len(sizes)
    assert sorted(s for p in passes for s in p) == [64, 64, 96, 96]
    assert all(len(set(p)) == 1 for p in passes), passes


def test_models_report_render_sizes(app: tuple[TestClient, Mapping[str, Engine]]) -> None:
    client, _ = app
    models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert set(DDCOLOR) <= set(models)
    for name in DDCOLOR:
        info = models[name]
        assert info["ready"] and info["batchable"] and info["needs_weights"]
        sizes = info["render_size"]
        assert sizes["default"] == 64 and sizes["minimum"] == 64
        assert sizes["maximum"] == 512 and sizes["multiple"] == 32
        assert sizes["largest_fitting"] == 512  # this host's budget is far above 512's pass
    assert models["eccv16"]["render_size"] is None
    assert models["exemplar"]["render_size"] is None


# --- a small device: 413 names the largest render size that fits -----------------------------


@pytest.fixture(scope="module")
def small_device_app(
    ddcolor_weights_dir: Path,
) -> Iterator[tuple[TestClient, Mapping[str, Engine]]]:
    """DDColor-T on the CPU, admitted against a 1 GiB (fake) GPU: a job budget of 0.8 GiB."""
    tiny = DDColorTiny(torch.device("cpu"), ddcolor_weights_dir, render=RenderLimits(64, 1024))
    tiny.load()
    fake = FakeCuda(total=1 * GiB)
    manager = MemoryManager(torch.device("cuda", 0), 0.8, backend=CudaBackend(0, cuda=fake))
    with running_app(engines={"ddcolor-tiny": tiny}, manager=manager) as pair:
        yield pair


def test_a_render_size_that_never_fits_is_413_naming_the_largest_that_does(
    small_device_app: tuple[TestClient, Mapping[str, Engine]], photo_png: bytes
) -> None:
    client, _ = small_device_app
    # 3800 B x 512^2 = 996 MB > 859 MB; 448 (762 MB, plus the 512x384 photo's join) fits.
    r = client.post(
        "/colorize",
        files={"image": ("a.png", photo_png)},
        data={"model": "ddcolor-tiny", "render_size": "512"},
    )
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "too_large_for_memory"
    assert "render size 512" in body["detail"]
    assert "render_size=448" in body["detail"]
    ok = client.post(
        "/colorize",
        files={"image": ("a.png", photo_png)},
        data={"model": "ddcolor-tiny", "render_size": "64"},
    )
    assert ok.status_code == 200


def test_models_report_the_largest_render_size_that_fits_now(
    small_device_app: tuple[TestClient, Mapping[str, Engine]],
) -> None:
    client, _ = small_device_app
    info = client.get("/v1/models/ddcolor-tiny").json()
    assert info["render_size"]["maximum"] == 1024
    assert info["render_size"]["largest_fitting"] == 448


def test_a_video_through_ddcolor_tiny_at_a_render_size(
    app: tuple[TestClient, Mapping[str, Engine]], tmp_path: Path
) -> None:
    # Issue 21, item 4: every engine works on video, the DDColor ones with `render_size`.
    import io
    import time

    import av

    from tests.support.videos import make_clip, with_spec

    client, _ = app
    clip = make_clip(tmp_path / "a.mp4", with_spec(frames=6, width=64, height=48, cut_at=None))
    bad = client.post(
        "/jobs",
        files={"video": ("a.mp4", clip.read_bytes())},
        data={"model": "ddcolor-tiny", "render_size": "70"},
    )
    assert bad.status_code == 422 and "multiple of 32" in bad.json()["detail"]
    r = client.post(
        "/jobs",
        files={"video": ("a.mp4", clip.read_bytes())},
        data={"model": "ddcolor-tiny", "render_size": "64"},
    )
    assert r.status_code == 202, r.text
    url = r.headers["location"]
    deadline = time.monotonic() + 120
    while (body := client.get(url).json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["state"] == "done", body
    with av.open(io.BytesIO(client.get(f"{url}/result").content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and all(is_colour(f) for f in frames)
