"""The real app around scripted engines, run with its lifespan through TestClient."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.engines.base import Engine
from service.memory import MemoryManager
from service.settings import Settings
from tests.support.engines import ScriptedEngine


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
