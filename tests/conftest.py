"""Fixtures shared by every suite: real photos, the GPU marker, a CPU device, no downloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.images import photo, png_bytes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return photo("astronaut.png")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return photo("coffee.png")


@pytest.fixture(autouse=True, scope="session")
def no_weight_downloads() -> Iterator[None]:
    """Start-up never fetches missing checkpoints: CI has no internet, and a test that wants the
    fetch builds Settings(fetch_missing=True) with a loopback base URL. Child processes inherit
    the variable; session-scoped, so module-scoped servers see it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLORIZE_FETCH_MISSING", "false")
        yield


@pytest.fixture(autouse=True, scope="session")
def one_device_lane() -> Iterator[None]:
    """One device thread, as on a GPU, unless a test asks for more: the queue, admission and
    fault suites script which job holds the device. tests/worker/test_lanes.py runs two, and
    the host-memory floods run the CPU default. Session-scoped, so that module-scoped servers
    started before any test's own fixtures see it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLORIZE_DEVICE_WORKERS", "1")
        yield


@pytest.fixture
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(scope="session")
def gray_png(astronaut: np.ndarray) -> bytes:
    """A 128x128 grayscale PNG of the astronaut."""
    return png_bytes(astronaut[::4, ::4])


@pytest.fixture(scope="session")
def colour_png(coffee: np.ndarray) -> bytes:
    """A 150x100 colour PNG of the coffee cup (a reference)."""
    return png_bytes(coffee[::4, ::4], mode="RGB")


@pytest.fixture(scope="session")
def ddcolor_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated checkpoints for the three DDColor engines under their official names.

    DDColor-L's file is 912 MB: one is generated (seed 0) and linked under both L names.
    """
    from devkit.ddcolor_checkpoints import save_random_checkpoint
    from service.engines.weights import OFFICIAL

    directory = tmp_path_factory.mktemp("ddcolor-weights")
    save_random_checkpoint(directory / OFFICIAL["ddcolor-tiny"].filename, "tiny", seed=0)
    large = save_random_checkpoint(directory / OFFICIAL["ddcolor"].filename, "large", seed=0)
    (directory / OFFICIAL["ddcolor-artistic"].filename).hardlink_to(large)
    return directory
