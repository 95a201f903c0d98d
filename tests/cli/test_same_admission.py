"""The batch command and the API admit uploads through the same function
(service/worker/admission.py): the same bad file gets the same outcome and the same words from
both, whichever check refuses it."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.api.outcomes import ANSWERS
from service.cli.main import main
from service.outcomes import Outcome
from service.settings import Settings
from tests.support.apps import running_app


def png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 80, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


BAD = {
    "html-named-png": (b"<!doctype html><html><body>hi</body></html>", Outcome.UNSUPPORTED_FORMAT),
    "over-the-pixel-limit": (png(300), Outcome.IMAGE_TOO_LARGE),
    "truncated-header": (png(64)[:20], Outcome.INVALID_IMAGE),
    "empty": (b"", Outcome.INVALID_IMAGE),
}
MAX_PIXELS = 200 * 200


@pytest.mark.parametrize(("content", "outcome"), BAD.values(), ids=BAD.keys())
def test_the_api_and_the_batch_command_refuse_alike(
    content: bytes,
    outcome: Outcome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_app(Settings(max_pixels=MAX_PIXELS)) as (client, _):
        r = client.post(
            "/colorize", files={"image": ("bad.png", content)}, data={"model": "exemplar"}
        )
    assert r.status_code == ANSWERS[outcome].status and r.json()["error"] == ANSWERS[outcome].error
    api_detail = r.json()["detail"]

    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    reference = tmp_path / "reference.png"
    Image.fromarray(np.dstack([np.full((32, 32), v, np.uint8) for v in (200, 90, 40)])).save(
        reference
    )
    monkeypatch.setenv("COLORIZE_MAX_PIXELS", str(MAX_PIXELS))
    argv = ["colorize", str(bad), "-o", str(tmp_path / "out"), "--device", "cpu"]
    argv += ["--model", "exemplar", "--reference", str(reference)]
    with caplog.at_level(logging.ERROR, logger="service.cli.colorize"):
        code = main(argv)
    assert code == 1
    [record] = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert record.getMessage() == f"{bad}: {api_detail}"
