"""First run: start-up fetches the default model's missing checkpoint, or starts without it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.engines import weights
from service.engines.bootstrap import fetch_missing
from service.settings import Settings
from tests.support.weights_server import WeightsServer, unused_port


def first_run_settings(weights_dir: Path, base_url: str | None) -> Settings:
    return Settings(
        weights_dir=weights_dir,
        weights_base_url=base_url,
        fetch_missing=True,
        fetch_missing_timeout_s=30.0,
        device="cpu",
        queue_size=4,
    )


def test_start_up_fetches_the_missing_default_weights_from_their_source(
    weights_server: WeightsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The published manifest, except that eccv16 is the generated file this server holds: its
    # source is the server, so an unset base URL must lead there.
    served = weights_server.manifest["eccv16"]
    monkeypatch.setattr(weights, "OFFICIAL", {**weights.OFFICIAL, "eccv16": served})
    asked = len(weights_server.requested)
    settings = first_run_settings(tmp_path / "fresh", base_url=None)
    with TestClient(create_app(settings)) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()}
    assert models["eccv16"]["ready"] is True
    assert weights_server.requested[asked:] == [f"/{served.filename}"]
    assert weights.file_sha256(tmp_path / "fresh" / served.filename) == served.sha256
    assert models["siggraph17"]["ready"] is False  # only the default model is fetched


def test_offline_start_up_is_quick_and_serves_exemplar(
    tmp_path: Path, gray_png: bytes, colour_png: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "weights"
    settings = first_run_settings(empty, base_url=f"http://127.0.0.1:{unused_port()}")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        assert time.monotonic() - started < 10
        models = {m["name"]: m for m in client.get("/v1/models").json()}
        r = client.post(
            "/colorize",
            files={"image": ("a.png", gray_png), "reference": ("r.png", colour_png)},
            data={"model": "exemplar"},
        )
    fix = f"colorize-service fetch-weights eccv16 --weights-dir {empty}"
    assert models["eccv16"]["ready"] is False
    assert fix in models["eccv16"]["reason"]
    assert r.status_code == 200, r.text
    assert "could not fetch eccv16 weights: eccv16: cannot reach" in caplog.text
    assert f"{fix}`" in caplog.text


def test_nothing_is_fetched_when_turned_off_present_or_weight_free(
    weights_server: WeightsServer, tmp_path: Path
) -> None:
    asked = len(weights_server.requested)
    manifest = weights_server.manifest
    off = first_run_settings(tmp_path, weights_server.base_url).model_copy(
        update={"fetch_missing": False}
    )
    assert fetch_missing(off, ["eccv16"], manifest=manifest) == []
    # A file present is the loader's to judge, even a wrong one: never replaced at start-up.
    (tmp_path / manifest["eccv16"].filename).write_bytes(b"not a checkpoint")
    on = first_run_settings(tmp_path, weights_server.base_url)
    assert fetch_missing(on, ["eccv16", "exemplar"], manifest=manifest) == []
    assert weights_server.requested[asked:] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [manifest["eccv16"].filename]


def test_a_failed_fetch_is_returned_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    settings = first_run_settings(tmp_path, f"http://127.0.0.1:{unused_port()}")
    [problem] = fetch_missing(settings, ["siggraph17"])
    assert "siggraph17: cannot reach http://127.0.0.1:" in problem
    # The program as it runs here: on PATH, or by its full path when .venv is not activated.
    assert problem.endswith(f"colorize-service fetch-weights siggraph17 --weights-dir {tmp_path}`")
    assert list(tmp_path.iterdir()) == []
