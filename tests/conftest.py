"""Fixtures shared by every suite: real photos, the GPU marker, a CPU device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

DATA_DIR = Path(__import__("skimage").__file__).parent / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as RGB uint8."""
    with Image.open(DATA_DIR / name) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return photo("astronaut.png")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return photo("coffee.png")


@pytest.fixture
def cpu() -> torch.device:
    return torch.device("cpu")
