"""Apps built around scripted engines, run with their lifespan through TestClient."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.engines.base import Engine
from service.memory import MemoryManager
from service.settings import Settings
from tests.support.engines import ScriptedEngine

AppFactory = Callable[..., Any]


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def is_colour(rgb: np.ndarray) -> bool:
    spread = rgb.astype(np.int16).max(axis=2) - rgb.astype(np.int16).min(axis=2)
    return bool(spread.mean() > 4)


def scripted_engines(device: torch.device) -> dict[str, ScriptedEngine]:
    return {
        "eccv16": ScriptedEngine(device, "eccv16"),
        "siggraph17": ScriptedEngine(device, "siggraph17", takes_hints=True),
        "exemplar": ScriptedEngine(device, "exemplar", batchable=False, needs_reference=True),
    }


@contextmanager
def running_app(
    settings: Settings | None = None,
    engines: Mapping[str, Engine] | None = None,
    manager: MemoryManager | None = None,
    **overrides: Any,
) -> Iterator[tuple[TestClient, Mapping[str, Engine]]]:
    settings = settings or Settings(**{"queue_size": 8, "admission_wait_s": 1.0, **overrides})
    engines = engines if engines is not None else scripted_engines(torch.device("cpu"))
    app = create_app(settings, engines=engines, manager=manager)
    with TestClient(app) as client:
        yield client, engines


@pytest.fixture
def app_client() -> Iterator[tuple[TestClient, Mapping[str, Engine]]]:
    with running_app() as pair:
        yield pair
