"""Generated checkpoints (once per session), a server for them, and engines loaded from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from devkit.ddcolor_checkpoints import load_network, save_random_checkpoint
from service.engines.ddcolor.network import DDColor
from service.engines.eccv16 import Eccv16Engine
from service.engines.fixed import FixedInputEngine
from service.engines.siggraph17 import Siggraph17Engine
from tests.support.engine_outputs import PIXEL, AloneOutputs
from tests.support.weights_server import WeightsServer, make_weights_dir, serve_weights


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models' generated checkpoints under their official names (seed 0)."""
    return make_weights_dir(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def weights_server(weights_dir: Path) -> Iterator[WeightsServer]:
    """A loopback HTTP server publishing `weights_dir`, with a manifest of its files."""
    with serve_weights(weights_dir) as server:
        yield server


@pytest.fixture(scope="session")
def eccv16(weights_dir: Path) -> Eccv16Engine:
    engine = Eccv16Engine(torch.device("cpu"), weights_dir)
    engine.load()
    return engine


@pytest.fixture(scope="session")
def siggraph17(weights_dir: Path) -> Siggraph17Engine:
    engine = Siggraph17Engine(torch.device("cpu"), weights_dir)
    engine.load()
    return engine


@pytest.fixture(scope="session", params=["eccv16", "siggraph17"])
def engine(request: pytest.FixtureRequest) -> FixedInputEngine:
    """Each fixed-input engine in turn, loaded on the CPU."""
    loaded: FixedInputEngine = request.getfixturevalue(request.param)
    return loaded


@pytest.fixture(scope="session")
def alone(coffee: np.ndarray) -> AloneOutputs:
    """Outputs of single-image runs of `coffee` and `pixel`, shared by the engine suites."""
    return AloneOutputs({"coffee": coffee, "pixel": PIXEL})


@pytest.fixture(scope="session")
def ddcolor_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated DDColor-T checkpoint in the published layout (220 MB; ~10 s, so once)."""
    return save_random_checkpoint(
        tmp_path_factory.mktemp("ddcolor") / "ddcolor_paper_tiny.pth", "tiny", seed=0
    )


@pytest.fixture(scope="session")
def ddcolor_tiny(ddcolor_tiny_checkpoint: Path) -> DDColor:
    """DDColor-T on the CPU with the generated weights, in eval mode."""
    return load_network(ddcolor_tiny_checkpoint, "tiny")
