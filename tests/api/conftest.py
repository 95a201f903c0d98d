"""The app around scripted engines (tests/support/apps.py), running, for each test that asks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from fastapi.testclient import TestClient

from service.engines.base import Engine
from tests.support.apps import running_app


@pytest.fixture
def app_client() -> Iterator[tuple[TestClient, Mapping[str, Engine]]]:
    with running_app() as pair:
        yield pair
