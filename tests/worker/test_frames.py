"""A video's frames go through the image pipeline as jobs of their own (service/worker/frames.py):
batched with each other, admitted like photos, finished as arrays, failing as one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.imaging.encode import encode_image
from service.memory.host import device_manager
from service.outcomes import Outcome
from service.settings import Settings
from service.worker.frames import FramesFailed, colorize_frames
from service.worker.worker import Worker
from tests.support.apps import scripted_engines
from tests.support.images import is_colour


@pytest.fixture
def worker():  # type: ignore[no-untyped-def]
    settings = Settings(batch_max_size=4, batch_max_wait_ms=50)
    manager = device_manager(torch.device("cpu"), 0.8)
    worker = Worker(scripted_engines(torch.device("cpu")), manager, settings, encode_image)
    worker.start()
    yield worker
    worker.stop(timeout=5)


def test_frames_come_back_in_order_in_colour_and_batched(worker, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    frames = [np.ascontiguousarray(astronaut[i : i + 64, i : i + 96]) for i in range(8)]
    outputs = colorize_frames(worker, "eccv16", frames)
    assert [o.shape for o in outputs] == [f.shape for f in frames]
    assert all(is_colour(o) for o in outputs)
    engine = worker.engines["eccv16"]
    assert max(engine.batches) > 1, "frames share forward passes"
    assert worker.host.snapshot().reserved_for_jobs == 0


def test_a_frame_that_fails_fails_the_call(worker, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    engine = worker.engines["eccv16"]
    engine.failures.extend([torch.OutOfMemoryError("CUDA out of memory")] * 8)
    with pytest.raises(FramesFailed) as caught:
        colorize_frames(worker, "eccv16", [astronaut[:32, :32].copy()] * 3)
    assert caught.value.failure.outcome is Outcome.OOM
    assert worker.queue_depth == 0
