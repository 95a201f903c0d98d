"""Clips generated once per session (each tens of milliseconds), limits and engines for them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.engines.base import Engine
from service.video import VideoLimits
from tests.support.engines import JitterEngine
from tests.support.videos import CLIPS, Clip, make_clip, million_frames


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """clip(name) -> the path of CLIPS[name], generated on first use."""
    directory = tmp_path_factory.mktemp("clips")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            spec = CLIPS[name]
            made[name] = make_clip(directory / f"{name}.{spec.container}", spec)
        return made[name]

    return get


@pytest.fixture(scope="session")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MP4 of a million 16x16 frames (about 1 s to make, 13 MB)."""
    return million_frames(tmp_path_factory.mktemp("million") / "million.mp4")


@pytest.fixture(scope="session")
def limits() -> VideoLimits:
    return VideoLimits()


@pytest.fixture(scope="session")
def eccv16(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """eccv16 on the CPU with generated (seeded, calibrated) weights."""
    from devkit.checkpoints import save_random_checkpoint
    from service.engines.eccv16 import Eccv16Engine

    directory = tmp_path_factory.mktemp("weights")
    save_random_checkpoint("eccv16", directory)
    engine = Eccv16Engine(torch.device("cpu"), directory)
    engine.load()
    return engine


@pytest.fixture(scope="session")
def ddcolor_tiny(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """ddcolor-tiny on the CPU with a generated (seeded) checkpoint: the tiny one alone (the
    root conftest's ddcolor_weights_dir also writes DDColor-L's 912 MB)."""
    from devkit.ddcolor_checkpoints import save_random_checkpoint
    from service.engines.registry import create_engine
    from service.engines.weights import OFFICIAL

    directory = tmp_path_factory.mktemp("ddcolor-tiny")
    save_random_checkpoint(directory / OFFICIAL["ddcolor-tiny"].filename, "tiny", seed=0)
    engine = create_engine("ddcolor-tiny", torch.device("cpu"), directory)
    engine.load()
    return engine


@pytest.fixture(scope="session")
def jitter() -> JitterEngine:
    return JitterEngine(torch.device("cpu"))
