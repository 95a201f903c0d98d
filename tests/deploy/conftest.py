"""The service's real /metrics exposition (the deployment files: tests/support/deploy.py)."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.support.apps import running_app


@pytest.fixture(scope="session")
def exposition(gray_png: bytes, colour_png: bytes) -> str:
    """GET /metrics of the real app after a job on each engine, so every histogram has series."""
    with running_app(Settings(queue_size=8)) as (client, _):
        jobs = [
            ({"image": ("a.png", gray_png)}, {"model": "eccv16"}),
            ({"image": ("a.png", gray_png)}, {"model": "siggraph17"}),
            (
                {"image": ("a.png", gray_png), "reference": ("r.png", colour_png)},
                {"model": "exemplar"},
            ),
        ]
        for files, data in jobs:
            r = client.post("/colorize", files=files, data=data)
            assert r.status_code == 200, r.text
        r = client.get("/metrics")
        assert r.status_code == 200
        return r.text
