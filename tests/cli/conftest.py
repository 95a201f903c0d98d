"""Generated weights and small grayscale photos on disk, for the command-line suites."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.images import DATA_DIR
from tests.support.photos import SIZE, Photos
from tests.support.weights_server import make_weights_dir

FETCH_MISSING = "COLORIZE_FETCH_MISSING"


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated eccv16 and siggraph17 checkpoints under their official names (seed 0)."""
    return make_weights_dir(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    folder = tmp_path_factory.mktemp("photos")
    with Image.open(DATA_DIR / "astronaut.png") as im:
        small = im.convert("RGB").resize(SIZE, Image.Resampling.LANCZOS)
    small.convert("L").save(folder / "astronaut.png")
    small.save(folder / "reference.png")
    with Image.open(DATA_DIR / "coffee.png") as im:
        im.convert("L").resize(SIZE, Image.Resampling.LANCZOS).save(folder / "coffee.jpg")
    return Photos(folder, folder / "astronaut.png", folder / "coffee.jpg", folder / "reference.png")


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings from defaults only: a developer's COLORIZE_* variables must not change results.

    Except COLORIZE_FETCH_MISSING, which the root conftest sets so no test reaches the internet.
    """
    for name in [n for n in os.environ if n.startswith("COLORIZE_") and n != FETCH_MISSING]:
        monkeypatch.delenv(name)
    yield
